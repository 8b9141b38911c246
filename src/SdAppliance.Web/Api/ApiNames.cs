using System.Text.Json;
using SdAppliance.Formats;

namespace SdAppliance.Web.Api;

/// <summary>
/// How the REST API spells names, in JSON and in routes and queries alike: snake_case (<c>total_steps</c>,
/// <c>class_images</c>, <c>queued</c>), as the requests it carries (a run.json, a generation request) and A1111 do.
/// </summary>
internal static class ApiNames
{
    public static readonly JsonNamingPolicy Policy = JsonNamingPolicy.SnakeCaseLower;

    public static string Of<TEnum>(TEnum value) where TEnum : struct, Enum => Policy.ConvertName(value.ToString());

    /// <summary>The value <paramref name="text"/> names, or a refusal of <paramref name="field"/> listing the names.</summary>
    public static TEnum Parse<TEnum>(string field, string text) where TEnum : struct, Enum =>
        Enum.GetValues<TEnum>().Where(v => Of(v) == text).Select(v => (TEnum?)v).FirstOrDefault()
        ?? throw new UserInputException(field, $"'{text}' is not one of the names", "use one of " + string.Join(", ", Enum.GetValues<TEnum>().Select(Of)));
}
