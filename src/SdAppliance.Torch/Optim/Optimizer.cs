using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SdAppliance.Torch.Optim;

/// <summary>
/// Hyperparameters of one parameter group (PyTorch's per-group dict). Each optimizer has its
/// own sealed record with PyTorch's defaults; a group overrides them with <c>with</c>.
/// </summary>
public abstract record OptimizerOptions
{
    /// <summary>The learning rate. LR schedulers rewrite it before every step.</summary>
    public double Lr { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid hyperparameter.</summary>
    internal virtual void Validate()
    {
        if (!(Lr >= 0)) throw new ArgumentException($"invalid learning rate {Lr}: it must be >= 0");
    }

    private protected static void Require(bool ok, string message)
    {
        if (!ok) throw new ArgumentException(message);
    }
}

/// <summary>A list of parameters that share hyperparameters.</summary>
public abstract class ParamGroup
{
    private protected ParamGroup(IEnumerable<Tensor> parameters) => Params = parameters.ToArray();

    public IReadOnlyList<Tensor> Params { get; }

    /// <summary>The group's current learning rate (what schedules drive).</summary>
    public abstract double Lr { get; set; }

    internal abstract OptimizerOptions UntypedOptions { get; set; }
}

public sealed class ParamGroup<TOptions> : ParamGroup where TOptions : OptimizerOptions
{
    private TOptions options;

    public ParamGroup(IEnumerable<Tensor> parameters, TOptions options) : base(parameters)
    {
        options.Validate();
        this.options = options;
    }

    public TOptions Options
    {
        get => options;
        set
        {
            value.Validate();
            options = value;
        }
    }

    public override double Lr
    {
        get => options.Lr;
        // The cast goes through the base record so that `with` clones the runtime type.
        set => Options = (TOptions)((OptimizerOptions)options with { Lr = value });
    }

    internal override OptimizerOptions UntypedOptions
    {
        get => options;
        set => Options = (TOptions)value;
    }
}

/// <summary>A parameter that is being stepped: its gradient and its state (step count already advanced).</summary>
internal readonly record struct ParamSlot(Tensor Param, Tensor Grad, ParamState State);

/// <summary>One state tensor a parameter carries once it has been stepped.</summary>
internal readonly record struct StateSpec(string Name, long[] Shape, DType DType);

/// <summary>The optimizer's state for one parameter: a step count and named tensors it owns.</summary>
internal sealed class ParamState : IDisposable
{
    public long Step { get; set; }

    public Dictionary<string, Tensor> Tensors { get; } = new(StringComparer.Ordinal);

    public Tensor this[string name] => Tensors[name];

    /// <summary>Takes <paramref name="tensor"/> as state: out of every dispose scope, owned here.</summary>
    public Tensor Set(string name, Tensor tensor)
    {
        tensor.DetachFromDisposeScope();
        if (Tensors.Remove(name, out var old) && !ReferenceEquals(old, tensor)) old.Dispose();
        Tensors[name] = tensor;
        return tensor;
    }

    /// <summary>Creates, as zeros, each tensor of <paramref name="layout"/> not held yet (all of them on the first step).</summary>
    public void EnsureZeros(IEnumerable<StateSpec> layout, Device device)
    {
        foreach (var spec in layout)
            if (!Tensors.ContainsKey(spec.Name)) Set(spec.Name, torch.Zeros(spec.Shape, spec.DType, device));
    }

    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
        Tensors.Clear();
    }
}

/// <summary>
/// The base of every optimizer, as <c>torch.optim.Optimizer</c>: parameter groups, <see cref="Step"/>,
/// <see cref="ZeroGrad"/>, and a state dict for exact resume. Parameters are referenced, not owned;
/// the state tensors (moments, buffers) are owned and freed by <see cref="Dispose"/>.
/// </summary>
public abstract class Optimizer : IDisposable
{
    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private readonly List<ParamGroup> groups = [];
    private readonly List<Tensor> parameters = [];
    private readonly HashSet<Tensor> known = new(ReferenceEqualityComparer.Instance);
    private ParamState?[] states = [];
    private bool disposed;

    private protected Optimizer() { }

    /// <summary>The name written into the state dict, checked on load.</summary>
    public string Name => GetType().Name;

    public IReadOnlyList<ParamGroup> ParamGroups => groups;

