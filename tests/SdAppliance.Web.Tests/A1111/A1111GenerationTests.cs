using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Generation;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Appliance.Storage;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Web.Tests.A1111;

/// <summary>txt2img, img2img and png-info as A1111 clients call them, on the demo model at 64x64.</summary>
public sealed class A1111GenerationTests(A1111Appliance appliance) : IClassFixture<A1111Appliance>
{
    [Fact]
    public async Task Txt2img_with_a_seed_draws_the_pixels_sdapp_generate_draws()
    {
        using var client = await appliance.ClientAsync();
        var body = A1111Calls.Small(1234);
        body["sampler_name"] = "DPM++ 2M";
        body["scheduler"] = "Karras";
        body["cfg_scale"] = 7;
        var response = await client.GenerateAsync("/sdapi/v1/txt2img", body);

        // What sdapp generate runs for the same settings (GenerateCommand: the pipeline on the loaded model, its folders),
        // on the device the appliance ran the job on.
        var data = new DataFolder(appliance.Factory.DataFolder, DataFolder.FindApplicationRoot());
        var device = Device.Parse(appliance.Factory.Services.GetRequiredService<JobScheduler>().Devices[0]);
        using var model = ModelLoader.Load(data.DemoModel!, new ModelLoadOptions(Device: device, SearchRoots: data.SearchRoots));
        Engine.UseThreads(model.UnetThreadDemand(2, 64, 64));
        var pipeline = new StableDiffusionPipeline(model, new AdapterFolders(data.LoraFolders, data.EmbeddingFolders, data.HypernetworkFolders));
        var expected = pipeline.Generate(new GenerationRequest
        {
            Prompt = "a red circle on a blue background", Seed = 1234, Steps = 3, Sampler = "DPM++ 2M Karras", CfgScale = 7, Width = 64, Height = 64,
        })[0];

        var png = A1111Calls.Png(response, 0);
        Assert.Equal(ImageFormat.Png, ImageCodec.DetectFormat(png));  // raw base64 of a PNG, no data: prefix
        var image = ImageCodec.Decode(png);
        Assert.Equal((64, 64), (image.Width, image.Height));
        Assert.Equal(expected.Image.Pixels, image.Pixels);
        Assert.Equal(expected.Parameters, image.Text[ImageCodec.ParametersKey]);

        var info = A1111Calls.Info(response);
        Assert.Equal(1234, info["seed"]!.GetValue<long>());
        Assert.Equal([1234L], info["all_seeds"]!.AsArray().Select(s => s!.GetValue<long>()));
        Assert.Equal(64, info["width"]!.GetValue<int>());
        Assert.Equal(64, info["height"]!.GetValue<int>());
        Assert.Equal(expected.Parameters, info["infotexts"]![0]!.GetValue<string>());
        Assert.Equal("a red circle on a blue background", info["prompt"]!.GetValue<string>());
        Assert.Equal(0, info["index_of_first_image"]!.GetValue<int>());
        Assert.Equal(3, response["parameters"]!["steps"]!.GetValue<int>());
    }

