using System.Runtime.InteropServices;

namespace SdAppliance.Cli;

/// <summary>
/// Ctrl+C (SIGINT) and SIGTERM, handled by sdapp itself instead of System.CommandLine, whose handler ends the process two
/// seconds after the first press (before a long training step can finish) and throws on a second one. The first asks
/// the command to stop through <see cref="Token"/>: a training run ends after its current step and prints how to resume,
/// generate and convert stop and write nothing. The second ends the process at once with exit code 130; nothing is lost,
/// since every file is written under a temporary name and renamed (a checkpoint is there complete or not at all).
/// </summary>
internal sealed class Interrupts : IDisposable
{
    /// <summary>The exit code of a program ended by Ctrl+C (128 + SIGINT), as shells report it.</summary>
    public const int ExitCode = 130;

    private readonly CancellationTokenSource stop = new();
    private readonly TextWriter error;
    private readonly PosixSignalRegistration[] registrations;
    private int signals;

    public Interrupts(TextWriter error)
    {
        this.error = error;
        registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal), PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal)];
    }

    /// <summary>Cancelled at the first Ctrl+C or SIGTERM.</summary>
    public CancellationToken Token => stop.Token;

    public void Dispose()
    {
        foreach (var registration in registrations) registration.Dispose();
        stop.Dispose();
    }

    private void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true;  // the process goes on; the command stops at its next check of the token
        if (Interlocked.Increment(ref signals) == 1)
        {
            error.WriteLine("stopping (Ctrl+C again to quit at once)");
            stop.Cancel();
            return;
        }
        error.WriteLine("quitting");
        error.Flush();
        // _exit, not Environment.Exit: no atexit handlers and no C++ static destructors, which would tear libtorch down
        // under its own worker threads (the SIGABRT a second Ctrl+C used to end in).
        QuitNow(ExitCode);
    }

    [DllImport("libc", EntryPoint = "_exit")]
    private static extern void QuitNow(int status);
}
