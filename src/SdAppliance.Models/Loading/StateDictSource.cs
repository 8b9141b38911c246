using SdAppliance.Formats;
using SdAppliance.Models.Conversion;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Loading;

/// <summary>
/// The tensors of one weights file, whatever its format: <c>.safetensors</c> (memory-mapped,
/// zero-copy) or a PyTorch pickle checkpoint (<c>.ckpt</c>, <c>.pt</c>, <c>.bin</c>) read by our
/// restricted unpickler, which refuses any global a torch checkpoint does not use.
/// </summary>
public abstract class StateDictSource : IDisposable
{
    protected StateDictSource(string path) => Path = path;

    public string Path { get; }

    /// <summary>Every tensor's name and shape, in file order.</summary>
    public abstract IReadOnlyDictionary<string, long[]> Shapes { get; }

    /// <summary>The tensor named <paramref name="name"/> on CPU in the file's dtype.</summary>
    public abstract Tensor Get(string name);

    /// <summary>The tensor's dtype and row-major bytes (for layout conversions).</summary>
    public abstract (SafetensorsDType DType, byte[] Bytes) GetBytes(string name);

    public abstract void Dispose();

    public static StateDictSource Open(string path) =>
        TensorFile.IsSafetensors(path) ? new SafetensorsSource(path) : new PickleSource(TensorFile.Open(path));

    private sealed class SafetensorsSource : StateDictSource
    {
        private readonly SafetensorsReader reader;
        private readonly Dictionary<string, SafetensorsEntry> entries;

        public SafetensorsSource(string path) : base(path)
        {
            reader = SafetensorsReader.Open(path);
            entries = reader.Entries.ToDictionary(e => e.Name);
            Shapes = reader.Entries.ToDictionary(e => e.Name, e => e.Shape.ToArray());
        }

        public override IReadOnlyDictionary<string, long[]> Shapes { get; }

        public override Tensor Get(string name) => reader.Get(name);

        public override (SafetensorsDType DType, byte[] Bytes) GetBytes(string name)
        {
            var entry = entries[name];
            using var t = reader.Get(entry);
            return (entry.DType, t.ToBytes());
        }

        public override void Dispose() => reader.Dispose();
    }

    /// <summary>A torch pickle, read engine-free by <see cref="TensorFile"/>; tensors are made from its bytes.</summary>
    private sealed class PickleSource(TensorFile file) : StateDictSource(file.Path)
    {
        public override IReadOnlyDictionary<string, long[]> Shapes => file.Shapes;

        public override Tensor Get(string name)
        {
            var (dtype, bytes) = GetBytes(name);
            return torch.FromBytes(bytes, Shapes[name], Safetensors.ToTorch(dtype, name, Path));
        }

        public override (SafetensorsDType DType, byte[] Bytes) GetBytes(string name) => (file.DTypeOf(name), file.ReadBytes(name));

        public override void Dispose() => file.Dispose();
    }
}
