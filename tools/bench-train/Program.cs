// bench-train: speed and peak memory of LoRA and DreamBooth training steps, printed as `name: value unit` lines.
//   dotnet run -c Release --project tools/bench-train [-- --device cuda] [--mixed-precision bf16|fp16] [--threads N]
//       [--quick] [--full] [--case NAME] [--resolution PIXELS] [--num-processes N]
// A step is what the trainer does per optimizer step at batch 1: UNet forward on noisy latents and a text
// conditioning, MSE against the noise, backward, gradient clipping at 1.0, AdamW (lr 1e-4), zero grads. The *_8bit
// cases step with AdamW8bit instead; *_optimizer_state is the bytes of the optimizer's state after the steps.
// Models: the tiny fixture (tests/fixtures/tiny-sd, 64x64 images = 8x8 latents, its [1,77,32] text) and
// an SD 1.5-shaped UNet with random weights (models/configs/sd15, 512x512 = 64x64 latents, [1,77,768] text).
// LoRA is kohya's network (dim 16, alpha 8) on the frozen UNet; DreamBooth trains every UNet weight.
// --quick runs the tiny cases only; the default adds SD 1.5 LoRA with and without gradient checkpointing;
// SD 1.5 DreamBooth runs on CUDA, and on CPU only with --full (AdamW states alone are ~7 GB there).
// --resolution sets the SD 1.5 cases' image size (default 512; 256 fits DreamBooth's activations in a smaller box).
// AdamW against AdamW8bit, the memory table: --case for each of tiny/sd15 lora/dreambooth and their *_8bit twins.
// Peak memory: each case runs in a child process of this tool (`--case NAME`), so that nothing an earlier
// case allocated (and the allocator kept) counts towards the next: on CPU the peak resident set (VmHWM: the
// runtime, the model, the optimizer states and the activations; *_start_rss is the runtime's share), on
// CUDA the caching allocator's peak since the model was built on the device (weights included).
// --num-processes N (N > 1): data parallel, as the trainer's: per case, the one-process figures and then N ranks, each a
// child process (`--case NAME --rank R --world N --port P`, a c10d store on 127.0.0.1), each running the same batch-1
// step with the gradients averaged across the ranks by bucketed all-reduces overlapped with backward (Gloo on CPU; on
// CUDA rank r on cuda:r with NCCL). Each rank gets max(1, cores / N) intra-op threads unless --threads says; the
// one-process run is timed at those threads (CASE_single_*: what the scaling efficiency divides by) and at all cores
// (CASE_single_all_cores_*: what N ranks on one small box must beat to be worth it). A rank that fails stops the tool.
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Distributed;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Optim;
using SdAppliance.Training;
using SdAppliance.Training.Networks;
using F = SdAppliance.Torch.Functional;

string? Arg(string name) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;

var device = Device.Parse(Arg("--device") ?? "cpu");
var mixedPrecision = Arg("--mixed-precision") ?? "no";
var quick = args.Contains("--quick");
var full = args.Contains("--full");
var onlyCase = Arg("--case");
var sd15Resolution = Arg("--resolution") is { } resolutionText ? int.Parse(resolutionText, CultureInfo.InvariantCulture) : 512;
var numProcesses = Arg("--num-processes") is { } processesText ? int.Parse(processesText, CultureInfo.InvariantCulture) : 1;
// Set by the data-parallel parent on the ranks it starts, and on the one-process runs it compares them with.
var rank = Arg("--rank") is { } rankText ? int.Parse(rankText, CultureInfo.InvariantCulture) : (int?)null;
var world = Arg("--world") is { } worldText ? int.Parse(worldText, CultureInfo.InvariantCulture) : 1;
var rendezvousPort = Arg("--port") is { } portText ? int.Parse(portText, CultureInfo.InvariantCulture) : 0;
var reportAs = Arg("--report-as");
if (numProcesses < 1) return Fail($"--num-processes: {numProcesses} must be at least 1");
if (rank is { } r0 && (r0 < 0 || r0 >= world || rendezvousPort <= 0 || onlyCase is null))
    return Fail($"--rank {r0}: needs --case, --world above it and --port (the data-parallel parent passes them)");
