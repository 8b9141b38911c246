using System.CommandLine;
using System.Diagnostics;
using System.Text.RegularExpressions;
using SdAppliance.Formats;
using SdAppliance.Torch;

namespace SdAppliance.Cli.Tests;

public class CliTests
{
    private static (int ExitCode, string Output, string Error) Invoke(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        var exit = SdappCommand.Create().Parse(args).Invoke(new InvocationConfiguration { Output = output, Error = error });
        return (exit, output.ToString(), error.ToString());
    }

    [Fact]
    public void DoctorPrintsTheEngineAndExitsZero()
    {
        var (exit, output, error) = Invoke("doctor");

        Assert.True(exit == 0, error);
        var version = Regex.Match(output, @"libtorch:\s+(\S+)");
        Assert.True(version.Success, output);
        Assert.Equal(Engine.TorchVersion, version.Groups[1].Value);
        Assert.Matches(@"^\d+\.\d+", version.Groups[1].Value);
        Assert.Contains(Engine.TorchLibraryPath, output);
        Assert.Matches(@"CPU threads:\s+\d+", output);
        Assert.Matches(@"CUDA:\s+(not available|available, \d+ device)", output);
    }

    [Fact]
    public void DoctorSaysHowTheShimFoundLibtorch()
    {
        // build.sh writes libsdtorch.origin; the build must carry it next to the assemblies.
        var (_, output, _) = Invoke("doctor");

        var origin = Regex.Match(output, @"shim built against:\s+(.+)");
        Assert.True(origin.Success, output);
        Assert.Matches("^(SDAPP_LIBTORCH|python3 torch|system libtorch-dev) \\(", origin.Groups[1].Value);
    }

    [Fact]
    public void HelpListsDoctor()
    {
        var (exit, output, _) = Invoke("--help");

        Assert.Equal(0, exit);
        Assert.Matches(@"(?m)^\s+doctor\s+\S", output);
    }

    [Fact]
    public void UnknownCommandFails()
    {
        var (exit, _, error) = Invoke("no-such-command");

        Assert.NotEqual(0, exit);
        Assert.Contains("no-such-command", error);
    }

    [Fact]
    public void DoctorWithoutTheShimExplainsHowToInstallLibtorch()
    {
        // A copy of the CLI without libsdtorch.so is what a box without libtorch looks like to the loader.
        var built = AppContext.BaseDirectory;
        var bare = Directory.CreateTempSubdirectory("sdapp-bare-");
        try
        {
            // Every assembly the commands reference (generate and convert reach beyond the engine), only not the shim.
            foreach (var file in Directory.GetFiles(built).Where(f => Path.GetFileName(f) != "libsdtorch.so"))
                File.Copy(file, Path.Combine(bare.FullName, Path.GetFileName(file)));

            // The same harness on the complete folder succeeds, so the failure below is the missing library.
            var (okExit, okOutput, okError) = RunSdapp(built, "doctor");
            Assert.True(okExit == 0, okOutput + okError);

            var (exit, output, error) = RunSdapp(bare.FullName, "doctor");
            Assert.Equal(1, exit);
            Assert.Contains("libsdtorch.so is not next to sdapp", error);
            Assert.Contains("apt-get install libtorch-dev", error);
            Assert.Contains("SDAPP_LIBTORCH", error);
            Assert.Contains("pip install torch", error);
            Assert.DoesNotContain("Unhandled exception", error);
            Assert.Equal("", output);
        }
        finally
        {
            bare.Delete(recursive: true);
        }
    }

    [Fact]
    public void LoadFailureNamesTheMissingDependency()
    {
        // The shape of .NET's DllNotFoundException text when libsdtorch.so is present but libtorch is gone.
        const string message =
            "the engine could not load libsdtorch/libtorch (Unable to load shared library 'sdtorch' or one of its dependencies. ...\n" +
            "/opt/app/sdtorch.so: cannot open shared object file: No such file or directory\n" +
            "/opt/app/libsdtorch.so: libtorch_cpu.so.1.13: cannot open shared object file: No such file or directory\n" +
            "/opt/app/sdtorch: cannot open shared object file: No such file or directory\n)";

        Assert.Equal(
            "libsdtorch.so needs libtorch_cpu.so.1.13: cannot open shared object file: No such file or directory",
            Commands.DoctorCommand.LoadFailureReason(message));
    }

    [Fact]
    public void ARefusalIsItsMessageAndAnythingElseNamesItsType()
    {
        var flags = new Dictionary<string, string> { ["cfg_scale"] = "--cfg", ["prediction_type"] = "--prediction-type" };

        // A refusal: the field at fault as its flag, snake_case fields in the text too, nothing about exception types.
        Assert.Equal("--cfg: must be a finite number (pass --prediction-type too)",
            CliErrors.Message(new UserInputException("cfg_scale", "must be a finite number", "pass prediction_type too"), flags));
        Assert.Equal("model.safetensors: is not a model", CliErrors.Message(new UserInputException("model.safetensors", "is not a model"), flags));
        // A field name inside a path is left alone.
        Assert.Equal("/data/cfg_scale.json: x", CliErrors.Message(new UserInputException("/data/cfg_scale.json", "x"), flags));
        // The machine's failures say what the OS said.
        Assert.Equal("No space left on device", CliErrors.Message(new IOException("No space left on device")));
        // A bug names its type, so a report of the one line is useful.
        Assert.Equal("InvalidOperationException: boom", CliErrors.Message(new InvalidOperationException("boom")));
        Assert.Equal("ArgumentException: bad argument", CliErrors.Message(new ArgumentException("bad argument")));
        Assert.Equal("TorchException: libtorch failed", CliErrors.Message(new TorchException("libtorch failed")));
    }

    private static (int ExitCode, string Output, string Error) RunSdapp(string directory, params string[] args)
    {
        // dotnet test sets DOTNET_HOST_PATH to the muxer that runs it; the same one runs sdapp.dll.
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add(Path.Combine(directory, "sdapp.dll"));
        foreach (var arg in args) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output, error.Result);
    }
}
