using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;
using SdAppliance.Tools.DemoData;
using SdAppliance.Tools.TrainDemo;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Optim;
using SdAppliance.Torch.Serialization;
using SdAppliance.Training;
using SdAppliance.Training.Runs;
using TorchOps = SdAppliance.Torch.Torch;

// train-demo --out models/demo [--work DIR] [--count N] [--vae-steps N] [--unet-steps N] ...
// The whole recipe of the demo model: dataset, BPE vocabulary, VAE from scratch, then UNet + text
// encoder from scratch with the project's Trainer, exported as a diffusers folder.
var options = new Dictionary<string, string>(StringComparer.Ordinal)
{
    ["out"] = "models/demo",
    ["work"] = Path.Combine(Path.GetTempPath(), "sdapp-train-demo"),
    ["count"] = "4096",
    ["seed"] = "1",
    ["vae-steps"] = "1200",
    ["vae-batch"] = "16",
    ["vae-lr"] = "2e-3",
    // A warm restart: the second phase's steps at half the rate, on new scenes.
    ["vae-steps2"] = "1200",
    // A third phase after the UNet: the decoder alone, which leaves the latent space the UNet learned unchanged.
    ["decoder-steps"] = "1000",
    // Rounds of decoder-steps each, every round a warm restart on new scenes.
    ["decoder-rounds"] = "2",
    ["unet-steps"] = "2500",
    ["unet-batch"] = "32",
    ["unet-lr"] = "1e-3",
    ["ema-decay"] = "0.995",
    // Then the Trainer's resume to unet-steps + this: the cosine schedule restarts from its stretched curve.
    ["unet-extra-steps"] = "1500",
    ["threads"] = "0",
    // "all"; "unet": reuse the dataset, tokenizer and trained VAE in --work and redo only the denoiser;
    // "vae2": also redo the VAE's second phase from the first phase's weights kept in --work;
    // "decoder": only the decoder phase; "unet-more": only the UNet's resumed steps and the export.
    ["stage"] = "all",
};
for (var i = 0; i < args.Length; i++)
{
    if (!args[i].StartsWith("--", StringComparison.Ordinal) || !options.ContainsKey(args[i][2..]) || i + 1 >= args.Length)
    {
        Console.Error.WriteLine($"usage: train-demo {string.Join(" ", options.Select(o => $"[--{o.Key} {o.Value}]"))}");
        return 2;
    }
    options[args[i][2..]] = args[++i];
}
int Int(string name) => int.Parse(options[name], CultureInfo.InvariantCulture);
double Double(string name) => double.Parse(options[name], CultureInfo.InvariantCulture);

if (Int("threads") > 0) Engine.NumThreads = Int("threads");
var seed = Int("seed");
var work = Path.GetFullPath(options["work"]);
var output = Path.GetFullPath(options["out"]);
var timings = new JsonObject();
var total = Stopwatch.StartNew();
void Log(string message) => Console.WriteLine($"[{total.Elapsed:hh\\:mm\\:ss}] {message}");

var clock = Stopwatch.StartNew();
var data = Path.Combine(work, "data");
var init = Path.Combine(work, "init");
var timingsFile = Path.Combine(work, "timings.json");
if (options["stage"] is "unet" or "vae2" or "unet-more")
    timings = File.Exists(timingsFile) ? JsonNode.Parse(File.ReadAllText(timingsFile))!.AsObject() : new JsonObject();
if (options["stage"] == "all")
    Prepare();
if (options["stage"] is "all" or "vae2")
    SecondVaePhase();
if (options["stage"] == "decoder")
{
    DecoderPhase();
    return 0;
}