if (sd15Resolution < 64 || sd15Resolution % 64 != 0) return Fail($"--resolution: {sd15Resolution} must be a multiple of 64");
if (mixedPrecision is not ("no" or "bf16" or "fp16"))
    return Fail($"--mixed-precision: '{mixedPrecision}' is not one of no, bf16, fp16");
if (mixedPrecision == "fp16" && !device.IsCuda)
    return Fail("--mixed-precision fp16 needs --device cuda (on CPU use no or bf16), as the trainer");

Engine.EnsureLoaded();
if (Arg("--threads") is { } threads) Engine.NumThreads = int.Parse(threads, CultureInfo.InvariantCulture);
if (device.IsCuda && !Cuda.IsAvailable) return Fail("--device cuda: this libtorch sees no CUDA device");
var dataParallel = numProcesses > 1 && rank is null;
var cores = Environment.ProcessorCount;
var threadsPerProcess = Arg("--threads") is { } perProcess ? int.Parse(perProcess, CultureInfo.InvariantCulture) : Math.Max(1, cores / numProcesses);
if (dataParallel && device.IsCuda)
{
    if (!ProcessGroup.NcclAvailable)
        return Fail($"--num-processes {numProcesses} --device cuda: NCCL is unavailable (this libsdtorch was built without it), and gloo is used here for CPU tensors only; run on CPU or with a shim built against a CUDA libtorch with NCCL");
    if (Cuda.DeviceCount < numProcesses)
        return Fail($"--num-processes {numProcesses} --device cuda: one GPU per rank, and this machine has {Cuda.DeviceCount}; lower --num-processes to at most {Cuda.DeviceCount}");
}
// One GPU per rank: rank r on cuda:r, as the trainer's launcher places them.
if (rank is { } gpuRank && device.IsCuda) device = Device.Cuda(gpuRank);

if (FindRepositoryRoot() is not { } root) return Fail("run from the repository (models/configs/sd15 and tests/fixtures/tiny-sd are read from it)");

// SD 1.5 at 512 on a CPU takes minutes per step: one warm-up and one timed step there.
var (bigWarmUp, bigRepeats) = device.IsCuda ? (2, 5) : (1, 1);
var (tinyWarmUp, tinyRepeats) = quick ? (2, 5) : (3, 15);
BenchCase[] cases =
[
    new("tiny_lora", Sd15: false, Lora: true, Checkpointing: false, tinyWarmUp, tinyRepeats),
    new("tiny_lora_8bit", Sd15: false, Lora: true, Checkpointing: false, tinyWarmUp, tinyRepeats, EightBit: true),
    new("tiny_dreambooth", Sd15: false, Lora: false, Checkpointing: false, tinyWarmUp, tinyRepeats),
    new("tiny_dreambooth_8bit", Sd15: false, Lora: false, Checkpointing: false, tinyWarmUp, tinyRepeats, EightBit: true),
    new("sd15_lora", Sd15: true, Lora: true, Checkpointing: false, bigWarmUp, bigRepeats),
    new("sd15_lora_8bit", Sd15: true, Lora: true, Checkpointing: false, bigWarmUp, bigRepeats, EightBit: true),
    new("sd15_lora_gc", Sd15: true, Lora: true, Checkpointing: true, bigWarmUp, bigRepeats),
    new("sd15_dreambooth", Sd15: true, Lora: false, Checkpointing: false, bigWarmUp, bigRepeats),
    new("sd15_dreambooth_8bit", Sd15: true, Lora: false, Checkpointing: false, bigWarmUp, bigRepeats, EightBit: true),
];

var onlyCaseSpec = onlyCase is null ? null : cases.FirstOrDefault(c => c.Name == onlyCase);
if (onlyCase is not null && onlyCaseSpec is null)
    return Fail($"--case: '{onlyCase}' is not one of {string.Join(", ", cases.Select(c => c.Name))}");
if (rank is { } myRank) return RunRank(onlyCaseSpec!, myRank);
if (onlyCaseSpec is not null && !dataParallel)
{
    RunCase(onlyCaseSpec, reportAs ?? onlyCaseSpec.Name, group: null);
    return 0;
}

