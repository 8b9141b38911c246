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