    [Fact]
    public async Task Left_out_sampler_steps_and_cfg_are_A1111s_for_an_ordinary_model_and_echoed()
    {
        using var client = await appliance.ClientAsync();
        var body = A1111Calls.Small(77);
        body.Remove("steps");
        var response = await client.GenerateAsync("/sdapi/v1/txt2img", body);
        var parameters = response["parameters"]!;
        Assert.Equal(("Euler", 50, 7.0), (parameters["sampler_name"]!.GetValue<string>(), parameters["steps"]!.GetValue<int>(), parameters["cfg_scale"]!.GetValue<double>()));
        Assert.Contains("Steps: 50, Sampler: Euler,", A1111Calls.Info(response)["infotexts"]![0]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Batches_answer_every_image_without_a_grid_seeds_counting_up_over_all_of_them()
    {
        using var client = await appliance.ClientAsync();
        var body = A1111Calls.Small(500, steps: 2);
        body["batch_size"] = 2;
        body["n_iter"] = 2;
        body["save_images"] = true;  // SillyTavern sends it; still no grid
        var response = await client.GenerateAsync("/sdapi/v1/txt2img", body);

        Assert.Equal(4, response["images"]!.AsArray().Count);
        var info = A1111Calls.Info(response);
        Assert.Equal([500L, 501, 502, 503], info["all_seeds"]!.AsArray().Select(s => s!.GetValue<long>()));
        var infotexts = info["infotexts"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        for (var i = 0; i < 4; i++)
        {
            Assert.Contains($"Seed: {500 + i},", infotexts[i], StringComparison.Ordinal);
            Assert.Equal(infotexts[i], A1111Calls.Image(response, i).Text[ImageCodec.ParametersKey]);
        }
    }

    [Fact]
    public async Task Img2img_takes_a_data_url_or_raw_base64_alike()
    {
        using var client = await appliance.ClientAsync();
        var source = await client.GenerateAsync("/sdapi/v1/txt2img", A1111Calls.Small(7, steps: 2));
        var raw = source["images"]![0]!.GetValue<string>();

        JsonObject Request(string image)
        {
            var body = A1111Calls.Small(99, steps: 4);
            body["init_images"] = new JsonArray(image);
            body["denoising_strength"] = 0.5;
            return body;
        }
        var fromDataUrl = await client.GenerateAsync("/sdapi/v1/img2img", Request("data:image/png;base64," + raw));
        var fromBase64 = await client.GenerateAsync("/sdapi/v1/img2img", Request(raw));

        var a = A1111Calls.Image(fromDataUrl, 0);
        Assert.Equal((64, 64), (a.Width, a.Height));
        Assert.Equal(a.Pixels, A1111Calls.Image(fromBase64, 0).Pixels);
        Assert.NotEqual(A1111Calls.Image(source, 0).Pixels, a.Pixels);
        Assert.Contains("Denoising strength: 0.5", a.Text[ImageCodec.ParametersKey], StringComparison.Ordinal);
        Assert.Equal(0.5, A1111Calls.Info(fromDataUrl)["denoising_strength"]!.GetValue<double>());
        Assert.Null(fromDataUrl["parameters"]!["init_images"]);  // not echoed without include_init_images
    }

    [Fact]
    public async Task Img2img_without_an_init_image_is_not_found_as_in_A1111()
    {
        using var client = await appliance.ClientAsync();
        var (status, body) = await client.PostAsync("/sdapi/v1/img2img", A1111Calls.Small(1));
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal("Init image not found", body!["errors"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("http://169.254.169.254/latest/meta-data/x.png")]
    [InlineData("HTTPS://example.com/cat.png")]
    public async Task Image_urls_are_refused_never_fetched(string url)
    {
        using var client = await appliance.ClientAsync();
        var body = A1111Calls.Small(1);
        body["init_images"] = new JsonArray(url);
        var (status, answer) = await client.PostAsync("/sdapi/v1/img2img", body);
        A1111Calls.AssertRefused(status, answer, "init_images.0");
        Assert.Contains("does not fetch", answer!["errors"]!.GetValue<string>(), StringComparison.Ordinal);

        (status, answer) = await client.PostAsync("/sdapi/v1/png-info", new JsonObject { ["image"] = url });
        A1111Calls.AssertRefused(status, answer, "image");
    }

    [Fact]
    public async Task Png_info_reads_back_the_parameters_and_keeps_other_text_chunks_in_items()
    {
        using var client = await appliance.ClientAsync();
        var generated = A1111Calls.Image(await client.GenerateAsync("/sdapi/v1/txt2img", A1111Calls.Small(42, steps: 2)), 0);
        var parameters = generated.Text[ImageCodec.ParametersKey];
        generated.Text["comment"] = "made for a test";
        var png = Convert.ToBase64String(ImageCodec.Encode(generated));

        var (status, info) = await client.PostAsync("/sdapi/v1/png-info", new JsonObject { ["image"] = "data:image/png;base64," + png });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(parameters, info!["info"]!.GetValue<string>());
        Assert.Equal("made for a test", info["items"]!["comment"]!.GetValue<string>());
        Assert.Null(info["items"]![ImageCodec.ParametersKey]);
        Assert.Equal("42", info["parameters"]!["Seed"]!.GetValue<string>());
        Assert.Equal("2", info["parameters"]!["Steps"]!.GetValue<string>());
        Assert.Equal("a red circle on a blue background", info["parameters"]!["Prompt"]!.GetValue<string>());
    }

    [Fact]
    public async Task Mix1009s_whole_body_is_accepted_sampler_name_winning_over_sampler_index()
    {
        using var client = await appliance.ClientAsync();
        // webuiapi's txt2img payload with its defaults (nulls, empty scripts, hires fields), as it sends it.
        var body = JsonNode.Parse("""
        {
          "enable_hr": false, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0,
          "hr_checkpoint_name": null, "hr_sampler_name": null, "hr_scheduler": null, "hr_prompt": "", "hr_negative_prompt": "",
          "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0,
          "prompt": "a green square", "styles": [], "seed": 321, "subseed": -1, "subseed_strength": 0.0,
          "seed_resize_from_h": 0, "seed_resize_from_w": 0, "sampler_name": "DPM++ 2M Karras", "scheduler": "automatic",
          "batch_size": 1, "n_iter": 1, "steps": 2, "cfg_scale": 7.0, "width": 64, "height": 64, "restore_faces": false,
          "tiling": false, "do_not_save_samples": false, "do_not_save_grid": false, "negative_prompt": "", "eta": 1.0,
          "s_min_uncond": 0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, "override_settings": {},
          "override_settings_restore_afterwards": true, "script_args": [], "script_name": null, "send_images": true,
          "save_images": false, "alwayson_scripts": {}, "sampler_index": "Euler a", "use_async": false
        }
        """)!;
        var response = await client.GenerateAsync("/sdapi/v1/txt2img", body);
        var info = A1111Calls.Info(response);
        Assert.Equal(321, info["seed"]!.GetValue<long>());
        Assert.Equal("DPM++ 2M Karras", info["sampler_name"]!.GetValue<string>());
        Assert.Contains("Sampler: DPM++ 2M Karras,", info["infotexts"]![0]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task SillyTaverns_forwarded_body_is_accepted_with_its_clip_skip_override()
    {
        using var client = await appliance.ClientAsync();
        var body = JsonNode.Parse("""
        {
          "url": "http://127.0.0.1:7860", "auth": "", "prompt": "a yellow star", "negative_prompt": "", "sampler_name": "Euler a",
          "scheduler": "normal", "steps": 2, "cfg_scale": 7, "width": 64, "height": 64, "seed": 77, "restore_faces": false,
          "enable_hr": false, "hr_upscaler": "Latent", "hr_scale": 2, "hr_second_pass_steps": 0, "denoising_strength": 0.7,
          "clip_skip": 1, "override_settings": { "CLIP_stop_at_last_layers": 2, "sd_vae": "Automatic" },
          "override_settings_restore_afterwards": true, "save_images": true, "send_images": true,
          "do_not_save_grid": false, "do_not_save_samples": false
        }
        """)!;
        var info = A1111Calls.Info(await client.GenerateAsync("/sdapi/v1/txt2img", body));
        Assert.Equal(2, info["clip_skip"]!.GetValue<int>());
        Assert.Contains("Clip skip: 2", info["infotexts"]![0]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Contains("Sampler: Euler a,", info["infotexts"]![0]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("steps", "0", "steps")]
    [InlineData("width", "65", "width")]
    [InlineData("steps", "\"many\"", "steps")]
    [InlineData("sampler_name", "\"Heun++\"", "sampler_name")]
    [InlineData("scheduler", "\"exponential\"", "scheduler")]
    [InlineData("n_iter", "0", "n_iter")]
    public async Task A_bad_field_is_a_422_naming_it(string field, string value, string named)
    {
        using var client = await appliance.ClientAsync();
        var body = A1111Calls.Small(1);
        body[field] = JsonNode.Parse(value);
        var (status, answer) = await client.PostAsync("/sdapi/v1/txt2img", body);
        A1111Calls.AssertRefused(status, answer, named);
    }

    [Fact]
    public async Task An_unknown_model_for_one_request_is_refused_naming_the_override()
    {
        using var client = await appliance.ClientAsync();
        var body = A1111Calls.Small(1);
        body["override_settings"] = new JsonObject { ["sd_model_checkpoint"] = "no-such-model.safetensors" };
        var (status, answer) = await client.PostAsync("/sdapi/v1/txt2img", body);
        A1111Calls.AssertRefused(status, answer, "override_settings.sd_model_checkpoint");
    }
}

/// <summary>What a generation job leaves behind: its PNGs in outputs/, its step and image events, its result.</summary>
public sealed class GenerationJobTests(A1111Appliance appliance) : IClassFixture<A1111Appliance>
{
    [Fact]
    public async Task A_job_writes_its_pngs_to_the_days_outputs_and_reports_each_step_and_image()
    {
        using var client = await appliance.ClientAsync();
        var response = await client.GenerateAsync("/sdapi/v1/txt2img", A1111Calls.Small(2024, steps: 3));

        var jobs = appliance.Factory.Services.GetRequiredService<JobService>();
        var admin = new Caller("tests", IsAdmin: true);
        // The class's other tests generate on the same appliance: this job is the one with seed 2024.
        var job = (await jobs.ListAsync(admin, JobState.Completed, CancellationToken.None))
            .Single(j => j.Kind == JobKind.Generation && GenerationJobRequest.FromJson(j.Request).Seed == 2024);
        var result = GenerationJobResult.FromJson(job.Result!.Value);
        var file = Assert.Single(result.Images);
        Assert.Equal(2024, file.Seed);
        Assert.StartsWith($"outputs/{DateTime.UtcNow:yyyy-MM-dd}/", file.File, StringComparison.Ordinal);
        var written = await File.ReadAllBytesAsync(Path.Combine(appliance.Factory.DataFolder, file.File));
        Assert.Equal(A1111Calls.Png(response, 0), written);
        Assert.Equal(file.Infotext, ImageCodec.Decode(written).Text[ImageCodec.ParametersKey]);
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(Path.Combine(appliance.Factory.DataFolder, file.File))!, "*.tmp*"));

        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        var events = new List<JobEvent>();
        await foreach (var e in jobs.EventsAsync(job.Id, 0, timeout.Token)) events.Add(e);
        Assert.Equal([(1L, 3L), (2, 3), (3, 3)], events.Where(e => e.Type == JobEventTypes.Step).Select(e => (e.Step!.Value, e.TotalSteps!.Value)));
        Assert.Equal([file.File], events.Where(e => e.Type == JobEventTypes.Image).Select(e => e.Image));
    }

    [Fact]
    public async Task An_init_image_named_by_path_must_be_one_of_the_callers_own_outputs()
    {
        var owner = await appliance.Factory.CreateUserAsync();
        var other = await appliance.Factory.CreateUserAsync();
        var generation = appliance.Factory.Services.GetRequiredService<GenerationJobs>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var first = await generation.RunAsync(new Caller(owner.Id, IsAdmin: false), new GenerationJobRequest { Prompt = "a red circle", Seed = 5, Steps = 2, Sampler = "Euler", Width = 64, Height = 64 }, null, timeout.Token);
        var output = Assert.Single(first!.Images).File;
        var img2img = new GenerationJobRequest { Prompt = "a red circle", Seed = 6, Steps = 2, Sampler = "Euler", InitImage = output };

        var refused = await Assert.ThrowsAsync<GenerationRequestException>(() => generation.SubmitAsync(new Caller(other.Id, IsAdmin: false), img2img, null, timeout.Token));
        Assert.Equal("init_image", refused.Field);
        Assert.Contains("is not one of your outputs", refused.Message, StringComparison.Ordinal);
        var upload = await Assert.ThrowsAsync<GenerationRequestException>(() =>
            generation.SubmitAsync(new Caller(owner.Id, IsAdmin: false), img2img with { InitImage = "inputs/someone-elses.png" }, null, timeout.Token));
        Assert.Equal("init_image", upload.Field);
        var own = await generation.RunAsync(new Caller(owner.Id, IsAdmin: false), img2img, null, timeout.Token);
        Assert.Single(own!.Images);
    }

    [Fact]
    public async Task The_queue_refuses_a_generation_request_that_cannot_run_naming_the_field()
    {
        var jobs = appliance.Factory.Services.GetRequiredService<JobService>();
        var request = new GenerationJobRequest { Steps = 0 }.ToJson();
        var refusal = await Assert.ThrowsAsync<GenerationRequestException>(() => jobs.SubmitAsync(new JobSubmission(JobKind.Generation, "tests", request), CancellationToken.None));
        Assert.Equal("steps", refusal.Field);

        var outside = new GenerationJobRequest { InitImage = "../outside.png" }.ToJson();
        Assert.Equal("init_image", (await Assert.ThrowsAnyAsync<UserInputException>(() => jobs.SubmitAsync(new JobSubmission(JobKind.Generation, "tests", outside), CancellationToken.None))).Subject);
    }
}
