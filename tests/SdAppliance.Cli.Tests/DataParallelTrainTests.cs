using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Cli.Tests;

/// <summary>
/// <c>sdapp train --num-processes 2</c> as a user runs it: the launcher and its two ranks are real processes meeting
/// through c10d's TCPStore and Gloo on the loopback, on the tiny fixture model.
/// </summary>
[Collection(TrainCommandCollection.Name)]
public sealed partial class DataParallelTrainTests : IDisposable
{
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-ddp-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private string[] Common(string method, int steps)
    {
        var data = TrainCommandTests.MakeDataset(temp, 4);
        string[] common = ["train", "--method", method, "--model", GenerateCommandTests.TinyFolder, "--data", data, "--resolution", "64",
            "--max-train-steps", steps.ToString(CultureInfo.InvariantCulture), "--seed", "5", "--ddp-timeout", "1"];
        if (method != "dreambooth") return common;
        // Prior preservation with class images ready, so that no rank draws any: each global batch of 2 holds an
        // instance image and a class image, which the two ranks split.
        var classes = Directory.CreateDirectory(Path.Combine(temp, "class")).FullName;
        foreach (var file in Directory.GetFiles(data, "*.png")) File.Copy(file, Path.Combine(classes, "class-" + Path.GetFileName(file)));
        return [.. common, "--instance-prompt", "sks square", "--class-data", classes, "--class-prompt", "a square", "--num-class-images", "4"];
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static string[] TwoRanks() => ["--num-processes", "2", "--main-process-port", FreePort().ToString(CultureInfo.InvariantCulture)];

    /// <summary>
    /// Plain SGD without gradient clipping, whose update is the gradient itself times the rate: a gradient wrongly
    /// averaged, summed twice or taken from one shard shows in the weights in proportion (AdamW or a clipped norm would
    /// hide a scale).
    /// </summary>
    /// <remarks>With gradient accumulation the ranks accumulate locally and all-reduce in the last micro-batch's backward only.</remarks>
    [Theory]
    [InlineData("lora", "0.5", 1)]
    [InlineData("dreambooth", "0.01", 1)]
    [InlineData("lora", "0.5", 2)]
    public void TwoRanksOfBatchOneEndWithTheWeightsOfOneProcessOfBatchTwo(string method, string learningRate, int accumulation)
    {
        string[] args = [.. Common(method, 3), "--optimizer", "SGD", "--learning-rate", learningRate, "--max-grad-norm", "0",
            "--gradient-accumulation-steps", accumulation.ToString(CultureInfo.InvariantCulture)];
        var one = Sdapp.Run(temp, [.. args, "--train-batch-size", "2", "--output", Path.Combine(temp, "one")]);
        Assert.True(one.ExitCode == 0, one.Error);
        var two = Sdapp.Run(temp, [.. args, "--train-batch-size", "1", .. TwoRanks(), "--output", Path.Combine(temp, "two")]);
        Assert.True(two.ExitCode == 0, two.Error);
        Assert.Contains("launching ranks 0-1 of 2 on this machine (gloo", two.Error);
        // Rank 0 alone writes: one result, one log, no second run folder's files from rank 1.
        Assert.Single(Directory.GetFiles(Path.Combine(temp, "two"), "*.safetensors"));
        Assert.Equal(File.ReadAllLines(Path.Combine(temp, "one", "log.jsonl")).Length, File.ReadAllLines(Path.Combine(temp, "two", "log.jsonl")).Length);

        var (difference, movement, largest) = method == "lora"
            ? CompareLora(Path.Combine(temp, "one", "one.safetensors"), Path.Combine(temp, "two", "two.safetensors"))
            : CompareUnets(Path.Combine(temp, "one", "one.safetensors"), Path.Combine(temp, "two", "two.safetensors"));
        // What training moved must be far above rounding for the comparison to mean anything.
        Assert.True(movement > 1e-3, $"training moved the weights by only {movement}");
        // The two runs do the same arithmetic but for the order of sums: the batch's gradient summed inside one
        // kernel over 2 rows against two 1-row gradients added by the all-reduce, and the kernels' blocking by batch
        // size. float32 rounds each sum to 2^-24 ≈ 6e-8 relative; over the longest reductions of a backward
        // (77 tokens × 32 channels, 8×8 positions × channels: a few thousand terms) that grows to at most ~1e-4 of
        // the values summed, and three steps carry it into the weights in proportion to how far they moved. A real
        // fault moves them by a large share of `movement` (averaging instead of summing: a half; one shard: a
        // different picture altogether). Besides, a weight rounds to its own float32 spacing after each update, and a
        // last-bit difference in an update can flip that rounding: 2^-23 of the largest weight per step, three steps.
        // Measured here: 1.5e-8 for LoRA (movement 1.4e-2) and 1.2e-7 for DreamBooth (one spacing of weights near 1).
        var tolerance = 1e-4 * movement + 3 * Math.ScaleB(largest, -23);
        Assert.True(difference <= tolerance,
            $"max |one process - two ranks| = {difference:E3}, over the {tolerance:E3} that the order of sums allows (movement {movement:E3}, largest weight {largest:E3})");
    }

    /// <summary>The LoRA files' largest difference, the largest lora_up value (zero at the start: all of it is training's), and the largest value.</summary>
    private static (double Difference, double Movement, double Largest) CompareLora(string a, string b)
    {
        var first = TensorFiles.Load(a);
        var second = TensorFiles.Load(b);
        try
        {
            Assert.Equal(first.Keys.Order(), second.Keys.Order());
            var difference = first.Keys.Max(k => MaxAbs(first[k], second[k]));
            var movement = first.Where(p => p.Key.EndsWith("lora_up.weight", StringComparison.Ordinal)).Max(p => MaxAbs(p.Value, null));
            return (difference, movement, first.Values.Max(t => MaxAbs(t, null)));
        }
        finally
        {
            foreach (var t in first.Values.Concat(second.Values)) t.Dispose();
        }
    }

    /// <summary>The UNets' largest difference, how far the first moved from the base model, and its largest weight.</summary>
    private static (double Difference, double Movement, double Largest) CompareUnets(string a, string b)
    {
        using var base_ = ModelLoader.Load(GenerateCommandTests.TinyFolder);
        var tiny = new ModelLoadOptions(ConfigDirectory: GenerateCommandTests.TinyFolder);
        using var first = ModelLoader.Load(a, tiny);
        using var second = ModelLoader.Load(b, tiny);
        var baseWeights = base_.Unet.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        var secondWeights = second.Unet.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter);
        var named = first.Unet.NamedParameters().ToList();
        return (named.Max(p => MaxAbs(p.Parameter, secondWeights[p.Name])), named.Max(p => MaxAbs(p.Parameter, baseWeights[p.Name])), named.Max(p => MaxAbs(p.Parameter, null)));
    }

