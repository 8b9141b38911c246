using System.Runtime.InteropServices;

namespace SdAppliance.Imaging.Native;

/// <summary>libwebp's simple decode/encode API (webp/decode.h, webp/encode.h), under its Debian soname.</summary>
internal static unsafe partial class LibWebP
{
    internal const string Lib = "libwebp.so.7";

    [LibraryImport(Lib)] internal static partial int WebPGetInfo(byte* data, nuint dataSize, int* width, int* height);
    [LibraryImport(Lib)] internal static partial byte* WebPDecodeRGBA(byte* data, nuint dataSize, int* width, int* height);
    [LibraryImport(Lib)] internal static partial byte* WebPDecodeRGB(byte* data, nuint dataSize, int* width, int* height);
    [LibraryImport(Lib)] internal static partial void WebPFree(void* ptr);

    [LibraryImport(Lib)] internal static partial nuint WebPEncodeRGB(byte* rgb, int width, int height, int stride, float quality, byte** output);
    [LibraryImport(Lib)] internal static partial nuint WebPEncodeRGBA(byte* rgba, int width, int height, int stride, float quality, byte** output);
    [LibraryImport(Lib)] internal static partial nuint WebPEncodeLosslessRGB(byte* rgb, int width, int height, int stride, byte** output);
    [LibraryImport(Lib)] internal static partial nuint WebPEncodeLosslessRGBA(byte* rgba, int width, int height, int stride, byte** output);
}
