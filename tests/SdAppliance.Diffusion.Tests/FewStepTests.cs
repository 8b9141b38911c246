using System.Text.Json.Nodes;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// Turbo, LCM and the LCM-LoRA: told from the files alone (copies of the tiny model's configs, edited as the real
/// models ship them), LCM's guidance embedding against diffusers' formula, trailing timesteps against diffusers'
/// numbers, and the pipeline's guidance rules on the tiny model.
/// </summary>
public sealed class FewStepTests : IDisposable
{
    private static readonly string TinySd = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-fewstep-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    private static JsonObject Json(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();

    /// <summary>A copy of the tiny model named <paramref name="name"/>, its scheduler and UNet configs edited.</summary>
    private string CopyOfTinySd(string name, Action<JsonObject>? scheduler = null, Action<JsonObject>? unet = null)
    {
        var folder = Path.Combine(root, name);
        foreach (var file in Directory.EnumerateFiles(TinySd, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(folder, Path.GetRelativePath(TinySd, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        Edit(Path.Combine(folder, "scheduler", "scheduler_config.json"), scheduler);
        Edit(Path.Combine(folder, "unet", "config.json"), unet);
        return folder;
    }

    private static void Edit(string path, Action<JsonObject>? edit)
    {
        if (edit is null) return;
        var json = Json(path);
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    // sdxl-turbo's and sd-turbo's scheduler_config.json: Euler a, trailing.
    private static void TurboScheduler(JsonObject s)
    {
        s["_class_name"] = "EulerAncestralDiscreteScheduler";
        s["timestep_spacing"] = "trailing";
    }

    private static void LcmScheduler(JsonObject s)
    {
        s["_class_name"] = "LCMScheduler";
        s["original_inference_steps"] = 50;
    }

    // ---- recognised from the files alone ----

    [Fact]
    public void An_ordinary_model_gets_the_standard_defaults() =>
        Assert.Equal(GenerationDefaults.Standard, GenerationDefaults.ForModel(TinySd));

    [Fact]
    public void A_turbo_scheduler_config_makes_a_turbo_model()
    {
        var defaults = GenerationDefaults.ForModel(CopyOfTinySd("plain-name", TurboScheduler));
        Assert.Equal((FewStepKind.Turbo, "Euler a", 1, 1.0, "trailing"), (defaults.Kind, defaults.Sampler, defaults.Steps, defaults.CfgScale, defaults.TimestepSpacing));
        Assert.Contains("scheduler_config.json", defaults.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Trailing_alone_is_not_turbo()
    {
        // A zero-SNR or v-prediction fine-tune may space trailing with another sampler.
        var folder = CopyOfTinySd("zero-snr", s => s["timestep_spacing"] = "trailing");
        Assert.Equal(FewStepKind.None, GenerationDefaults.ForModel(folder).Kind);
    }

    [Theory]
    [InlineData("sdxl-turbo")]
    [InlineData("SD_Turbo")]
    public void A_folder_named_turbo_is_turbo(string name) =>
        Assert.Equal(FewStepKind.Turbo, GenerationDefaults.ForModel(CopyOfTinySd(name)).Kind);

    [Fact]
    public void The_name_or_path_diffusers_writes_into_model_index_tells_turbo()
    {
        var folder = CopyOfTinySd("downloaded");
        Edit(Path.Combine(folder, "model_index.json"), m => m["_name_or_path"] = "stabilityai/sd-turbo");
        var defaults = GenerationDefaults.ForModel(folder);
        Assert.Equal(FewStepKind.Turbo, defaults.Kind);
        Assert.Contains("stabilityai/sd-turbo", defaults.Reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("sd_xl_turbo_1.0_fp16.safetensors", FewStepKind.Turbo)]
    [InlineData("dreamshaper_8LCM.safetensors", FewStepKind.Lcm)]
    [InlineData("v1-5-pruned-emaonly.safetensors", FewStepKind.None)]
    public void A_single_file_is_told_by_its_name(string file, FewStepKind kind) =>
        Assert.Equal(kind, GenerationDefaults.ForModel(Path.Combine(root, file)).Kind);

    [Fact]
    public void A_unet_with_time_cond_proj_dim_is_an_lcm_guided_by_its_embedding()
    {
        var defaults = GenerationDefaults.ForModel(CopyOfTinySd("LCM_Dreamshaper_v7", LcmScheduler, u => u["time_cond_proj_dim"] = 256));
        Assert.Equal((FewStepKind.Lcm, "LCM", 4, 8.0, (string?)null), (defaults.Kind, defaults.Sampler, defaults.Steps, defaults.CfgScale, defaults.TimestepSpacing));
        Assert.Contains("time_cond_proj_dim 256", defaults.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void An_lcm_scheduler_without_the_embedding_is_an_lcm_with_low_guidance()
    {
        var defaults = GenerationDefaults.ForModel(CopyOfTinySd("merged", LcmScheduler));
        Assert.Equal((FewStepKind.Lcm, "LCM", 4, 1.5), (defaults.Kind, defaults.Sampler, defaults.Steps, defaults.CfgScale));
    }

    [Fact]
    public void An_lcm_lora_in_the_prompt_or_the_loras_makes_the_lcm_defaults()
    {
        var fromPrompt = GenerationDefaults.For(TinySd, "a cat <lora:lcm-lora-sdv1-5:1>");
        Assert.Equal((FewStepKind.LcmLora, "LCM", 4, 1.0), (fromPrompt.Kind, fromPrompt.Sampler, fromPrompt.Steps, fromPrompt.CfgScale));
        Assert.Equal(FewStepKind.LcmLora, GenerationDefaults.For(TinySd, "a cat", [Path.Combine(root, "loras", "LCM_LoRA_SDXL.safetensors")]).Kind);
        // On a Turbo model too: the LoRA decides the sampler.
        Assert.Equal(FewStepKind.LcmLora, GenerationDefaults.For(CopyOfTinySd("sdxl-turbo"), "<lora:lcm-lora-sdxl:1> a cat").Kind);
        Assert.Equal(FewStepKind.None, GenerationDefaults.For(TinySd, "a cat <lora:film-grain:0.8>", ["style.safetensors"]).Kind);
    }

    [Fact]
    public void An_lcm_model_keeps_its_own_defaults_with_an_lcm_lora() =>
        Assert.Equal(8.0, GenerationDefaults.For(CopyOfTinySd("lcm-sd", LcmScheduler, u => u["time_cond_proj_dim"] = 256), "<lora:lcm-lora:1> a cat").CfgScale);

    [Fact]
    public void A_config_that_is_not_json_is_refused_naming_the_file()
    {
        var folder = CopyOfTinySd("broken");
        File.WriteAllText(Path.Combine(folder, "scheduler", "scheduler_config.json"), "{ \"_class_name\": ");
        var refusal = Assert.Throws<UserInputException>(() => GenerationDefaults.ForModel(folder));
        Assert.EndsWith("scheduler_config.json", refusal.Subject, StringComparison.Ordinal);
    }

    [Fact]
    public void What_the_user_gave_wins_and_img2img_gets_steps_enough_to_run_one()
    {
        var turbo = GenerationDefaults.ForModel(CopyOfTinySd("sdxl-turbo"));
        var filled = turbo.ApplyTo(new GenerationRequest(), sampler: null, steps: null, cfgScale: null, imageToImage: false);
        Assert.Equal(("Euler a", 1, 1.0, "trailing"), (filled.Sampler, filled.Steps, filled.CfgScale, filled.TimestepSpacing));
        var given = turbo.ApplyTo(new GenerationRequest { TimestepSpacing = "leading" }, "DDIM", 3, 2.5, imageToImage: false);
        Assert.Equal(("DDIM", 3, 2.5, "leading"), (given.Sampler, given.Steps, given.CfgScale, given.TimestepSpacing));
        // The Turbo model card: img2img at strength 0.5 takes 2 steps (steps × strength ≥ 1).
        Assert.Equal(2, turbo.ApplyTo(new GenerationRequest { Strength = 0.5 }, null, null, null, imageToImage: true).Steps);
        Assert.Equal(4, turbo.StepsFor(0.3));
        Assert.Equal(20, GenerationDefaults.Standard.StepsFor(0.3));
    }

    // ---- LCM's guidance embedding ----

    [Fact]
    public void The_guidance_embedding_is_diffusers_sinusoid_of_w_minus_1_times_1000()
    {
        // get_guidance_scale_embedding(w − 1 = 7, 256): angle_i = 7000·exp(−ln(10000)·i / 127), [sin(angle), cos(angle)].
        using var emb = GuidanceEmbedding.Compute(8.0, batch: 2, embeddingDim: 256);
        Assert.Equal([2L, 256L], emb.Shape);
        var values = emb.ToArray<float>();
        var (expectedSin0, expectedCos0) = (0.5068854299491697, 0.8620134342951074);  // sin, cos of 7000 (i = 0: frequency 1)
        var (expectedSinLast, expectedCosLast) = (0.644217687237691, 0.7648421872844885);  // of 0.7 (i = 127: frequency 1e-4)
        foreach (var row in new[] { 0, 256 })
        {
            Assert.Equal(expectedSin0, values[row + 0], 1e-4);
            Assert.Equal(expectedSinLast, values[row + 127], 1e-5);
            Assert.Equal(expectedCos0, values[row + 128], 1e-4);
            Assert.Equal(expectedCosLast, values[row + 255], 1e-5);
        }
        for (var i = 0; i < 128; i++)
        {
            var angle = 7000 * Math.Exp(-Math.Log(10000) * i / 127);
            // float32 angles of up to 7000 carry an absolute error of ~1e-3 rad.
            Assert.Equal(Math.Sin(angle), values[i], 2e-3);
            Assert.Equal(Math.Cos(angle), values[128 + i], 2e-3);
        }
    }

    [Fact]
    public void Guidance_1_embeds_as_no_guidance_and_an_odd_width_is_zero_padded()
    {
        using var none = GuidanceEmbedding.Compute(1.0, batch: 1, embeddingDim: 8);
        Assert.Equal([0f, 0, 0, 0, 1, 1, 1, 1], none.ToArray<float>());
        using var odd = GuidanceEmbedding.Compute(1.5, batch: 1, embeddingDim: 5);
        var v = odd.ToArray<float>();
        Assert.Equal(5, v.Length);
        Assert.Equal(Math.Sin(500), v[0], 1e-4);  // (1.5 − 1)·1000 at frequency 1
        Assert.Equal(Math.Sin(0.05), v[1], 1e-6);  // at frequency 1e-4
        Assert.Equal(Math.Cos(500), v[2], 1e-4);
        Assert.Equal(0f, v[4]);
    }

    // ---- trailing timesteps ----

    // diffusers' trailing spacing: round(arange(1000, 0, −1000/n)) − 1, the same for DDIM, Euler, Euler a and DPM-Solver.
    [Theory]
    [InlineData("Euler a", 1, new[] { 999.0 })]
    [InlineData("Euler a", 2, new[] { 999.0, 499 })]
    [InlineData("Euler a", 4, new[] { 999.0, 749, 499, 249 })]
    [InlineData("Euler a", 3, new[] { 999.0, 666, 332 })]
    [InlineData("Euler", 4, new[] { 999.0, 749, 499, 249 })]
    [InlineData("DDIM", 4, new[] { 999.0, 749, 499, 249 })]
    [InlineData("DPM++ 2M", 4, new[] { 999.0, 749, 499, 249 })]
    [InlineData("DPM++ 2M", 1, new[] { 999.0 })]
    public void Trailing_timesteps_are_diffusers(string sampler, int steps, double[] expected)
    {
        var config = SchedulerConfig.Load(Path.Combine(CopyOfTinySd("turbo-config", TurboScheduler), "scheduler", "scheduler_config.json"));
        using var scheduler = SchedulerRegistry.Create(sampler, config);
        scheduler.SetTimesteps(steps);
        Assert.Equal(expected, scheduler.TimestepValues.ToArray());
    }

    // ---- the pipeline ----

    private static byte[] Draw(StableDiffusionModel model, GenerationRequest request) =>
        Assert.Single(new StableDiffusionPipeline(model).Generate(request with { Prompt = "a red circle", Seed = 3, Width = 64, Height = 64 })).Image.Pixels;

    [Fact]
    public void At_cfg_1_or_less_the_negative_prompt_is_not_used()
    {
        using var model = ModelLoader.Load(TinySd);
        var request = new GenerationRequest { Sampler = "Euler a", Steps = 2, CfgScale = 1 };
        Assert.Equal(Draw(model, request), Draw(model, request with { NegativePrompt = "a blue square" }));
        Assert.Equal(Draw(model, request), Draw(model, request with { CfgScale = 0, NegativePrompt = "a blue square" }));
        // Above 1 it is the unconditional half of the batch.
        Assert.NotEqual(Draw(model, request with { CfgScale = 5 }), Draw(model, request with { CfgScale = 5, NegativePrompt = "a blue square" }));
    }

    [Fact]
    public void A_timestep_spacing_in_the_request_replaces_the_models()
    {
        using var model = ModelLoader.Load(TinySd);  // leading spacing
        var request = new GenerationRequest { Sampler = "Euler a", Steps = 1, CfgScale = 1 };
        var trailing = Draw(model, request with { TimestepSpacing = "trailing" });
        Assert.NotEqual(Draw(model, request), trailing);
        using var turbo = ModelLoader.Load(CopyOfTinySd("trailing", TurboScheduler));
        Assert.Equal(trailing, Draw(turbo, request));
    }

    [Fact]
    public void An_unknown_timestep_spacing_is_refused_naming_the_field()
    {
        var refusal = Assert.Throws<GenerationRequestException>(() => new GenerationRequest { TimestepSpacing = "uniform" }.Validate());
        Assert.Equal("timestep_spacing", refusal.Field);
    }

    /// <summary>The tiny model with a UNet that takes a guidance embedding (<c>time_cond_proj_dim</c> 8, seeded weights) and the LCM scheduler.</summary>
    private string TinyLcm()
    {
        var folder = CopyOfTinySd("tiny-lcm", LcmScheduler, u => u["time_cond_proj_dim"] = 8);
        var unetDir = Path.Combine(folder, "unet");
        torch.ManualSeed(11);
        using var unet = new UNet2DConditionModel(UNet2DConditionConfig.Load(Path.Combine(unetDir, "config.json")));
        using var state = unet.StateDict();
        Assert.Contains("time_embedding.cond_proj.weight", state.Keys);
        TensorFiles.Save(Path.Combine(unetDir, "diffusion_pytorch_model.safetensors"), state);
        return folder;
    }

    [Fact]
    public void An_lcm_unet_takes_the_guidance_as_its_embedding_not_as_a_batch()
    {
        using var model = ModelLoader.Load(TinyLcm());
        Assert.Equal(8, ((IDiffusionModel)model).TimeCondProjDim);
        var request = new GenerationRequest { Sampler = "LCM", Steps = 2, CfgScale = 8 };
        var guided = Draw(model, request);
        // No unconditional batch: the negative prompt does nothing, even above CFG 1 ...
        Assert.Equal(guided, Draw(model, request with { NegativePrompt = "a blue square" }));
        // ... and the scale still matters, through the embedding.
        Assert.NotEqual(guided, Draw(model, request with { CfgScale = 3 }));
    }

    [Fact]
    public void The_model_passes_the_embedding_to_the_unet_as_timestep_cond()
    {
        using var model = ModelLoader.Load(TinyLcm());
        using var _ = Autograd.InferenceMode();
        using var sample = torch.Randn([1, 4, 8, 8]);
        using var hidden = torch.Randn([1, 77, 32]);
        using var embedding = GuidanceEmbedding.Compute(8, 1, 8);
        using var withEmbedding = model.PredictNoise(sample, 499, hidden, null, embedding);
        using var without = model.PredictNoise(sample, 499, hidden, null);
        // cond_proj adds its projection of the embedding to the timestep features: leaving it out changes the prediction.
        Assert.True(withEmbedding.Sub(without).Abs().Max().Item() > 1e-4);
    }
}
