using System.IO.Compression;
using static SdAppliance.Formats.Tests.PickleBytes;

namespace SdAppliance.Formats.Tests;

/// <summary>Small torch zip checkpoints assembled by hand, as torch.save lays them out.</summary>
internal static class CheckpointFiles
{
    // {"w": _rebuild_tensor_v2(('storage', torch.FloatStorage, '0', 'cpu', numel), offset, size, stride, False, OrderedDict())}
    public static byte[] OneTensorPickle(int numel, int offset, int[] size, int[] stride, string storageType = "FloatStorage") => Protocol2(
        "}", Unicode("w"), Global("torch._utils", "_rebuild_tensor_v2"), "(",
        "(", Unicode("storage"), Global("torch", storageType), Unicode("0"), Unicode("cpu"), BinInt(numel), "t", "Q",
        BinInt(offset), "(", Of([.. size.Select(s => (object)BinInt(s))]), "t", "(", Of([.. stride.Select(s => (object)BinInt(s))]), "t",
        0x89, Global("collections", "OrderedDict"), ")", "R", "t", "R", "s");

    /// <summary>Writes <c>archive/data.pkl</c> and the given <c>archive/</c> entries, all stored, to a new file in <paramref name="temp"/>.</summary>
    public static string WriteZip(TempFolder temp, byte[] pickle, params (string Name, byte[] Data)[] entries) =>
        WriteZip(temp, CompressionLevel.NoCompression, pickle, entries);

    public static string WriteZip(TempFolder temp, CompressionLevel compression, byte[] pickle, params (string Name, byte[] Data)[] entries)
    {
        var path = temp.File($"{Guid.NewGuid():N}.ckpt");
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using (var data = zip.CreateEntry("archive/data.pkl", compression).Open())
            data.Write(pickle);
        foreach (var (name, bytes) in entries)
        {
            using var stream = zip.CreateEntry("archive/" + name, compression).Open();
            stream.Write(bytes);
        }
        return path;
    }
}
