// bench-vs-torch: our binding against PyTorch on the same libtorch, printed as `name: value unit` lines and
// `NAME ratio: R` (our median seconds ÷ PyTorch's; below 1 we are faster).
//   dotnet run -c Release --project tools/bench-vs-torch [-- --quick] [--repeats N] [--threads N] [--python PATH] [--only A,B]
// The PyTorch side is bench_torch.py beside this file, run by Debian's python3-torch (the same libtorch 1.13
// build as libtorch-dev): a child process that builds the same models and runs the same calls; the two take
// turns call by call (ours, theirs, ours, ...), so that other load on the machine hits both alike. Each side
// times its own call (the pipe is not counted). Cases, with random weights (speed does not depend on them):
//   unet_forward  the SD 1.5 UNet (models/configs/sd15) on [2, 4, 32, 32] latents (256x256, [uncond, cond]),
//                 [2, 77, 768] text, inference mode
//   vae_decode    the SD 1.5 VAE decoding one [1, 4, 32, 32] latent to 256x256
//   lora_step     a LoRA training step on that UNet: kohya's network (dim 16, alpha 8) on every Linear/Conv2d of
//                 its attention blocks, batch 1, MSE against noise, backward, AdamW (lr 1e-4), zero grads
//   adamw_step    AdamW alone over that LoRA's tensors (hundreds of small ones), against PyTorch's default on CPU
//                 (its single-tensor loop) and, as adamw_step_foreach, its _foreach path
// --only runs the named cases alone (unet_forward, vae_decode, adamw_step, lora_step).
// --quick takes a quarter of every channel count (SD 1.5's 860M-parameter UNet takes seconds per call on a small CPU).
// The child inherits this process's environment, OpenMP wait policy included, and runs on the same thread count; the
// engine's malloc settings (HeapPolicy, made with mallopt) stay in this process, and the header says so.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Optim;
using SdAppliance.Training.Networks;
using F = SdAppliance.Torch.Functional;

