// bench-onnx: one UNet step through libtorch and through ONNX Runtime, printed as `name: value unit` lines and
// `NAME ratio: R` lines (R = ONNX Runtime's seconds ÷ libtorch's, so below 1 means ONNX Runtime is faster).
//   dotnet run -c Release --project tools/bench-onnx [-- --repeats N] [--threads N] [--tiny | --sd15] [--forms standard,fused]
//       [--level all|extended|basic|disabled] [--profile]
// What it measures: the demo model's UNet (models/demo, 64x64 → 8x8 latents) and an SD 1.5-shaped UNet with random weights
// (speed does not depend on the values) at 256x256 → 32x32 latents, batch 2 as classifier-free guidance runs it, fp32 on
// CPU, with our ONNX export in both attention forms (standard MatMul/Softmax, ONNX Runtime's fused MultiHeadAttention).
// Each ratio comes from one interleaved run (libtorch step, ONNX Runtime step, ...) so load on the machine hits both alike;
// each figure is the median of --repeats steps after a warm-up. Both engines get the same thread count (--threads, else
// the processor count). --tiny stops after the demo model (seconds, not minutes); --sd15 runs only the SD 1.5 shape.
// --profile adds ONNX Runtime's own per-operator profile of the measured steps: `NAME_profile_OP: ms/step` lines, the
// first place to look when making the graph faster.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Unet;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Onnx.Runtime;
using SdAppliance.Tools;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

string? Option(string name)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

var repeats = Option("--repeats") is { } r ? int.Parse(r, CultureInfo.InvariantCulture) : 5;
var threads = Option("--threads") is { } t ? int.Parse(t, CultureInfo.InvariantCulture) : Environment.ProcessorCount;
var level = (Option("--level") ?? "all") switch
{
    "all" => GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended" => GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic" => GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled" => GraphOptimizationLevel.ORT_DISABLE_ALL,
    var other => throw new ArgumentException($"--level {other}: all, extended, basic or disabled"),
};
var forms = (Option("--forms") ?? "standard,fused").Split(',').Select(f => f switch
{
    "standard" => AttentionForm.Standard,
    "fused" => AttentionForm.OnnxRuntimeFused,
    var other => throw new ArgumentException($"--forms {other}: standard and/or fused"),
}).ToArray();
var profile = args.Contains("--profile");
Engine.EnsureLoaded();
Engine.NumThreads = threads;
var root = RepositoryRoot();
var work = Directory.CreateTempSubdirectory("bench-onnx-").FullName;
Console.WriteLine($"libtorch: {Engine.TorchVersion}");
Console.WriteLine($"onnxruntime: {OrtEnv.Instance().GetVersionString()}");
Console.WriteLine($"threads: {threads}");
Console.WriteLine($"graph_optimization_level: {level}");
ReportLoad("load_average_start");

try
{
    using (Autograd.InferenceMode())
    {
        if (!args.Contains("--sd15"))
        {
            Progress("demo model");
            using var demo = ModelLoader.Load(Path.Combine(root, "models", "demo"));
            BenchUnet("demo_unet_64", demo.Unet, latentSize: 8);
            BenchImage("demo_txt2img_64_20steps", demo);
        }

        if (!args.Contains("--tiny"))
        {
            Progress("building a random SD 1.5 UNet");
            var config = DiffusersConfig.Load<UNet2DConditionConfig>(Path.Combine(root, "models", "configs", "sd15", "unet", "config.json"));
            using var sd15 = RandomWeights.Module(() => new UNet2DConditionModel(config));
            BenchUnet("sd15_unet_256", sd15, latentSize: 32);
        }
    }
    // ONNX Runtime's CUDA provider comes with its CUDA build (-p:OnnxRuntimeFlavor=cuda); the CUDA side of this comparison
    // is not written yet, so a CUDA build says so rather than timing the CPU twice.
    Console.WriteLine(OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider")
        ? "cuda: skipped: the CUDA comparison is not written yet"
        : "cuda: skipped: this ONNX Runtime has no CUDA provider (build with -p:OnnxRuntimeFlavor=cuda on a CUDA box)");
    ReportLoad("load_average_end");
}
finally
{
    Directory.Delete(work, recursive: true);
}
return 0;

