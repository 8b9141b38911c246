using System.Text.Json;
using System.Text.Json.Serialization;

namespace SdAppliance.Training.Runs;

/// <summary>
/// Writes a NaN or infinite number as JSON <c>null</c> (JSON has no such numbers; System.Text.Json throws on
/// them, which once ended a run that diverged) and reads <c>null</c> back as NaN. Null rather than the strings
/// "NaN"/"Infinity" because readers of the run's files take null as a missing number: pandas' read_json and
/// polars keep the column numeric (null becomes NaN), jq and plotting tools skip the point, while a string in a
/// number column turns the whole column into text. TensorBoard reads the event file, whose floats carry NaN as is.
/// </summary>
public sealed class FiniteOrNullConverter : JsonConverter<double>
{
    public override bool HandleNull => true;

    public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.Null ? double.NaN : reader.GetDouble();

    public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
    {
        if (double.IsFinite(value))
            writer.WriteNumberValue(value);
        else
            writer.WriteNullValue();
    }
}
