using System.Diagnostics.CodeAnalysis;
using System.Text;
using SdAppliance.Formats;
using SdAppliance.Torch.Native;

namespace SdAppliance.Torch.Nn;

/// <summary>
/// Base of every layer and model, as <c>torch.nn.Module</c>: parameters, buffers and child
/// modules registered by name, in registration order, so that dotted names and state-dict keys
/// come out exactly as PyTorch builds them ("down_blocks.0.attentions.1.proj_in.weight").
/// A parameter is a plain leaf <see cref="Tensor"/> registered here (requires_grad on by default).
/// The module owns what is registered on it: <see cref="Dispose"/> frees it all.
/// Forward is not declared here: modules give their own typed <c>Forward</c> (see
/// <see cref="Module{TIn, TOut}"/> for the one-tensor-in, one-out kind that Sequential chains).
/// A forward that makes intermediates opens one dispose scope and moves its result out, so it
/// reads straight through like the PyTorch it ports:
/// <c>using var scope = torch.NewDisposeScope(); ... return scope.MoveToOuterScope(result);</c>
/// (autograd keeps what backward needs, so the handles can go; the private helpers a forward
/// calls need no scope of their own, their temporaries are the forward's). Inside that scope,
/// <see cref="Chain(Tensor, IEnumerable{Func{Tensor, Tensor}?})"/> runs a line of layers freeing
/// each activation once the next exists, as Python frees a rebound name.
/// Fluent <c>To</c>, <c>Train</c>, <c>Eval</c>, <c>Freeze</c>... are in <see cref="ModuleExtensions"/>
/// so that they return the caller's own module type.
/// </summary>
public abstract class Module : IDisposable
{
    private readonly OrderedDictionary<string, Tensor?> parameters = new();
    private readonly OrderedDictionary<string, Tensor?> buffers = new();
    private readonly HashSet<string> nonPersistentBuffers = [];
    private readonly OrderedDictionary<string, Module> modules = new();

    /// <summary>Whether the module is in training mode (dropout active). New modules start in training mode, as in PyTorch.</summary>
    public bool IsTraining { get; private set; } = true;

    public bool IsDisposed { get; private set; }

    // ---- registration ----

    /// <summary>
    /// Registers (or replaces) a parameter, as <c>register_parameter</c>. The module takes
    /// ownership of <paramref name="tensor"/> (it leaves any dispose scope). Null registers an
    /// absent parameter (a layer built with bias=false), which no listing or state dict shows.
    /// A replaced tensor is not disposed: whoever replaced it decides its fate.
    /// </summary>
    [return: NotNullIfNotNull(nameof(tensor))]
    public Tensor? RegisterParameter(string name, Tensor? tensor, bool requiresGrad = true)
    {
        CheckName(name, parameters);
        if (tensor is not null)
        {
            if (!tensor.IsLeaf)
                throw new ArgumentException($"parameter '{name}' must be a leaf tensor (it has a grad_fn); register tensor.Detach() instead", nameof(tensor));
            tensor.RequiresGrad = requiresGrad;
            tensor.DetachFromDisposeScope();
        }
        parameters[name] = tensor;
        return tensor;
    }

    /// <summary>
    /// Registers (or replaces) a buffer: state that is not trained (running statistics,
    /// position ids). Non-persistent buffers move with <c>To</c> but stay out of the state dict.
    /// </summary>
    [return: NotNullIfNotNull(nameof(tensor))]
    public Tensor? RegisterBuffer(string name, Tensor? tensor, bool persistent = true)
    {
        CheckName(name, buffers);
        tensor?.DetachFromDisposeScope();
        buffers[name] = tensor;
        if (persistent) nonPersistentBuffers.Remove(name);
        else nonPersistentBuffers.Add(name);
        return tensor;
    }

    /// <summary>
    /// Registers (or replaces, keeping its place) a child module, as <c>register_module</c>.
    /// The replaced module is not disposed.
    /// </summary>
    public T RegisterModule<T>(string name, T module) where T : Module
    {
        ArgumentNullException.ThrowIfNull(module);
        CheckName(name, modules);
        modules[name] = module;
        return module;
    }

