using System.Text.Json;
using SdAppliance.Appliance.Storage;
using SdAppliance.Training;

namespace SdAppliance.Appliance.Jobs;

/// <summary>Training settings in a job request (training, class images): the fields of <c>run.json</c>, paths inside the data folder.</summary>
public static class TrainingRequests
{
    /// <summary>
    /// The settings of <paramref name="request"/> for a job whose folder is <paramref name="folder"/>, on
    /// <paramref name="device"/>; the model by default the demo model; checked (<see cref="TrainingConfig.Validate"/>)
    /// before anything runs.
    /// </summary>
    public static TrainingConfig Config(PathGuard paths, JsonElement request, string folder, string device)
    {
        var settings = TrainingConfig.ParseSettings(request.GetRawText(), "request");
        if (settings.ContainsKey("output"))
            throw new TrainingConfigException("output: the appliance keeps a job's run in runs/JOB_ID; leave output out");
        var config = TrainingConfig.FromSettings(settings, "request");
        var model = config.Model ?? paths.Data.DemoModel
            ?? throw new TrainingConfigException("model: give the base model (a diffusers folder or a .safetensors/.ckpt file under models/)");
        config = config with
        {
            Model = paths.ResolveRequestPath(model, "model"),
            Data = Resolve(paths, "data", config.Data),
            Concepts = Resolve(paths, "concepts", config.Concepts),
            DatasetConfig = Resolve(paths, "dataset_config", config.DatasetConfig),
            ClassData = Resolve(paths, "class_data", config.ClassData),
            ConditioningDataDir = Resolve(paths, "conditioning_data_dir", config.ConditioningDataDir),
            SamplePromptsFile = Resolve(paths, "sample_prompts_file", config.SamplePromptsFile),
            Output = folder,
            DeviceName = device,
        };
        config.Validate();
        return config;
    }

    /// <summary>Refuses settings that cannot run, naming the field, before the job is queued.</summary>
    public static void Check(PathGuard paths, JsonElement request) =>
        Config(paths, request, Path.Combine(paths.Data.Runs, "check"), "cpu");

    private static string? Resolve(PathGuard paths, string field, string? path) =>
        string.IsNullOrWhiteSpace(path) ? path : paths.ResolveRequestPath(path, field);
}
