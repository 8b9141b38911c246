// bench-train: speed and peak memory of LoRA and DreamBooth training steps, printed as `name: value unit` lines.
//   dotnet run -c Release --project tools/bench-train [-- --device cuda] [--mixed-precision bf16|fp16] [--threads N]
//       [--quick] [--full] [--case NAME] [--resolution PIXELS]
// A step is what the trainer does per optimizer step at batch 1: UNet forward on noisy latents and a text
// conditioning, MSE against the noise, backward, gradient clipping at 1.0, AdamW (lr 1e-4), zero grads. The *_8bit
// cases step with AdamW8bit instead; *_optimizer_state is the bytes of the optimizer's state after the steps.
// Models: the tiny fixture (tests/fixtures/tiny-sd, 64x64 images = 8x8 latents, its [1,77,32] text) and
// an SD 1.5-shaped UNet with random weights (models/configs/sd15, 512x512 = 64x64 latents, [1,77,768] text).
// LoRA is kohya's network (dim 16, alpha 8) on the frozen UNet; DreamBooth trains every UNet weight.
// --quick runs the tiny cases only; the default adds SD 1.5 LoRA with and without gradient checkpointing;
// SD 1.5 DreamBooth runs on CUDA, and on CPU only with --full (AdamW states alone are ~7 GB there).
// --resolution sets the SD 1.5 cases' image size (default 512; 256 fits DreamBooth's activations in a smaller box).
// AdamW against AdamW8bit, the memory table: --case for each of tiny/sd15 lora/dreambooth and their *_8bit twins.
// Peak memory: each case runs in a child process of this tool (`--case NAME`), so that nothing an earlier
// case allocated (and the allocator kept) counts towards the next: on CPU the peak resident set (VmHWM: the
// runtime, the model, the optimizer states and the activations; *_start_rss is the runtime's share), on
// CUDA the caching allocator's peak since the model was built on the device (weights included).
using System.Diagnostics;
using System.Globalization;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Optim;
using SdAppliance.Training;
using SdAppliance.Training.Networks;
using F = SdAppliance.Torch.Functional;

