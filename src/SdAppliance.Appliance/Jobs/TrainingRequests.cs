using System.Text.Json;
using SdAppliance.Appliance.Storage;
using SdAppliance.Torch;
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
            Vae = Resolve(paths, "vae", config.Vae),
            Data = Resolve(paths, "data", config.Data),
            Concepts = Resolve(paths, "concepts", config.Concepts),
            DatasetConfig = Resolve(paths, "dataset_config", config.DatasetConfig),
            ClassData = Resolve(paths, "class_data", config.ClassData),
            ConditioningDataDir = Resolve(paths, "conditioning_data_dir", config.ConditioningDataDir),
            SamplePromptsFile = Resolve(paths, "sample_prompts_file", config.SamplePromptsFile),
            Output = folder,
        };
        if (config.NumMachines > 1)
            throw new TrainingConfigException("num_machines: the appliance trains on this machine's devices; a run across machines starts with sdapp train --num-machines on each");
        config = OnDevices(config, device);
        config.Validate();
        return config;
    }

    /// <summary>
    /// The run's settings on the devices the scheduler gave it: one name, or one per rank (<c>cuda:0,cuda:1</c>), which
    /// become the ranks' devices, with a free rendezvous port on this machine.
    /// </summary>
    public static TrainingConfig OnDevices(TrainingConfig config, string devices)
    {
        var names = devices.Split(',', StringSplitOptions.TrimEntries);
        if (names.Length == 1) return config with { DeviceName = names[0] };
        var cuda = names.All(n => Device.Parse(n).IsCuda);
        return config with
        {
            DeviceName = cuda ? "cuda" : "cpu",
            Devices = cuda ? string.Join(",", names.Select(n => Math.Max(Device.Parse(n).Index, 0))) : null,
            MainProcessIp = "127.0.0.1",
            MainProcessPort = FreePort(),
        };
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Refuses settings that cannot run, naming the field, before the job is queued.</summary>
    public static void Check(PathGuard paths, JsonElement request) =>
        Config(paths, request, Path.Combine(paths.Data.Runs, "check"), "cpu");

    private static string? Resolve(PathGuard paths, string field, string? path) =>
        string.IsNullOrWhiteSpace(path) ? path : paths.ResolveRequestPath(path, field);
}
