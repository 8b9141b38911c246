using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Models.Adapters;

/// <summary>
/// One patched module: <c>W' = W + multiplier · (alpha / rank) · up · down</c>. <see cref="Name"/>
/// is the module path with dots turned into underscores (kohya's spelling), which every
/// format can be brought to and which our modules' paths are compared in.
/// </summary>
public sealed record LoraModule(LoraTarget Target, string Name, Tensor Down, Tensor Up, double? Alpha)
{
    public long Rank => Down.Shape[0];

    public double Scale => (Alpha is { } a && a != 0 ? a : Rank) / Rank;
}

/// <summary>
/// A LoRA file in any of the layouts users bring (<see cref="LoraKeys"/>: kohya, diffusers, PEFT), its
/// modules' weights as tensors over the file's mapped bytes.
/// </summary>
public sealed class LoraFile : IDisposable
{
    private readonly TensorFile file;

    private LoraFile(string path, TensorFile file, IReadOnlyList<LoraModule> modules)
    {
        Path = path;
        this.file = file;
        Modules = modules;
    }

    public string Path { get; }

    /// <summary>The file name without extension, as A1111's <c>&lt;lora:NAME:w&gt;</c> refers to it.</summary>
    public string Name => System.IO.Path.GetFileNameWithoutExtension(Path);

    public IReadOnlyList<LoraModule> Modules { get; }

    public IReadOnlyDictionary<string, string> Metadata => file.Metadata;

    public static LoraFile Load(string path)
    {
        if (!File.Exists(path)) throw new UserInputException(path, "the LoRA file does not exist");
        var file = TensorFile.Open(path);
        var modules = new List<LoraModule>();
        try
        {
            foreach (var keys in LoraKeys.Modules(path, file.Shapes.Keys))
                modules.Add(Read(file, keys));
            return new LoraFile(path, file, modules);
        }
        catch
        {
            foreach (var m in modules) Free(m);
            file.Dispose();
            throw;
        }
    }

    // Alpha must be one finite number and the weights finite (WeightChecks), or the refusal names the tensor.
    private static LoraModule Read(TensorFile file, LoraModuleKeys keys)
    {
        double? alpha = null;
        if (keys.Alpha is not null)
            using (var a = file.ReadTensor(keys.Alpha)) alpha = WeightChecks.Scalar(file.Path, keys.Alpha, a);
        var down = Finite(file, keys.Down, $"{keys.Name} down");
        try
        {
            return new LoraModule(keys.Target, keys.Name, down, Finite(file, keys.Up, $"{keys.Name} up"), alpha);
        }
        catch
        {
            down.Dispose();
            throw;
        }
    }

    private static Tensor Finite(TensorFile file, string key, string what)
    {
        var tensor = file.ReadTensor(key);
        try
        {
            WeightChecks.RequireFinite(file.Path, what, tensor);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    private static void Free(LoraModule module)
    {
        module.Down.Dispose();
        module.Up.Dispose();
    }

    public void Dispose()
    {
        foreach (var m in Modules) Free(m);
        file.Dispose();
    }
}
