namespace SdAppliance.Formats;

/// <summary>
/// Something the user gave cannot be used: a file, a setting, a field of a request. Every library throws a
/// subclass of this for bad input, so a front end needs no list of exception types: the CLI prints
/// <see cref="Exception.Message"/> as one line and exits 1, the API turns <see cref="Subject"/>, <see cref="Problem"/>
/// and <see cref="Fix"/> into a ProblemDetails. Any other exception is a bug and is reported as one.
/// </summary>
/// <remarks>
/// Library messages name the file, field or value in the library's own words (<c>network_dim</c>, a path), never a
/// flag of one front end; each front end maps fields to its own words.
/// </remarks>
public class UserInputException : Exception
{
    /// <summary>A refusal of <paramref name="subject"/> (a file path or a field name; null when neither applies).</summary>
    public UserInputException(string? subject, string problem, string? fix = null, Exception? inner = null)
        : this(Compose(subject, problem, fix), subject, problem, fix, inner)
    {
    }

    /// <summary>For subclasses whose message reads differently (e.g. "Invalid safetensors file 'x': ...").</summary>
    protected UserInputException(string message, string? subject, string problem, string? fix, Exception? inner)
        : base(message, inner)
    {
        Subject = subject;
        Problem = problem;
        Fix = fix;
    }

    /// <summary>The file (its path) or the field (its name) at fault, when there is one.</summary>
    public string? Subject { get; }

    /// <summary>What is wrong, without the subject.</summary>
    public string Problem { get; }

    /// <summary>What to do about it, when the library knows.</summary>
    public string? Fix { get; }

    private static string Compose(string? subject, string problem, string? fix)
    {
        var text = subject is null ? problem : $"{subject}: {problem}";
        return fix is null ? text : $"{text} ({fix})";
    }
}
