namespace SdAppliance.Models.Tokenization;

/// <summary>
/// GPT-2/CLIP <c>bytes_to_unicode</c>: a reversible map from the 256 byte values to printable characters, so
/// that BPE can work on strings without whitespace or control characters. Printable Latin-1 bytes map to
/// themselves; the other 68 bytes map to U+0100 onwards in byte order.
/// </summary>
internal static class ByteEncoder
{
    public static readonly char[] ByteToChar = Build();

    public static readonly IReadOnlyDictionary<char, byte> CharToByte =
        ByteToChar.Select((c, b) => (c, b)).ToDictionary(p => p.c, p => (byte)p.b);

    private static char[] Build()
    {
        var map = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    /// <summary>The UTF-8 bytes of <paramref name="text"/>, one mapped character per byte.</summary>
    public static string Encode(string text)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, static (span, source) =>
        {
            for (var i = 0; i < source.Length; i++) span[i] = ByteToChar[source[i]];
        });
    }
}