string? Arg(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

var quick = args.Contains("--quick");
// Full size, a LoRA step of SD 1.5 takes about a minute on a busy 2-core machine: one timed turn each by default.
var repeats = int.Parse(Arg("--repeats") ?? (quick ? "5" : "1"), CultureInfo.InvariantCulture);
var python = Arg("--python") ?? "/usr/bin/python3";
var only = Arg("--only")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
bool Selected(string name) => only is null || only.Contains(name);
Engine.EnsureLoaded();
if (Arg("--threads") is { } threadArg) Engine.NumThreads = int.Parse(threadArg, CultureInfo.InvariantCulture);
var threads = Engine.NumThreads;

if (FindRepositoryRoot() is not { } root) return Fail("run from the repository (models/configs/sd15 and tools/bench-vs-torch are read from it)");
var sd15 = Path.Combine(root, "models", "configs", "sd15");
const int LatentSize = 32;
const int Batch = 2;
const int LoraRank = 16;
const double LoraAlpha = 8;

// The configs as the files say them; under --quick each channel count is a quarter, rounded down to a multiple of
// the norm groups (GroupNorm needs it). Both sides build from these objects.
JsonObject Config(string part)
{
    var json = JsonNode.Parse(File.ReadAllText(Path.Combine(sd15, part, "config.json")))!.AsObject();
    var groups = json["norm_num_groups"]!.GetValue<int>();
    if (quick)
        json["block_out_channels"] = new JsonArray([.. json["block_out_channels"]!.AsArray()
            .Select(c => (JsonNode)Math.Max(groups, c!.GetValue<int>() / 4 / groups * groups))]);
    return json;
}
var unetJson = Config("unet");
var vaeJson = Config("vae");

Console.WriteLine($"libtorch: {Engine.TorchVersion}");
Console.WriteLine($"threads: {threads}");
Console.WriteLine($"omp_wait_policy: {Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") ?? "libgomp default"}");
// The engine's malloc settings are its own (mallopt in this process, HeapPolicy); the child has glibc's defaults unless
// the environment tunes malloc, which both then share.
Console.WriteLine($"heap: {(HeapPolicy.Settings(Environment.GetEnvironmentVariable).Count > 0 ? "ours keeps blocks up to 1 GiB in glibc's heap (HeapPolicy), PyTorch's has glibc's defaults" : "glibc as the environment tunes it, both sides")}");
Console.WriteLine($"size: {(quick ? "quick (a quarter of SD 1.5's channels)" : "SD 1.5")}, unet {unetJson["block_out_channels"]!.ToJsonString()}, vae {vaeJson["block_out_channels"]!.ToJsonString()}");
Console.WriteLine($"repeats: {repeats} per side per case, after one warm-up each");
ReportLoad("load_average_start");

using var generator = new Generator(0);
torch.ManualSeed(0);
Progress("building our models");
UNet2DConditionModel unet;
using (Init.Skip()) unet = new UNet2DConditionModel(DiffusersConfig.Parse<UNet2DConditionConfig>(unetJson.ToJsonString()));
FillRandom(unet, generator);
unet.Eval().Freeze();
AutoencoderKL vae;
using (Init.Skip()) vae = new AutoencoderKL(DiffusersConfig.Parse<AutoencoderKLConfig>(vaeJson.ToJsonString()));
FillRandom(vae, generator);
vae.Eval().Freeze();

// The AdamW case's tensors: the LoRA's own shapes, from a network on a UNet of the same config.
long[][] loraShapes;
using (var shapesNetwork = LoraNetwork.Create(unet, MetaTextEncoder(), null, new LoraNetworkOptions(NetworkDim: LoraRank, NetworkAlpha: LoraAlpha), generator))
    loraShapes = [.. shapesNetwork.UnetParameters.Select(p => p.Shape)];

Progress("starting PyTorch");
using var torchSide = TorchSide.Start(python, Path.Combine(root, "tools", "bench-vs-torch", "bench_torch.py"));
var setup = new JsonObject
{
    ["threads"] = threads,
    ["latent_size"] = LatentSize,
    ["batch"] = Batch,
    ["unet"] = unetJson,
    ["vae"] = vaeJson,
    ["lora_rank"] = LoraRank,
    ["lora_alpha"] = LoraAlpha,
    ["adamw_shapes"] = new JsonArray([.. loraShapes.Select(s => (JsonNode)new JsonArray([.. s.Select(d => (JsonNode)d)]))]),
};
var counts = torchSide.Command("setup " + setup.ToJsonString());
var adamwParams = loraShapes.Select(s => torch.Randn(s, generator).DetachFromDisposeScope().RequiresGrad_()).ToArray();
// Both sides must have built the same models: the parameter counts say so (or the ratios would mean nothing).
SameCount("unet", unet.Parameters().Sum(p => p.NumEl), counts);
SameCount("vae_decoder", vae.NamedParameters().Where(p => !p.Name.StartsWith("encoder.", StringComparison.Ordinal) && !p.Name.StartsWith("quant_conv.", StringComparison.Ordinal))
    .Sum(p => p.Parameter.NumEl), counts);
SameCount("adamw", adamwParams.Sum(p => p.NumEl), counts);
Report("unet_parameters", unet.Parameters().Sum(p => p.NumEl) / 1e6, "M");
Report("lora_tensors", loraShapes.Length, "tensors");
Report("lora_parameters", loraShapes.Sum(s => s.Aggregate(1L, (a, b) => a * b)) / 1e6, "M");

var ratios = new List<(string Name, double Ratio)>();

// Ours and theirs in turns; medians of the timed calls.
void Compare(string name, Action ours, string? theirs = null)
{
    theirs ??= name;
    if (!Selected(name)) return;
    Progress($"{name}: {repeats} turns");
    ours();
    torchSide.Run(theirs);
    var a = new double[repeats];
    var b = new double[repeats];
    for (var i = 0; i < repeats; i++)
    {
        var sw = Stopwatch.StartNew();
        ours();
        a[i] = sw.Elapsed.TotalSeconds;
        b[i] = torchSide.Run(theirs);
    }
    var (oursMedian, theirsMedian) = (Median(a), Median(b));
    Report($"{name}_ours", oursMedian, "s");
    Report($"{theirs}_pytorch", theirsMedian, "s");
    ratios.Add((theirs == name ? name : $"{name}_vs_{theirs}", oursMedian / theirsMedian));
}

{
    using var inference = Autograd.InferenceMode();
    using var x = torch.Randn([Batch, 4, LatentSize, LatentSize], generator);
    using var context = torch.Randn([Batch, 77, unet.Config.CrossAttentionDimPerBlock[0]], generator);
    Compare("unet_forward", () => { using var _ = unet.Forward(x, 500, context); });
    using var z = torch.Randn([1, 4, LatentSize, LatentSize], generator);
    Compare("vae_decode", () => { using var _ = vae.Decode(z); });
}
vae.Dispose();

{
    foreach (var p in adamwParams) p.Grad = torch.RandnLike(p, generator).DetachFromDisposeScope();
    using var optimizer = new AdamW(adamwParams, new AdamWOptions { Lr = 1e-4 });
    Compare("adamw_step", optimizer.Step);
    Compare("adamw_step", optimizer.Step, "adamw_step_foreach");
}

if (Selected("lora_step"))
{
    Progress("attaching the LoRA on both sides");
    using var textEncoder = MetaTextEncoder();
    unet.Train();
    using var lora = LoraNetwork.Create(unet, textEncoder, null, new LoraNetworkOptions(NetworkDim: LoraRank, NetworkAlpha: LoraAlpha), generator);
    var trainable = lora.UnetParameters;
    SameCount("lora", trainable.Sum(p => p.NumEl), torchSide.Command("lora"));
    using var optimizer = new AdamW(trainable, new AdamWOptions { Lr = 1e-4 });
    using var noisy = torch.Randn([1, 4, LatentSize, LatentSize], generator);
    using var target = torch.Randn([1, 4, LatentSize, LatentSize], generator);
    using var text = torch.Randn([1, 77, unet.Config.CrossAttentionDimPerBlock[0]], generator);
    Compare("lora_step", () =>
    {
        using var scope = torch.NewDisposeScope();
        F.MseLoss(unet.Forward(noisy, 500, text), target).Backward();
        optimizer.Step();
        optimizer.ZeroGrad();
    });
}
unet.Dispose();
foreach (var p in adamwParams) p.Dispose();

foreach (var (name, ratio) in ratios) Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name} ratio: {ratio:F2}"));
ReportLoad("load_average_end");
return 0;

// LoRA needs the text encoder only to name its modules when it trains it (not here): shapes alone will do.
static ClipTextModel MetaTextEncoder() => new(ClipTextConfig.ClipVitL14, device: Device.Meta);

static void SameCount(string name, long ours, IReadOnlyDictionary<string, long> theirs)
{
    if (!theirs.TryGetValue(name, out var count) || count != ours)
        throw new InvalidOperationException($"the PyTorch side's {name} has {(theirs.TryGetValue(name, out var c) ? c : 0)} parameters, ours {ours}: bench_torch.py builds another model");
}

static double Median(double[] values)
{
    var sorted = values.Order().ToArray();
    var mid = sorted.Length / 2;
    return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

static void Report(string name, double value, string unit) =>
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name}: {value:G4} {unit}"));

static void ReportLoad(string name)
{
    if (File.Exists("/proc/loadavg"))
        Report(name, double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture), "runnable");
}

// Long runs say what they are doing on stderr, so that stdout stays `name: value unit` only.
static void Progress(string what) => Console.Error.WriteLine($"# {what}");

static int Fail(string message)
{
    Console.Error.WriteLine($"bench-vs-torch: {message}");
    return 2;
}

// Random weights at a trained model's scale, as bench_torch.py draws them: N(0, 0.02) matrices and kernels,
// zero biases, unit norm scales (uninitialised memory could hold NaNs or denormals, which change the speed).
static void FillRandom(Module module, Generator generator)
{
    using var noGrad = Autograd.NoGrad();
    foreach (var (name, p) in module.NamedParameters())
    {
        if (p.Dim > 1) Init.Normal_(p, 0, 0.02, generator);
        else if (name.EndsWith(".weight", StringComparison.Ordinal)) p.Fill_(1);
        else p.Zero_();
    }
}

static string? FindRepositoryRoot()
{
    foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "tools", "bench-vs-torch", "bench_torch.py"))) return dir.FullName;
    return null;
}

