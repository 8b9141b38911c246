using System.Collections;
using System.Diagnostics.CodeAnalysis;

namespace SdAppliance.Formats.Checkpoints;

/// <summary>Tensors by name, in the order the checkpoint lists them.</summary>
public sealed class TorchStateDict : IReadOnlyDictionary<string, TorchTensor>
{
    private readonly List<KeyValuePair<string, TorchTensor>> _items = [];
    private readonly Dictionary<string, TorchTensor> _byName = new(StringComparer.Ordinal);

    internal TorchStateDict(string? path)
    {
        Path = path;
    }

    /// <summary>Where in the checkpoint the tensors were found, e.g. "state_dict"; empty for the top level, null when built by hand.</summary>
    public string? Path { get; }

    /// <inheritdoc/>
    public int Count => _items.Count;

    /// <inheritdoc/>
    public IEnumerable<string> Keys => _items.Select(p => p.Key);

    /// <inheritdoc/>
    public IEnumerable<TorchTensor> Values => _items.Select(p => p.Value);

    /// <inheritdoc/>
    public TorchTensor this[string key] =>
        _byName.TryGetValue(key, out var tensor) ? tensor : throw new KeyNotFoundException($"The state dict has no tensor named '{key}'.");

    /// <inheritdoc/>
    public bool ContainsKey(string key) => _byName.ContainsKey(key);

    /// <inheritdoc/>
    public bool TryGetValue(string key, [MaybeNullWhen(false)] out TorchTensor value) => _byName.TryGetValue(key, out value);

    /// <inheritdoc/>
    public IEnumerator<KeyValuePair<string, TorchTensor>> GetEnumerator() => _items.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    internal void Add(string name, TorchTensor tensor)
    {
        if (_byName.TryAdd(name, tensor))
            _items.Add(new KeyValuePair<string, TorchTensor>(name, tensor));
    }
}
