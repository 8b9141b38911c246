using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;

namespace SdAppliance.Models.Conversion;

/// <summary>
/// The tensors of one weights file as names, dtypes, shapes and row-major bytes, without the engine:
/// <c>.safetensors</c> memory-mapped, <c>.ckpt</c>/<c>.pt</c>/<c>.pth</c>/<c>.bin</c> through the restricted unpickler.
/// </summary>
internal abstract class TensorFile : IDisposable
{
    protected TensorFile(string path) => Path = path;

    public string Path { get; }

    /// <summary>Every tensor's name and shape, in file order.</summary>
    public abstract IReadOnlyDictionary<string, long[]> Shapes { get; }

    public abstract SafetensorsDType DTypeOf(string name);

    public abstract byte[] ReadBytes(string name);

    public abstract void Dispose();

    public static TensorFile Open(string path) => IsSafetensors(path) ? new Safetensors(path) : new Pickle(path);

    /// <summary>
    /// Whether the weights file at <paramref name="path"/> is <c>.safetensors</c> (else a torch pickle:
    /// <c>.ckpt</c>, <c>.pt</c>, <c>.pth</c>, <c>.bin</c>); a missing file or another extension throws.
    /// </summary>
    public static bool IsSafetensors(string path)
    {
        if (!File.Exists(path)) throw new UserInputException(path, "the model file does not exist");
        return System.IO.Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".safetensors" => true,
            ".ckpt" or ".pt" or ".pth" or ".bin" => false,
            var ext => throw new UserInputException(path, $"{ext} is not a weights format we read", "use .safetensors, .ckpt, .pt or .bin"),
        };
    }

    private sealed class Safetensors : TensorFile
    {
        private readonly SafetensorsFile file;

        public Safetensors(string path) : base(path)
        {
            file = SafetensorsFile.Open(path);
            Shapes = file.Tensors.ToDictionary(e => e.Name, e => e.Shape.ToArray());
        }

        public override IReadOnlyDictionary<string, long[]> Shapes { get; }

        public override SafetensorsDType DTypeOf(string name) => file[name].DType;

        public override byte[] ReadBytes(string name) => file.ReadBytes(name);

        public override void Dispose() => file.Dispose();
    }

    private sealed class Pickle : TensorFile
    {
        private readonly TorchCheckpoint checkpoint;
        private readonly TorchStateDict tensors;

        public Pickle(string path) : base(path)
        {
            checkpoint = TorchCheckpoint.Open(path);
            try
            {
                tensors = checkpoint.StateDict();
            }
            catch
            {
                checkpoint.Dispose();
                throw;
            }
            Shapes = tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Shape.ToArray());
        }

        public override IReadOnlyDictionary<string, long[]> Shapes { get; }

        public override SafetensorsDType DTypeOf(string name) => tensors[name].DType;

        public override byte[] ReadBytes(string name) => tensors[name].ReadBytes();

        public override void Dispose() => checkpoint.Dispose();
    }
}
