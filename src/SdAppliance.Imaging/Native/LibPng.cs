using System.Runtime.InteropServices;
using System.Text;

namespace SdAppliance.Imaging.Native;

/// <summary>
/// libpng 1.6's simplified API (png.h, "SIMPLIFIED API"), under its Debian soname. The struct mirrors
/// <c>png_image</c> field for field: a pointer, seven png_uint_32 and char message[64] (104 bytes on 64-bit).
/// </summary>
internal static unsafe partial class LibPng
{
    internal const string Lib = "libpng16.so.16";

    internal const uint ImageVersion = 1;        // PNG_IMAGE_VERSION
    internal const uint FormatFlagAlpha = 0x01;  // PNG_FORMAT_FLAG_ALPHA
    internal const uint FormatRgb = 0x02;        // PNG_FORMAT_RGB
    internal const uint FormatRgba = 0x03;       // PNG_FORMAT_RGBA
    internal const uint Flag16BitSrgb = 0x04;    // PNG_IMAGE_FLAG_16BIT_sRGB

    [StructLayout(LayoutKind.Sequential)]
    internal struct PngImage
    {
        public IntPtr Opaque;
        public uint Version;
        public uint Width;
        public uint Height;
        public uint Format;
        public uint Flags;
        public uint ColormapEntries;
        public uint WarningOrError;
        public fixed byte Message[64];

        /// <summary>PNG_IMAGE_FAILED: the low two bits say error (2) or warning then error (3).</summary>
        public readonly bool Failed => (WarningOrError & 3) > 1;

        public readonly string MessageText
        {
            get
            {
                fixed (byte* m = Message)
                {
                    var bytes = new ReadOnlySpan<byte>(m, 64);
                    int end = bytes.IndexOf((byte)0);
                    return Encoding.UTF8.GetString(end < 0 ? bytes : bytes[..end]);
                }
            }
        }
    }

    [LibraryImport(Lib)] internal static partial int png_image_begin_read_from_memory(PngImage* image, byte* memory, nuint size);

    [LibraryImport(Lib)] internal static partial int png_image_finish_read(PngImage* image, void* background, byte* buffer, int rowStride, void* colormap);

    [LibraryImport(Lib)] internal static partial void png_image_free(PngImage* image);

    [LibraryImport(Lib)]
    internal static partial int png_image_write_to_memory(PngImage* image, byte* memory, nuint* memoryBytes,
        int convertTo8Bit, byte* buffer, int rowStride, void* colormap);
}
