using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Appliance.Generation;
using SdAppliance.Formats;

namespace SdAppliance.Web.A1111;

/// <summary>A request the A1111 routes refuse, answered in A1111's shape with <see cref="Status"/>.</summary>
internal sealed class A1111Exception(int status, string error, string message) : Exception(message)
{
    public int Status { get; } = status;

    /// <summary>A1111's <c>error</c>: the Python exception's type name (RuntimeError, HTTPException...).</summary>
    public string Error { get; } = error;
}

/// <summary>
/// A1111's error shape, <c>{error, detail, body, errors}</c> (its api.py <c>handle_exception</c>), on every A1111 route.
/// Bad fields are 422 as FastAPI answers them: <c>detail</c> is a list of <c>{loc: ["body", field], msg, type}</c>.
/// </summary>
internal static class A1111Errors
{
    // The library's field names where A1111 calls them otherwise.
    private static readonly Dictionary<string, string> Fields = new(StringComparer.Ordinal)
    {
        ["sampler"] = "sampler_name",
        ["strength"] = "denoising_strength",
        ["init_image"] = "init_images",
        ["model"] = "override_settings.sd_model_checkpoint",
        ["refiner"] = "refiner_checkpoint",
    };

    public static IResult Refusal(int status, string error, string errors, object? detail = null) =>
        Results.Json(new { error, detail = detail ?? "", body = "", errors }, statusCode: status);

    /// <summary>422 naming <paramref name="field"/> (a dotted JSON path under the body).</summary>
    public static IResult Invalid(string field, string message) =>
        Refusal(StatusCodes.Status422UnprocessableEntity, "RequestValidationError", $"{field}: {message}",
            new[] { new { loc = (string[])["body", .. field.Split('.')], msg = message, type = "value_error" } });

    /// <summary>Answers what the A1111 routes throw in A1111's shape: refusals as 422 (404, 500 where A1111 answers so), bugs as 500.</summary>
    public static async ValueTask<object?> Filter(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        try
        {
            return await next(context);
        }
        catch (A1111Exception e)
        {
            return Refusal(e.Status, e.Error, e.Message);
        }
        catch (UserInputException e) when (e.Subject is { } subject && !Path.IsPathRooted(subject))
        {
            return Invalid(Fields.GetValueOrDefault(subject, subject), e.Fix is null ? e.Problem : $"{e.Problem} ({e.Fix})");
        }
        catch (UserInputException e)
        {
            return Refusal(StatusCodes.Status422UnprocessableEntity, "RequestValidationError", e.Message);
        }
        catch (GenerationFailedException e)
        {
            return Refusal(StatusCodes.Status500InternalServerError, "RuntimeError", e.Message);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A bug, logged as one; the client still gets the shape it parses, as A1111 answers every exception.
            context.HttpContext.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(A1111Errors))
                .LogError(e, "{Method} {Path} failed", context.HttpContext.Request.Method, context.HttpContext.Request.Path);
            return Refusal(StatusCodes.Status500InternalServerError, e.GetType().Name, e.Message);
        }
    }

    /// <summary>The request body as a JSON object (an empty body is an empty object); malformed JSON is a 422.</summary>
    public static async Task<JsonObject> ReadObjectAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        try
        {
            var node = request.ContentLength == 0 ? null : await JsonNode.ParseAsync(request.Body, cancellationToken: cancellationToken);
            return node switch
            {
                null => [],
                JsonObject o => o,
                _ => throw new A1111Exception(StatusCodes.Status422UnprocessableEntity, "RequestValidationError", "body: must be a JSON object"),
            };
        }
        catch (JsonException e)
        {
            throw new A1111Exception(StatusCodes.Status422UnprocessableEntity, "RequestValidationError", $"body: is not valid JSON: {e.Message}");
        }
    }

    /// <summary>The body as <typeparamref name="T"/>; a value of the wrong type is a 422 naming its field.</summary>
    public static T Bind<T>(JsonObject body, JsonSerializerOptions options) where T : new()
    {
        try
        {
            return body.Deserialize<T>(options) ?? new T();
        }
        catch (JsonException e)
        {
            var field = e.Path is { Length: > 2 } path ? path[2..] : "body";
            throw new UserInputException(field, $"has the wrong type: {e.Message}");
        }
    }
}
