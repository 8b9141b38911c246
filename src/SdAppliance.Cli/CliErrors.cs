using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using SdAppliance.Imaging;
using SdAppliance.Torch;

namespace SdAppliance.Cli;

/// <summary>A mistake in what the user asked for; the command prints its message and exits 1.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>How a command turns an exception into the one line the user sees (no stack trace).</summary>
internal static class CliErrors
{
    /// <summary>Prints <c>error: ...</c> and returns the exit code, 1.</summary>
    public static int Report(TextWriter error, Exception e)
    {
        error.WriteLine("error: " + Message(e));
        return 1;
    }

    /// <summary>Prints that a cancelled command wrote nothing and returns the exit code of an interrupted program, 130.</summary>
    public static int Cancelled(TextWriter error)
    {
        error.WriteLine("cancelled; nothing was written");
        return 130;
    }

    /// <summary>
    /// The exception's message; for the kinds the libraries throw on bad input it says everything, for anything
    /// else (a bug) the type is named too, so a report of it is useful without a stack trace.
    /// </summary>
    internal static string Message(Exception e)
    {
        var message = e is ArgumentException { ParamName: { } name } a
            ? a.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal)
            : e.Message;
        return IsUserError(e) ? message : $"{e.GetType().Name}: {message}";
    }

    private static bool IsUserError(Exception e) => e is UsageException or ArgumentException or IOException or InvalidDataException
        or NotSupportedException or UnauthorizedAccessException or TorchException or ImageFormatException or SafetensorsFormatException
        or CheckpointFormatException or UnsafePickleException or PickleFormatException or System.Text.Json.JsonException or DllNotFoundException;
}
