using System.Globalization;
using SdAppliance.Formats.Pickle;

namespace SdAppliance.Formats.Checkpoints;

/// <summary>
/// Writes tensors as a PyTorch checkpoint in the zip format of torch.save (PyTorch 1.6+), by
/// default as <c>{"state_dict": OrderedDict(name -&gt; tensor)}</c>, the layout of Stable Diffusion
/// .ckpt files that torch.load, AUTOMATIC1111 and the diffusers single-file loader read.
/// </summary>
/// <remarks>
/// <para>The pickle is protocol 2 (torch.save's default) and references only
/// <c>collections.OrderedDict</c>, <c>torch._utils._rebuild_tensor_v2</c> and the
/// <c>torch.*Storage</c> classes. Each tensor gets its own storage <c>archive/data/N</c>, stored
/// uncompressed at a 64-byte aligned offset, followed by the <c>archive/version</c> record "3".</para>
/// <para>No <c>byteorder</c> record is written although torch 2.x writes one: AUTOMATIC1111's
/// safety check (modules/safe.py) rejects any archive entry other than data.pkl, version and
/// data/N, and torch.load reads a file without the record as little-endian, which it is.
/// A1111's check also knows only the float, half, bfloat16, double, long, int and byte storages;
/// tensors of other dtypes (bool, int16, int8...) are written as torch does but A1111 refuses them.</para>
/// </remarks>
public static class TorchCheckpointWriter
{
    /// <summary>The top folder of the archive, as torch 2.x names it.</summary>
    public const string ArchiveFolder = "archive";

    // SETITEMS batches, as Python's pickler makes them.
    private const int BatchSize = 1000;

    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> atomically (<see cref="AtomicFile"/>),
    /// so a failure (a throwing callback, a full disk) leaves the target untouched and no temporary file behind.
    /// </summary>
    /// <param name="path">Target file; replaced if it exists.</param>
    /// <param name="tensors">Tensors with distinct names, written in this order.</param>
    /// <param name="wrapInStateDict">Wrap the tensors as {"state_dict": ...} like a .ckpt; false writes the OrderedDict itself, like torch.save(model.state_dict()).</param>
    /// <exception cref="ArgumentException">Duplicate names, or a dtype torch has no storage class for.</exception>
    public static void Write(string path, IEnumerable<SafetensorsTensor> tensors, bool wrapInStateDict = true) =>
        Write(path, tensors, wrapInStateDict, forceZip64: false);

    internal static void Write(string path, IEnumerable<SafetensorsTensor> tensors, bool wrapInStateDict, bool forceZip64)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var tensor in list)
        {
            ArgumentNullException.ThrowIfNull(tensor, nameof(tensors));
            if (!names.Add(tensor.Name))
                throw new ArgumentException($"Two tensors are named '{tensor.Name}'.", nameof(tensors));
            if (!PickleGlobals.TryGetStorageName(tensor.DType, out _))
                throw new ArgumentException($"Tensor '{tensor.Name}' is {tensor.DType.ToHeaderName()}, which torch checkpoints cannot store.", nameof(tensors));
        }
        var pickle = BuildPickle(list, wrapInStateDict);

        AtomicFile.Write(path, file =>
        {
            var zip = new StoredZipWriter(file, forceZip64);
            zip.AddEntry($"{ArchiveFolder}/data.pkl", pickle);
            for (var i = 0; i < list.Count; i++)
            {
                var tensor = list[i];
                var data = zip.BeginEntry($"{ArchiveFolder}/data/{i.ToString(CultureInfo.InvariantCulture)}", tensor.ByteLength);
                tensor.WriteTo(data);
                zip.EndEntry();
            }
            zip.AddEntry($"{ArchiveFolder}/version", "3\n"u8);
            zip.Finish();
        });
    }

    private static byte[] BuildPickle(List<SafetensorsTensor> tensors, bool wrapInStateDict)
    {
        var p = new PickleWriter();
        p.Proto();
        if (wrapInStateDict)
        {
            p.EmptyDict();
            p.String("state_dict");
        }
        p.Global("collections", "OrderedDict");
        p.EmptyTuple();
        p.Reduce();
        for (var start = 0; start < tensors.Count; start += BatchSize)
        {
            p.Mark();
            for (var i = start; i < Math.Min(start + BatchSize, tensors.Count); i++)
            {
                p.String(tensors[i].Name);
                WriteTensor(p, tensors[i], i);
            }
            p.SetItems();
        }
        if (wrapInStateDict)
            p.SetItem();
        p.Stop();
        return p.ToArray();
    }

    // _rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()), the storage being the
    // persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel).
    private static void WriteTensor(PickleWriter p, SafetensorsTensor tensor, int key)
    {
        PickleGlobals.TryGetStorageName(tensor.DType, out var storage);
        var shape = tensor.Shape;
        var strides = new long[shape.Count];
        var step = 1L;
        for (var d = shape.Count - 1; d >= 0; d--)
        {
            strides[d] = step;
            step *= shape[d];
        }
        SafetensorsDTypes.TryElementCount(shape.ToArray(), out var numel);

        p.Global("torch._utils", "_rebuild_tensor_v2");
        p.Mark();
        p.Mark();
        p.String("storage");
        p.Global("torch", storage);
        p.String(key.ToString(CultureInfo.InvariantCulture));
        p.String("cpu");
        p.Int(numel);
        p.Tuple();
        p.BinPersId();
        p.Int(0);
        p.IntTuple(shape);
        p.IntTuple(strides);
        p.Bool(false);
        p.Global("collections", "OrderedDict");
        p.EmptyTuple();
        p.Reduce();
        p.Tuple();
        p.Reduce();
    }
}