    private void CheckName<TValue>(string name, OrderedDictionary<string, TValue> own)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name.Contains('.')) throw new ArgumentException($"name '{name}' must not contain \".\"", nameof(name));
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        // One name, one kind: a state-dict key must say unambiguously what it loads into.
        var taken = (!ReferenceEquals(own, parameters) && parameters.ContainsKey(name))
            || (!ReferenceEquals(own, buffers) && buffers.ContainsKey(name))
            || (!ReferenceEquals(own, modules) && modules.ContainsKey(name));
        if (taken) throw new ArgumentException($"attribute '{name}' already exists on {TypeName} as another kind (parameter, buffer or module)", nameof(name));
    }

    /// <summary>The class name without a generic arity ("ModuleList", not "ModuleList`1"), for messages and printouts.</summary>
    private string TypeName => GetType().Name.Split('`')[0];

    // ---- lookup ----

    /// <summary>The parameter at a dotted path ("mid_block.resnets.0.conv1.weight"); null when registered as absent.</summary>
    public Tensor? GetParameter(string target)
    {
        var (owner, name) = Resolve(target);
        return owner.parameters.TryGetValue(name, out var t) ? t : throw new ArgumentException($"{owner.TypeName} has no parameter '{name}' (looking up '{target}')", nameof(target));
    }

    /// <summary>The buffer at a dotted path; null when registered as absent.</summary>
    public Tensor? GetBuffer(string target)
    {
        var (owner, name) = Resolve(target);
        return owner.buffers.TryGetValue(name, out var t) ? t : throw new ArgumentException($"{owner.TypeName} has no buffer '{name}' (looking up '{target}')", nameof(target));
    }

    /// <summary>The module at a dotted path, as <c>get_submodule</c>; "" is this module.</summary>
    public Module GetSubmodule(string target)
    {
        var m = this;
        if (target.Length == 0) return m;
        foreach (var part in target.Split('.'))
        {
            if (!m.modules.TryGetValue(part, out var child))
                throw new ArgumentException($"{m.TypeName} has no submodule '{part}' (looking up '{target}')", nameof(target));
            m = child;
        }
        return m;
    }

    /// <summary>Children as registered, duplicates included (containers index them).</summary>
    internal int RegisteredModuleCount => modules.Count;

    internal Module RegisteredModule(string name) => modules[name];

    private (Module Owner, string Name) Resolve(string target)
    {
        var dot = target.LastIndexOf('.');
        return dot < 0 ? (this, target) : (GetSubmodule(target[..dot]), target[(dot + 1)..]);
    }

    // ---- listings (PyTorch's order and names; shared tensors and modules listed once) ----

    /// <summary>Direct children, as <c>named_children</c>.</summary>
    public IEnumerable<(string Name, Module Module)> NamedChildren()
    {
        var seen = new HashSet<Module>(ReferenceEqualityComparer.Instance);
        foreach (var (name, m) in modules)
            if (seen.Add(m)) yield return (name, m);
    }

    public IEnumerable<Module> Children() => NamedChildren().Select(c => c.Module);

    /// <summary>This module and every descendant, depth first, as <c>named_modules</c> (this one is named <paramref name="prefix"/>).</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules(string prefix = "", bool removeDuplicate = true)
    {
        var seen = removeDuplicate ? new HashSet<Module>(ReferenceEqualityComparer.Instance) : null;
        return NamedModules(prefix, seen);
    }

    private IEnumerable<(string Name, Module Module)> NamedModules(string prefix, HashSet<Module>? seen)
    {
        if (seen is not null && !seen.Add(this)) yield break;
        yield return (prefix, this);
        foreach (var (name, child) in modules)
            foreach (var item in child.NamedModules(Join(prefix, name), seen))
                yield return item;
    }

    public IEnumerable<Module> Modules() => NamedModules().Select(m => m.Module);

    /// <summary>Parameters with their dotted names, as <c>named_parameters</c> (absent ones skipped).</summary>
    public IEnumerable<(string Name, Tensor Parameter)> NamedParameters(string prefix = "", bool recurse = true, bool removeDuplicate = true) =>
        NamedMembers(m => m.parameters, prefix, recurse, removeDuplicate);

    public IEnumerable<Tensor> Parameters(bool recurse = true) => NamedParameters(recurse: recurse).Select(p => p.Parameter);

    /// <summary>Buffers with their dotted names, persistent or not, as <c>named_buffers</c>.</summary>
    public IEnumerable<(string Name, Tensor Buffer)> NamedBuffers(string prefix = "", bool recurse = true, bool removeDuplicate = true) =>
        NamedMembers(m => m.buffers, prefix, recurse, removeDuplicate);

    public IEnumerable<Tensor> Buffers(bool recurse = true) => NamedBuffers(recurse: recurse).Select(b => b.Buffer);

    private IEnumerable<(string, Tensor)> NamedMembers(Func<Module, OrderedDictionary<string, Tensor?>> members, string prefix, bool recurse, bool removeDuplicate)
    {
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        IEnumerable<(string Name, Module Module)> owners = recurse ? NamedModules(prefix, removeDuplicate) : [(prefix, this)];
        foreach (var (modulePrefix, module) in owners)
            foreach (var (name, t) in members(module))
            {
                if (t is null || (removeDuplicate && !seen.Add(t))) continue;
                yield return (Join(modulePrefix, name), t);
            }
    }

    private static string Join(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;

    // ---- modes ----

    internal void SetTraining(bool mode)
    {
        foreach (var m in Modules()) m.IsTraining = mode;
    }

    internal void SetRequiresGrad(bool requiresGrad)
    {
        foreach (var p in Parameters()) p.RequiresGrad = requiresGrad;
    }

    /// <summary>Calls <paramref name="fn"/> on every descendant, children before parents, as <c>apply</c>.</summary>
    internal void ApplyRecursive(Action<Module> fn)
    {
        foreach (var child in Children()) child.ApplyRecursive(fn);
        fn(this);
    }

    /// <summary>Drops every parameter's gradient (set_to_none, PyTorch's default).</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters()) p.ZeroGrad();
    }

    // ---- device and dtype ----

    /// <summary>
    /// Moves parameters and buffers (and gradients) in place, keeping every tensor object (so an
    /// optimizer built before still holds the module's parameters), as PyTorch's default
    /// <c>param.data = fn(param)</c>. A dtype applies only to floating-point tensors: integer
    /// buffers such as position ids keep theirs.
    /// </summary>
    internal void Convert(Device? device, DType? dtype)
    {
        if (dtype is { } d && !d.IsFloatingPoint())
            throw new ArgumentException($"Module.To only accepts floating point dtypes, but got {d.TorchName()}", nameof(dtype));
        using var noGrad = Autograd.NoGrad();
        var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var module in Modules())
            foreach (var t in module.parameters.Values.Concat(module.buffers.Values))
            {
                if (t is null || !seen.Add(t)) continue;
                ConvertInPlace(t, device, dtype);
                using var grad = t.Grad;
                if (grad is not null) ConvertInPlace(grad, device, dtype);
            }
    }

    private static void ConvertInPlace(Tensor t, Device? device, DType? dtype)
    {
        var target = dtype is { } d && t.DType.IsFloatingPoint() ? d : t.DType;
        using var converted = t.To(device ?? t.Device, target);
        // aten::to hands back the tensor itself when nothing changes.
        if (converted.IsSameAs(t)) return;
        Op.Get("aten::set_data").Begin().T(t).T(converted).CallInPlace(t);
    }

    // ---- state dict ----

    /// <summary>
    /// Parameters then persistent buffers of each module, depth first, keyed as PyTorch's
    /// <c>state_dict()</c>. The values share storage with the module (detached aliases, no copy;
    /// with <paramref name="keepVars"/> they keep autograd identity): dispose the dictionary, the
    /// module keeps its tensors.
    /// </summary>
    public StateDict StateDict(string prefix = "", bool keepVars = false)
    {
        var result = new StateDict();
        foreach (var (key, t) in StateEntries(prefix))
            result.Add(key, keepVars ? t.Alias() : t.Detach());
        return result;
    }

    /// <summary>The tensors the state dict holds, unaliased, in state-dict order.</summary>
    private IEnumerable<(string Key, Tensor Tensor)> StateEntries(string prefix)
    {
        foreach (var (name, p) in parameters)
            if (p is not null) yield return (Join(prefix, name), p);
        foreach (var (name, b) in buffers)
            if (b is not null && !nonPersistentBuffers.Contains(name)) yield return (Join(prefix, name), b);
        foreach (var (name, child) in modules)
            foreach (var entry in child.StateEntries(Join(prefix, name)))
                yield return entry;
    }

    /// <summary>
    /// Copies values into the module's tensors in place (converting dtype and device as
    /// <c>copy_</c> does), as <c>load_state_dict</c>. Everything is checked before anything is
    /// copied, so a failed load leaves the module as it was. A shape mismatch always throws;
    /// with <paramref name="strict"/>, missing and unexpected keys throw too, naming them.
    /// </summary>
    public LoadStateDictResult LoadStateDict(IReadOnlyDictionary<string, Tensor> stateDict, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(stateDict);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        var own = StateEntries("").ToList();
        var ownKeys = new HashSet<string>(own.Select(e => e.Key));
        var missing = own.Where(e => !stateDict.ContainsKey(e.Key)).Select(e => e.Key).ToList();
        var unexpected = stateDict.Keys.Where(k => !ownKeys.Contains(k)).ToList();
        var errors = new List<string>();
        if (strict && missing.Count > 0) errors.Add($"Missing key(s) in state_dict: {Quote(missing)}.");
        if (strict && unexpected.Count > 0) errors.Add($"Unexpected key(s) in state_dict: {Quote(unexpected)}.");
        foreach (var (key, t) in own)
        {
            if (!stateDict.TryGetValue(key, out var source)) continue;
            var (want, got) = (t.Shape, source.Shape);
            if (!want.AsSpan().SequenceEqual(got))
                errors.Add($"size mismatch for {key}: copying a param with shape [{string.Join(", ", got)}] from checkpoint, the shape in current model is [{string.Join(", ", want)}].");
        }
        if (errors.Count > 0)
            throw new StateDictException($"Error(s) in loading state_dict for {TypeName}:\n\t{string.Join("\n\t", errors)}", missing, unexpected);

        using (Autograd.NoGrad())
            foreach (var (key, t) in own)
                if (stateDict.TryGetValue(key, out var source))
                    t.Copy_(source);
        return new LoadStateDictResult(missing, unexpected);
    }

    private static string Quote(IEnumerable<string> keys) => string.Join(", ", keys.Select(k => $"\"{k}\""));

    // ---- forward helpers ----

    /// <summary>
    /// Runs <paramref name="input"/> through <paramref name="layers"/> one after the other, as
    /// <c>nn.Sequential</c>, freeing each intermediate as soon as the next layer has made its output
    /// (Python frees <c>x</c> when <c>x = layer(x)</c> rebinds it). A forward's dispose scope would
    /// otherwise keep every activation of the line until the forward returns, which in inference
    /// (nothing saved for backward) multiplies the peak of a high-resolution block. A null layer is
    /// skipped (an optional one, diffusers' <c>if self.layer is not None</c>). The input stays the
    /// caller's; the result is a new handle.
    /// </summary>
    protected static Tensor Chain(Tensor input, params IEnumerable<Func<Tensor, Tensor>?> layers) =>
        Chain(input, layers, (layer, x) => layer is null ? x : layer(x));

    /// <summary>
    /// As <see cref="Chain(Tensor, IEnumerable{Func{Tensor, Tensor}?})"/>, applying
    /// <paramref name="apply"/>(layer, x) for each of <paramref name="layers"/> (a block's resnets).
    /// </summary>
    protected static Tensor Chain<TLayer>(Tensor input, IEnumerable<TLayer> layers, Func<TLayer, Tensor, Tensor> apply)
    {
        ArgumentNullException.ThrowIfNull(input);
        var x = input;
        try
        {
            foreach (var layer in layers)
            {
                var next = apply(layer, x);
                if (!ReferenceEquals(x, input) && !ReferenceEquals(next, x)) x.Dispose();
                x = next;
            }
        }
        catch
        {
            if (!ReferenceEquals(x, input)) x.Dispose();
            throw;
        }
        return ReferenceEquals(x, input) ? input.Alias() : x;
    }

    // ---- printing ----

    /// <summary>The constructor arguments shown in <see cref="ToString"/>, as <c>extra_repr</c>.</summary>
    protected virtual string ExtraRepr() => "";

    /// <summary>PyTorch's module printout: the type, its extra repr and the children, indented.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder(TypeName).Append('(').Append(ExtraRepr());
        if (modules.Count > 0)
        {
            sb.Append('\n');
            foreach (var (name, child) in modules)
                sb.Append("  (").Append(name).Append("): ").Append(child.ToString().Replace("\n", "\n  ")).Append('\n');
        }
        return sb.Append(')').ToString();
    }

    // ---- lifetime ----

    /// <summary>Frees every tensor registered on this module and its children.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        foreach (var t in parameters.Values.Concat(buffers.Values)) t?.Dispose();
        foreach (var child in modules.Values) child.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>A module with one input and one output, so that containers can chain it.</summary>
