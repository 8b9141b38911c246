using Google.Protobuf;
using Onnx;
using SdAppliance.Formats;

namespace SdAppliance.Onnx.Graphs;

/// <summary>
/// Writes and reads <c>model.onnx</c> files. A protobuf message cannot pass 2 GiB, so a model
/// whose weights are larger (an SD 1.5 UNet in fp32 is 3.4 GB) keeps them in one external data
/// file beside it, as ONNX's external-data convention says: each large initializer's bytes at an
/// offset (aligned to 4 KiB, so runtimes can map them) with <c>location</c>, <c>offset</c> and
/// <c>length</c> entries. Both files are written under temporary names and then renamed.
/// </summary>
public static class OnnxFile
{
    /// <summary>Weights above this total go to external data (protobuf's hard limit is 2 GiB; the graph needs room too).</summary>
    public const long ExternalDataThreshold = 1_800_000_000;

    /// <summary>Initializers smaller than this stay inside the model file even when the rest is external.</summary>
    private const int SmallTensorBytes = 1024;

    private const int Alignment = 4096;

    /// <summary>
    /// Saves <paramref name="model"/> to <paramref name="path"/>; its weights go to
    /// <paramref name="externalDataName"/> beside it when they pass <see cref="ExternalDataThreshold"/>
    /// or <paramref name="forceExternal"/> is set. The model's initializers are changed in place.
    /// </summary>
    public static void Save(ModelProto model, string path, string externalDataName = "model.onnx_data", bool forceExternal = false)
    {
        var initializers = model.Graph.Initializer;
        var total = initializers.Sum(t => (long)t.RawData.Length);
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(folder);
        var dataPath = Path.Combine(folder, externalDataName);
        if (forceExternal || total > ExternalDataThreshold)
        {
            AtomicFile.Write(dataPath, stream =>
            {
                foreach (var tensor in initializers.Where(t => t.RawData.Length >= SmallTensorBytes))
                {
                    var pad = (Alignment - stream.Position % Alignment) % Alignment;
                    stream.Write(new byte[pad]);
                    var offset = stream.Position;
                    tensor.RawData.WriteTo(stream);
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = externalDataName });
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = tensor.RawData.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
                    tensor.DataLocation = TensorProto.Types.DataLocation.External;
                    tensor.RawData = ByteString.Empty;
                }
            });
        }
        else if (File.Exists(dataPath))
        {
            File.Delete(dataPath); // a stale data file from an earlier, larger export would confuse readers
        }
        AtomicFile.Write(path, model.WriteTo);
    }

    /// <summary>Reads a model's graph without its external data (names, types, shapes, opsets).</summary>
    public static ModelProto ReadStructure(string path)
    {
        using var stream = File.OpenRead(path);
        return ModelProto.Parser.ParseFrom(stream);
    }
}
