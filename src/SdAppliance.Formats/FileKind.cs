using System.Runtime.InteropServices;

namespace SdAppliance.Formats;

/// <summary>
/// Tells a regular file from a FIFO, a device or a socket without opening it. A file a user gave by name may
/// be any of them (<c>mkfifo photo.png</c>, a link to <c>/dev/zero</c> named like a caption): opening a FIFO
/// blocks until something writes to it, and reading a device such as <c>/dev/zero</c> never ends, so a reader
/// that opened them would hang or run out of memory. .NET says only "file or directory", so the type comes
/// from the runtime's own <c>stat</c> wrapper (System.Native's <c>SystemNative_Stat</c>, whose FileStatus
/// starts with Flags and Mode on every Unix .NET supports), which follows links as opening would.
/// </summary>
public static partial class FileKind
{
    private const int TypeMask = 0xF000;
    private const int Fifo = 0x1000, CharacterDevice = 0x2000, Directory = 0x4000, BlockDevice = 0x6000, Regular = 0x8000, Socket = 0xC000;

    /// <summary>Why <paramref name="path"/> is not a regular file ("a FIFO (named pipe)"...), or null when it is one or does not exist.</summary>
    public static string? NotRegular(string path)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS() && !OperatingSystem.IsFreeBSD())
            return null;
        if (Stat(path, out var status) != 0)
            return null;
        return (status.Mode & TypeMask) switch
        {
            Regular => null,
            Fifo => "is a FIFO (named pipe), not a regular file",
            CharacterDevice => "is a character device (such as /dev/zero), not a regular file",
            BlockDevice => "is a block device, not a regular file",
            Socket => "is a socket, not a regular file",
            Directory => "is a folder, not a file",
            _ => "is not a regular file",
        };
    }

    [LibraryImport("libSystem.Native", EntryPoint = "SystemNative_Stat", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Stat(string path, out FileStatus status);

    // The leading fields of System.Native's FileStatus; the rest of the struct (times, sizes, ids) is room the call may fill.
    [StructLayout(LayoutKind.Sequential, Size = 256)]
    private struct FileStatus
    {
        public int Flags;
        public int Mode;
    }
}