public abstract class Module<TIn, TOut> : Module
{
    /// <summary>
    /// Runs the layer. The result is a new tensor (a new handle even when the value is the
    /// input's) that the caller owns, so chained calls can dispose intermediates safely.
    /// </summary>
    public abstract TOut Forward(TIn input);
}

/// <summary>What <see cref="Module.LoadStateDict"/> did not match, as PyTorch's <c>_IncompatibleKeys</c>.</summary>
public sealed record LoadStateDictResult(IReadOnlyList<string> MissingKeys, IReadOnlyList<string> UnexpectedKeys);

/// <summary>
/// A state dict that does not fit the module; the message names every offending key. The state dict comes from a file the
/// user gave (a model, a LoRA, a training state), so this is a refusal of it; the loader that knows the file adds its name.
/// </summary>
public sealed class StateDictException(string message, IReadOnlyList<string> missingKeys, IReadOnlyList<string> unexpectedKeys)
    : UserInputException(message, null, message, null, null)
{
    public IReadOnlyList<string> MissingKeys { get; } = missingKeys;
    public IReadOnlyList<string> UnexpectedKeys { get; } = unexpectedKeys;
}

/// <summary>Name → tensor, in the module's order. Disposing it frees its handles (not the module's tensors).</summary>
public sealed class StateDict : OrderedDictionary<string, Tensor>, IDisposable
{
    public void Dispose()
    {
        foreach (var t in Values) t.Dispose();
        Clear();
    }
}

