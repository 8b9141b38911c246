using System.Net;
using System.Text.Json.Nodes;
using SdAppliance.Appliance.Storage;

namespace SdAppliance.Web.Tests.A1111;

/// <summary>options, sd-models and the lists clients fill their panels from.</summary>
public sealed class A1111OptionsTests(A1111Appliance appliance) : IClassFixture<A1111Appliance>
{
    [Fact]
    public async Task The_whole_options_dict_goes_back_as_it_came_and_the_answer_is_json_null()
    {
        using var client = await appliance.ClientAsync();
        var options = await client.GetJsonAsync("/sdapi/v1/options");
        Assert.Equal("demo", options["sd_model_checkpoint"]!.GetValue<string>());

        using var response = await client.PostAsync("/sdapi/v1/options", new StringContent(options.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("null", await response.Content.ReadAsStringAsync());
        Assert.Equal(options.ToJsonString(), (await client.GetJsonAsync("/sdapi/v1/options")).ToJsonString());
    }

    [Fact]
    public async Task The_model_switches_by_title_name_or_file_name_and_an_unknown_one_is_As_runtime_error()
    {
        var data = new DataFolder(appliance.Factory.DataFolder, DataFolder.FindApplicationRoot());
        File.Copy(Path.Combine(data.DemoModel!, "demo.safetensors"), Path.Combine(data.Models, "single.safetensors"));
        using var client = await appliance.ClientAsync();
        var models = (await client.GetJsonAsync("/sdapi/v1/sd-models")).AsArray();
        var single = models.Single(m => m!["model_name"]!.GetValue<string>() == "single")!;
        var title = single["title"]!.GetValue<string>();
        Assert.Equal($"single.safetensors [{single["hash"]!.GetValue<string>()}]", title);
        Assert.Equal(64, single["sha256"]!.GetValue<string>().Length);
        Assert.Contains(models, m => m!["title"]!.GetValue<string>() == "demo");

        foreach (var name in (string[])[title, "single", "single.safetensors"])
        {
            var (reset, _) = await client.PostAsync("/sdapi/v1/options", new JsonObject { ["sd_model_checkpoint"] = "demo" });
            Assert.Equal(HttpStatusCode.OK, reset);
            var (status, answer) = await client.PostAsync("/sdapi/v1/options", new JsonObject { ["sd_model_checkpoint"] = name });
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Null(answer);
            Assert.Equal(title, (await client.GetJsonAsync("/sdapi/v1/options"))["sd_model_checkpoint"]!.GetValue<string>());
        }

        var (unknown, error) = await client.PostAsync("/sdapi/v1/options", new JsonObject { ["sd_model_checkpoint"] = "nothing.safetensors [0123456789]" });
        Assert.Equal(HttpStatusCode.InternalServerError, unknown);
        Assert.Equal("RuntimeError", error!["error"]!.GetValue<string>());
        Assert.Contains("nothing.safetensors", error["errors"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.NotNull(error["detail"]);
        Assert.NotNull(error["body"]);
        Assert.Equal(title, (await client.GetJsonAsync("/sdapi/v1/options"))["sd_model_checkpoint"]!.GetValue<string>());

        await client.PostAsync("/sdapi/v1/options", new JsonObject { ["sd_model_checkpoint"] = "demo" });
    }

    [Fact]
    public async Task Samplers_are_listed_by_A1111_base_names_and_schedulers_by_name_and_label()
    {
        using var client = await appliance.ClientAsync();
        var samplers = (await client.GetJsonAsync("/sdapi/v1/samplers")).AsArray().Select(s => s!["name"]!.GetValue<string>()).ToList();
        Assert.Contains("DPM++ 2M", samplers);
        Assert.Contains("Euler a", samplers);
        Assert.DoesNotContain(samplers, s => s.EndsWith(" Karras", StringComparison.Ordinal));
        var schedulers = (await client.GetJsonAsync("/sdapi/v1/schedulers")).AsArray();
        Assert.Contains(schedulers, s => s!["name"]!.GetValue<string>() == "karras" && s["label"]!.GetValue<string>() == "Karras");
        Assert.Contains(schedulers, s => s!["name"]!.GetValue<string>() == "automatic");
    }

    [Theory]
    [InlineData("upscalers")]
    [InlineData("latent-upscale-modes")]
    [InlineData("sd-vae")]
    [InlineData("loras")]
    public async Task Panels_fill_from_lists(string path)
    {
        using var client = await appliance.ClientAsync();
        Assert.IsType<JsonArray>(await client.GetJsonAsync("/sdapi/v1/" + path));
    }

    [Fact]
    public async Task Scripts_embeddings_and_refresh_answer_what_clients_parse()
    {
        using var client = await appliance.ClientAsync();
        var scripts = await client.GetJsonAsync("/sdapi/v1/scripts");
        Assert.Empty(scripts["txt2img"]!.AsArray());
        Assert.Empty(scripts["img2img"]!.AsArray());
        var embeddings = await client.GetJsonAsync("/sdapi/v1/embeddings");
        Assert.IsType<JsonObject>(embeddings["loaded"]);
        Assert.IsType<JsonObject>(embeddings["skipped"]);
        using var refresh = await client.PostAsync("/sdapi/v1/refresh-checkpoints", null);
        Assert.Equal(HttpStatusCode.OK, refresh.StatusCode);
        Assert.Equal("null", await refresh.Content.ReadAsStringAsync());
    }
}
