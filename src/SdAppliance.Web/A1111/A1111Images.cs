using SdAppliance.Formats;
using SdAppliance.Imaging;

namespace SdAppliance.Web.A1111;

/// <summary>Images as the A1111 API carries them: raw base64 or <c>data:image/...;base64,</c> URLs in, raw base64 PNGs out.</summary>
internal static class A1111Images
{
    /// <summary>
    /// The bytes of an image field. An http(s) URL is refused: A1111 can fetch one (<c>api_enable_requests</c>), but a
    /// server that fetches addresses its clients name can be made to reach inside the network (SSRF).
    /// </summary>
    /// <exception cref="UserInputException">naming <paramref name="field"/>.</exception>
    public static byte[] Decode(string? value, string field)
    {
        if (string.IsNullOrWhiteSpace(value)) throw new UserInputException(field, "is empty", "send the image as base64 or a data:image/png;base64,... URL");
        var text = value.Trim();
        if (text.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || text.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            throw new UserInputException(field, "is a URL; this server does not fetch images from addresses a request names",
                "send the image itself, as base64 or a data:image/png;base64,... URL");
        if (text.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            var comma = text.IndexOf(',', StringComparison.Ordinal);
            if (comma < 0 || !text[..comma].EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
                throw new UserInputException(field, "is a data URL that is not base64", "send data:image/png;base64,...");
            text = text[(comma + 1)..];
        }
        var bytes = new byte[text.Length * 3 / 4 + 3];
        if (!Convert.TryFromBase64String(text, bytes, out var length))
            throw new UserInputException(field, "is not valid base64", "send the image as base64 or a data:image/png;base64,... URL");
        return bytes[..length];
    }

    /// <summary>
    /// A1111's png-info: the <c>parameters</c> text (<c>info</c>), every other text the file holds (<c>items</c>), and the
    /// parameters parsed (<c>parameters</c>); an image without parameters answers an empty info.
    /// </summary>
    public static object PngInfo(byte[] image)
    {
        var decoded = ImageCodec.Decode(image, source: "image");
        var info = decoded.Text.GetValueOrDefault(ImageCodec.ParametersKey) ?? "";
        var items = decoded.Text.Where(t => t.Key != ImageCodec.ParametersKey).ToDictionary(t => t.Key, t => t.Value, StringComparer.Ordinal);
        var parameters = info.Length == 0 ? new Dictionary<string, string>() : A1111Parameters.Parse(info).ToDictionary();
        return new { info, items, parameters };
    }
}
