using System.Diagnostics;
using System.Globalization;

namespace SdAppliance.Training.Distributed;

/// <summary>
/// Starts this machine's ranks of a data-parallel run, as <c>accelerate launch</c> and torchrun do: num_processes
/// copies of a command, each told its rank by the environment (<see cref="DataParallelRank"/>), their output passed
/// through (every rank but the main one's lines tagged <c>[rank N]</c>), a stop request passed on to each, and at the
/// end the first failure named: which rank, its process, and how it ended.
/// </summary>
public static class DataParallelLauncher
{
    /// <summary>
    /// Runs ranks <c>machineRank × num_processes</c> … <c>+ num_processes − 1</c> of the run and returns the exit code:
    /// 0 when every rank succeeded, else the first failed rank's code (<paramref name="stopCode"/> when all stopped on request).
    /// </summary>
    /// <param name="command">The program and arguments of one rank (the same for every rank; the environment tells them apart).</param>
    /// <param name="stopCode">The code a rank ends with when it stopped on request.</param>
    public static int Run(TrainingConfig config, int machineRank, IReadOnlyList<string> command, TextWriter output, TextWriter error, int stopCode,
        CancellationToken cancellationToken = default)
    {
        if (machineRank < 0 || machineRank >= config.NumMachines)
            throw new TrainingConfigException($"machine_rank: {machineRank} is outside 0..{config.NumMachines - 1} (num_machines is {config.NumMachines})");
        if (config.Devices is null && Torch.Device.Parse(config.DeviceName).IsCuda && Torch.Cuda.DeviceCount is var count && count < config.NumProcesses)
            throw new TrainingConfigException($"num_processes: {config.NumProcesses} ranks on cuda need as many devices, and this machine has {count}");
        var world = config.WorldSize();
        var first = machineRank * config.NumProcesses;
        error.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"launching {(config.NumProcesses == 1 ? $"rank {first}" : $"ranks {first}-{first + config.NumProcesses - 1}")} of {world} on this machine ({config.DdpBackend ?? DataParallel.Backend(config).ToString().ToLowerInvariant()}, rendezvous at {config.MainProcessIp}:{config.MainProcessPort})"));
        var ranks = new List<(DataParallelRank Rank, Process Process)>();
        try
        {
            for (var local = 0; local < config.NumProcesses; local++)
            {
                var rank = new DataParallelRank(first + local, local, world);
                ranks.Add((rank, Start(rank, command, output, error)));
            }
            error.WriteLine(string.Join(", ", ranks.Select(r => $"rank {r.Rank.Rank}: process {r.Process.Id}")));
            using var forward = cancellationToken.Register(() =>
            {
                error.WriteLine("stopping every rank after its current step");
                foreach (var (_, process) in ranks) Interrupt(process);
            });
            foreach (var (_, process) in ranks) process.WaitForExit();
        }
        finally
        {
            // A launcher that fails half-way leaves no rank behind.
            foreach (var (_, process) in ranks)
                if (!process.HasExited) process.Kill(entireProcessTree: true);
        }

        var failures = ranks.Where(r => r.Process.ExitCode != 0).ToList();
        foreach (var (rank, process) in failures)
            error.WriteLine($"rank {rank.Rank} (process {process.Id}) {Ending(process.ExitCode)}");
        // A rank that failed outranks those that stopped on request (or because of it).
        var code = failures.Select(f => f.Process.ExitCode).OrderBy(c => c == stopCode).FirstOrDefault();
        foreach (var (_, process) in ranks) process.Dispose();
        return code;
    }

    private static string Ending(int exitCode) => exitCode > 128 && exitCode < 160
        ? $"was ended by signal {exitCode - 128}{(exitCode == 137 ? " (killed)" : exitCode == 130 ? " (interrupted)" : "")}"
        : $"exited with code {exitCode}";

    private static Process Start(DataParallelRank rank, IReadOnlyList<string> command, TextWriter output, TextWriter error)
    {
        // A session of its own (setsid keeps the process id): a terminal's Ctrl+C reaches the launcher alone, which
        // passes one stop request to each rank, instead of every rank taking it twice.
        var setsid = File.Exists("/usr/bin/setsid") ? "/usr/bin/setsid" : null;
        var start = new ProcessStartInfo(setsid ?? command[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in setsid is null ? command.Skip(1) : command) start.ArgumentList.Add(arg);
        foreach (var (name, value) in rank.ToEnvironment()) start.Environment[name] = value;
        var process = new Process { StartInfo = start };
        var tag = rank.IsMain ? "" : $"[rank {rank.Rank}] ";
        process.OutputDataReceived += (_, e) => Forward(output, tag, e.Data);
        process.ErrorDataReceived += (_, e) => Forward(error, tag, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static void Forward(TextWriter writer, string tag, string? line)
    {
        if (line is null) return;
        lock (writer) writer.WriteLine(tag + line);
    }

    private static void Interrupt(Process process)
    {
        if (process.HasExited) return;
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-INT", process.Id.ToString(CultureInfo.InvariantCulture)]) { UseShellExecute = false });
        kill?.WaitForExit();
    }
}