    private static double MaxAbs(Tensor a, Tensor? b)
    {
        using var scope = torch.NewDisposeScope();
        var d = b is null ? a.To(DType.Float64) : a.To(DType.Float64) - b.To(DType.Float64);
        return d.Abs().Max().Item();
    }

    [Fact]
    public void AResumedTwoRankRunEndsAsTheUninterruptedOne()
    {
        // Dropout draws from each rank's own default generator: the resume must give each rank back its own.
        string[] args = [.. Common("lora", 4), "--network-dropout", "0.2", "--save-every-n-steps", "2", .. TwoRanks()];
        var whole = Sdapp.Run(temp, [.. args, "--output", Path.Combine(temp, "whole")]);
        Assert.True(whole.ExitCode == 0, whole.Error);
        var half = Sdapp.Run(temp, [.. args.Select(a => a == "4" ? "2" : a), "--output", Path.Combine(temp, "half")]);
        Assert.True(half.ExitCode == 0, half.Error);
        var resumed = Sdapp.Run(temp, ["train", "--resume", Path.Combine(temp, "half"), "--max-train-steps", "4"]);
        Assert.True(resumed.ExitCode == 0, resumed.Error);
        Assert.Contains("launching ranks 0-1 of 2", resumed.Error);  // run.json's num_processes launches the ranks again
        Assert.Equal(File.ReadAllBytes(Path.Combine(temp, "whole", "checkpoints", "step-000004", "trained.safetensors")),
            File.ReadAllBytes(Path.Combine(temp, "half", "checkpoints", "step-000004", "trained.safetensors")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(temp, "whole", "checkpoints", "step-000004", "optimizer.safetensors")),
            File.ReadAllBytes(Path.Combine(temp, "half", "checkpoints", "step-000004", "optimizer.safetensors")));
    }

    [Fact]
    public void KillingARankStopsTheOtherNamingItAndTheRunResumes()
    {
        var run = Path.Combine(temp, "killed");
        using var launcher = Sdapp.Start(temp, [.. Common("lora", 100000), "--save-every-n-steps", "3", "--save-last-k", "2", .. TwoRanks(), "--output", run]);
        launcher.WaitFor(() => Directory.Exists(Path.Combine(run, "checkpoints")) && Directory.GetDirectories(Path.Combine(run, "checkpoints"), "step-*")
            .Any(d => File.Exists(Path.Combine(d, "state.json"))), "a saved training state");
        var pid = int.Parse(RankProcess().Match(launcher.Error).Groups[1].Value, CultureInfo.InvariantCulture);
        using (var kill = Process.Start("kill", ["-KILL", pid.ToString(CultureInfo.InvariantCulture)])) kill.WaitForExit();
        // A hang guard, not a speed check: the survivor notices the closed connection at once and the heartbeats in seconds.
        Assert.True(launcher.Process.WaitForExit(TimeSpan.FromMinutes(2)), "the launcher did not end after a rank was killed: " + launcher.Error);
        launcher.Process.WaitForExit();
        Assert.NotEqual(0, launcher.Process.ExitCode);
        Assert.Contains("rank 1 of 2 stopped answering", launcher.Error);
        Assert.Contains($"rank 1 (process {pid}) was ended by signal 9 (killed)", launcher.Error);

        // Rank 0 saved only whole states: the last one resumes, with both ranks again.
        var latest = Directory.GetDirectories(Path.Combine(run, "checkpoints"), "step-*").Where(d => File.Exists(Path.Combine(d, "state.json"))).Order(StringComparer.Ordinal).Last();
        var step = int.Parse(Path.GetFileName(latest)["step-".Length..], CultureInfo.InvariantCulture);
        var resumed = Sdapp.Run(temp, ["train", "--resume", run, "--max-train-steps", (step + 2).ToString(CultureInfo.InvariantCulture)]);
        Assert.True(resumed.ExitCode == 0, resumed.Error);
        Assert.Contains($"trained lora: {step + 2} steps", resumed.Output);
    }

