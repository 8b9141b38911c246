// bench-generate: generation speed, printed as `name: value unit` lines.
//   dotnet run -c Release --project tools/bench-generate [-- --device cuda] [--dtype float16] [--threads N] [--quick] [--tiny]
// What it measures: the whole txt2img pipeline and its parts (text encoding, one guided sampler step,
// VAE decode, the running preview) on the tiny fixture model, then the cost that matters for real use: one guided step of
// an SD 1.5-shaped UNet and the SD 1.5 VAE decode, with random weights (speed does not depend on the
// values), at 256x256 and 512x512. --quick leaves out 512x512, which takes minutes on a small CPU; --tiny stops
// after the fixture model (seconds: for comparing thread counts and wait policies on a busy machine).
// --threads N fixes libtorch's thread count; without it the engine's thread policy chooses per part.
using System.Diagnostics;
using System.Globalization;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Tools;
using SdAppliance.Torch.Nn;

string? Option(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

var device = Option("--device") is { } deviceName ? Device.Parse(deviceName) : Device.Cpu;
var dtype = Option("--dtype") is { } dtypeName ? DTypeExtensions.Parse(dtypeName) : DType.Float32;
var quick = args.Contains("--quick");
var tinyOnly = args.Contains("--tiny");
Engine.EnsureLoaded();
int? fixedThreads = Option("--threads") is { } threads ? int.Parse(threads, CultureInfo.InvariantCulture) : null;

// The thread count for a part: fixed, or the engine's policy for its demand.
void UseThreads(string part, ThreadDemand demand)
{
    if (fixedThreads is { } n) Engine.NumThreads = n;
    else Engine.UseThreads(demand);
    Report($"{part}_threads", Engine.NumThreads, "threads");
}
if (device.IsCuda && !Cuda.IsAvailable)
{
    Console.Error.WriteLine($"bench-generate: --device {device} asked for, but this libtorch sees no CUDA device");
    return 1;
}
var root = RepositoryRoot();
Console.WriteLine($"libtorch: {Engine.TorchVersion}");
Console.WriteLine($"device: {device}");
Console.WriteLine($"dtype: {dtype.TorchName()}");
Console.WriteLine($"omp_wait_policy: {Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") ?? "libgomp default"}");
Console.WriteLine($"gomp_spincount: {Environment.GetEnvironmentVariable("GOMP_SPINCOUNT") ?? "libgomp default"}");
// Other work on the machine makes libtorch's threads wait for a core (small ops suffer most): the load says how much.
ReportLoad("load_average_start");

void Sync()
{
    if (device.IsCuda) Cuda.Synchronize(device.Index);
}

// Median seconds of `body` over repeats, after one warm-up; CUDA work is finished before each clock read.
double Time(Action body, int repeats)
{
    body();
    Sync();
    var samples = new double[repeats];
    for (var i = 0; i < repeats; i++)
    {
        var sw = Stopwatch.StartNew();
        body();
        Sync();
        samples[i] = sw.Elapsed.TotalSeconds;
    }
    Array.Sort(samples);
    var mid = repeats / 2;
    return repeats % 2 == 1 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
}

void Report(string name, double value, string unit) => Console.WriteLine($"{name}: {value:G4} {unit}");

void ReportLoad(string name)
{
    if (File.Exists("/proc/loadavg"))
        Report(name, double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture), "runnable");
}

// Long runs say what they are doing on stderr, so that stdout stays `name: value unit` only.
void Progress(string what) => Console.Error.WriteLine($"# {what}");

const int Steps = 20;
const double CfgScale = 7;
const string Sampler = "DPM++ 2M Karras";

using var inference = Autograd.InferenceMode();

