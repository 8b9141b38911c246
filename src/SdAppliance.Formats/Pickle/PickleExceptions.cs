namespace SdAppliance.Formats.Pickle;

/// <summary>
/// A pickle references a global (a Python function or class) that is not on the allow-list of
/// globals PyTorch checkpoints use. Nothing named by the pickle was executed: the unpickler
/// never runs Python code, it refuses the reference as soon as it reads it.
/// </summary>
public sealed class UnsafePickleException : UserInputException
{
    /// <summary>Creates the exception for the global <paramref name="module"/>.<paramref name="name"/>.</summary>
    /// <param name="module">The module part, as written in the pickle (e.g. "posix").</param>
    /// <param name="name">The attribute part (e.g. "system").</param>
    /// <param name="filePath">The file the pickle came from, when known.</param>
    public UnsafePickleException(string module, string name, string? filePath = null)
        : base(BuildMessage(module, name, filePath), filePath, $"references the global '{module}.{name}'", null, null)
    {
        Module = module;
        Name = name;
        FilePath = filePath;
    }

    /// <summary>The module part of the refused global.</summary>
    public string Module { get; }

    /// <summary>The attribute part of the refused global.</summary>
    public string Name { get; }

    /// <summary>The refused global as Python spells it, e.g. "posix.system".</summary>
    public string Global => $"{Module}.{Name}";

    /// <summary>The file, when known.</summary>
    public string? FilePath { get; }

    /// <summary>The same refusal, attributed to <paramref name="path"/>.</summary>
    public UnsafePickleException WithFile(string path) => new(Module, Name, path);

    private static string BuildMessage(string module, string name, string? filePath)
    {
        var where = filePath is null ? "The pickle" : $"'{filePath}'";
        return $"{where} references the global '{module}.{name}', which is not one of the globals PyTorch checkpoints use; " +
               "the file was refused and nothing in it was executed. A file that needs this global may be malicious; " +
               "if it comes from a trusted source, convert it to .safetensors with the tool that made it.";
    }
}

/// <summary>A pickle stream is malformed: truncated, an unknown opcode, a stack underflow, a value of the wrong type.</summary>
public sealed class PickleFormatException : UserInputException
{
    /// <summary>Creates the exception for a problem found at byte <paramref name="position"/> of the pickle.</summary>
    public PickleFormatException(string problem, long position, Exception? inner = null)
        : base($"Malformed pickle at byte {position}: {problem}", null, problem, null, inner) => Position = position;

    /// <summary>Offset of the opcode being read, from the start of the pickle stream.</summary>
    public long Position { get; }
}
