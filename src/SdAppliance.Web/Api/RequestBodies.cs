using System.Text.Json;
using SdAppliance.Formats;

namespace SdAppliance.Web.Api;

/// <summary>A JSON body read into the library's request type, a mistake in it refused naming its JSON path.</summary>
internal static class RequestBodies
{
    public static T Read<T>(JsonElement body, Func<JsonElement, T> read)
    {
        if (body.ValueKind != JsonValueKind.Object)
            throw new UserInputException("body", $"must be a JSON object, got {body.ValueKind.ToString().ToLowerInvariant()}", "send the request as {\"field\": value, ...}");
        try
        {
            return read(body);
        }
        catch (JsonException e)
        {
            // The path ("$.steps") names the field; the reader's message says what it expected there.
            var field = e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : "body";
            throw new UserInputException(field, "has the wrong type or form", "see the request's schema at /scalar", e);
        }
    }
}