// 1. The tiny fixture model: the real pipeline end to end, then its parts.
{
    Progress("tiny fixture model");
    using var model = ModelLoader.Load(Path.Combine(root, "tests", "fixtures", "tiny-sd"), new ModelLoadOptions(Device: device, DType: dtype));
    UseThreads("tiny", model.UnetThreadDemand(2, 64, 64));
    var pipeline = new StableDiffusionPipeline(model);
    var request = new GenerationRequest
    {
        Prompt = "a photograph of an astronaut riding a horse",
        NegativePrompt = "blurry",
        Seed = 0,
        Steps = Steps,
        Sampler = Sampler,
        CfgScale = CfgScale,
        Width = 64,
        Height = 64,
    };
    var plain = Time(() => pipeline.Generate(request), quick ? 3 : 5);
    Report("tiny_txt2img_64_20steps", plain, "s/image");
    // The Generate page's preview, drawn at every step (the job draws one at most every second): its worst case.
    var previewed = Time(() => pipeline.Generate(request, new PreviewEveryStep()), quick ? 3 : 5);
    Report("tiny_txt2img_64_20steps_preview_every_step", previewed, "s/image");
    Report("tiny_preview_every_step_ratio", previewed / plain, "x");

    // Prompt and negative prompt, as the pipeline encodes them for one image.
    var chunker = new PromptChunker(model.Tokenizer);
    TextConditioning Encode(string text)
    {
        var chunked = chunker.Chunk(text);
        return model.PromptEncoder.Encode(new PromptChunks(
            [.. chunked.Chunks.Select(c => c.Ids)], [.. chunked.Chunks.Select(c => c.Weights.Select(w => (float)w).ToArray())]));
    }
    Report("tiny_text_encode", Time(() =>
    {
        using var cond = Encode(request.Prompt);
        using var uncond = Encode(request.NegativePrompt);
    }, quick ? 5 : 20), "s/image");

    using var cond = Encode(request.Prompt);
    using var uncond = Encode(request.NegativePrompt);
    using var embeds = torch.Cat([uncond.PromptEmbeds, cond.PromptEmbeds]);
    var latentSize = 64 / model.VaeScaleFactor;
    using (var loop = new SamplingLoop(model.Unet, embeds, SchedulerConfig.FromJson(model.SchedulerConfig.ToJsonString()), Sampler, Steps, CfgScale, latentSize, dtype, device))
        Report("tiny_sampler_step_64", Time(loop.Step, quick ? Steps : 2 * Steps), "s/step");

    using var latents = RandomLatents(model.Unet.Config.InChannels, latentSize, dtype, device);
    Report("tiny_vae_decode_64", Time(() => { using var _ = model.Vae.Decode(latents); }, quick ? 5 : 20), "s/image");
}

if (tinyOnly)
{
    ReportLoad("load_average_end");
    return 0;
}

// 2. SD 1.5 shapes with random weights.
var sd15 = Path.Combine(root, "models", "configs", "sd15");
int[] sizes = quick ? [256] : [256, 512];
var stepSeconds = new Dictionary<int, double>();
{
    Progress("building a random SD 1.5 UNet");
    using var unet = RandomWeights.Module(() => new UNet2DConditionModel(
        DiffusersConfig.Load<UNet2DConditionConfig>(Path.Combine(sd15, "unet", "config.json")), new ModuleOptions(device, dtype)));
    Report("sd15_unet_parameters", unet.Parameters().Sum(p => p.NumEl) / 1e6, "M");
    // CLIP ViT-L/14 hidden states: 77 tokens of 768, [uncond, cond]; their values do not change the speed.
    using var embeds = RandomTensor([2, 77, 768], dtype, device);
    var scheduler = SchedulerConfig.Load(Path.Combine(sd15, "scheduler", "scheduler_config.json"));
    foreach (var size in sizes)
    {
        Progress($"SD 1.5 UNet steps at {size}x{size}");
        UseThreads($"sd15_step_{size}", ThreadDemand.ForActivation(2, unet.Config.BlockOutChannels[0], size / 8, size / 8));
        if (device.IsCuda && Cuda.HasMemoryStats) Cuda.ResetPeakMemoryStats(device.Index);
        using var loop = new SamplingLoop(unet, embeds, scheduler, Sampler, Steps, CfgScale, size / 8, dtype, device);
        stepSeconds[size] = Time(loop.Step, size >= 512 ? 2 : quick ? 1 : 3);
        Report($"sd15_step_{size}", stepSeconds[size], "s/step");
        if (device.IsCuda && Cuda.HasMemoryStats)
            Report($"sd15_step_{size}_peak_memory", Cuda.GetMemoryStats(device.Index).PeakAllocatedBytes / (double)(1L << 30), "GiB");
    }
}
{
    Progress("building a random SD 1.5 VAE");
    using var vae = RandomWeights.Module(() => new AutoencoderKL(
        DiffusersConfig.Load<AutoencoderKLConfig>(Path.Combine(sd15, "vae", "config.json")), new ModuleOptions(device, dtype)));
    foreach (var size in sizes)
    {
        Progress($"SD 1.5 VAE decode at {size}x{size}");
        // The decoder's last blocks run at full resolution with its first block's channels.
        UseThreads($"sd15_vae_decode_{size}", ThreadDemand.ForActivation(1, vae.Config.BlockOutChannels[0], size, size));
        using var latents = RandomLatents(4, size / 8, dtype, device);
        var decode = Time(() => { using var _ = vae.Decode(latents); }, size >= 512 ? 2 : quick ? 1 : 3);
        Report($"sd15_vae_decode_{size}", decode, "s/image");
        Report($"sd15_image_estimate_{size}_20steps", Steps * stepSeconds[size] + decode, "s/image");
        // A large latent's preview: A1111's cheap approximation and its PNG, against one sampler step.
        var preview = Time(() => SdAppliance.Imaging.ImageCodec.Encode(LatentPreview.Approximate(latents, sdxl: false)), quick ? 5 : 20);
        Report($"sd15_preview_cheap_{size}", preview, "s/preview");
        Report($"sd15_preview_cheap_{size}_per_step", preview / stepSeconds[size], "x");
    }
}
Report("process_peak_rss", Process.GetCurrentProcess().PeakWorkingSet64 / (double)(1L << 30), "GiB");
ReportLoad("load_average_end");
return 0;

