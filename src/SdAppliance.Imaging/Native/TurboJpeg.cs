using System.Runtime.InteropServices;

namespace SdAppliance.Imaging.Native;

/// <summary>The TurboJPEG 2.x C API of libjpeg-turbo (turbojpeg.h), under its Debian soname.</summary>
internal static unsafe partial class TurboJpeg
{
    internal const string Lib = "libturbojpeg.so.0";

    internal const int PixelFormatRgb = 0;   // TJPF_RGB
    internal const int ErrorWarning = 0;     // TJERR_WARNING
    internal const int ColorspaceCmyk = 3;   // TJCS_CMYK
    internal const int ColorspaceYcck = 4;   // TJCS_YCCK

    [LibraryImport(Lib)] internal static partial IntPtr tjInitDecompress();
    [LibraryImport(Lib)] internal static partial IntPtr tjInitCompress();
    [LibraryImport(Lib)] internal static partial int tjDestroy(IntPtr handle);
    [LibraryImport(Lib)] internal static partial IntPtr tjGetErrorStr2(IntPtr handle);
    [LibraryImport(Lib)] internal static partial int tjGetErrorCode(IntPtr handle);
    [LibraryImport(Lib)] internal static partial void tjFree(byte* buffer);

    // jpegSize is C 'unsigned long': CULong keeps the declaration right whatever its width.
    [LibraryImport(Lib)]
    internal static partial int tjDecompressHeader3(IntPtr handle, byte* jpegBuf, CULong jpegSize,
        int* width, int* height, int* jpegSubsamp, int* jpegColorspace);

    [LibraryImport(Lib)]
    internal static partial int tjDecompress2(IntPtr handle, byte* jpegBuf, CULong jpegSize, byte* dstBuf,
        int width, int pitch, int height, int pixelFormat, int flags);

    [LibraryImport(Lib)]
    internal static partial int tjCompress2(IntPtr handle, byte* srcBuf, int width, int pitch, int height,
        int pixelFormat, byte** jpegBuf, CULong* jpegSize, int jpegSubsamp, int jpegQual, int flags);

    internal static string ErrorText(IntPtr handle) => Marshal.PtrToStringUTF8(tjGetErrorStr2(handle)) ?? "unknown TurboJPEG error";
}
