using System.Diagnostics.CodeAnalysis;

namespace SdAppliance.Torch;

/// <summary>
/// Owns every tensor created on this thread while it is the innermost scope, and frees them
/// when disposed, so a training loop of many steps holds only what it keeps on purpose.
/// Keep a result past the scope with <see cref="Tensor.MoveToOuterScope"/> or
/// <see cref="Tensor.DetachFromDisposeScope"/>.
/// </summary>
public sealed class DisposeScope : IDisposable
{
    [ThreadStatic] private static DisposeScope? current;

    private readonly DisposeScope? outer;
    private readonly HashSet<Tensor> owned = new(ReferenceEqualityComparer.Instance);
    private bool disposed;

    internal DisposeScope()
    {
        outer = current;
        current = this;
    }

    internal static DisposeScope? Current => current;

    public DisposeScope? Outer => outer;

    public int Count => owned.Count;

    internal void Add(Tensor tensor) => owned.Add(tensor);

    internal bool Remove(Tensor tensor) => owned.Remove(tensor);

    internal void MoveToOuter(Tensor tensor)
    {
        if (owned.Remove(tensor)) outer?.Add(tensor);
        tensor.Scope = outer;
    }

    /// <summary>
    /// Hands a result to the scope around this one, the end of every module's <c>Forward</c>:
    /// <c>using var scope = torch.NewDisposeScope(); ... return scope.MoveToOuterScope(result);</c>.
    /// A tensor this scope does not own (the caller's input or a parameter, returned as it is)
    /// comes out as a new handle on it, so the caller always owns what a forward returns.
    /// </summary>
    [return: NotNullIfNotNull(nameof(tensor))]
    public Tensor? MoveToOuterScope(Tensor? tensor)
    {
        if (tensor is null) return null;
        ObjectDisposedException.ThrowIf(disposed, this);
        if (tensor.Scope != this)
        {
            tensor = tensor.Alias().DetachFromDisposeScope();
            outer?.Add(tensor);
            tensor.Scope = outer;
            return tensor;
        }
        MoveToOuter(tensor);
        return tensor;
    }

    /// <summary>As <see cref="MoveToOuterScope(Tensor?)"/> for each of several results (skip tensors, hidden states).</summary>
    public List<Tensor> MoveToOuterScope(IEnumerable<Tensor> tensors) => [.. tensors.Select(t => MoveToOuterScope(t))];

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        if (current != this)
            throw new InvalidOperationException("dispose scopes must be disposed in the reverse order of their creation");
        current = outer;
        foreach (var t in owned)
        {
            t.Scope = null;
            t.Dispose();
        }
        owned.Clear();
    }
}
