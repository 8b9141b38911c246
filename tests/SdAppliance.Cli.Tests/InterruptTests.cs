using System.Diagnostics;
using System.Text;

namespace SdAppliance.Cli.Tests;

/// <summary>
/// Ctrl+C on a real <c>sdapp</c> process: the signals are sent with <c>kill -INT</c>, as a terminal sends them. Each test
/// waits for a sign that the command is at work (a step line, a file it writes) before signalling, never for a time.
/// </summary>
[Collection(TrainCommandCollection.Name)]
public sealed class InterruptTests : IDisposable
{
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-interrupt-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private string[] LongTraining(string run) =>
    [
        "train", "--model", GenerateCommandTests.TinyFolder, "--data", TrainCommandTests.MakeDataset(temp), "--output", run,
        "--resolution", "64", "--network-dim", "4", "--max-train-steps", "100000", "--save-every-n-steps", "1",
    ];

    [Fact]
    public void CtrlCStopsATrainingRunAfterItsStepAndPrintsTheResumeCommand()
    {
        var run = Path.Combine(temp, "run");
        using var sdapp = Sdapp.Start(temp, LongTraining(run));
        WaitForFirstCheckpoint(sdapp, run);

        Sdapp.Kill("-INT", sdapp.Id);
        var (exit, error) = sdapp.WaitForExit();

        Assert.True(exit == 130, error);
        Assert.Contains("stopping (Ctrl+C again to quit at once)", error);
        Assert.Matches(@"stopped after step \d+", error);
        Assert.Contains($"continue with: sdapp train --resume {run}", error);
        AssertNoCrash(error);
        AssertCheckpointsComplete(run);
    }

    [Fact]
    public void ASecondCtrlCWhileStoppingQuitsAtOnceWithoutAnExceptionOrAnAbort()
    {
        var run = Path.Combine(temp, "run");
        using var sdapp = Sdapp.Start(temp, LongTraining(run));
        WaitForFirstCheckpoint(sdapp, run);

        // The second once the first is taken (two signals sent together may merge into one), while the step finishes.
        Sdapp.Kill("-INT", sdapp.Id);
        sdapp.WaitForError("stopping (Ctrl+C again to quit at once)");
        Sdapp.Kill("-INT", sdapp.Id);
        var (exit, error) = sdapp.WaitForExit();

        Assert.True(exit == 130, error);  // 134 would be SIGABRT
        Assert.Contains("stopping (Ctrl+C again to quit at once)", error);
        Assert.Contains("quitting", error);
        AssertNoCrash(error);
        AssertCheckpointsComplete(run);
    }

    [Fact]
    public void CtrlCCancelsAGenerationAndWritesNothing()
    {
        var png = Path.Combine(temp, "x.png");
        var data = Path.Combine(temp, "appdata");
        using var sdapp = Sdapp.Start(temp, ["generate", "--model", GenerateCommandTests.TinyLdm, "--config", GenerateCommandTests.TinyFolder,
            "--prompt", "a cat", "--steps", "100000", "--output", png], ("SDAPP_DATA", data));
        // The model hash is cached once the model is loaded, just before sampling starts.
        sdapp.WaitFor(() => File.Exists(Path.Combine(data, "cache", "hashes.json")), "the hash cache");

        Sdapp.Kill("-INT", sdapp.Id);
        var (exit, error) = sdapp.WaitForExit();

        Assert.True(exit == 130, error);
        Assert.Contains("cancelled; nothing was written", error);
        AssertNoCrash(error);
        Assert.False(File.Exists(png));
    }

    [Fact]
    public void CtrlCStopsTheServerGracefully()
    {
        var port = FreePort();
        using var sdapp = Sdapp.Start(temp, ["serve", "--urls", $"http://127.0.0.1:{port}", "--data", Path.Combine(temp, "appdata")]);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        sdapp.WaitFor(() => Answers(http, $"http://127.0.0.1:{port}/health"), "an answer from /health");

        Sdapp.Kill("-INT", sdapp.Id);
        var (exit, error) = sdapp.WaitForExit();

        // sdapp's handler (its message) cancels the token the host runs on; the host stops and serve ends normally.
        Assert.True(exit == 0, error);
        Assert.Contains("stopping (Ctrl+C again to quit at once)", error);
        AssertNoCrash(error);
        Assert.False(Answers(http, $"http://127.0.0.1:{port}/health"));
    }