    /// <summary>The hyperparameters groups start from (PyTorch's <c>defaults</c>).</summary>
    public abstract OptimizerOptions DefaultOptions { get; }

    /// <summary>The learning rate a run's log shows: the first group's (an optimizer that scales it reports the product).</summary>
    public virtual double ReportedLearningRate => groups[0].Lr;

    /// <summary>Number of parameters across all groups; state dict indices run over them in group order.</summary>
    public int ParameterCount => parameters.Count;

    private protected void AddGroup(ParamGroup group)
    {
        ThrowIfDisposed();
        var added = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var p in group.Params)
        {
            if (!p.IsLeaf) throw new ArgumentException("can't optimize a non-leaf tensor (detach it and set RequiresGrad)");
            // A parameter listed twice would be stepped twice.
            if (known.Contains(p) || !added.Add(p)) throw new ArgumentException("a parameter appears more than once in the parameter groups");
        }
        known.UnionWith(added);
        parameters.AddRange(group.Params);
        groups.Add(group);
        Array.Resize(ref states, parameters.Count);
    }

    /// <summary>
    /// Updates every parameter that has a gradient, once, under no_grad. Parameters go to the update in
    /// batches (same group, step count, device and dtype, at most <see cref="MaxBatchElements"/> elements),
    /// so that an optimizer can update a batch with one list operator per formula term.
    /// </summary>
    public void Step()
    {
        ThrowIfDisposed();
        using var noGrad = Autograd.NoGrad();
        // The gradient handles live until the step is done; each batch's temporaries die with the batch.
        using var stepScope = torch.NewDisposeScope();
        var batches = Batches();
        if (!Prepare(batches)) return;
        foreach (var (group, batch) in batches) Update(group, batch);
    }

    private List<(ParamGroup Group, IReadOnlyList<ParamSlot> Batch)> Batches()
    {
        var batches = new List<(ParamGroup, IReadOnlyList<ParamSlot>)>();
        var index = 0;
        foreach (var group in groups)
        {
            var batch = new List<ParamSlot>();
            long elements = 0;
            // What a batch shares: the step count (bias corrections), the device and the dtype.
            (long Step, Device Device, DType DType) batchKey = default;
            foreach (var p in group.Params)
            {
                var i = index++;
                var grad = p.Grad;
                if (grad is null) continue;
                var state = states[i] ??= new ParamState();
                state.Step++;
                var key = (state.Step, p.Device, p.DType);
                var size = p.NumEl;
                if (batch.Count > 0 && (elements + size > MaxBatchElements(key.Device) || key != batchKey))
                {
                    batches.Add((group, batch));
                    batch = [];
                    elements = 0;
                }
                batchKey = key;
                batch.Add(new ParamSlot(p, grad, state));
                elements += size;
            }
            if (batch.Count > 0) batches.Add((group, batch));
        }
        return batches;
    }

    /// <summary>
    /// A sweep over every batch before any is updated, for an optimizer whose step size depends on all the
    /// gradients (Prodigy's estimate); each batch's temporaries belong in a dispose scope of the callee's.
    /// False skips the updates.
    /// </summary>
    private protected virtual bool Prepare(IReadOnlyList<(ParamGroup Group, IReadOnlyList<ParamSlot> Batch)> batches) => true;

    private void Update(ParamGroup group, IReadOnlyList<ParamSlot> batch)
    {
        using var scope = torch.NewDisposeScope();
        UpdateBatch(group, batch);
    }

    /// <summary>
    /// The most elements updated together. A list operator sweeps the whole batch before the next one starts, so
    /// the batch's parameters, gradients, states and temporaries (about six arrays) should stay in a core's cache
    /// between the sweeps: 32,768 float32 elements make 6 × 128 KiB, within a 1 MiB L2. Larger batches stream
    /// every sweep from memory (slower than one tensor at a time, measured); a larger tensor is a batch of its own.
    /// </summary>
    private const long BatchElements = 1L << 15;

    /// <summary>
    /// The most elements a batch on <paramref name="device"/> holds: <see cref="BatchElements"/>, for updates made of list
    /// operators; an optimizer that steps a CPU batch tensor by tensor (Adam and AdamW in the shim) takes every parameter
    /// that shares a step count in one batch.
    /// </summary>
    private protected virtual long MaxBatchElements(Device device) => BatchElements;

    /// <summary>Updates one batch of parameters of <paramref name="group"/>, inside a dispose scope of its own.</summary>
    private protected abstract void UpdateBatch(ParamGroup group, IReadOnlyList<ParamSlot> batch);

    /// <summary>Clears the gradients: drops them (set to none, PyTorch's default) or zeroes them.</summary>
    public void ZeroGrad(bool setToNone = true)
    {
        ThrowIfDisposed();
        foreach (var p in parameters)
        {
            if (setToNone)
            {
                p.Grad = null;
                continue;
            }
            using var g = p.Grad;
            if (g is null) continue;
            if (g.HasGradFn) g.Detach_();
            else g.RequiresGrad = false;
            g.Zero_();
        }
    }

    /// <summary>The tensors a stepped parameter carries under <paramref name="options"/>: what a loaded state must hold.</summary>
    private protected abstract IEnumerable<StateSpec> StateLayout(OptimizerOptions options, Tensor param);

    private protected abstract OptimizerOptions ReadOptions(JsonObject json);

    // ---- state dict ----

    /// <summary>
    /// The state for exact resume: tensors named <c>state.{index}.{name}</c> as PyTorch names them
    /// (handles on the live state tensors, as PyTorch returns references: clone or save them before
    /// stepping again), and a JSON part with per-parameter step counts and the group hyperparameters.
    /// </summary>
    public OptimizerStateDict StateDict()
    {
        ThrowIfDisposed();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var stateJson = new JsonObject();
        for (var i = 0; i < states.Length; i++)
        {
            if (states[i] is not { } s) continue;
            var key = i.ToString(CultureInfo.InvariantCulture);
            stateJson[key] = new JsonObject { ["step"] = s.Step };
            foreach (var (name, t) in s.Tensors) tensors[$"state.{key}.{name}"] = t.Alias();
        }
        var groupsJson = new JsonArray();
        var index = 0;
        foreach (var group in groups)
        {
            var node = JsonSerializer.SerializeToNode(group.UntypedOptions, group.UntypedOptions.GetType(), JsonOptions)!.AsObject();
            var ids = new JsonArray();
            foreach (var _ in group.Params) ids.Add(index++);
            node["params"] = ids;
            groupsJson.Add(node);
        }
        var json = new JsonObject { ["optimizer"] = Name, ["state"] = stateJson, ["param_groups"] = groupsJson };
        return new OptimizerStateDict(tensors, json);
    }

    /// <summary>
    /// Restores a state from <see cref="StateDict"/> (copying its tensors onto each parameter's
    /// device): group hyperparameters, step counts and state tensors. Groups and parameters are
    /// matched by position, as PyTorch does; counts and shapes must agree. Nothing changes if it throws.
    /// </summary>
    public void LoadStateDict(OptimizerStateDict stateDict)
    {
        ThrowIfDisposed();
        var json = stateDict.Json;
        var kind = json["optimizer"]?.GetValue<string>();
        if (kind != Name) throw new ArgumentException($"the optimizer state is for {kind ?? "an unnamed optimizer"}, not {Name}");
        if (json["param_groups"] is not JsonArray savedGroups) throw new ArgumentException("the optimizer state has no param_groups");
        if (savedGroups.Count != groups.Count)
            throw new ArgumentException($"the optimizer state has {savedGroups.Count} parameter groups but this optimizer has {groups.Count}");

        // Saved parameter ids map onto ours by position within each group.
        var idMap = new Dictionary<long, int>();
        var groupOf = new int[parameters.Count];
        var options = new OptimizerOptions[groups.Count];
        var index = 0;
        for (var g = 0; g < groups.Count; g++)
        {
            if (savedGroups[g] is not JsonObject saved || saved["params"] is not JsonArray ids)
                throw new ArgumentException($"parameter group {g} of the optimizer state has no params list");
            if (ids.Count != groups[g].Params.Count)
                throw new ArgumentException($"parameter group {g} has {ids.Count} parameters in the optimizer state but {groups[g].Params.Count} here");
            foreach (var id in ids)
            {
                groupOf[index] = g;
                idMap[ReadLong(id, "a parameter id")] = index++;
            }
            try
            {
                options[g] = ReadOptions(saved);
                options[g].Validate();
            }
            catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException or NotSupportedException)
            {
                throw new ArgumentException($"parameter group {g} of the optimizer state: {e.Message}", e);
            }
        }

        var loaded = new ParamState?[parameters.Count];
        try
        {
            var used = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (key, node) in json["state"] as JsonObject ?? [])
            {
                if (!long.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out var id) || !idMap.TryGetValue(id, out var i))
                    throw new ArgumentException($"the optimizer state has state for parameter {key}, which no parameter group lists");
                var p = parameters[i];
                var state = loaded[i] = new ParamState { Step = ReadLong(node?["step"], $"state.{key}.step") };
                foreach (var spec in StateLayout(options[groupOf[i]], p))
                {
                    var name = $"state.{key}.{spec.Name}";
                    if (!stateDict.Tensors.TryGetValue(name, out var t))
                        throw new ArgumentException($"the optimizer state lacks {name}");
                    if (!t.Shape.SequenceEqual(spec.Shape))
                        throw new ArgumentException(
                            $"{name} has shape [{string.Join(", ", t.Shape)}] but parameter {i} (shape [{string.Join(", ", p.Shape)}]) needs [{string.Join(", ", spec.Shape)}]");
                    using var detached = t.Detach();
                    state.Set(spec.Name, detached.To(p.Device, spec.DType, copy: true));
                    used.Add(name);
                }
            }
            foreach (var name in stateDict.Tensors.Keys)
                if (!used.Contains(name)) throw new ArgumentException($"unexpected tensor {name} in the optimizer state");
        }
        catch
        {
            foreach (var s in loaded) s?.Dispose();
            throw;
        }

        foreach (var s in states) s?.Dispose();
        states = loaded;
        for (var g = 0; g < groups.Count; g++) groups[g].UntypedOptions = options[g];
    }

    private static long ReadLong(JsonNode? node, string what)
    {
        try
        {
            return node?.Deserialize<long>() ?? throw new ArgumentException($"the optimizer state lacks {what}");
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"{what} in the optimizer state is not an integer", e);
        }
    }

    private protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(disposed, this);

    /// <summary>Frees the state tensors (the parameters belong to the caller).</summary>
    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        foreach (var s in states) s?.Dispose();
        states = [];
        GC.SuppressFinalize(this);
    }
}