// One UNet step [uncond, cond] at latentSize², libtorch against each attention form of the export, interleaved.
void BenchUnet(string name, UNet2DConditionModel unet, long latentSize)
{
    var crossDim = unet.Config.CrossAttentionDimPerBlock[0];
    using var g = new Generator(0);
    using var sample = torch.Randn([2, unet.Config.InChannels, latentSize, latentSize], g);
    using var context = torch.Randn([2, 77, crossDim], g);
    using var timestep = torch.Scalar(500, DType.Float32);
    void TorchStep()
    {
        using var output = unet.Forward(sample, timestep, context);
    }

    Report($"{name}_parameters", unet.Parameters().Sum(p => p.NumEl) / 1e6, "M");
    foreach (var attention in forms)
    {
        var form = attention == AttentionForm.Standard ? "standard" : "fused";
        Progress($"{name}: exporting ({form} attention)");
        var path = Path.Combine(work, $"{name}_{form}", "model.onnx");
        var sw = Stopwatch.StartNew();
        OnnxFile.Save(UNetOnnx.Build(unet, new OnnxExportOptions { Attention = attention }), path);
        GC.Collect();
        Report($"{name}_{form}_export", sw.Elapsed.TotalSeconds, "s");

        sw.Restart();
        using var options = new SessionOptions
        {
            GraphOptimizationLevel = level,
            IntraOpNumThreads = threads,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            // The prefix first: enabling profiling hands ONNX Runtime the prefix set at that moment.
            ProfileOutputPathPrefix = Path.Combine(work, $"{name}_{form}_profile"),
            EnableProfiling = profile,
        };
        using var session = new InferenceSession(path, options);
        Report($"{name}_{form}_session_load", sw.Elapsed.TotalSeconds, "s");
        using var ortSample = OrtValue.CreateTensorValueFromMemory(sample.ToArray<float>(), sample.Shape);
        using var ortContext = OrtValue.CreateTensorValueFromMemory(context.ToArray<float>(), context.Shape);
        using var ortTimestep = OrtValue.CreateTensorValueFromMemory(new[] { 500f }, []);
        var outputData = new float[sample.NumEl];
        using var ortOutput = OrtValue.CreateTensorValueFromMemory(outputData, sample.Shape);
        using var runOptions = new RunOptions();
        string[] inputNames = ["sample", "timestep", "encoder_hidden_states"];
        OrtValue[] inputs = [ortSample, ortTimestep, ortContext];
        void OrtStep() => session.Run(runOptions, inputNames, inputs, ["out_sample"], [ortOutput]);

        Progress($"{name}: {repeats} interleaved steps ({form} attention)");
        var (torchSeconds, ortSeconds) = Interleaved(TorchStep, OrtStep, repeats);
        Report($"{name}_{form}_libtorch_step", torchSeconds, "s/step");
        Report($"{name}_{form}_onnxruntime_step", ortSeconds, "s/step");
        Console.WriteLine($"{name}_{form} ratio: {ortSeconds / torchSeconds:F3}");
        if (profile) ReportProfile($"{name}_{form}", session.EndProfiling(), repeats + 2);
    }
}

// A whole txt2img (text encoder, 20 DPM++ 2M Karras steps with CFG, VAE decode) through the same pipeline on each engine,
// the ONNX side on the folder `sdapp convert --to onnx` writes, loaded as the appliance loads it.
void BenchImage(string name, StableDiffusionModel model)
{
    Progress($"{name}: exporting the pipeline");
    var folder = Path.Combine(work, name);
    OnnxPipelineExporter.Export(model, folder, new OnnxExportOptions());
    using var onnx = OnnxDiffusionModel.Load(folder, new OnnxRuntimeOptions { IntraOpThreads = threads });
    var request = new GenerationRequest
    {
        Prompt = "a red circle on a blue background",
        NegativePrompt = "blurry",
        Seed = 0,
        Steps = 20,
        Sampler = "DPM++ 2M Karras",
        CfgScale = 7,
    };
    var (torchPipeline, onnxPipeline) = (new StableDiffusionPipeline(model), new StableDiffusionPipeline(onnx));
    Progress($"{name}: {repeats} interleaved images");
    var (torchSeconds, ortSeconds) = Interleaved(() => torchPipeline.Generate(request), () => onnxPipeline.Generate(request), repeats);
    Report($"{name}_libtorch", torchSeconds, "s/image");
    Report($"{name}_onnxruntime", ortSeconds, "s/image");
    Console.WriteLine($"{name} ratio: {ortSeconds / torchSeconds:F3}");
}

// ONNX Runtime's profile (Chrome trace JSON): node time summed by operator type, per step, largest first.
void ReportProfile(string name, string file, int steps)
{
    using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file));
    var byOp = new Dictionary<string, double>();
    foreach (var e in json.RootElement.EnumerateArray())
    {
        if (e.GetProperty("cat").GetString() != "Node" || !e.TryGetProperty("args", out var a) || !a.TryGetProperty("op_name", out var op)) continue;
        if (!e.GetProperty("name").GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal)) continue;
        byOp[op.GetString()!] = byOp.GetValueOrDefault(op.GetString()!) + e.GetProperty("dur").GetDouble() / 1000;
    }
    foreach (var (op, ms) in byOp.OrderByDescending(p => p.Value).Take(15))
        Report($"{name}_profile_{op}", ms / steps, "ms/step");
}

// Medians of a and b over n alternating runs, after warm-ups.
static (double A, double B) Interleaved(Action a, Action b, int n)
{
    // Two warm-ups each: libtorch's first calls at new shapes also build its kernels' plans.
    for (var i = 0; i < 2; i++)
    {
        a();
        b();
    }
    var (sa, sb) = (new double[n], new double[n]);
    for (var i = 0; i < n; i++)
    {
        sa[i] = Seconds(a);
        sb[i] = Seconds(b);
    }
    return (Median(sa), Median(sb));
}

static double Seconds(Action body)
{
    var sw = Stopwatch.StartNew();
    body();
    return sw.Elapsed.TotalSeconds;
}

static double Median(double[] samples)
{
    Array.Sort(samples);
    var mid = samples.Length / 2;
    return samples.Length % 2 == 1 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
}

static void Report(string name, double value, string unit) => Console.WriteLine($"{name}: {value:G4} {unit}");

static void ReportLoad(string name)
{
    if (File.Exists("/proc/loadavg"))
        Report(name, double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture), "runnable");
}

// Long runs say what they are doing on stderr, so that stdout stays `name: value unit` only.
static void Progress(string what) => Console.Error.WriteLine($"# {what}");

static string RepositoryRoot()
{
    foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SdAppliance.sln"))) return dir.FullName;
    throw new DirectoryNotFoundException("bench-onnx needs the SdAppliance repository (models/demo, models/configs): run it from inside it");
}

