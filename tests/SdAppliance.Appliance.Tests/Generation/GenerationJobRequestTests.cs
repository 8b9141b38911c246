using System.Text.Json;
using SdAppliance.Appliance.Generation;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;

namespace SdAppliance.Appliance.Tests.Generation;

/// <summary>The generation request as the queue stores it and the REST API takes it: snake_case JSON, sdapp generate's defaults.</summary>
public sealed class GenerationJobRequestTests
{
    [Fact]
    public void It_is_spelt_in_snake_case_and_reads_back_equal()
    {
        var request = new GenerationJobRequest
        {
            Model = "demo", Prompt = "a red circle", Seed = 5, CfgScale = 4.5, NIter = 3, BatchSize = 2, ClipSkip = 2,
            Scheduler = "karras", Loras = [new LoraWeight("style", 0.8)],
        };
        var json = request.ToJson();
        Assert.Equal(4.5, json.GetProperty("cfg_scale").GetDouble());
        Assert.Equal(3, json.GetProperty("n_iter").GetInt32());
        Assert.Equal("style", json.GetProperty("loras")[0].GetProperty("name").GetString());
        var back = GenerationJobRequest.FromJson(json);
        Assert.Equal(request with { Loras = back.Loras }, back);
        Assert.Equal(request.Loras, back.Loras);
    }

    [Fact]
    public void What_is_left_out_takes_sdapp_generates_defaults_and_the_sampler_steps_and_cfg_the_models()
    {
        var request = GenerationJobRequest.FromJson(JsonDocument.Parse("""{"prompt": "a star", "unknown": 1}""").RootElement);
        Assert.Equal(("a star", -1L, 1, 1), (request.Prompt, request.Seed, request.BatchSize, request.NIter));
        // Filled in from the model's files when the job is prepared (GenerationService.WithModelDefaultsAsync).
        Assert.Equal((null, null, null), (request.Sampler, request.Steps, request.CfgScale));
        Assert.Null(request.Width);
        Assert.Null(request.Model);
    }

    [Fact]
    public void Micro_conditioning_is_diffusers_pairs_in_json_and_png_info_reads_back_what_the_pipeline_writes()
    {
        var request = GenerationJobRequest.FromJson(JsonDocument.Parse(
            """{"prompt": "p", "original_size": [1024, 768], "crops_coords_top_left": [64, 32], "target_size": [768, 1024], "negative_original_size": [512, 512]}""").RootElement);
        Assert.Equal([1024, 768], request.OriginalSize!);
        Assert.Equal([64, 32], request.CropsCoordsTopLeft!);
        Assert.Equal("[512,512]", request.ToJson().GetProperty("negative_original_size").GetRawText());

        var written = new GenerationRequest
        {
            OriginalSize = new(1024, 768), CropsCoordsTopLeft = new(64, 32), TargetSize = new(768, 1024),
            NegativeOriginalSize = new(512, 512), NegativeCropsCoordsTopLeft = new(0, 0), NegativeTargetSize = new(96, 64),
        };
        var text = new A1111Parameters { Prompt = "p" }.Add("Steps", "10").Add("Size", "64x64");
        foreach (var (key, value) in MicroConditioningInfotext.Settings(written, 64, 64)) text.Add(key, value);
        var parsed = GenerationInfotext.Parse(text.ToString());
        Assert.Empty(parsed.Problems);
        var back = parsed.Request;
        IReadOnlyList<int>?[] pairs = [back.OriginalSize, back.CropsCoordsTopLeft, back.TargetSize, back.NegativeOriginalSize, back.NegativeCropsCoordsTopLeft, back.NegativeTargetSize];
        Assert.Equal("1024,768 64,32 768,1024 512,512 0,0 96,64", string.Join(" ", pairs.Select(p => string.Join(",", p!))));
        Assert.Null(GenerationInfotext.Parse("p\nSteps: 10, Size: 64x64, Seed: 1").Request.OriginalSize);
        Assert.Contains("Original size: '1024' is not WIDTHxHEIGHT", GenerationInfotext.Parse("p\nSteps: 10, Size: 64x64, Original size: 1024").Problems);
    }
}
