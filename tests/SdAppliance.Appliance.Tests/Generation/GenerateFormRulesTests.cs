using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;

namespace SdAppliance.Appliance.Tests.Generation;

/// <summary>The rules behind the Generate page: size presets per family, the pickers' prompt tags, PNG info back into a request.</summary>
public sealed class GenerateFormRulesTests
{
    private static ModelEntry Model(string? family, bool demo = false) =>
        new(ModelKind.Checkpoint, "m", "m.safetensors", "m.safetensors", "/m.safetensors", 1, DateTime.UtcNow, family, null, null, null,
            new Dictionary<string, string>(), null, null, null, false, demo);

    [Theory]
    [InlineData("SD 1.x", false, 512)]
    [InlineData("SD 2.x", false, 768)]
    [InlineData("SDXL", false, 1024)]
    [InlineData(null, false, 512)]
    [InlineData("SD 1.x", true, 64)]
    public void The_first_preset_is_the_familys_native_size_and_every_preset_fits_the_vae(string? family, bool demo, int native)
    {
        var presets = SizePresets.For(Model(family, demo));
        Assert.Equal((native, native), (presets[0].Width, presets[0].Height));
        Assert.All(presets, p => Assert.True(p.Width % 8 == 0 && p.Height % 8 == 0, p.Label));
        Assert.Equal(presets.Count, presets.Distinct().Count());
    }

    [Fact]
    public void Sdxl_presets_are_its_megapixel_buckets()
    {
        var presets = SizePresets.ForFamily("SDXL");
        Assert.Contains(new SizePreset(832, 1216), presets);
        Assert.All(presets, p => Assert.InRange(p.Width * p.Height, 960_000, 1_100_000));
        Assert.Equal("832 × 1216 portrait", new SizePreset(832, 1216).Label);
    }

    [Fact]
    public void Picker_tags_are_appended_once_and_a_second_pick_changes_the_weight()
    {
        var prompt = PromptTags.Insert("a red circle ", PromptTags.Lora("style", 0.8));
        Assert.Equal("a red circle <lora:style:0.8>", prompt);
        prompt = PromptTags.Insert(prompt, PromptTags.Lora("style", 1));
        Assert.Equal("a red circle <lora:style:1>", prompt);
        prompt = PromptTags.Insert(prompt, PromptTags.Hypernetwork("ink", 0.5));
        Assert.Equal("a red circle <lora:style:1> <hypernet:ink:0.5>", prompt);
        prompt = PromptTags.Insert(prompt, PromptTags.Embedding("sks-shape"));
        Assert.Equal("a red circle <lora:style:1> <hypernet:ink:0.5> sks-shape", prompt);
        Assert.Equal(prompt, PromptTags.Insert(prompt, PromptTags.Embedding("sks-shape")));
        Assert.Equal("<lora:a$1:1>", PromptTags.Insert("", PromptTags.Lora("a$1", 1)));
    }

    [Fact]
    public void Png_info_reads_back_into_the_request_it_came_from()
    {
        // As the pipeline writes it (Infotext): the LoRA tags in the prompt, A1111's names and float spelling.
        const string text = "a red circle <lora:style:0.8>\nNegative prompt: blurry, \"dark\"\n"
            + "Steps: 12, Sampler: Euler a, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 96x64, Model hash: 0123456789, Model: demo, "
            + "Denoising strength: 0.6, Clip skip: 2, Lora hashes: \"style: abcdef012345\", Version: SdAppliance";
        var (request, problems) = GenerationInfotext.Parse(text);
        Assert.Empty(problems);
        Assert.Equal(new GenerationJobRequest
        {
            Prompt = "a red circle <lora:style:0.8>", NegativePrompt = "blurry, \"dark\"", Steps = 12, Sampler = "Euler a", Scheduler = "Karras",
            CfgScale = 6.5, Seed = 1234, Width = 96, Height = 64, Model = "demo", Strength = 0.6, ClipSkip = 2,
        } with { Loras = request.Loras }, request);
        Assert.Empty(request.Loras);
    }

    [Fact]
    public void What_the_text_leaves_out_or_spells_wrong_keeps_the_defaults_and_is_reported()
    {
        var defaults = new GenerationJobRequest();
        var (request, problems) = GenerationInfotext.Parse("just a prompt\nSteps: many, Sampler: Euler, CFG scale: x, Seed: 3");
        Assert.Equal("just a prompt", request.Prompt);
        Assert.Equal((defaults.Steps, defaults.CfgScale, "Euler", 3L, defaults.Strength, (int?)null), (request.Steps, request.CfgScale, request.Sampler, request.Seed, request.Strength, request.Width));
        Assert.Equal(["Steps: 'many' is not a whole number", "CFG scale: 'x' is not a number"], problems);
    }

    [Fact]
    public void The_refiner_and_its_switch_are_read_back_by_name()
    {
        var (request, problems) = GenerationInfotext.Parse("a castle\nSteps: 30, Seed: 5, Model: sd_xl_base_1.0, Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.75, Version: SdAppliance");
        Assert.Empty(problems);
        Assert.Equal(("sd_xl_refiner_1.0", (double?)0.75), (request.Refiner, request.RefinerSwitchAt));
        Assert.Equal(["Refiner switch at: 'soon' is not a number"], GenerationInfotext.Parse("x\nSteps: 3, Refiner: r, Refiner switch at: soon").Problems);
    }

    [Fact]
    public void The_vae_is_read_back_by_file_name()
    {
        var (request, problems) = GenerationInfotext.Parse("a castle\nSteps: 30, Seed: 5, Model hash: 0123456789, Model: demo, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, Version: SdAppliance");
        Assert.Empty(problems);
        Assert.Equal("vae-ft-mse-840000-ema-pruned.safetensors", request.Vae);
        Assert.Null(GenerationInfotext.Parse("a castle\nSteps: 30, Model: demo").Request.Vae);
    }
}