Console.WriteLine($"libtorch: {Engine.TorchVersion}");
Console.WriteLine($"device: {device}");
Console.WriteLine($"threads: {Engine.NumThreads}");
Console.WriteLine($"mixed_precision: {mixedPrecision}");
Console.WriteLine($"sd15_resolution: {sd15Resolution}");
Console.WriteLine($"peak_memory: {(device.IsCuda ? "CUDA allocator peak" : "VmHWM")}, one child process per case");
if (dataParallel)
{
    Console.WriteLine($"num_processes: {numProcesses}");
    Console.WriteLine($"backend: {(device.IsCuda ? "nccl, rank r on cuda:r" : "gloo on 127.0.0.1")}");
    Console.WriteLine(Arg("--threads") is null
        ? $"threads_per_process: {threadsPerProcess} (max(1, {cores} cores / {numProcesses} processes); --threads sets it)"
        : $"threads_per_process: {threadsPerProcess} (--threads)");
    Console.WriteLine($"one_process_baselines: single at {threadsPerProcess} threads (the efficiency's divisor)"
        + (threadsPerProcess != cores ? $", single_all_cores at {cores} threads" : ""));
}
// Other work on the machine makes libtorch's threads wait for a core: the load says how much.
ReportLoad("load_average_start");
var selected = onlyCaseSpec is not null ? [onlyCaseSpec] : cases.Where(c => !c.Sd15 || (!quick && (c.Lora || full || device.IsCuda))).ToList();
var failures = 0;
if (dataParallel)
{
    foreach (var c in selected)
    {
        switch (CompareDataParallel(c))
        {
            case CaseOutcome.Failed:
                failures++;
                break;
            case CaseOutcome.RankFailed:
                // A lost rank is not a case that did not fit: whatever killed it may kill the next, so stop here.
                ReportLoad("load_average_end");
                return 1;
        }
    }
    ReportLoad("load_average_end");
    return failures == 0 ? 0 : 1;
}
foreach (var c in selected)
{
    var code = RunChild(c.Name);
    if (code == 0) continue;
    // A failed case (out of memory, say) does not stop the others.
    Console.Error.WriteLine($"bench-train: case {c.Name} failed (exit code {code})");
    failures++;
}
ReportLoad("load_average_end");
return failures == 0 ? 0 : 1;

// Re-runs this tool with `--case NAME` and the same options, passing its lines through.
int RunChild(string name)
{
    using var child = Process.Start(ChildStart(args, name, [])) ?? throw new InvalidOperationException("could not start bench-train again");
    while (child.StandardOutput.ReadLine() is { } line) Console.WriteLine(line);
    child.WaitForExit();
    return child.ExitCode;
}

// This tool again, with `--case NAME`, the given options and then the extra ones.
ProcessStartInfo ChildStart(IEnumerable<string> options, string name, IEnumerable<string> extra)
{
    var self = Environment.ProcessPath ?? throw new InvalidOperationException("the path of this process is unknown");
    var start = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
    // Started as `dotnet bench-train.dll`, the host needs the assembly again.
    if (Path.GetFileNameWithoutExtension(self) == "dotnet") start.ArgumentList.Add(typeof(BenchCase).Assembly.Location);
    foreach (var a in options) start.ArgumentList.Add(a);
    start.ArgumentList.Add("--case");
    start.ArgumentList.Add(name);
    foreach (var a in extra) start.ArgumentList.Add(a);
    return start;
}

// The user's options less those the data-parallel parent sets itself for each child (an option's first occurrence wins).
IEnumerable<string> OptionsForChildren()
{
    string[] set = ["--num-processes", "--threads", "--case", "--rank", "--world", "--port", "--report-as"];
    for (var i = 0; i < args.Length; i++)
    {
        if (set.Contains(args[i])) i++;
        else yield return args[i];
    }
}

