using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Training;

namespace SdAppliance.Appliance.Tests.Jobs;

/// <summary>The Train page's service: the form's request, the plan (the trainer's epochs and steps) and the time estimate.</summary>
public sealed class TrainingSetupTests : IDisposable
{
    private static readonly Caller Alice = new("alice", IsAdmin: false);
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-train-setup-").FullName;

    public void Dispose() => Directory.Delete(data, recursive: true);

    private static TrainingForm Form(string? dataset, Dictionary<string, string>? values = null, string method = "lora", string? preset = null) =>
        new(method, preset, null, dataset, values ?? []);

    [Fact]
    public void Epochs_are_the_batches_of_max_train_steps_times_accumulation_over_the_batches_of_an_epoch_rounded_up()
    {
        var config = new TrainingConfig { MaxTrainSteps = 100, GradientAccumulationSteps = 2 };
        var plan = TrainingPlan.Of(3, 30, 15, 0, config, new TrainingTimeEstimate(null, null, TrainingEstimates.Unknown));
        Assert.Equal(14, plan.Epochs);  // 200 batches over 15 a epoch: 13 whole epochs and a 14th cut short
        Assert.Equal(7.5, plan.StepsPerEpoch);
        Assert.Equal(100, plan.TotalSteps);

        var exact = TrainingPlan.Of(3, 30, 10, 0, config with { GradientAccumulationSteps = 1 }, plan.Estimate);
        Assert.Equal(10, exact.Epochs);  // 100 batches in 10 a epoch: the trainer stops at the 10th epoch's end
    }

    [Fact]
    public async Task The_plan_counts_kohya_repeats_and_batches_of_the_dataset()
    {
        var folder = Path.Combine(data, "datasets", "ink");
        WriteImages(folder, 2);
        WriteImages(Path.Combine(folder, "10_cat"), 3);
        await using var services = await ServicesAsync();
        var setup = services.GetRequiredService<TrainingSetup>();

        var plan = await setup.PlanAsync(Alice, Form("datasets/ink", new() { ["resolution"] = "64", ["train_batch_size"] = "4", ["max_train_steps"] = "20" }),
            CancellationToken.None);

        Assert.Equal(5, plan.Images);
        Assert.Equal(32, plan.ExamplesPerEpoch);  // 2 × 1 + 3 × 10
        Assert.Equal(8, plan.BatchesPerEpoch);
        Assert.Equal(3, plan.Epochs);  // 20 steps over 8 batches an epoch
        Assert.Equal(20, plan.TotalSteps);
        Assert.False(plan.Estimate.Known);
        Assert.Equal(TrainingEstimates.Unknown, plan.Estimate.Basis);
    }

    [Fact]
    public void A_setting_that_is_not_of_its_type_is_refused_naming_the_field()
    {
        var e = Assert.Throws<TrainingConfigException>(() => TrainingSettings.Request(Form("datasets/ink", new() { ["network_dim"] = "sixteen" })));
        Assert.Equal("network_dim", e.Subject);
    }