string? Arg(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

var device = Device.Parse(Arg("--device") ?? "cpu");
var mixedPrecision = Arg("--mixed-precision") ?? "no";
var quick = args.Contains("--quick");
var full = args.Contains("--full");
var onlyCase = Arg("--case");
var sd15Resolution = Arg("--resolution") is { } resolutionText ? int.Parse(resolutionText, CultureInfo.InvariantCulture) : 512;
if (sd15Resolution < 64 || sd15Resolution % 64 != 0) return Fail($"--resolution: {sd15Resolution} must be a multiple of 64");
if (mixedPrecision is not ("no" or "bf16" or "fp16"))
    return Fail($"--mixed-precision: '{mixedPrecision}' is not one of no, bf16, fp16");
if (mixedPrecision == "fp16" && !device.IsCuda)
    return Fail("--mixed-precision fp16 needs --device cuda (on CPU use no or bf16), as the trainer");

Engine.EnsureLoaded();
if (Arg("--threads") is { } threads) Engine.NumThreads = int.Parse(threads, CultureInfo.InvariantCulture);
if (device.IsCuda && !Cuda.IsAvailable) return Fail("--device cuda: this libtorch sees no CUDA device");

if (FindRepositoryRoot() is not { } root) return Fail("run from the repository (models/configs/sd15 and tests/fixtures/tiny-sd are read from it)");

// SD 1.5 at 512 on a CPU takes minutes per step: one warm-up and one timed step there.
var (bigWarmUp, bigRepeats) = device.IsCuda ? (2, 5) : (1, 1);
var (tinyWarmUp, tinyRepeats) = quick ? (2, 5) : (3, 15);
BenchCase[] cases =
[
    new("tiny_lora", Sd15: false, Lora: true, Checkpointing: false, tinyWarmUp, tinyRepeats),
    new("tiny_lora_8bit", Sd15: false, Lora: true, Checkpointing: false, tinyWarmUp, tinyRepeats, EightBit: true),
    new("tiny_dreambooth", Sd15: false, Lora: false, Checkpointing: false, tinyWarmUp, tinyRepeats),
    new("tiny_dreambooth_8bit", Sd15: false, Lora: false, Checkpointing: false, tinyWarmUp, tinyRepeats, EightBit: true),
    new("sd15_lora", Sd15: true, Lora: true, Checkpointing: false, bigWarmUp, bigRepeats),
    new("sd15_lora_8bit", Sd15: true, Lora: true, Checkpointing: false, bigWarmUp, bigRepeats, EightBit: true),
    new("sd15_lora_gc", Sd15: true, Lora: true, Checkpointing: true, bigWarmUp, bigRepeats),
    new("sd15_dreambooth", Sd15: true, Lora: false, Checkpointing: false, bigWarmUp, bigRepeats),
    new("sd15_dreambooth_8bit", Sd15: true, Lora: false, Checkpointing: false, bigWarmUp, bigRepeats, EightBit: true),
];

if (onlyCase is not null)
{
    var c = cases.FirstOrDefault(c => c.Name == onlyCase);
    if (c is null) return Fail($"--case: '{onlyCase}' is not one of {string.Join(", ", cases.Select(c => c.Name))}");
    RunCase(c);
    return 0;
}

Console.WriteLine($"libtorch: {Engine.TorchVersion}");
Console.WriteLine($"device: {device}");
Console.WriteLine($"threads: {Engine.NumThreads}");
Console.WriteLine($"mixed_precision: {mixedPrecision}");
Console.WriteLine($"sd15_resolution: {sd15Resolution}");
Console.WriteLine($"peak_memory: {(device.IsCuda ? "CUDA allocator peak" : "VmHWM")}, one child process per case");
// Other work on the machine makes libtorch's threads wait for a core: the load says how much.
ReportLoad("load_average_start");
var selected = cases.Where(c => !c.Sd15 || (!quick && (c.Lora || full || device.IsCuda))).ToList();
var failures = 0;
foreach (var c in selected)
{
    var code = RunChild(c.Name);
    if (code == 0) continue;
    // A failed case (out of memory, say) does not stop the others.
    Console.Error.WriteLine($"bench-train: case {c.Name} failed (exit code {code})");
    failures++;
}
ReportLoad("load_average_end");
return failures == 0 ? 0 : 1;

// Re-runs this tool with `--case NAME` and the same options, passing its lines through.
int RunChild(string name)
{
    var self = Environment.ProcessPath ?? throw new InvalidOperationException("the path of this process is unknown");
    var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
    // Started as `dotnet bench-train.dll`, the host needs the assembly again.
    if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(typeof(BenchCase).Assembly.Location);
    foreach (var a in args) start.ArgumentList.Add(a);
    start.ArgumentList.Add("--case");
    start.ArgumentList.Add(name);
    using var child = Process.Start(start) ?? throw new InvalidOperationException($"could not start {self}");
    while (child.StandardOutput.ReadLine() is { } line) Console.WriteLine(line);
    child.WaitForExit();
    return child.ExitCode;
}

void RunCase(BenchCase c)
{
    var startRss = ProcStatusKiB("VmRSS");
    // Long cases say what they are doing on stderr, so that stdout stays `name: value unit` only.
    Console.Error.WriteLine($"# {c.Name}: {c.WarmUp} warm-up + {c.Repeats} timed steps");
    var generator = new Generator(0);
    torch.ManualSeed(0);
    // Draws for CUDA tensors come from the device's default generator; a CPU one is refused there.
    var drawGenerator = device.IsCuda ? null : generator;

    StableDiffusionModel? tiny = null;
    UNet2DConditionModel unet;
    ClipTextModel textEncoder;
    if (c.Sd15)
    {
        var config = UNet2DConditionConfig.Load(Path.Combine(root, "models", "configs", "sd15", "unet", "config.json"));
        using (Init.Skip()) unet = new UNet2DConditionModel(config, new ModuleOptions(device));
        FillRandom(unet, drawGenerator);
        // LoRA wants the text encoder only to name its modules when it trains it (not here): shapes alone will do.
        textEncoder = new ClipTextModel(ClipTextConfig.ClipVitL14, device: Device.Meta);
    }
    else
    {
        tiny = ModelLoader.Load(Path.Combine(root, "tests", "fixtures", "tiny-sd"), new ModelLoadOptions(Device: device));
        unet = tiny.Unet;
        textEncoder = tiny.TextEncoder;
    }

    try
    {
        unet.Train();
        LoraNetwork? lora = null;
        IReadOnlyList<Tensor> trainable;
        if (c.Lora)
        {
            unet.Freeze();
            lora = LoraNetwork.Create(unet, textEncoder, null, new LoraNetworkOptions(NetworkDim: 16, NetworkAlpha: 8), drawGenerator);
            trainable = lora.UnetParameters;
        }
        else
        {
            unet.Unfreeze();
            trainable = [.. unet.Parameters()];
        }
        if (c.Checkpointing) unet.EnableGradientCheckpointing();
        using Optimizer optimizer = c.EightBit ? new AdamW8bit(trainable, new AdamW8bitOptions { Lr = 1e-4 }) : new AdamW(trainable, new AdamWOptions { Lr = 1e-4 });

        var latent = c.Sd15 ? sd15Resolution / 8 : (long)(unet.Config.SampleSize is { Count: > 0 } s ? s[0] : 64);
        using var text = torch.Randn([1, 77, unet.Config.CrossAttentionDimPerBlock[0]], generator).To(device).DetachFromDisposeScope();
        var scaler = mixedPrecision == "fp16" ? new LossScaler() : null;

        // One step; returns the seconds of forward (with the loss), backward, and clipping plus optimizer.
        (double Forward, double Backward, double Optimizer) Step()
        {
            using var scope = torch.NewDisposeScope();
            // Drawn on CPU and moved, as the trainer draws its noise.
            var noisy = torch.Randn([1, 4, latent, latent], generator).To(device);
            var target = torch.Randn([1, 4, latent, latent], generator).To(device);
            var timesteps = torch.Randint(0, 1000, [1], generator).To(device);
            var sw = Stopwatch.StartNew();
            Tensor prediction;
            using (Autocast())
                prediction = unet.Forward(noisy, timesteps, text);
            var loss = F.MseLoss(prediction.Float(), target);
            var forward = Lap(sw);
            (scaler is null ? loss : loss * scaler.Scale).Backward();
            var backward = Lap(sw);
            if (scaler is not null && !scaler.Unscale(trainable))
            {
                // The trainer's loss scaler: an overflow skips the step.
                optimizer.ZeroGrad();
                return (forward, backward, Lap(sw));
            }
            using (GradClipping.ClipGradNorm(trainable, 1.0)) { }
            optimizer.Step();
            optimizer.ZeroGrad();
            return (forward, backward, Lap(sw));
        }

        if (device.IsCuda)
        {
            Cuda.Synchronize(CudaIndex());
            Cuda.ResetPeakMemoryStats(CudaIndex());
        }
        for (var i = 0; i < c.WarmUp; i++) Step();
        var steps = Enumerable.Range(0, c.Repeats).Select(_ => Step()).ToList();
        double Median(Func<(double Forward, double Backward, double Optimizer), double> part)
        {
            var sorted = steps.Select(part).Order().ToList();
            return sorted[sorted.Count / 2];
        }
        var median = Median(s => s.Forward + s.Backward + s.Optimizer);

        Report($"{c.Name}_trainable", trainable.Sum(t => t.NumEl) / 1e6, "Mparams");
        Report($"{c.Name}_step", median, "s");
        Report($"{c.Name}_rate", 1 / median, "it/s");
        Report($"{c.Name}_forward", Median(s => s.Forward), "s");
        Report($"{c.Name}_backward", Median(s => s.Backward), "s");
        Report($"{c.Name}_optimizer", Median(s => s.Optimizer), "s");
        using (var state = optimizer.StateDict())
            Report($"{c.Name}_optimizer_state", state.Tensors.Values.Sum(t => t.NumEl * (double)t.DType.ElementSize()) / 1048576.0, "MiB");
        if (device.IsCuda)
        {
            var stats = Cuda.GetMemoryStats(CudaIndex());
            Report($"{c.Name}_peak_allocated", stats.PeakAllocatedBytes / 1048576.0, "MiB");
            Report($"{c.Name}_peak_reserved", stats.PeakReservedBytes / 1048576.0, "MiB");
        }
        else
        {
            Report($"{c.Name}_start_rss", startRss / 1024.0, "MiB");
            Report($"{c.Name}_peak_rss", ProcStatusKiB("VmHWM") / 1024.0, "MiB");
        }
        lora?.Dispose();
    }
    finally
    {
        if (tiny is not null) tiny.Dispose();
        else
        {
            unet.Dispose();
            textEncoder.Dispose();
        }
        generator.Dispose();
    }
}

IDisposable? Autocast() => mixedPrecision switch
{
    "bf16" => Autograd.Autocast(device.Type, DType.BFloat16),
    "fp16" => Autograd.Autocast(device.Type, DType.Float16),
    _ => null,
};

int CudaIndex() => Math.Max(device.Index, 0);

// Seconds since the last lap; CUDA work is waited for so that each phase holds its own kernels.
double Lap(Stopwatch sw)
{
    if (device.IsCuda) Cuda.Synchronize(CudaIndex());
    var seconds = sw.Elapsed.TotalSeconds;
    sw.Restart();
    return seconds;
}

// Four significant digits, without an exponent for the large figures (SD 1.5 peaks are ~10^4 MiB).
static void Report(string name, double value, string unit) =>
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name}: {(Math.Abs(value) >= 1e4 ? value.ToString("F0", CultureInfo.InvariantCulture) : value.ToString("G4", CultureInfo.InvariantCulture))} {unit}"));

