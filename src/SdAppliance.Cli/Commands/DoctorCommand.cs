using System.CommandLine;
using System.Globalization;
using SdAppliance.Torch;

namespace SdAppliance.Cli.Commands;

/// <summary><c>sdapp doctor</c>: reports what the engine runs on, or how to install what it lacks.</summary>
public static class DoctorCommand
{
    /// <summary>Written by src/libsdtorch/build.sh next to libsdtorch.so: "how it was found|libdir|libtorch mtime".</summary>
    private const string OriginFile = "libsdtorch.origin";

    public static Command Create()
    {
        var command = new Command("doctor", "Show the engine: libtorch version and location, CPU threads, CUDA devices.");
        command.SetAction(parse => Run(parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error));
        return command;
    }

    public static int Run(TextWriter output, TextWriter error)
    {
        try
        {
            Engine.EnsureLoaded();
        }
        catch (Exception e) when (e is TorchException or DllNotFoundException)
        {
            error.WriteLine(
                "error: the engine could not be loaded: " + LoadFailureReason(e.Message) + ".\n" +
                "Install libtorch in one of these ways, then build again (README.md, \"How libtorch is found\"):\n" +
                "  - Debian/Ubuntu (CPU):   apt-get install libtorch-dev   (scripts/bootstrap.sh does this)\n" +
                "  - PyTorch (CPU or CUDA): pip install torch   (the python3 on PATH must import it)\n" +
                "  - a libtorch archive:    export SDAPP_LIBTORCH=/path/to/libtorch");
            return 1;
        }

        output.WriteLine("SdAppliance engine");
        Row(output, "libtorch", Engine.TorchVersion);
        Row(output, "loaded from", Engine.TorchLibraryPath);
        Row(output, "shim built against", ReadOrigin());
        Row(output, "CPU threads", Engine.NumThreads.ToString(CultureInfo.InvariantCulture));
        Row(output, "attention (SDPA)", Engine.HasNativeScaledDotProductAttention
            ? "native scaled_dot_product_attention"
            : "matmul-softmax fallback (libtorch < 2.1)");
        WriteCuda(output);
        return 0;
    }

    private static void WriteCuda(TextWriter output)
    {
        if (!Cuda.IsAvailable)
        {
            Row(output, "CUDA", "not available");
            return;
        }

        var count = Cuda.DeviceCount;
        Row(output, "CUDA", $"available, {count} device(s)");
        for (var i = 0; i < count; i++)
        {
            var device = Device.Cuda(i).ToString();
            if (!Cuda.HasMemoryStats)
            {
                Row(output, "  " + device, "name and memory unknown (shim built without the CUDA runtime headers)");
                continue;
            }

            try
            {
                var info = Cuda.GetDeviceInfo(i);
                Row(output, "  " + device, $"{info.Name}, {GiB(info.TotalBytes)} total, {GiB(info.FreeBytes)} free");
            }
            catch (TorchException e)
            {
                Row(output, "  " + device, "unreadable: " + e.Message);
            }
        }
    }

    /// <summary>
    /// The loader's message lists every name and folder it tried; the one line worth showing is the dependency
    /// libsdtorch.so could not resolve, or else that libsdtorch.so itself is absent.
    /// </summary>
    internal static string LoadFailureReason(string message)
    {
        const string marker = "libsdtorch.so: ";
        foreach (var line in message.Split('\n'))
        {
            var at = line.IndexOf(marker, StringComparison.Ordinal);
            if (at < 0) continue;
            var rest = line[(at + marker.Length)..].Trim();
            if (!rest.StartsWith("cannot open shared object file", StringComparison.Ordinal)) return "libsdtorch.so needs " + rest;
        }

        return message.Contains("'sdtorch'", StringComparison.Ordinal)
            ? "libsdtorch.so is not next to sdapp in " + AppContext.BaseDirectory
            : message.Split('\n')[0].Trim();
    }

    private static string ReadOrigin()
    {
        var path = Path.Combine(AppContext.BaseDirectory, OriginFile);
        if (!File.Exists(path)) return "unknown (no " + OriginFile + " next to the assemblies)";
        var parts = File.ReadAllText(path).Trim().Split('|');
        return parts.Length >= 2 ? $"{parts[0]} ({parts[1]})" : parts[0];
    }

    private static string GiB(long bytes) => (bytes / (1024.0 * 1024 * 1024)).ToString("0.0", CultureInfo.InvariantCulture) + " GiB";

    private static void Row(TextWriter output, string name, string value) => output.WriteLine($"  {name + ":",-21} {value}");
}