// One case under --num-processes: the one-process baselines, then the N ranks, then the ratios between them.
CaseOutcome CompareDataParallel(BenchCase c)
{
    var figures = new Dictionary<string, double>();
    string single = $"{c.Name}_single", allCores = $"{c.Name}_single_all_cores", ddp = $"{c.Name}_ddp{numProcesses}";
    if (RunOneProcess(c, single, threadsPerProcess, figures) != 0) return CaseOutcome.Failed;
    if (threadsPerProcess != cores && RunOneProcess(c, allCores, cores, figures) != 0) return CaseOutcome.Failed;
    if (!RunRanks(c, figures)) return CaseOutcome.RankFailed;

    const double batchPerRank = 1; // train_batch_size 1, as every case's step
    if (!figures.TryGetValue($"{single}_rate", out var singleRate) || !figures.TryGetValue($"{ddp}_images_per_s", out var ddpImages))
    {
        Console.Error.WriteLine($"bench-train: case {c.Name}: a child did not print its rate");
        return CaseOutcome.Failed;
    }
    Report($"{single}_images_per_s", singleRate * batchPerRank, "images/s");
    Report($"{ddp}_scaling_efficiency", ddpImages / (numProcesses * singleRate * batchPerRank), "ratio");
    if (figures.TryGetValue($"{allCores}_rate", out var allCoresRate))
    {
        Report($"{allCores}_images_per_s", allCoresRate * batchPerRank, "images/s");
        // Above 1: N ranks of fewer threads each beat one process using every core.
        Report($"{ddp}_speedup_over_all_cores", ddpImages / (allCoresRate * batchPerRank), "ratio");
    }
    return CaseOutcome.Done;
}

// A one-process run at the given threads, its lines named PREFIX_*, passed through and kept in figures.
int RunOneProcess(BenchCase c, string prefix, int threads, Dictionary<string, double> figures)
{
    using var child = Process.Start(ChildStart(OptionsForChildren(), c.Name, ["--threads", threads.ToString(CultureInfo.InvariantCulture), "--report-as", prefix]))
        ?? throw new InvalidOperationException("could not start bench-train again");
    while (child.StandardOutput.ReadLine() is { } line) PassThrough(line, figures);
    child.WaitForExit();
    if (child.ExitCode != 0) Console.Error.WriteLine($"bench-train: case {c.Name}: the one-process run at {threads} threads failed ({DescribeExit(child.ExitCode)})");
    return child.ExitCode;
}

// The N ranks of one case; false when one of them failed (then the others have been stopped too).
bool RunRanks(BenchCase c, Dictionary<string, double> figures)
{
    var port = FreeLoopbackPort();
    var ranks = new List<Process>();
    var readers = new List<Task>();
    try
    {
        for (var r = 0; r < numProcesses; r++)
        {
            var start = ChildStart(OptionsForChildren(), c.Name, [
                "--rank", r.ToString(CultureInfo.InvariantCulture), "--world", numProcesses.ToString(CultureInfo.InvariantCulture),
                "--port", port.ToString(CultureInfo.InvariantCulture), "--threads", threadsPerProcess.ToString(CultureInfo.InvariantCulture)]);
            start.RedirectStandardError = true;
            // The rank reads its stdin to its end: when this process goes (killed too), the pipe closes and the rank stops.
            start.RedirectStandardInput = true;
            var process = Process.Start(start) ?? throw new InvalidOperationException("could not start bench-train again");
            ranks.Add(process);
            var label = $"rank {r}";
            readers.Add(Task.Run(() =>
            {
                while (process.StandardOutput.ReadLine() is { } line) PassThrough(line, figures);
            }));
            readers.Add(Task.Run(() =>
            {
                while (process.StandardError.ReadLine() is { } line) Console.Error.WriteLine($"[{label}] {line}");
            }));
        }

        var running = ranks.ToList();
        while (running.Count > 0)
        {
            var exited = running[Task.WaitAny([.. running.Select(p => p.WaitForExitAsync())])];
            running.Remove(exited);
            if (exited.ExitCode == 0) continue;
            var failed = ranks.IndexOf(exited);
            Console.Error.WriteLine($"bench-train: case {c.Name}: rank {failed} of {numProcesses} failed ({DescribeExit(exited.ExitCode)}); stopping the data-parallel run");
            // The survivors find the lost rank at their next collective and say so themselves: a few seconds for that
            // (the heartbeat check takes ~3 s, the store's host waits ~4 s more), then they are stopped.
            var graceEnd = DateTime.UtcNow + TimeSpan.FromSeconds(15);
            foreach (var p in running)
            {
                var left = graceEnd - DateTime.UtcNow;
                if (left > TimeSpan.Zero) p.WaitForExit(left);
            }
            var stopped = running.Where(p => !p.HasExited).ToList();
            foreach (var p in stopped) p.Kill(entireProcessTree: true);
            if (stopped.Count > 0)
                Console.Error.WriteLine($"bench-train: case {c.Name}: stopped {string.Join(", ", stopped.Select(p => $"rank {ranks.IndexOf(p)}"))}, still running 15 s after rank {failed} failed");
            return false;
        }
        return true;
    }
    finally
    {
        foreach (var p in ranks)
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
        Task.WaitAll([.. readers]);
        foreach (var p in ranks) p.Dispose();
    }
}