/// <summary>An optimizer whose groups carry <typeparamref name="TOptions"/>.</summary>
public abstract class Optimizer<TOptions> : Optimizer where TOptions : OptimizerOptions
{
    private readonly List<ParamGroup<TOptions>> typedGroups = [];

    private protected Optimizer(IEnumerable<ParamGroup<TOptions>> groups, TOptions defaults)
    {
        defaults.Validate();
        Defaults = defaults;
        foreach (var g in groups) AddParamGroup(g);
        if (ParameterCount == 0) throw new ArgumentException("the optimizer got an empty parameter list");
    }

    private protected Optimizer(IEnumerable<Tensor> parameters, TOptions defaults)
        : this([new ParamGroup<TOptions>(parameters, defaults)], defaults) { }

    public TOptions Defaults { get; }

    public override OptimizerOptions DefaultOptions => Defaults;

    public new IReadOnlyList<ParamGroup<TOptions>> ParamGroups => typedGroups;

    public void AddParamGroup(ParamGroup<TOptions> group)
    {
        AddGroup(group);
        typedGroups.Add(group);
    }

    /// <summary>Adds a group with <paramref name="options"/>, or the defaults.</summary>
    public ParamGroup<TOptions> AddParamGroup(IEnumerable<Tensor> parameters, TOptions? options = null)
    {
        var group = new ParamGroup<TOptions>(parameters, options ?? Defaults);
        AddParamGroup(group);
        return group;
    }

    /// <summary>Updates a batch (parameters of one group sharing step count, device and dtype), state created by the callee.</summary>
    private protected abstract void UpdateBatch(TOptions options, IReadOnlyList<ParamSlot> batch);

    private protected abstract IEnumerable<StateSpec> StateLayout(TOptions options, Tensor param);

    private protected sealed override void UpdateBatch(ParamGroup group, IReadOnlyList<ParamSlot> batch) =>
        UpdateBatch(((ParamGroup<TOptions>)group).Options, batch);

    private protected sealed override IEnumerable<StateSpec> StateLayout(OptimizerOptions options, Tensor param) =>
        StateLayout((TOptions)options, param);

    private protected sealed override OptimizerOptions ReadOptions(JsonObject json) =>
        json.Deserialize<TOptions>(JsonOptions) ?? throw new ArgumentException("the hyperparameters are null");
}
