using SdAppliance.Formats;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// A model's <c>config.json</c> cannot be built from: it is not JSON, nests absurdly, or a field has a value
/// of the wrong type or outside what any model uses. <see cref="UserInputException.Subject"/> is the file;
/// <see cref="Field"/> the field (a JSON path such as <c>block_out_channels[2]</c>) when one is at fault.
/// </summary>
public sealed class ModelConfigException : UserInputException
{
    /// <summary>The refusal of <paramref name="file"/>, at <paramref name="field"/> when known.</summary>
    public ModelConfigException(string file, string? field, string problem, Exception? inner = null)
        : base(file, field is null ? problem : $"{field} {problem}", "use the config.json that came with the model", inner) => Field = field;

    /// <summary>The field at fault, or null when the file as a whole is.</summary>
    public string? Field { get; }
}