// A child's `name: value unit` line, printed and remembered by name.
static void PassThrough(string line, Dictionary<string, double> figures)
{
    Console.WriteLine(line);
    var colon = line.IndexOf(": ", StringComparison.Ordinal);
    if (colon <= 0) return;
    var value = line[(colon + 2)..].Split(' ')[0];
    if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var number))
        lock (figures) figures[line[..colon]] = number;
}

// .NET reports a child killed by signal S as exit code 128 + S.
static string DescribeExit(int code) => code > 128 && code < 160 ? $"exit code {code}: killed by signal {code - 128}" : $"exit code {code}";

// A port nothing listens on now, for rank 0's store (a small race with other programs, which its bind would report).
static int FreeLoopbackPort()
{
    var listener = new TcpListener(IPAddress.Loopback, 0);
    listener.Start();
    var port = ((IPEndPoint)listener.LocalEndpoint).Port;
    listener.Stop();
    return port;
}

// One rank of a data-parallel case: joins the group (rank 0 hosts the store), runs the case, reports only on rank 0.
int RunRank(BenchCase c, int myRank)
{
    // The parent holds our stdin open; its end (the parent killed) stops this rank instead of leaving it running.
    new Thread(() =>
    {
        try
        {
            while (Console.In.Read() >= 0) { }
        }
        catch (IOException) { }
        try
        {
            Console.Error.WriteLine($"bench-train: rank {myRank}: the parent bench-train is gone; stopping");
        }
        catch (IOException)
        {
            // Its stderr went with it.
        }
        Environment.Exit(3);
    }) { IsBackground = true, Name = "parent watch" }.Start();
    // Bounds the rendezvous and every collective; a dead peer is found sooner, from its closed sockets and heartbeat.
    // SD 1.5 steps on CPU take minutes, and ranks may drift apart by a fraction of one.
    var timeout = TimeSpan.FromMinutes(10);
    var backend = device.IsCuda ? ProcessGroupBackend.Nccl : ProcessGroupBackend.Gloo;
    try
    {
        using var store = myRank == 0
            ? TcpStore.Host("127.0.0.1", rendezvousPort, world, timeout)
            : TcpStore.Connect("127.0.0.1", rendezvousPort, world, timeout);
        using var group = new ProcessGroup(store, myRank, world, backend, timeout, "127.0.0.1");
        RunCase(c, $"{c.Name}_ddp{world}", group);
        return 0;
    }
    catch (Exception e) when (e is RankLostException or TorchException)
    {
        Console.Error.WriteLine($"bench-train: case {c.Name}, rank {myRank} of {world}: {e.Message}");
        return 1;
    }
}