    [Fact]
    public void TwoMachinesOfOneRankEachTrainAsOneMachineOfTwoRanks()
    {
        string[] args = [.. Common("lora", 3)];
        var port = FreePort().ToString(CultureInfo.InvariantCulture);
        var local = Sdapp.Run(temp, [.. args, .. TwoRanks(), "--output", Path.Combine(temp, "local")]);
        Assert.True(local.ExitCode == 0, local.Error);
        // Two launchers as two machines would start them, meeting at the main one's address; Gloo binds each
        // machine's own address (not the loopback a one-machine run uses).
        string[] machine = [.. args, "--num-machines", "2", "--num-processes", "1", "--main-process-ip", "127.0.0.1", "--main-process-port", port,
            "--output", Path.Combine(temp, "machines")];
        using var second = Sdapp.Start(temp, [.. machine, "--machine-rank", "1"]);
        var first = Sdapp.Run(temp, [.. machine, "--machine-rank", "0"]);
        Assert.True(first.ExitCode == 0, first.Error);
        Assert.True(second.Process.WaitForExit(TimeSpan.FromMinutes(2)), second.Error);
        Assert.Equal(0, second.Process.ExitCode);
        Assert.Contains("launching rank 1 of 2 on this machine", second.Error);
        // The same ranks, the same sums: the same bits.
        Assert.Equal(File.ReadAllBytes(Path.Combine(temp, "local", "local.safetensors")).Length, File.ReadAllBytes(Path.Combine(temp, "machines", "machines.safetensors")).Length);
        Assert.Equal(File.ReadAllBytes(Path.Combine(temp, "local", "checkpoints", "step-000003", "trained.safetensors")),
            File.ReadAllBytes(Path.Combine(temp, "machines", "checkpoints", "step-000003", "trained.safetensors")));
    }

    [GeneratedRegex(@"rank 1: process (\d+)")]
    private static partial Regex RankProcess();

    /// <summary>sdapp.dll in a process of its own, its error stream collected as it comes.</summary>
    private sealed class Sdapp : IDisposable
    {
        private readonly StringBuilder error = new();
        private readonly StringBuilder output = new();

        private Sdapp(Process process) => Process = process;

        public Process Process { get; }

        public string Error
        {
            get
            {
                lock (error) return error.ToString();
            }
        }

        public static Sdapp Start(string folder, string[] args)
        {
            // dotnet test sets DOTNET_HOST_PATH to the muxer that runs it; the same one runs sdapp.dll.
            var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = folder,
            };
            start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "sdapp.dll"));
            foreach (var arg in args) start.ArgumentList.Add(arg);
            var sdapp = new Sdapp(new Process { StartInfo = start });
            sdapp.Process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is not null) lock (sdapp.error) sdapp.error.AppendLine(e.Data);
            };
            sdapp.Process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is not null) lock (sdapp.output) sdapp.output.AppendLine(e.Data);
            };
            sdapp.Process.Start();
            sdapp.Process.BeginErrorReadLine();
            sdapp.Process.BeginOutputReadLine();
            return sdapp;
        }

        public static (int ExitCode, string Output, string Error) Run(string folder, string[] args)
        {
            using var sdapp = Start(folder, args);
            if (!sdapp.Process.WaitForExit(TimeSpan.FromMinutes(5))) Assert.Fail("sdapp did not end within 5 minutes (a hang guard): " + sdapp.Error);
            sdapp.Process.WaitForExit();
            lock (sdapp.output) return (sdapp.Process.ExitCode, sdapp.output.ToString(), sdapp.Error);
        }

        public void WaitFor(Func<bool> condition, string what)
        {
            var giveUp = DateTime.UtcNow + TimeSpan.FromMinutes(5);  // a hang guard, not a speed check
            while (!condition())
            {
                if (DateTime.UtcNow > giveUp) Assert.Fail($"no {what} within 5 minutes: {Error}");
                if (Process.HasExited) Assert.Fail($"sdapp ended (exit {Process.ExitCode}) before {what}: {Error}");
                Thread.Sleep(100);
            }
        }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.Dispose();
        }
    }
}
