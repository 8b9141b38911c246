namespace SdAppliance.Formats.Pickle;

/// <summary>
/// The nesting limit of checkpoint values. The unpickler never recurses (and its key comparisons and error
/// messages stop at a fixed depth), but every reader of the tree a checkpoint returns may (a state-dict
/// walk, a writer, a repr), and a pickle of tuples nested 100,000 deep overflows .NET's stack, which kills
/// the process without a catchable exception. Real checkpoints nest a handful of levels (Lightning: dict,
/// state_dict, tensor; an optimizer state: dict, state, index, dict, tensor); 100 leaves ample room and
/// keeps any recursive reader far from the stack's end.
/// </summary>
internal static class PickleNesting
{
    public const int MaxDepth = 100;

    /// <summary>
    /// How deep <paramref name="root"/> nests (a leaf is 0, a tuple of leaves 1), or null once it passes
    /// <see cref="MaxDepth"/>. Walks iteratively, each container once (values shared through the memo are
    /// measured once); a container that contains itself (possible through the memo) counts its back edge as a leaf.
    /// </summary>
    public static int? Depth(object? root)
    {
        if (Children(root) is not { } rootChildren)
            return 0;
        var height = new Dictionary<object, int>(ReferenceEqualityComparer.Instance);
        var onPath = new HashSet<object>(ReferenceEqualityComparer.Instance) { root! };
        var path = new Stack<Frame>();
        path.Push(new Frame(root!, rootChildren));
        while (path.Count > 0)
        {
            var frame = path.Peek();
            if (frame.Next < frame.Children.Count)
            {
                var child = frame.Children[frame.Next++];
                if (height.ContainsKey(child) || onPath.Contains(child))
                    continue;
                if (path.Count == MaxDepth)
                    return null;
                path.Push(new Frame(child, Children(child)!));
                onPath.Add(child);
                continue;
            }
            path.Pop();
            onPath.Remove(frame.Node);
            var h = 1 + frame.Children.Select(c => height.GetValueOrDefault(c)).DefaultIfEmpty(0).Max();
            if (h > MaxDepth)
                return null;
            height[frame.Node] = h;
        }
        return height[root!];
    }

    private sealed class Frame(object node, List<object> children)
    {
        public object Node { get; } = node;

        public List<object> Children { get; } = children;

        public int Next { get; set; }
    }

    // The containers' children that are themselves containers; null for a leaf.
    private static List<object>? Children(object? value)
    {
        IEnumerable<object?>? items = value switch
        {
            PickleTuple t => t,
            List<object?> l => l,
            PickleSet s => s,
            PickleDict d => d.Keys.Concat(d.Values).Append(d.Attributes),
            PickleObject o => o.Arguments.Append(o.State).Concat(o.ListItems).Append(o.DictItems),
            NumpyArray { Items: { } array } => array,
            _ => null,
        };
        return items?.Where(IsContainer).Select(i => i!).ToList();
    }

    private static bool IsContainer(object? value) =>
        value is PickleTuple or List<object?> or PickleSet or PickleDict or PickleObject or NumpyArray { Items: not null };
}