    [Fact]
    public void The_request_holds_the_pickers_and_only_settings_that_differ_from_the_preset_for_the_method()
    {
        var values = TrainingSettings.Defaults("lora", "lora");
        values["network_dim"] = "32";
        values["sample_prompts"] = "a cat\n\n an ink dog ";
        values["save_every_n_steps"] = "";
        values["placeholder_token"] = "zwx";  // textual inversion's: not sent for a LoRA
        var request = TrainingSettings.Request(new TrainingForm("lora", "lora", "models/base.safetensors", "datasets/ink", values));

        var fields = request.EnumerateObject().ToDictionary(p => p.Name, p => p.Value);
        // sample_at_start: the form's own default (a baseline sample), which the config's default (off) does not have.
        Assert.Equal(["data", "method", "model", "network_dim", "preset", "sample_at_start", "sample_prompts"], fields.Keys.Order(StringComparer.Ordinal));
        Assert.True(fields["sample_at_start"].GetBoolean());
        Assert.Equal(32, fields["network_dim"].GetInt32());
        Assert.Equal(["a cat", "an ink dog"], fields["sample_prompts"].EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("lora", fields["preset"].GetString());
    }

    [Fact]
    public void The_resolution_follows_the_base_model_until_the_user_types_one()
    {
        static ModelEntry Model(string family, bool demo = false) =>
            new(ModelKind.Checkpoint, "m", "m.safetensors", "m.safetensors", "/m.safetensors", 1, DateTime.UtcNow, family, null, null, null,
                new Dictionary<string, string>(), null, null, null, false, demo);
        var demo = Model("SD 1.x", demo: true);
        var sdxl = Model("SDXL");

        var values = TrainingSettings.ForModel(TrainingSettings.Defaults("lora", "lora"), previous: null, demo);
        Assert.Equal("64", values["resolution"]);
        Assert.Equal("1024", TrainingSettings.ForModel(values, demo, sdxl)["resolution"]);
        values["resolution"] = "96";
        Assert.Equal("96", TrainingSettings.ForModel(values, demo, sdxl)["resolution"]);
        Assert.Equal("64", TrainingSettings.Request(new TrainingForm("lora", "lora", null, "datasets/ink",
            TrainingSettings.ForModel(TrainingSettings.Defaults("lora", "lora"), null, demo))).GetProperty("resolution").GetRawText());
    }

    [Fact]
    public void Defaults_are_the_configs_with_the_preset_applied_and_every_field_is_described()
    {
        var face = TrainingSettings.Defaults("dreambooth", "dreambooth-face");
        Assert.Equal("1E-06", face["learning_rate"]);
        Assert.Equal("200", face["num_class_images"]);
        Assert.Equal("512", face["resolution"]);
        Assert.Equal("", face["save_every_n_steps"]);
        Assert.Equal("true", face["sample_at_start"]);
        Assert.Equal(["dreambooth-object", "dreambooth-face"], TrainingSettings.PresetsFor("dreambooth"));
        // All but method, preset, model, data, output, device and the ranks' devices and rendezvous (devices, num_machines,
        // main_process_ip, main_process_port), which the appliance sets.
        Assert.Equal(TrainingConfig.Fields.Count - 10, TrainingSettings.Fields.Count);
        Assert.Contains(TrainingSettings.Fields, f => f.Name == "num_processes");
        Assert.Equal("resolution", TrainingSettings.Fields[0].Name);
        Assert.Equal(TrainingSettingKind.Choice, TrainingSettings.Fields.Single(f => f.Name == "optimizer").Kind);
        Assert.True(TrainingSettings.Fields.Single(f => f.Name == "min_snr_gamma") is { Optional: true, Common: false, Kind: TrainingSettingKind.Number });
        Assert.Equal(TrainingConfig.Methods, TrainingSettings.Methods.Select(m => m.Name));
    }

    [Fact]
    public void Changing_the_preset_takes_its_values_but_keeps_what_the_user_changed()
    {
        var values = TrainingSettings.Defaults("lora", "lora");
        values["resolution"] = "768";
        var rebased = TrainingSettings.Rebase(values, "lora", "lora", "dreambooth", "dreambooth-face");
        Assert.Equal("768", rebased["resolution"]);
        Assert.Equal("1E-06", rebased["learning_rate"]);  // the user left the LoRA preset's 1e-4: the new preset's
        Assert.Equal("2", rebased["train_batch_size"]);
    }

    [Fact]
    public async Task Starting_refuses_a_setting_the_training_layer_refuses_naming_its_field_and_queues_nothing()
    {
        WriteImages(Path.Combine(data, "datasets", "ink"), 2);
        await using var services = await ServicesAsync();
        var setup = services.GetRequiredService<TrainingSetup>();
        var jobs = services.GetRequiredService<JobService>();

        var e = await Assert.ThrowsAsync<TrainingConfigException>(() =>
            setup.StartAsync(Alice, Form("datasets/ink", new() { ["network_dim"] = "0" }), CancellationToken.None));

        Assert.Equal("network_dim", e.Subject);
        Assert.Contains("at least 1", e.Problem, StringComparison.Ordinal);
        Assert.Empty(await jobs.ListAsync(Alice, null, CancellationToken.None));
        var started = await setup.StartAsync(Alice, Form("datasets/ink", new() { ["network_dim"] = "4" }), CancellationToken.None);
        Assert.Equal(4, started.Request.GetProperty("network_dim").GetInt32());
    }

    [Fact]
    public async Task A_sample_prompt_file_outside_the_data_folder_is_refused_and_one_inside_is_read()
    {
        WriteImages(Path.Combine(data, "datasets", "ink"), 2);
        File.WriteAllText(Path.Combine(data, "datasets", "prompts.txt"), "an ink drawing --w 128\n");
        await using var services = await ServicesAsync();
        var setup = services.GetRequiredService<TrainingSetup>();

        var e = await Assert.ThrowsAnyAsync<UserInputException>(() =>
            setup.StartAsync(Alice, Form("datasets/ink", new() { ["sample_prompts_file"] = "../../etc/passwd" }), CancellationToken.None));
        Assert.Equal("sample_prompts_file", e.Subject);
        var started = await setup.StartAsync(Alice, Form("datasets/ink", new() { ["sample_prompts_file"] = "datasets/prompts.txt" }), CancellationToken.None);
        Assert.Equal("datasets/prompts.txt", started.Request.GetProperty("sample_prompts_file").GetString());
    }

    [Fact]
    public void Epochs_given_set_the_plans_steps()
    {
        var plan = TrainingPlan.Of(3, 30, 15, 0, new TrainingConfig { MaxTrainEpochs = 4, GradientAccumulationSteps = 2 },
            new TrainingTimeEstimate(null, null, TrainingEstimates.Unknown));
        Assert.Equal((4, 30), (plan.Epochs, plan.TotalSteps));  // 60 batches over accumulation 2
    }

    [Fact]
    public void With_no_run_measured_the_time_is_unknown()
    {
        var estimate = TrainingEstimates.Estimate(new TrainingConfig(), 100, []);
        Assert.False(estimate.Known);
        Assert.Null(estimate.Duration);
    }

    [Fact]
    public void A_run_with_the_same_settings_gives_its_speed_before_a_newer_run_with_others()
    {
        var planned = new TrainingConfig { Resolution = 512 };
        MeasuredRun[] runs =
        [
            new("cuda:0", new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc), planned with { LearningRate = 1e-3 }, 4),
            new("cuda:0", new DateTime(2026, 2, 1, 0, 0, 0, DateTimeKind.Utc), planned with { Resolution = 1024 }, 1),
        ];
        var estimate = TrainingEstimates.Estimate(planned, 200, runs);
        Assert.Equal(4, estimate.ItPerSecond);
        Assert.Equal(TimeSpan.FromSeconds(50), estimate.Duration);
        Assert.Contains("these settings", estimate.Basis, StringComparison.Ordinal);
    }