/// <summary>The fluent calls of <c>nn.Module</c>, returning the module with its own type.</summary>
public static class ModuleExtensions
{
    /// <summary>Sets training mode on this module and every descendant, as <c>train(mode)</c>.</summary>
    public static T Train<T>(this T module, bool mode = true) where T : Module
    {
        module.SetTraining(mode);
        return module;
    }

    /// <summary>Evaluation mode (dropout off), as <c>eval()</c>.</summary>
    public static T Eval<T>(this T module) where T : Module => module.Train(false);

    /// <summary>Moves parameters and buffers to <paramref name="device"/>, and floating ones to <paramref name="dtype"/>, in place.</summary>
    public static T To<T>(this T module, Device device, DType? dtype = null) where T : Module
    {
        module.Convert(device, dtype);
        return module;
    }

    /// <summary>Converts floating-point parameters and buffers to <paramref name="dtype"/>, in place.</summary>
    public static T To<T>(this T module, DType dtype) where T : Module
    {
        module.Convert(null, dtype);
        return module;
    }

    /// <summary>Sets requires_grad on every parameter, as <c>requires_grad_()</c>.</summary>
    public static T RequiresGrad_<T>(this T module, bool requiresGrad = true) where T : Module
    {
        module.SetRequiresGrad(requiresGrad);
        return module;
    }

    /// <summary>Stops gradients to every parameter (requires_grad off).</summary>
    public static T Freeze<T>(this T module) where T : Module => module.RequiresGrad_(false);

    public static T Unfreeze<T>(this T module) where T : Module => module.RequiresGrad_(true);

    /// <summary>Calls <paramref name="fn"/> on every descendant then on the module itself, as <c>apply</c>.</summary>
    public static T Apply<T>(this T module, Action<Module> fn) where T : Module
    {
        module.ApplyRecursive(fn);
        return module;
    }
}
