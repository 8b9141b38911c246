using SdAppliance.Formats.Pickle;

namespace SdAppliance.Formats.Checkpoints;

/// <summary>
/// Writes tensors as a PyTorch checkpoint in the zip format of torch.save (PyTorch 1.6+), by
/// default as <c>{"state_dict": OrderedDict(name -&gt; tensor)}</c>, the layout of Stable Diffusion
/// .ckpt files that torch.load, AUTOMATIC1111 and the diffusers single-file loader read.
/// </summary>
/// <remarks>
/// <para>The file is <see cref="TorchSaveWriter"/>'s (its remarks give the pickle and archive layout)
/// for that tree, with the tensors' storages numbered in the order given.</para>
/// <para>A1111's safety check knows only the float, half, bfloat16, double, long, int and byte storages;
/// tensors of other dtypes (bool, int16, int8...) are written as torch does but A1111 refuses them.</para>
/// </remarks>
public static class TorchCheckpointWriter
{
    /// <summary>The top folder of the archive, as torch 2.x names it.</summary>
    public const string ArchiveFolder = TorchSaveWriter.ArchiveFolder;

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
        var stateDict = new PickleDict(isOrdered: true);
        foreach (var tensor in tensors)
        {
            ArgumentNullException.ThrowIfNull(tensor, nameof(tensors));
            // A dict would keep the last of two tensors of one name; a state dict cannot hold both.
            if (stateDict.ContainsKey(tensor.Name))
                throw new ArgumentException($"Two tensors are named '{tensor.Name}'.", nameof(tensors));
            if (!PickleGlobals.TryGetStorageName(tensor.DType, out _))
                throw new ArgumentException($"Tensor '{tensor.Name}' is {tensor.DType.ToHeaderName()}, which torch checkpoints cannot store.", nameof(tensors));
            stateDict.Set(tensor.Name, tensor);
        }
        TorchSaveWriter.Write(path, wrapInStateDict ? new TorchSaveWriter.SingleItemDict("state_dict", stateDict) : stateDict, forceZip64);
    }
}