// One case in this process, its lines named NAME_*; with a group, as one rank of a data-parallel run.
void RunCase(BenchCase c, string name, ProcessGroup? group)
{
    var startRss = ProcStatusKiB("VmRSS");
    // Long cases say what they are doing on stderr, so that stdout stays `name: value unit` only.
    if (group is null || group.Rank == 0)
        Console.Error.WriteLine($"# {name}: {c.WarmUp} warm-up + {c.Repeats} timed steps" + (group is null ? "" : $" on each of {group.WorldSize} ranks"));
    var generator = new Generator(0);
    torch.ManualSeed(0);
    // Every rank builds the same model from seed 0 (then takes rank 0's weights, as the trainer does) but draws its
    // own noise: the ranks' gradients differ, as on different images.
    var dataGenerator = group is null ? generator : new Generator(1 + (ulong)group.Rank);
    // Draws for CUDA tensors come from the device's default generator; a CPU one is refused there.
    var drawGenerator = device.IsCuda ? null : generator;

    StableDiffusionModel? tiny = null;
    UNet2DConditionModel unet;
    ClipTextModel textEncoder;
    if (c.Sd15)
    {
        var config = UNet2DConditionConfig.Load(Path.Combine(root, "models", "configs", "sd15", "unet", "config.json"));
        using (Init.Skip()) unet = new UNet2DConditionModel(config, new ModuleOptions(device));
        FillRandom(unet, drawGenerator);
        // LoRA wants the text encoder only to name its modules when it trains it (not here): shapes alone will do.
        textEncoder = new ClipTextModel(ClipTextConfig.ClipVitL14, device: Device.Meta);
    }
    else
    {
        tiny = ModelLoader.Load(Path.Combine(root, "tests", "fixtures", "tiny-sd"), new ModelLoadOptions(Device: device));
        unet = tiny.Unet;
        textEncoder = tiny.TextEncoder;
    }

    try
    {
        unet.Train();
        LoraNetwork? lora = null;
        IReadOnlyList<Tensor> trainable;
        if (c.Lora)
        {
            unet.Freeze();
            lora = LoraNetwork.Create(unet, textEncoder, null, new LoraNetworkOptions(NetworkDim: 16, NetworkAlpha: 8), drawGenerator);
            trainable = lora.UnetParameters;
        }
        else
        {
            unet.Unfreeze();
            trainable = [.. unet.Parameters()];
        }
        if (c.Checkpointing) unet.EnableGradientCheckpointing();
        using Optimizer optimizer = c.EightBit ? new AdamW8bit(trainable, new AdamW8bitOptions { Lr = 1e-4 }) : new AdamW(trainable, new AdamWOptions { Lr = 1e-4 });

        // Data parallel: rank 0's weights everywhere, then the trainer's buckets (1 MiB first, 25 MiB after).
        var broadcastSeconds = 0.0;
        GradientBuckets? buckets = null;
        if (group is not null)
        {
            var broadcastWatch = Stopwatch.StartNew();
            // Written in place, outside autograd (the trained weights are leaves that require grad).
            using (Autograd.NoGrad())
                group.Broadcast([.. unet.Parameters(), .. lora?.UnetParameters ?? []], root: 0);
            broadcastSeconds = Lap(broadcastWatch);
            buckets = new GradientBuckets(group, trainable, ReduceOp.Average, bucketBytes: 25L << 20, firstBucketBytes: 1L << 20);
        }
        using var bucketsScope = buckets;

        var latent = c.Sd15 ? sd15Resolution / 8 : (long)(unet.Config.SampleSize is { Count: > 0 } s ? s[0] : 64);
        using var text = torch.Randn([1, 77, unet.Config.CrossAttentionDimPerBlock[0]], generator).To(device).DetachFromDisposeScope();
        var scaler = mixedPrecision == "fp16" ? new LossScaler() : null;

        // One step; returns the seconds of forward (with the loss), backward, the wait for the all-reduces that backward
        // did not hide (data parallel only), and clipping plus optimizer.
        (double Forward, double Backward, double AllReduceWait, double Optimizer) Step()
        {
            using var scope = torch.NewDisposeScope();
            // Drawn on CPU and moved, as the trainer draws its noise.
            var noisy = torch.Randn([1, 4, latent, latent], dataGenerator).To(device);
            var target = torch.Randn([1, 4, latent, latent], dataGenerator).To(device);
            var timesteps = torch.Randint(0, 1000, [1], dataGenerator).To(device);
            var sw = Stopwatch.StartNew();
            Tensor prediction;
            using (Autocast())
                prediction = unet.Forward(noisy, timesteps, text);
            var loss = F.MseLoss(prediction.Float(), target);
            var forward = Lap(sw);
            buckets?.Prepare();
            (scaler is null ? loss : loss * scaler.Scale).Backward();
            var backward = Lap(sw);
            var allReduceWait = 0.0;
            if (buckets is not null)
            {
                buckets.Finish();
                allReduceWait = Lap(sw);
            }
            // The gradients are the same on every rank now, so every rank takes the same decision and step.
            if (scaler is not null && !scaler.Unscale(trainable))
            {
                // The trainer's loss scaler: an overflow skips the step.
                optimizer.ZeroGrad();
                return (forward, backward, allReduceWait, Lap(sw));
            }
            using (GradClipping.ClipGradNorm(trainable, 1.0)) { }
            optimizer.Step();
            optimizer.ZeroGrad();
            return (forward, backward, allReduceWait, Lap(sw));
        }

        if (device.IsCuda)
        {
            Cuda.Synchronize(CudaIndex());
            Cuda.ResetPeakMemoryStats(CudaIndex());
        }
        // The ranks start warming up, and then timing, together.
        group?.Barrier();
        for (var i = 0; i < c.WarmUp; i++) Step();
        group?.Barrier();
        var steps = Enumerable.Range(0, c.Repeats).Select(_ => Step()).ToList();
        double Median(Func<(double Forward, double Backward, double AllReduceWait, double Optimizer), double> part)
        {
            var sorted = steps.Select(part).Order().ToList();
            return sorted[sorted.Count / 2];
        }

        if (group is not null)
        {
            ReportRank(name, group, trainable, steps.Select(s => s.Forward + s.Backward + s.AllReduceWait + s.Optimizer).ToArray(),
                Median(s => s.Forward), Median(s => s.Backward), Median(s => s.AllReduceWait), Median(s => s.Optimizer), broadcastSeconds, buckets!.Count);
            lora?.Dispose();
            return;
        }
        var median = Median(s => s.Forward + s.Backward + s.Optimizer);

        Report($"{name}_trainable", trainable.Sum(t => t.NumEl) / 1e6, "Mparams");
        Report($"{name}_step", median, "s");
        Report($"{name}_rate", 1 / median, "it/s");
        Report($"{name}_forward", Median(s => s.Forward), "s");
        Report($"{name}_backward", Median(s => s.Backward), "s");
        Report($"{name}_optimizer", Median(s => s.Optimizer), "s");
        using (var state = optimizer.StateDict())
            Report($"{name}_optimizer_state", state.Tensors.Values.Sum(t => t.NumEl * (double)t.DType.ElementSize()) / 1048576.0, "MiB");
        if (device.IsCuda)
        {
            var stats = Cuda.GetMemoryStats(CudaIndex());
            Report($"{name}_peak_allocated", stats.PeakAllocatedBytes / 1048576.0, "MiB");
            Report($"{name}_peak_reserved", stats.PeakReservedBytes / 1048576.0, "MiB");
        }
        else
        {
            Report($"{name}_start_rss", startRss / 1024.0, "MiB");
            Report($"{name}_peak_rss", ProcStatusKiB("VmHWM") / 1024.0, "MiB");
        }
        lora?.Dispose();
    }
    finally
    {
        if (tiny is not null) tiny.Dispose();
        else
        {
            unet.Dispose();
            textEncoder.Dispose();
        }
        if (!ReferenceEquals(dataGenerator, generator)) dataGenerator.Dispose();
        generator.Dispose();
    }
}