static string RepositoryRoot()
{
    foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SdAppliance.sln"))) return dir.FullName;
    throw new DirectoryNotFoundException("bench-generate needs the SdAppliance repository (tests/fixtures, models/configs): run it from inside it");
}

static Tensor RandomLatents(long channels, long size, DType dtype, Device device) => RandomTensor([1, channels, size, size], dtype, device);

static Tensor RandomTensor(long[] shape, DType dtype, Device device)
{
    using var g = new Generator(0);
    using var cpu = torch.Randn(shape, g);
    return cpu.To(device, dtype);
}


/// <summary>Draws the preview the pipeline offers at every step.</summary>
sealed class PreviewEveryStep : IProgress<GenerationProgress>
{
    public void Report(GenerationProgress value) => value.Preview?.Invoke();
}

/// <summary>
/// The pipeline's guided step: [uncond, cond] through the UNet, guidance, scheduler step, on latents
/// that carry over from step to step; a new schedule starts after the last step.
/// </summary>
sealed class SamplingLoop(UNet2DConditionModel unet, Tensor embeds, SchedulerConfig config, string sampler, int steps, double cfgScale,
    long latentSize, DType dtype, Device device) : IDisposable
{
    private Scheduler? scheduler;
    private Tensor? latents;
    private int index;

    public void Step()
    {
        if (scheduler is null || latents is null || index == steps) Restart();
        using var scope = torch.NewDisposeScope();
        var t = scheduler!.TimestepValues[index];
        var scaled = scheduler.ScaleModelInput(torch.Cat([latents!, latents!]), t);
        var halves = unet.Forward(scaled, t, embeds).Chunk(2);
        var guided = halves[0] + (halves[1] - halves[0]) * cfgScale;
        var next = scheduler.Step(guided, t, latents!).PrevSample.DetachFromDisposeScope();
        latents!.Dispose();
        latents = next;
        index++;
    }

    private void Restart()
    {
        Dispose();
        scheduler = SchedulerRegistry.Create(sampler, config);
        scheduler.SetTimesteps(steps, device);
        using var noise = torch.Randn([1, unet.Config.InChannels, latentSize, latentSize], dtype: DType.Float32);
        using var onDevice = noise.To(device, dtype);
        latents = onDevice.Mul(scheduler.InitNoiseSigma);
        index = 0;
    }

    public void Dispose()
    {
        scheduler?.Dispose();
        scheduler = null;
        latents?.Dispose();
        latents = null;
    }
}