    private static bool Answers(HttpClient http, string url)
    {
        try
        {
            using var response = http.GetAsync(url).GetAwaiter().GetResult();
            return response.IsSuccessStatusCode;
        }
        catch (HttpRequestException)
        {
            return false;
        }
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    // Any complete saved state, not step-000001 by name: with a save every step and the last few kept, that folder may
    // already be gone again when a busy machine lets this poll run.
    private static void WaitForFirstCheckpoint(Sdapp sdapp, string run) =>
        sdapp.WaitFor(() => Directory.Exists(Path.Combine(run, "checkpoints"))
            && Directory.EnumerateDirectories(Path.Combine(run, "checkpoints"), "step-*").Any(d => File.Exists(Path.Combine(d, "state.json"))),
            "the first saved training state");

    private static void AssertNoCrash(string error)
    {
        foreach (var sign in new[] { "Unhandled exception", "InvalidOperationException", "   at ", "Aborted" })
            Assert.DoesNotContain(sign, error);
    }

    /// <summary>Every checkpoint folder is whole (its state.json is written last; one being written has a hidden temporary name).</summary>
    private static void AssertCheckpointsComplete(string run)
    {
        var checkpoints = Path.Combine(run, "checkpoints");
        Assert.True(Directory.Exists(checkpoints), "no checkpoint was written");
        var steps = Directory.GetDirectories(checkpoints, "step-*");
        Assert.NotEmpty(steps);
        foreach (var step in steps) Assert.True(File.Exists(Path.Combine(step, "state.json")), $"{step} is incomplete");
    }

    /// <summary>A running sdapp (the one the tests are built with) whose stderr is collected as it comes.</summary>
    private sealed class Sdapp : IDisposable
    {
        private readonly Process process;
        private readonly StringBuilder error = new();

        private Sdapp(Process process)
        {
            this.process = process;
            process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (error) error.AppendLine(e.Data);
            };
            process.OutputDataReceived += (_, _) => { };
            process.BeginErrorReadLine();
            process.BeginOutputReadLine();
        }

        public int Id => process.Id;

        public static Sdapp Start(string folder, string[] args, params (string Name, string Value)[] environment)
        {
            // A shell that starts a job in the background (CI, `cmd &`) hands it SIGINT ignored, as POSIX says, and sdapp
            // rightly keeps it so; env --default-signal gives the child Ctrl+C as a terminal's foreground job has it.
            var start = new ProcessStartInfo("env")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = folder,
            };
            start.ArgumentList.Add("--default-signal=INT");
            // dotnet test sets DOTNET_HOST_PATH to the muxer that runs it; the same one runs sdapp.dll.
            start.ArgumentList.Add(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet");
            start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "sdapp.dll"));
            foreach (var arg in args) start.ArgumentList.Add(arg);
            foreach (var (name, value) in environment) start.Environment[name] = value;
            return new Sdapp(Process.Start(start)!);
        }

        public static void Kill(string signal, int pid)
        {
            using var kill = Process.Start("kill", [signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
            kill.WaitForExit();
            Assert.Equal(0, kill.ExitCode);
        }

        public void WaitForError(string text) => WaitFor(() => Error.Contains(text, StringComparison.Ordinal), $"'{text}' on stderr");

        /// <summary>Polls until <paramref name="condition"/> holds; fails if the process ends first.</summary>
        public void WaitFor(Func<bool> condition, string what)
        {
            var giveUp = DateTime.UtcNow + TimeSpan.FromMinutes(5);  // a hang guard, not a speed check
            while (!condition())
            {
                if (DateTime.UtcNow > giveUp) Assert.Fail($"no {what} within 5 minutes: {Error}");
                if (process.HasExited)
                {
                    process.WaitForExit();
                    Assert.Fail($"sdapp ended (exit {process.ExitCode}) before {what}: {Error}");
                }
                Thread.Sleep(5);
            }
        }

        public (int ExitCode, string Error) WaitForExit()
        {
            // A bound only so that a signal that never arrives fails the test instead of hanging the suite.
            if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
                Assert.Fail($"sdapp did not end within 5 minutes of the signal: {Error}");
            process.WaitForExit();  // also waits for the redirected streams to end
            return (process.ExitCode, Error);
        }

        private string Error
        {
            get
            {
                lock (error) return error.ToString();
            }
        }

        public void Dispose()
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.Dispose();
        }
    }
}