void DecoderPhase()
{
    clock.Restart();
    var vaeConfig = AutoencoderKLConfig.Load(Path.Combine(init, "vae", "config.json"));
    using var vae = new AutoencoderKL(vaeConfig);
    var weights = Safetensors.Load(Path.Combine(init, "vae", "diffusion_pytorch_model.safetensors"));
    vae.LoadStateDict(weights);
    foreach (var t in weights.Values) t.Dispose();
    var loss = 0.0;
    for (var round = 0; round < Int("decoder-rounds"); round++)
        loss = VaeTraining.Train(vae, seed + 2 + round, Int("decoder-steps"), Int("vae-batch"), Double("vae-lr") / 4, fresh: false, Log, decoderOnly: true);
    timings["decoder_s"] = Math.Round(clock.Elapsed.TotalSeconds, 1);
    timings["vae_decoder_final_loss"] = Math.Round(loss, 5);
    Log($"vae decoder phase: {Int("decoder-rounds")} x {Int("decoder-steps")} steps in {clock.Elapsed.TotalSeconds:F0} s, loss {loss:F4}");
    DemoArchitecture.WriteComponent(work, "vae-decoder", vaeConfig.ToJson(), "AutoencoderKL", vae, "diffusion_pytorch_model.safetensors");
    File.WriteAllText(Path.Combine(work, "vae-decoder", "timings.json"), timings.ToJsonString());
}

void SecondVaePhase()
{
    clock.Restart();
    var folder = Path.Combine(init, "vae");
    var phase1 = Path.Combine(work, "vae-phase1");
    if (options["stage"] == "all")
    {
        if (Directory.Exists(phase1)) Directory.Delete(phase1, recursive: true);
        Directory.Move(folder, phase1);
    }
    var vaeConfig = AutoencoderKLConfig.Load(Path.Combine(phase1, "config.json"));
    using var vae = new AutoencoderKL(vaeConfig);
    var weights = Safetensors.Load(Path.Combine(phase1, "diffusion_pytorch_model.safetensors"));
    vae.LoadStateDict(weights);
    foreach (var t in weights.Values) t.Dispose();
    var vaeLoss = VaeTraining.Train(vae, seed + 1, Int("vae-steps2"), Int("vae-batch"), Double("vae-lr") / 2, fresh: false, Log);
    var scenes = DemoScene.Dataset(seed, Int("count"), Shapes.Base);
    vaeConfig = vaeConfig with { ScalingFactor = Math.Round(VaeTraining.ScalingFactor(vae, scenes.Take(512).ToList()), 5) };
    timings["vae2_s"] = Math.Round(clock.Elapsed.TotalSeconds, 1);
    timings["vae_final_loss"] = Math.Round(vaeLoss, 5);
    timings["vae_scaling_factor"] = vaeConfig.ScalingFactor;
    Log($"vae phase 2: {Int("vae-steps2")} steps in {clock.Elapsed.TotalSeconds:F0} s, loss {vaeLoss:F4}, scaling factor {vaeConfig.ScalingFactor}");
    DemoArchitecture.WriteComponent(init, "vae", vaeConfig.ToJson(), "AutoencoderKL", vae, "diffusion_pytorch_model.safetensors");
    File.WriteAllText(timingsFile, timings.ToJsonString());
}

void Prepare()
{
    // (a) the dataset
    if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
    var scenes = DemoScene.Dataset(seed, Int("count"), Shapes.Base);
    DemoScene.Write(scenes, data);
    timings["dataset_s"] = Math.Round(clock.Elapsed.TotalSeconds, 1);
    Log($"dataset: {scenes.Count} images in {clock.Elapsed.TotalSeconds:F0} s");

    // (b) the vocabulary, from every caption the model will ever see in training (the heart is not among them)
    var (vocab, merges) = BpeLearner.Learn(scenes.Select(s => s.Caption), maxMerges: 400);
    BpeLearner.Write(Path.Combine(init, "tokenizer"), vocab, merges);
    Log($"tokenizer: {merges.Count} merges, {vocab.Count} tokens");

    // (c) the VAE from random weights
    clock.Restart();
    var vaeConfig = DemoArchitecture.Vae;
    using var vaeGenerator = new Generator((ulong)seed);
    using var vae = new AutoencoderKL(vaeConfig, new ModuleOptions(Generator: vaeGenerator));
    var vaeLoss = VaeTraining.Train(vae, seed, Int("vae-steps"), Int("vae-batch"), Double("vae-lr"), fresh: true, Log);
    var scaling = VaeTraining.ScalingFactor(vae, scenes.Take(512).ToList());
    vaeConfig = vaeConfig with { ScalingFactor = Math.Round(scaling, 5), SampleSize = [DemoScene.ImageSize] };
    timings["vae_s"] = Math.Round(clock.Elapsed.TotalSeconds, 1);
    timings["vae_final_loss"] = Math.Round(vaeLoss, 5);
    timings["vae_scaling_factor"] = vaeConfig.ScalingFactor;
    Log($"vae: {Int("vae-steps")} steps in {clock.Elapsed.TotalSeconds:F0} s, loss {vaeLoss:F4}, scaling factor {vaeConfig.ScalingFactor}");
    DemoArchitecture.WriteComponent(init, "vae", vaeConfig.ToJson(), "AutoencoderKL", vae, "diffusion_pytorch_model.safetensors");

    // random UNet and text encoder, and the rest of the diffusers folder
    var textConfig = DemoArchitecture.TextEncoder(vocab.Count);
    TorchOps.ManualSeed((ulong)seed + 1);
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
    DemoArchitecture.WriteSchedulerAndIndex(init);
    File.WriteAllText(timingsFile, timings.ToJsonString());
}