/// <summary>The PyTorch process: one command line in, one answer line out.</summary>
internal sealed class TorchSide : IDisposable
{
    private readonly Process process;

    private TorchSide(Process process) => this.process = process;

    public static TorchSide Start(string python, string script)
    {
        var start = new ProcessStartInfo(python)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(script);
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {python}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"could not start {python} ({e.Message}): install Python 3 and PyTorch (Debian: apt-get install python3-torch), or give --python PATH", e);
        }
        // A missing torch module shows on stderr before the first answer; keep it for the message.
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is { } line) Console.Error.WriteLine($"# pytorch: {line}");
        };
        process.BeginErrorReadLine();
        return new TorchSide(process);
    }

    /// <summary>Sends a setup command; returns the parameter counts of its "ready" answer.</summary>
    public IReadOnlyDictionary<string, long> Command(string line)
    {
        var answer = Ask(line);
        if (!answer.StartsWith("ready", StringComparison.Ordinal)) throw new InvalidOperationException($"PyTorch answered '{answer}' to a setup command");
        return answer.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(kv => kv.Split('='))
            .ToDictionary(kv => kv[0], kv => long.Parse(kv[1], CultureInfo.InvariantCulture));
    }

    /// <summary>Runs one call of a case; returns the seconds PyTorch timed it at.</summary>
    public double Run(string name)
    {
        var answer = Ask("run " + name).Split(' ');
        if (answer.Length != 2 || answer[0] != name) throw new InvalidOperationException($"PyTorch answered '{string.Join(' ', answer)}' to run {name}");
        return double.Parse(answer[1], CultureInfo.InvariantCulture);
    }

    private string Ask(string line)
    {
        process.StandardInput.WriteLine(line);
        process.StandardInput.Flush();
        return process.StandardOutput.ReadLine()
            ?? throw new InvalidOperationException(
                "the PyTorch side ended (its messages are above); if it says No module named 'torch': apt-get install python3-torch " +
                "(Debian's PyTorch on the same libtorch), or give --python PATH to a Python that has torch");
    }

    public void Dispose()
    {
        if (!process.HasExited)
        {
            process.StandardInput.WriteLine("quit");
            process.StandardInput.Flush();
            if (!process.WaitForExit(10_000)) process.Kill();
        }
        process.Dispose();
    }
}