// A rank's figures, combined over the ranks by collectives (which every rank joins) and printed by rank 0.
void ReportRank(string name, ProcessGroup group, IReadOnlyList<Tensor> trainable, double[] stepSeconds,
    double forward, double backward, double allReduceWait, double optimizerSeconds, double broadcastSeconds, int bucketCount)
{
    // A data-parallel step lasts as long as its slowest rank: the per-step maximum over the ranks, then the median.
    using var slowest = torch.Tensor(stepSeconds).To(device);
    group.AllReduce([slowest], ReduceOp.Max);
    var sorted = slowest.To(Device.Cpu).ToArray<double>().Order().ToArray();
    var median = sorted[sorted.Length / 2];

    // Averaged gradients and the same optimizer leave every rank with the same weights, to the bit: their sums agree.
    double weightSum;
    using (Autograd.NoGrad())
    using (torch.NewDisposeScope())
        weightSum = trainable.Sum(t => t.Double().Sum().To(Device.Cpu).ToArray<double>()[0]);
    using var highest = torch.Tensor([weightSum]).To(device);
    using var lowest = torch.Tensor([-weightSum]).To(device);
    group.AllReduce([highest, lowest], ReduceOp.Max);
    var spread = highest.To(Device.Cpu).ToArray<double>()[0] + lowest.To(Device.Cpu).ToArray<double>()[0];

    var memory = device.IsCuda
        ? Cuda.GetMemoryStats(CudaIndex()).PeakAllocatedBytes / 1048576.0
        : ProcStatusKiB("VmHWM") / 1024.0;
    using var peak = torch.Tensor([memory]).To(device);
    group.AllReduce([peak], ReduceOp.Max);
    var peakMiB = peak.To(Device.Cpu).ToArray<double>()[0];
    if (group.Rank != 0) return;

    const double batchPerRank = 1;
    Report($"{name}_trainable", trainable.Sum(t => t.NumEl) / 1e6, "Mparams");
    Report($"{name}_step", median, "s");
    Report($"{name}_it_per_s", 1 / median, "it/s");
    Report($"{name}_images_per_s", group.WorldSize * batchPerRank / median, "images/s");
    Report($"{name}_forward", forward, "s");
    // Backward with the bucket all-reduces it starts from its hooks; the wait is what it could not hide.
    Report($"{name}_backward", backward, "s");
    Report($"{name}_allreduce_wait", allReduceWait, "s");
    Report($"{name}_optimizer", optimizerSeconds, "s");
    Report($"{name}_allreduce_buckets", bucketCount, "buckets");
    Report($"{name}_allreduced", trainable.Sum(t => t.NumEl * (double)t.DType.ElementSize()) / 1048576.0, "MiB/step");
    Report($"{name}_broadcast", broadcastSeconds, "s");
    // The largest rank's weight sum less the smallest's: 0 when the ranks stayed in step.
    Report($"{name}_weight_spread", spread, "(0: the ranks' weights agree)");
    // A warning, not a failure: the timing stands, but it timed ranks whose all-reduce did not keep them together.
    if (spread != 0) Console.Error.WriteLine($"bench-train: {name}: the ranks' weights drifted apart ({spread:G4}): their gradients were not averaged alike");
    Report($"{name}_{(device.IsCuda ? "peak_allocated" : "peak_rss")}", peakMiB, "MiB (the largest rank)");
}

