using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Tools.DemoData;
using SdAppliance.Tools.TrainDemo;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;
using SdAppliance.Training;
using SdAppliance.Training.Runs;

// train-demo --out models/demo [--work DIR] [--from STAGE] [--vae-steps N] [--unet-steps N] ...
// The whole recipe of the demo model, stage by stage: dataset and BPE vocabulary, VAE from scratch, UNet +
// text encoder from scratch with the project's Trainer, the VAE's decoder fine-tuned on the frozen latent
// space, exported as a diffusers folder plus a single file.
var options = new Dictionary<string, string>(StringComparer.Ordinal)
{
    ["out"] = "models/demo",
    ["work"] = Path.Combine(Path.GetTempPath(), "sdapp-train-demo"),
    // Re-run from this stage, reusing the earlier stages' outputs in --work.
    ["from"] = "data",
    ["count"] = "4096",
    ["seed"] = "1",
    ["vae-steps"] = "4000",
    ["vae-batch"] = "16",
    ["vae-lr"] = "2e-3",
    // After the UNet: the decoder alone, which leaves the latent space the UNet learned unchanged.
    ["decoder-steps"] = "1500",
    ["unet-steps"] = "5000",
    ["unet-batch"] = "32",
    ["unet-lr"] = "1e-3",
    ["ema-decay"] = "0.995",
    ["threads"] = "0",
};
string[] stages = ["data", "vae", "unet", "decoder", "export"];
for (var i = 0; i < args.Length; i++)
{
    if (!args[i].StartsWith("--", StringComparison.Ordinal) || !options.ContainsKey(args[i][2..]) || i + 1 >= args.Length)
    {
        Console.Error.WriteLine($"usage: train-demo {string.Join(" ", options.Select(o => $"[--{o.Key} {o.Value}]"))}");
        return 2;
    }
    options[args[i][2..]] = args[++i];
}
if (!stages.Contains(options["from"]))
{
    Console.Error.WriteLine($"--from {options["from"]}: not a stage; the stages are {string.Join(", ", stages)}");
    return 2;
}
int Int(string name) => int.Parse(options[name], CultureInfo.InvariantCulture);
double Double(string name) => double.Parse(options[name], CultureInfo.InvariantCulture);
bool Runs(string stage) => Array.IndexOf(stages, stage) >= Array.IndexOf(stages, options["from"]);

