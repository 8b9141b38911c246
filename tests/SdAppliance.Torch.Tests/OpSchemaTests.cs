using System.Reflection;
using System.Reflection.Emit;
using SdAppliance.Torch.Native;

namespace SdAppliance.Torch.Tests;

/// <summary>
/// Every C# wrapper of an aten operator pushes arguments whose kinds the loaded libtorch's schema
/// declares, in its order, with nothing required left out: a swapped or missing argument fails
/// here instead of computing something else. The wrappers are found in the engine assembly's IL
/// (every method naming an operator, or reading an Op kept in a static field) and called through
/// reflection with small arguments while calls only check their arguments (no kernel runs).
/// </summary>
public class OpSchemaTests
{
    private static readonly Assembly EngineAssembly = typeof(Tensor).Assembly;
    private static readonly NullabilityInfoContext Nullability = new();

    [Fact]
    public void EveryWrapperPushesTheArgumentKindsItsSchemaDeclares()
    {
        var seen = new HashSet<string>();
        var mismatches = new List<string>();
        var neverRan = new List<string>();
        using var scope = torch.NewDisposeScope();
        using (OpCall.CheckArgumentsOnly(op => seen.Add(op.Name)))
        {
            foreach (var method in Wrappers())
            {
                if (!Invocable(method)) continue;
                var ran = false;
                var refusals = new List<string>();
                foreach (var arguments in ArgumentSets(method))
                {
                    try
                    {
                        method.Invoke(method.IsStatic ? null : Small(), arguments);
                        ran = true;
                    }
                    catch (TargetInvocationException e) when (e.InnerException is TorchException torchError)
                    {
                        mismatches.Add($"{Describe(method)}: {torchError.Message}");
                        ran = true;
                    }
                    catch (TargetInvocationException e)
                    {
                        // The wrapper's own validation refused this combination (only one of size or scale, ...).
                        refusals.Add(e.InnerException?.Message ?? e.Message);
                    }
                }
                if (!ran) neverRan.Add($"{Describe(method)}: {string.Join(" | ", refusals.Distinct())}");
            }
            CallTheSpanWrappers();
        }

        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches.Distinct()));
        Assert.True(neverRan.Count == 0, "no argument set reached these wrappers:\n" + string.Join("\n", neverRan));
        var named = OperatorNamesInTheEngine();
        Assert.True(named.Count > 100, $"only {named.Count} operator names found in the engine's IL");
        Assert.True(named.IsSubsetOf(seen), "operators no wrapper call reached: " + string.Join(", ", named.Except(seen).Order()));
    }

    [Fact]
    public void TheCheckRefusesASwappedOrMissingArgument()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.Randn([2, 3]);
        var index = torch.Tensor([0L, 1], 2);
        // index_select(Tensor self, int dim, Tensor index) given (self, index, dim):
        var swapped = Assert.Throws<TorchException>(() => Op.Get("aten::index_select").Begin().T(x).T(index).I(0).Call());
        Assert.Contains("argument 2 'dim'", swapped.Message);
        Assert.Contains("cannot take a tensor", swapped.Message);
        // The dtype pushed where the schema has an int (as a wrapper that forgot an argument would):
        var dtypeForInt = Assert.Throws<TorchException>(() => Op.Get("aten::softmax", "int").Begin().T(x).DT(DType.Float32).Call());
        Assert.Contains("'dim'", dtypeForInt.Message);
        var missing = Assert.Throws<TorchException>(() => Op.Get("aten::index_select").Begin().T(x).I(0).Call());
        Assert.Contains("'index'", missing.Message);
        Assert.Contains("has no default", missing.Message);
        // And the check-only mode refuses the same as a real call.
        using (OpCall.CheckArgumentsOnly(_ => { }))
            Assert.Throws<TorchException>(() => Op.Get("aten::index_select").Begin().T(x).T(index).I(0).Call());
    }

    [Fact]
    public void TheSchemaIsTheLoadedLibtorchs()
    {
        var schema = Op.Get("aten::add", "Tensor").Schema;
        Assert.StartsWith("aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1)", schema);
    }

    // Methods of the engine whose IL names an aten operator or reads an Op from a static field, and
    // their overloads (which may only forward to another with fixed arguments).
    private static IEnumerable<MethodInfo> Wrappers()
    {
        var methods = EngineAssembly.GetTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            .Where(m => !m.IsAbstract && !m.IsGenericMethodDefinition && !m.DeclaringType!.IsGenericTypeDefinition && !(m.IsSpecialName && !m.Name.StartsWith("op_", StringComparison.Ordinal)))
            .ToList();
        var named = methods.Where(m => OperatorReferences(m).Any()).Select(m => (m.DeclaringType, m.Name)).ToHashSet();
        return methods.Where(m => named.Contains((m.DeclaringType, m.Name)));
    }

    // Instance wrappers are Tensor's; everything else must be static, with parameters we can make.
    private static bool Invocable(MethodInfo m) =>
        (m.IsStatic || m.DeclaringType == typeof(Tensor))
        && !m.Name.StartsWith('<')
        && m.GetParameters().All(p => Values(p).Length > 0);

    private static string Describe(MethodInfo m) =>
        $"{m.DeclaringType!.Name}.{m.Name}({string.Join(", ", m.GetParameters().Select(p => p.ParameterType.Name))})";

    private static Tensor Small() => torch.Zeros([1, 1, 2, 2]);

    // Candidate values per parameter; the first is the "set" value. An empty array: not makeable.
    private static object?[] Values(ParameterInfo parameter)
    {
        var type = parameter.ParameterType;
        var underlying = Nullable.GetUnderlyingType(type);
        var core = underlying ?? type;
        var nullable = underlying is not null || (!type.IsValueType && Nullability.Create(parameter).WriteState == NullabilityState.Nullable);
        object?[] set = core switch
        {
            _ when core == typeof(Tensor) => [Small()],
            _ when core == typeof(IReadOnlyList<Tensor>) || core == typeof(Tensor[]) => [new[] { Small(), Small() }],
            _ when core == typeof(long) => [1L],
            _ when core == typeof(int) => [1],
            _ when core == typeof(double) => [0.5],
            _ when core == typeof(float) => [0.5f],
            _ when core == typeof(bool) => [true, false],
            _ when core == typeof(long[]) => [new long[] { 1, 1 }],
            _ when core == typeof(double[]) => [new[] { 1.0, 1.0 }],
            _ when core == typeof(DType) => [DType.Float32],
            _ when core == typeof(Device) => [Device.Cpu],
            _ when core == typeof(Generator) => [new Generator(0)],
            _ when core == typeof(string) => parameter.Name switch
            {
                "mode" => ["nearest", "nearest-exact", "bilinear", "bicubic", "area", "constant", "reflect", "replicate", "circular"],
                "reduction" => ["mean", "none", "sum"],
                "approximate" => ["none", "tanh"],
                _ => ["cpu"],
            },
            _ => [],
        };
        return nullable && set.Length > 0 ? [.. set, null] : set;
    }

    // The default call and it with each parameter set in turn, the all-set call and it with each
    // nullable left null or each candidate of a parameter with several (modes, bools) in turn.
    private static IEnumerable<object?[]> ArgumentSets(MethodInfo method)
    {
        var parameters = method.GetParameters();
        var values = parameters.Select(Values).ToArray();
        object?[] Set() => values.Select(v => v[0]).ToArray();

        object?[] Defaults() => parameters.Select((p, i) => p.HasDefaultValue ? p.DefaultValue : values[i][0]).ToArray();

        yield return Defaults();
        for (var i = 0; i < parameters.Length; i++)
            foreach (var candidate in values[i])
            {
                var a = Defaults();
                a[i] = candidate;
                yield return a;
            }
        yield return Set();
        for (var i = 0; i < parameters.Length; i++)
            for (var c = 1; c < values[i].Length; c++)
            {
                var a = Set();
                a[i] = values[i][c];
                yield return a;
            }
        // Several candidates at once (mode "bilinear" with antialias true, ...).
        for (var i = 0; i < parameters.Length; i++)
            for (var c = 1; c < values[i].Length; c++)
            {
                var a = Set();
                a[i] = values[i][c];
                for (var j = 0; j < parameters.Length; j++)
                    if (j != i && parameters[j].ParameterType == typeof(bool)) a[j] = true;
                yield return a;
            }
    }

    // Reflection cannot pass spans: the wrappers taking one are called here (the coverage check
    // below fails if one is forgotten).
    private static void CallTheSpanWrappers()
    {
        long[] shape = [1, 2];
        var g = new Generator(0);
        torch.Zeros(shape);
        torch.Ones(shape);
        torch.Empty(shape);
        torch.Full(shape, 1);
        torch.Randn(shape, g);
        torch.Rand(shape, g);
        torch.Randint(0, 3, shape, g);
        torch.Normal(0, 1, shape, g);
    }

    // Every "aten::..." string the engine's IL loads, and the names of the Ops in its static fields.
    private static HashSet<string> OperatorNamesInTheEngine()
    {
        var names = new HashSet<string>();
        foreach (var type in EngineAssembly.GetTypes())
        {
            foreach (var m in type.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly)
                         .Cast<MethodBase>().Concat(type.GetConstructors(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance)))
                foreach (var r in OperatorReferences(m))
                    if (r is string s) names.Add(s);
            foreach (var f in type.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly))
                if (f.FieldType == typeof(Op) && f.IsInitOnly && f.GetValue(null) is Op op) names.Add(op.Name);
        }
        return names;
    }

    // The aten names (ldstr) and static Op fields (ldsfld) a method body refers to. Scanning the raw
    // bytes could misread an operand as an opcode; only tokens that resolve to an aten string or an
    // Op field count, which an operand byte pattern practically never does.
    private static IEnumerable<object> OperatorReferences(MethodBase method)
    {
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); }
        catch (InvalidOperationException) { yield break; }
        if (il is null) yield break;
        for (var i = 0; i + 4 < il.Length; i++)
        {
            var op = il[i];
            if (op != OpCodes.Ldstr.Value && op != OpCodes.Ldsfld.Value) continue;
            var token = BitConverter.ToInt32(il, i + 1);
            var table = token >>> 24;
            if (op == OpCodes.Ldstr.Value && table == 0x70)
            {
                string? s = null;
                try { s = method.Module.ResolveString(token); }
                catch (ArgumentException) { }
                if (s is not null && s.StartsWith("aten::", StringComparison.Ordinal)) yield return s;
            }
            else if (op == OpCodes.Ldsfld.Value && table is 0x04 or 0x0A)
            {
                FieldInfo? f = null;
                try { f = method.Module.ResolveField(token); }
                catch (ArgumentException) { }
                if (f is not null && f.FieldType == typeof(Op)) yield return f;
            }
        }
    }
}