IDisposable? Autocast() => mixedPrecision switch
{
    "bf16" => Autograd.Autocast(device.Type, DType.BFloat16),
    "fp16" => Autograd.Autocast(device.Type, DType.Float16),
    _ => null,
};

int CudaIndex() => Math.Max(device.Index, 0);

// Seconds since the last lap; CUDA work is waited for so that each phase holds its own kernels.
double Lap(Stopwatch sw)
{
    if (device.IsCuda) Cuda.Synchronize(CudaIndex());
    var seconds = sw.Elapsed.TotalSeconds;
    sw.Restart();
    return seconds;
}

// Four significant digits, without an exponent for the large figures (SD 1.5 peaks are ~10^4 MiB).
static void Report(string name, double value, string unit) =>
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name}: {(Math.Abs(value) >= 1e4 ? value.ToString("F0", CultureInfo.InvariantCulture) : value.ToString("G4", CultureInfo.InvariantCulture))} {unit}"));

static void ReportLoad(string name)
{
    if (File.Exists("/proc/loadavg"))
        Report(name, double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture), "runnable");
}

static int Fail(string message)
{
    Console.Error.WriteLine($"bench-train: {message}");
    return 2;
}

// Random weights at a trained model's scale: N(0, 0.02) matrices and kernels, zero biases, unit norm scales
// (uninitialised memory could hold NaNs or denormals, which change the speed being measured).
static void FillRandom(Module module, Generator? generator)
{
    using var noGrad = Autograd.NoGrad();
    foreach (var (name, p) in module.NamedParameters())
    {
        if (p.Dim > 1) Init.Normal_(p, 0, 0.02, generator);
        else if (name.EndsWith(".weight", StringComparison.Ordinal)) p.Fill_(1);
        else p.Zero_();
    }
}

// A field of /proc/self/status in KiB (Linux); 0 elsewhere.
static long ProcStatusKiB(string field)
{
    const string path = "/proc/self/status";
    if (!File.Exists(path)) return 0;
    foreach (var line in File.ReadLines(path))
        if (line.StartsWith(field + ":", StringComparison.Ordinal))
            return long.Parse(line.AsSpan(field.Length + 1).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
    return 0;
}

static string? FindRepositoryRoot()
{
    foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "models", "configs", "sd15", "unet", "config.json"))
                && Directory.Exists(Path.Combine(dir.FullName, "tests", "fixtures", "tiny-sd")))
                return dir.FullName;
    return null;
}

internal enum CaseOutcome
{
    Done,
    Failed,
    RankFailed,
}

internal sealed record BenchCase(string Name, bool Sd15, bool Lora, bool Checkpointing, int WarmUp, int Repeats, bool EightBit = false);