if (Int("threads") > 0) Engine.NumThreads = Int("threads");
var seed = Int("seed");
var work = Path.GetFullPath(options["work"]);
var output = Path.GetFullPath(options["out"]);
var data = Path.Combine(work, "data");
var init = Path.Combine(work, "init");
var run = Path.Combine(work, "run");
var timingsFile = Path.Combine(work, "timings.json");
var timings = !Runs("data") && File.Exists(timingsFile) ? JsonNode.Parse(File.ReadAllText(timingsFile))!.AsObject() : new JsonObject();
var total = Stopwatch.StartNew();
var clock = Stopwatch.StartNew();
void Log(string message) => Console.WriteLine($"[{total.Elapsed:hh\\:mm\\:ss}] {message}");
void Done(string stage, string summary)
{
    timings[stage + "_s"] = Math.Round(clock.Elapsed.TotalSeconds, 1);
    File.WriteAllText(timingsFile, timings.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    Log($"{stage}: {summary} in {clock.Elapsed.TotalSeconds:F0} s");
    clock.Restart();
}
Log($"engine: libtorch {Engine.TorchVersion}, {Engine.NumThreads} threads");

// (a) the dataset and (b) the vocabulary, from every caption the model will ever see in training (no hearts)
if (Runs("data"))
{
    if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
    var scenes = DemoScene.Dataset(seed, Int("count"), Shapes.Base);
    DemoScene.Write(scenes, data);
    var (vocab, merges) = BpeLearner.Learn(scenes.Select(s => s.Caption), maxMerges: 400);
    BpeLearner.Write(Path.Combine(init, "tokenizer"), vocab, merges);
    DemoArchitecture.WriteSchedulerAndIndex(init);
    Done("data", $"{scenes.Count} images, tokenizer of {vocab.Count} tokens ({merges.Count} merges)");
}

// (c) the VAE from random weights
if (Runs("vae"))
{
    var vaeConfig = DemoArchitecture.Vae;
    using var vaeGenerator = new Generator((ulong)seed);
    using var vae = new AutoencoderKL(vaeConfig, new ModuleOptions(Generator: vaeGenerator));
    var loss = VaeTraining.Train(vae, seed, Int("vae-steps"), Int("vae-batch"), Double("vae-lr"), fresh: true, Log);
    var scaling = VaeTraining.ScalingFactor(vae, DemoScene.Dataset(seed, 512, Shapes.Base));
    vaeConfig = vaeConfig with { ScalingFactor = Math.Round(scaling, 5) };
    timings["vae_final_loss"] = Math.Round(loss, 5);
    timings["vae_scaling_factor"] = vaeConfig.ScalingFactor;
    DemoArchitecture.WriteComponent(init, "vae", vaeConfig.ToJson(), "AutoencoderKL", vae, "diffusion_pytorch_model.safetensors");
    Done("vae", $"{Int("vae-steps")} steps, loss {loss:F4}, scaling factor {vaeConfig.ScalingFactor}");
}

// (d) UNet + text encoder jointly, with the project's Trainer, on latents of the VAE just trained
if (Runs("unet"))
{
    if (Directory.Exists(run)) Directory.Delete(run, recursive: true);
    // The random UNet and text encoder the Trainer starts from.
    var textConfig = DemoArchitecture.TextEncoder(ClipTokenizer.FromFolder(Path.Combine(init, "tokenizer")).VocabSize);
    torch.ManualSeed((ulong)seed + 1);
    using (var textEncoder = new ClipTextModel(textConfig))
    {
        var json = JsonNode.Parse(textConfig.ToJson())!.AsObject();
        json["architectures"] = new JsonArray("CLIPTextModel");
        json["model_type"] = "clip_text_model";
        json["torch_dtype"] = "float32";
        DemoArchitecture.WriteComponent(init, "text_encoder", json.ToJsonString(), null, textEncoder, "model.safetensors");
    }
    using (var unetGenerator = new Generator((ulong)seed + 2))
    using (var unet = new UNet2DConditionModel(DemoArchitecture.Unet, new ModuleOptions(Generator: unetGenerator)))
        DemoArchitecture.WriteComponent(init, "unet", DiffusersConfig.ToJson(DemoArchitecture.Unet), "UNet2DConditionModel", unet, "diffusion_pytorch_model.safetensors");
    var config = new TrainingConfig
    {
        Method = "finetune",
        Model = init,
        Data = data,
        Output = run,
        OutputName = "demo",
        Resolution = DemoScene.ImageSize,
        CaptionDropoutRate = 0.1,
        TrainBatchSize = Int("unet-batch"),
        MaxTrainSteps = Int("unet-steps"),
        LearningRate = Double("unet-lr"),
        LrScheduler = "cosine",
        LrWarmupSteps = Math.Min(200, Int("unet-steps") / 10),
        TrainTextEncoder = true,
        UseEma = true,
        EmaDecay = Double("ema-decay"),
        Seed = seed,
        SaveDiffusers = true,
        SaveEveryNSteps = 1000,
        SaveLastK = 1,
    };
    var report = Trainer.Train(config, new Progress(e =>
    {
        if (e.Step % 100 != 0 && e.Step != e.MaxSteps) return;
        Log($"unet step {e.Step}/{e.MaxSteps} loss {e.SmoothedLoss:F4} lr {e.LearningRate:G3} {e.ItemsPerSecond:F2} it/s");
    }));
    timings["unet_final_smoothed_loss"] = Math.Round(report.FinalSmoothedLoss, 5);
    Done("unet", $"{report.Steps} steps, smoothed loss {report.FinalSmoothedLoss:F4}");
}

// (e) the decoder alone (SD's ft-MSE recipe): sharper pictures from the same latent space
if (Runs("decoder"))
{
    var folder = Path.Combine(init, "vae");
    var vaeConfig = AutoencoderKLConfig.Load(Path.Combine(folder, "config.json"));
    using var vae = new AutoencoderKL(vaeConfig);
    var weights = TensorFiles.Load(Path.Combine(folder, "diffusion_pytorch_model.safetensors"));
    vae.LoadStateDict(weights);
    foreach (var t in weights.Values) t.Dispose();
    var loss = VaeTraining.Train(vae, seed + 2, Int("decoder-steps"), Int("vae-batch"), Double("vae-lr") / 4, fresh: false, Log, decoderOnly: true);
    timings["vae_decoder_final_loss"] = Math.Round(loss, 5);
    DemoArchitecture.WriteComponent(work, "vae-decoder", vaeConfig.ToJson(), "AutoencoderKL", vae, "diffusion_pytorch_model.safetensors");
    Done("decoder", $"{Int("decoder-steps")} steps, loss {loss:F4}");
}

// (f) the model folder, with the fine-tuned decoder, and its single-file copy (original key layout), built
// beside the old one and swapped in whole; the model card (README.md) is carried over.
var staging = output + ".new";
if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
CopyFolder(Path.Combine(run, "demo-diffusers"), staging);
File.Copy(Path.Combine(work, "vae-decoder", "diffusion_pytorch_model.safetensors"), Path.Combine(staging, "vae", "diffusion_pytorch_model.safetensors"), overwrite: true);
using (var final = SdAppliance.Models.Loading.ModelLoader.Load(staging))
    SdAppliance.Training.Exports.ModelExport.SaveSingleFile(final, Path.Combine(staging, "demo.safetensors"), half: false);
var card = Path.Combine(output, "README.md");
if (File.Exists(card)) File.Copy(card, Path.Combine(staging, "README.md"));
if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
Directory.Move(staging, output);
timings["options"] = JsonSerializer.SerializeToNode(options);
Done("export", $"wrote {output}");
Log($"timings in {timingsFile}");
return 0;

static void CopyFolder(string from, string to)
{
    Directory.CreateDirectory(to);
    foreach (var file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
    foreach (var dir in Directory.GetDirectories(from)) CopyFolder(dir, Path.Combine(to, Path.GetFileName(dir)));
}

/// <summary>Reports Trainer events synchronously (System.Progress would post them to the thread pool).</summary>
internal sealed class Progress(Action<TrainingEvent> report) : IProgress<TrainingEvent>
{
    public void Report(TrainingEvent value) => report(value);
}
