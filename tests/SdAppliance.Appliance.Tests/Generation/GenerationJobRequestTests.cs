using System.Text.Json;
using SdAppliance.Appliance.Generation;

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
}
