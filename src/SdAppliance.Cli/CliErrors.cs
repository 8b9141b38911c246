using System.Text.RegularExpressions;
using SdAppliance.Formats;

namespace SdAppliance.Cli;

/// <summary>A mistake in the command line itself (flags that do not go together); printed as it is, exit 1.</summary>
internal sealed class UsageException(string message) : UserInputException(message, null, message, null, null);

/// <summary>How a command turns an exception into the one line the user sees (no stack trace).</summary>
internal static partial class CliErrors
{
    /// <summary>
    /// Prints <c>error: ...</c> and returns the exit code, 1. <paramref name="flags"/> maps the library's field names
    /// (<c>cfg_scale</c>) to this command's flags (<c>--cfg</c>), so the message speaks the command line's words.
    /// </summary>
    public static int Report(TextWriter error, Exception e, IReadOnlyDictionary<string, string>? flags = null)
    {
        error.WriteLine("error: " + Message(e, flags));
        return 1;
    }

    /// <summary>Prints that a cancelled command wrote nothing and returns the exit code of an interrupted program, 130.</summary>
    public static int Cancelled(TextWriter error)
    {
        error.WriteLine("cancelled; nothing was written");
        return Interrupts.ExitCode;
    }

    /// <summary>
    /// The message of a refusal (<see cref="UserInputException"/>: it says everything) or of a failure of the machine
    /// (see <see cref="IsEnvironmental"/>); for anything else, a bug, the type is named too, so a report of it is useful
    /// without a stack trace.
    /// </summary>
    internal static string Message(Exception e, IReadOnlyDictionary<string, string>? flags = null) => e switch
    {
        UserInputException u => InFlags(u, flags ?? NoFlags),
        _ when IsEnvironmental(e) => e.Message,
        _ => $"{e.GetType().Name}: {e.Message}",
    };

    /// <summary>
    /// Failures of the machine rather than of the input or the code, whose own message is the useful part: a file system
    /// error from the OS (a full disk, a folder that cannot be written, a file removed while it was read) and a native
    /// library that cannot be loaded (libsdtorch or libtorch missing; <c>sdapp doctor</c> explains).
    /// </summary>
    internal static bool IsEnvironmental(Exception e) => e is IOException or UnauthorizedAccessException or DllNotFoundException;

    /// <summary>
    /// The refusal with its subject, when it is a field, spelled as the flag (<c>--steps: must be at least 1</c>); other
    /// snake_case field names in the text (<c>prediction_type</c>) become their flags too. One-word field names are only
    /// replaced as the subject, since elsewhere they are ordinary words ("steps").
    /// </summary>
    internal static string InFlags(UserInputException e, IReadOnlyDictionary<string, string> flags)
    {
        var message = e.Subject is { } subject && flags.TryGetValue(subject, out var flag) && e.Message.StartsWith(subject + ":", StringComparison.Ordinal)
            ? flag + e.Message[subject.Length..]
            : e.Message;
        return FlagsInText(message, flags);
    }

    /// <summary>Every snake_case field name in <paramref name="text"/> that <paramref name="flags"/> knows, as its flag.</summary>
    internal static string FlagsInText(string text, IReadOnlyDictionary<string, string> flags) =>
        SnakeCaseWord().Replace(text, m => flags.TryGetValue(m.Value, out var flag) ? flag : m.Value);

    private static readonly Dictionary<string, string> NoFlags = [];

    [GeneratedRegex(@"(?<![\w./-])[a-z][a-z0-9]*(?:_[a-z0-9]+)+(?![\w/]|\.\w)")]
    private static partial Regex SnakeCaseWord();
}
