using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;

namespace SdAppliance.Formats;

/// <summary>
/// The tensors of one weights file as names, dtypes, shapes and row-major bytes, without the engine:
/// <c>.safetensors</c> memory-mapped, <c>.ckpt</c>/<c>.pt</c>/<c>.pth</c>/<c>.bin</c> through the restricted unpickler.
/// Every reader of weights works from this one view (model loading and conversion, LoRA and embedding files);
/// the engine makes tensors of it with <c>TensorFiles.ReadTensor</c> (SdAppliance.Torch), zero-copy where
/// the file is mapped.
/// </summary>
public abstract class TensorFile : IDisposable
{
    private protected TensorFile(string path) => Path = path;

    public string Path { get; }

    /// <summary>Every tensor's name and shape, in file order.</summary>
    public abstract IReadOnlyDictionary<string, long[]> Shapes { get; }

    /// <summary>Every tensor's name, in file order.</summary>
    public IEnumerable<string> Names => Shapes.Keys;

    public bool Contains(string name) => Shapes.ContainsKey(name);

    /// <summary>A safetensors file's <c>__metadata__</c>; empty for pickles.</summary>
    public virtual IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>();

    public abstract SafetensorsDType DTypeOf(string name);

    public abstract byte[] ReadBytes(string name);

    /// <summary>Copies the tensor's row-major bytes into <paramref name="destination"/>, which must be exactly as long.</summary>
    public abstract void ReadBytes(string name, Span<byte> destination);

    /// <summary>
    /// The tensor's bytes in place, when the file is mapped (safetensors): the address stays valid until
    /// <paramref name="release"/> is called, even after this file is disposed. False for pickles.
    /// </summary>
    public virtual bool TryMap(string name, out nint address, out Action release)
    {
        address = 0;
        release = () => { };
        return false;
    }

    public abstract void Dispose();

    /// <summary>A weights file: a model's or a component's state dict (at the top level or under <c>state_dict</c>, <c>model</c>, <c>module</c>).</summary>
    public static TensorFile Open(string path) => IsSafetensors(path) ? new Mapped(path) : new Pickled(path, nested: false);

    /// <summary>
    /// A file whose tensors may sit in dicts of dicts (A1111's embeddings: <c>string_to_param.*</c>): a
    /// pickle's tensors up to three dicts deep, named by their dotted path; a safetensors file as <see cref="Open"/>.
    /// </summary>
    public static TensorFile OpenNested(string path) => IsSafetensors(path) ? new Mapped(path) : new Pickled(path, nested: true);

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

    /// <summary>A safetensors file, privately mapped; the mapping lives while the file or any mapped tensor does.</summary>
    private sealed class Mapped : TensorFile
    {
        private readonly SafetensorsFile file;
        private int references = 1;  // the file itself, plus one per mapped tensor
        private int disposed;

        public Mapped(string path) : base(path)
        {
            file = SafetensorsFile.Open(path, copyOnWrite: true);
            Shapes = file.Tensors.ToDictionary(e => e.Name, e => e.Shape.ToArray());
        }

        public override IReadOnlyDictionary<string, long[]> Shapes { get; }

        public override IReadOnlyDictionary<string, string> Metadata => file.Metadata;

        public override SafetensorsDType DTypeOf(string name) => file[name].DType;

        public override byte[] ReadBytes(string name) => file.ReadBytes(name);

        public override void ReadBytes(string name, Span<byte> destination) => file.ReadBytes(file[name], destination);

        public override bool TryMap(string name, out nint address, out Action release)
        {
            var entry = file[name];
            if (Interlocked.Increment(ref references) == 1) throw new ObjectDisposedException(Path);
            address = file.GetPointer(entry);
            var once = 0;
            release = () =>
            {
                if (Interlocked.Exchange(ref once, 1) == 0) Release();
            };
            return true;
        }

        private void Release()
        {
            if (Interlocked.Decrement(ref references) == 0) file.Dispose();
        }

        public override void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 0) Release();
        }
    }

    private sealed class Pickled : TensorFile
    {
        private readonly TorchCheckpoint checkpoint;
        private readonly IReadOnlyDictionary<string, TorchTensor> tensors;

        public Pickled(string path, bool nested) : base(path)
        {
            checkpoint = TorchCheckpoint.Open(path);
            try
            {
                tensors = nested ? Nested(checkpoint.Root) : checkpoint.StateDict();
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

        public override void ReadBytes(string name, Span<byte> destination) => tensors[name].ReadBytes(destination);

        public override void Dispose() => checkpoint.Dispose();

        private static Dictionary<string, TorchTensor> Nested(object? root)
        {
            var found = new Dictionary<string, TorchTensor>(StringComparer.Ordinal);
            void Walk(object? node, string prefix, int depth)
            {
                if (node is TorchTensor t)
                    found[prefix] = t;
                else if (node is PickleDict dict && depth < 3)
                    foreach (var (key, value) in dict)
                        if (key is string k) Walk(value, prefix.Length == 0 ? k : prefix + "." + k, depth + 1);
            }
            Walk(root, "", 0);
            return found;
        }
    }
}