static void ReportLoad(string name)
{
    if (File.Exists("/proc/loadavg"))
        Report(name, double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture), "runnable");
}

static int Fail(string message)
{
    Console.Error.WriteLine($"bench-train: {message}");
    return 2;
}

// Random weights at a trained model's scale: N(0, 0.02) matrices and kernels, zero biases, unit norm scales
// (uninitialised memory could hold NaNs or denormals, which change the speed being measured).
static void FillRandom(Module module, Generator? generator)
{
    using var noGrad = Autograd.NoGrad();
    foreach (var (name, p) in module.NamedParameters())
    {
        if (p.Dim > 1) Init.Normal_(p, 0, 0.02, generator);
        else if (name.EndsWith(".weight", StringComparison.Ordinal)) p.Fill_(1);
        else p.Zero_();
    }
}

// A field of /proc/self/status in KiB (Linux); 0 elsewhere.
static long ProcStatusKiB(string field)
{
    const string path = "/proc/self/status";
    if (!File.Exists(path)) return 0;
    foreach (var line in File.ReadLines(path))
        if (line.StartsWith(field + ":", StringComparison.Ordinal))
            return long.Parse(line.AsSpan(field.Length + 1).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
    return 0;
}

static string? FindRepositoryRoot()
{
    foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "models", "configs", "sd15", "unet", "config.json"))
                && Directory.Exists(Path.Combine(dir.FullName, "tests", "fixtures", "tiny-sd")))
                return dir.FullName;
    return null;
}

internal sealed record BenchCase(string Name, bool Sd15, bool Lora, bool Checkpointing, int WarmUp, int Repeats, bool EightBit = false);