// (d) UNet + text encoder jointly, with the project's Trainer
clock.Restart();
var run = Path.Combine(work, "run");
TrainingReport report;
if (options["stage"] == "unet-more")
{
    report = Resume();
}
else
{
    if (Directory.Exists(run)) Directory.Delete(run, recursive: true);
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
    report = Trainer.Train(config, new Progress(e =>
    {
        if (e.Step % 50 != 0 && e.Step != e.MaxSteps) return;
        Log($"unet step {e.Step}/{e.MaxSteps} loss {e.SmoothedLoss:F4} lr {e.LearningRate:G3} {e.ItemsPerSecond:F2} it/s");
    }));
    if (Int("unet-extra-steps") > 0) report = Resume();
}

TrainingReport Resume() => Trainer.Resume(run, Int("unet-steps") + Int("unet-extra-steps"), new Progress(e =>
{
    if (e.Step % 50 != 0 && e.Step != e.MaxSteps) return;
    Log($"unet step {e.Step}/{e.MaxSteps} loss {e.SmoothedLoss:F4} lr {e.LearningRate:G3} {e.ItemsPerSecond:F2} it/s");
}));
timings["unet_s"] = Math.Round(clock.Elapsed.TotalSeconds, 1);
timings["unet_final_smoothed_loss"] = Math.Round(report.FinalSmoothedLoss, 5);
Log($"unet: {report.Steps} steps in {clock.Elapsed.TotalSeconds:F0} s, smoothed loss {report.FinalSmoothedLoss:F4}");

if (options["stage"] == "all") DecoderPhase();

// (e) the model folder, with the fine-tuned decoder
var exported = Path.Combine(run, "demo-diffusers");
if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
CopyFolder(exported, output);
var decoder = Path.Combine(work, "vae-decoder", "diffusion_pytorch_model.safetensors");
if (File.Exists(decoder)) File.Copy(decoder, Path.Combine(output, "vae", "diffusion_pytorch_model.safetensors"), overwrite: true);
// The single-file copy (original key layout) of exactly these weights; it fits the size budget.
using (var final = SdAppliance.Models.Loading.ModelLoader.Load(output))
    SdAppliance.Training.Exports.ModelExport.SaveSingleFile(final, Path.Combine(output, "demo.safetensors"), half: false);
// A "unet" stage run adds the earlier stages' recorded times.
double Recorded(string key) => timings[key]?.GetValue<double>() ?? 0;
timings["total_s"] = Math.Round(total.Elapsed.TotalSeconds
    + (options["stage"] != "all" ? Recorded("dataset_s") + Recorded("vae_s") : 0) + (options["stage"] == "unet" ? Recorded("vae2_s") : 0), 1);
timings["options"] = JsonSerializer.SerializeToNode(options);
File.WriteAllText(timingsFile, timings.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
Log($"wrote {output}; timings in {timingsFile}");
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
