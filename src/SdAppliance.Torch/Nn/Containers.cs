using System.Collections;
using System.Globalization;

namespace SdAppliance.Torch.Nn;

/// <summary>Returns its input (a new handle on it), as <c>nn.Identity</c>: a placeholder where a layer is optional.</summary>
public sealed class Identity : Module<Tensor, Tensor>
{
    public override Tensor Forward(Tensor input) => input.Alias();
}

/// <summary>An indexable list of child modules named "0", "1"..., as <c>nn.ModuleList</c>; it has no Forward.</summary>
public class ModuleList<T> : Module, IReadOnlyList<T> where T : Module
{
    public ModuleList(params IEnumerable<T> modules)
    {
        foreach (var m in modules) Append(m);
    }

    public int Count => RegisteredModuleCount;

    /// <summary>The child at <paramref name="index"/> (negative counts from the end); setting replaces it in place.</summary>
    public T this[int index]
    {
        get => (T)RegisteredModule(Key(index));
        set => RegisterModule(Key(index), value);
    }

    public void Append(T module) => RegisterModule(Count.ToString(CultureInfo.InvariantCulture), module);

    public void Add(T module) => Append(module);

    private string Key(int index)
    {
        var i = index < 0 ? index + Count : index;
        if (i < 0 || i >= Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"index out of range for a list of {Count}");
        return i.ToString(CultureInfo.InvariantCulture);
    }

    public IEnumerator<T> GetEnumerator()
    {
        for (var i = 0; i < Count; i++) yield return this[i];
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>A list of modules of any kind (diffusers' down_blocks mix block types).</summary>
public sealed class ModuleList(params IEnumerable<Module> modules) : ModuleList<Module>(modules);

/// <summary>Modules called one after the other, children named "0", "1"..., as <c>nn.Sequential</c>.</summary>
public sealed class Sequential : Module<Tensor, Tensor>, IReadOnlyList<Module<Tensor, Tensor>>
{
    public Sequential(params IEnumerable<Module<Tensor, Tensor>> modules)
    {
        foreach (var m in modules) Append(m);
    }

    public int Count => RegisteredModuleCount;

    public Module<Tensor, Tensor> this[int index] => (Module<Tensor, Tensor>)RegisteredModule(Key(index));

    public Sequential Append(Module<Tensor, Tensor> module)
    {
        RegisterModule(Count.ToString(CultureInfo.InvariantCulture), module);
        return this;
    }

    private string Key(int index)
    {
        var i = index < 0 ? index + Count : index;
        if (i < 0 || i >= Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"index out of range for a Sequential of {Count}");
        return i.ToString(CultureInfo.InvariantCulture);
    }

    public override Tensor Forward(Tensor input) => Chain(input, this, (module, x) => module.Forward(x));

    public IEnumerator<Module<Tensor, Tensor>> GetEnumerator()
    {
        for (var i = 0; i < Count; i++) yield return this[i];
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