    [Fact]
    public void Otherwise_the_newest_runs_speed_is_scaled_by_the_work_per_step_and_called_rough()
    {
        MeasuredRun[] runs =
        [
            new("cpu", new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc), new TrainingConfig { Resolution = 512 }, 8),
            new("cpu", new DateTime(2026, 2, 1, 0, 0, 0, DateTimeKind.Utc), new TrainingConfig { Resolution = 256, TrainBatchSize = 2 }, 6),
        ];
        // The newest: 256² × 2 a step at 6 it/s; the plan: 512² × 1, twice the work a step, so 3 it/s.
        var estimate = TrainingEstimates.Estimate(new TrainingConfig { Resolution = 512, Method = "dreambooth" }, 30, runs);
        Assert.Equal(3, estimate.ItPerSecond!.Value, 9);
        Assert.Equal(TimeSpan.FromSeconds(10), estimate.Duration);
        Assert.StartsWith("rough", estimate.Basis, StringComparison.Ordinal);
    }

    private async Task<ServiceProvider> ServicesAsync()
    {
        var provider = new ServiceCollection().AddAppliance(TestAppliance.OptionsFor(data)).BuildServiceProvider();
        await Persistence.DatabaseMigration.MigrateAsync(provider, CancellationToken.None);
        return provider;
    }

    internal static void WriteImages(string folder, int count)
    {
        Directory.CreateDirectory(folder);
        for (var i = 0; i < count; i++)
        {
            var image = new RgbImage(64, 64, 3);
            image.Pixel(i, i)[0] = 255;
            ImageCodec.Save(image, Path.Combine(folder, $"img{i}.png"));
            File.WriteAllText(Path.Combine(folder, $"img{i}.txt"), "an ink drawing");
        }
    }
}

/// <summary>The plan against the trainer itself: a real run on the demo model goes through the epochs the plan counts, and its speed estimates the next.</summary>
[Collection(EngineCollection.Name)]
public sealed class TrainingPlanAgainstTheTrainerTests : IDisposable
{
    private readonly string data = Directory.CreateTempSubdirectory("sdapp-train-plan-").FullName;

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(data, recursive: true);
    }

    [Fact]
    public async Task A_run_goes_through_the_planned_epochs_and_then_estimates_a_run_with_its_settings()
    {
        TinyLora.MakeDataset(data);  // 4 images at 64 px
        await using var provider = new ServiceCollection().AddAppliance(TestAppliance.OptionsFor(data)).BuildServiceProvider();
        using var timeout = new CancellationTokenSource(TestAppliance.Patience);
        await Persistence.DatabaseMigration.MigrateAsync(provider, timeout.Token);
        await provider.GetRequiredService<JobScheduler>().StartAsync(timeout.Token);
        var setup = provider.GetRequiredService<TrainingSetup>();
        var jobs = provider.GetRequiredService<JobService>();
        var alice = new Caller("alice", IsAdmin: false);
        var form = new TrainingForm("lora", null, null, "datasets/squares", new Dictionary<string, string>
        {
            ["resolution"] = "64", ["train_batch_size"] = "3", ["max_train_steps"] = "5", ["network_dim"] = "4", ["network_alpha"] = "4",
        });

        var plan = await setup.PlanAsync(alice, form, CancellationToken.None);
        Assert.Equal((4, 2, 3), (plan.ExamplesPerEpoch, plan.BatchesPerEpoch, plan.Epochs));  // batches of 3 and 1; 5 steps: 2 + 2 + 1
        var job = await jobs.WaitAsync((await setup.StartAsync(alice, form, CancellationToken.None)).Id, timeout.Token);
        Assert.Equal(JobState.Completed, job.State);
        Assert.Equal(plan.Epochs, job.Result!.Value.GetProperty("epochs").GetInt32());
        Assert.Equal(plan.TotalSteps, job.Result!.Value.GetProperty("steps").GetInt32());

        var next = await setup.PlanAsync(new Caller("bob", IsAdmin: false), form, CancellationToken.None);
        Assert.True(next.Estimate.Known);
        Assert.Contains("these settings", next.Estimate.Basis, StringComparison.Ordinal);
        Assert.True(next.Estimate.Duration > TimeSpan.Zero);
    }
}
