using SdAppliance.Torch.Nn;

namespace SdAppliance.Torch.Tests;

/// <summary>A diffusers-shaped nest: own parameter, buffers, a child, a list of sequentials.</summary>
internal sealed class TinyBlock : Module<Tensor, Tensor>
{
    public TinyBlock(Generator? generator = null)
    {
        Scale = RegisterParameter("scale", torch.Ones([4]));
        RegisterBuffer("position_ids", torch.Arange(4));
        RegisterBuffer("cache", torch.Zeros([2]), persistent: false);
        ProjIn = RegisterModule("proj_in", new Linear(3, 4, generator: generator));
        Blocks = RegisterModule("blocks", new ModuleList<Sequential>(
            new Sequential(new Linear(4, 4, generator: generator), new Dropout(0.5)),
            new Sequential(new LayerNorm(4), new Linear(4, 2, bias: false, generator: generator))));
    }

    public Tensor Scale { get; }
    public Linear ProjIn { get; }
    public ModuleList<Sequential> Blocks { get; }

    public override Tensor Forward(Tensor input)
    {
        using var h = ProjIn.Forward(input);
        using var s = h * Scale;
        using var b = Blocks[0].Forward(s);
        return Blocks[1].Forward(b);
    }
}

[Collection(DefaultGeneratorCollection.Name)]
public class NnModuleTests
{
    private static readonly string[] TinyParameterNames =
    [
        "scale", "proj_in.weight", "proj_in.bias",
        "blocks.0.0.weight", "blocks.0.0.bias",
        "blocks.1.0.weight", "blocks.1.0.bias", "blocks.1.1.weight",
    ];

    [Fact]
    public void NamedParametersFollowRegistrationOrderWithDottedNames()
    {
        using var m = new TinyBlock();
        Assert.Equal(TinyParameterNames, m.NamedParameters().Select(p => p.Name));
        Assert.Equal(["scale"], m.NamedParameters(recurse: false).Select(p => p.Name));
        Assert.All(m.Parameters(), p => Assert.True(p.RequiresGrad));
        Assert.Equal(["position_ids", "cache"], m.NamedBuffers().Select(b => b.Name));
        Assert.Equal(["proj_in", "blocks"], m.NamedChildren().Select(c => c.Name));
        Assert.Equal(["", "proj_in", "blocks", "blocks.0", "blocks.0.0", "blocks.0.1", "blocks.1", "blocks.1.0", "blocks.1.1"],
            m.NamedModules().Select(x => x.Name));
        Assert.Same(m.Blocks[1][1], m.GetSubmodule("blocks.1.1"));
        Assert.Same(m.ProjIn.Weight, m.GetParameter("proj_in.weight"));
        Assert.Null(m.GetParameter("blocks.1.1.bias"));
        Assert.Throws<ArgumentException>(() => m.GetParameter("proj_in.nope"));
    }

    [Fact]
    public void SharedParametersAreListedOnceButKeptUnderEachKeyInTheStateDict()
    {
        using var shared = new Linear(2, 2);
        var seq = new Sequential(shared, shared);
        Assert.Equal(["0.weight", "0.bias"], seq.NamedParameters().Select(p => p.Name));
        using var sd = seq.StateDict();
        Assert.Equal(["0.weight", "0.bias", "1.weight", "1.bias"], sd.Keys);
    }

    [Fact]
    public void StateDictListsParametersThenPersistentBuffersPerModuleAndSharesStorage()
    {
        using var m = new TinyBlock();
        using var sd = m.StateDict();
        Assert.Equal(
            ["scale", "position_ids", "proj_in.weight", "proj_in.bias", "blocks.0.0.weight", "blocks.0.0.bias", "blocks.1.0.weight", "blocks.1.0.bias", "blocks.1.1.weight"],
            sd.Keys);
        Assert.False(sd["scale"].RequiresGrad);
        // No copy: a change to the module shows through the state dict.
        using (Autograd.NoGrad()) m.Scale.Fill_(7);
        Assert.All(sd["scale"].ToArray<float>(), v => Assert.Equal(7f, v));
    }

    [Fact]
    public void StateDictRoundTripReproducesOutputsExactly()
    {
        using var a = new TinyBlock(new Generator(0)).Eval();
        using var b = new TinyBlock(new Generator(1)).Eval();
        using var x = torch.Randn([5, 3], new Generator(2));
        using var ya = a.Forward(x);
        using (var yb0 = b.Forward(x))
            Assert.NotEqual(ya.ToArray<float>(), yb0.ToArray<float>());

        using (var sd = a.StateDict())
        {
            var result = b.LoadStateDict(sd);
            Assert.Empty(result.MissingKeys);
            Assert.Empty(result.UnexpectedKeys);
        }
        using var yb = b.Forward(x);
        Assert.Equal(ya.ToArray<float>(), yb.ToArray<float>());
        // Loading copies: b's tensors are its own, still trainable leaves.
        Assert.False(a.ProjIn.Weight.IsSameAs(b.ProjIn.Weight));
        Assert.True(b.ProjIn.Weight.RequiresGrad);
    }

    [Fact]
    public void StrictLoadNamesMissingAndUnexpectedKeysAndChangesNothing()
    {
        using var source = new TinyBlock(new Generator(0));
        using var target = new TinyBlock(new Generator(1));
        using var before = target.ProjIn.Weight.Clone();
        using var sd = source.StateDict();
        sd.Remove("proj_in.bias", out var removed);
        removed!.Dispose();
        sd.Add("blocks.2.weight", torch.Zeros([1]));

        var e = Assert.Throws<StateDictException>(() => target.LoadStateDict(sd));
        Assert.Contains("Error(s) in loading state_dict for TinyBlock", e.Message);
        Assert.Contains("Missing key(s) in state_dict: \"proj_in.bias\".", e.Message);
        Assert.Contains("Unexpected key(s) in state_dict: \"blocks.2.weight\".", e.Message);
        Assert.Equal(["proj_in.bias"], e.MissingKeys);
        Assert.Equal(["blocks.2.weight"], e.UnexpectedKeys);
        Assert.Equal(before.ToArray<float>(), target.ProjIn.Weight.ToArray<float>());

        var result = target.LoadStateDict(sd, strict: false);
        Assert.Equal(["proj_in.bias"], result.MissingKeys);
        Assert.Equal(["blocks.2.weight"], result.UnexpectedKeys);
        Assert.Equal(source.ProjIn.Weight.ToArray<float>(), target.ProjIn.Weight.ToArray<float>());
    }

    [Fact]
    public void ShapeMismatchNamesTheKeyAndBothShapesEvenWhenNotStrict()
    {
        using var m = new Linear(3, 2);
        using var sd = m.StateDict();
        sd["weight"].Dispose();
        sd["weight"] = torch.Zeros([2, 5]);
        var e = Assert.Throws<StateDictException>(() => m.LoadStateDict(sd, strict: false));
        Assert.Contains("size mismatch for weight: copying a param with shape [2, 5] from checkpoint, the shape in current model is [2, 3].", e.Message);
    }

    [Fact]
    public void LoadConvertsDtypeAsCopyDoes()
    {
        using var m = new Linear(2, 1);
        using var sd = new StateDict
        {
            ["weight"] = torch.Tensor([0.5, -1.25], 1, 2),
            ["bias"] = torch.Tensor([0.125], 1),
        };
        m.LoadStateDict(sd);
        Assert.Equal(DType.Float32, m.Weight.DType);
        Assert.Equal([0.5f, -1.25f], m.Weight.ToArray<float>());
        Assert.Equal([0.125f], m.Bias!.ToArray<float>());
    }

    [Fact]
    public void TrainAndEvalPropagateToEveryDescendant()
    {
        using var m = new TinyBlock();
        Assert.All(m.Modules(), x => Assert.True(x.IsTraining));
        m.Eval();
        Assert.All(m.Modules(), x => Assert.False(x.IsTraining));
        m.Blocks.Train();
        Assert.False(m.IsTraining);
        Assert.True(m.Blocks[0][1].IsTraining);
        Assert.False(m.ProjIn.IsTraining);
    }

    [Fact]
    public void DropoutScalesKeptElementsInTrainingAndIsTheIdentityInEval()
    {
        using var dropout = new Dropout(0.25);
        using var x = torch.Full([10000], 3.0);
        torch.ManualSeed(0);
        using var y = dropout.Forward(x);
        var v = y.ToArray<float>();
        // Kept elements are scaled by 1/(1-p) = 4/3 exactly up to float rounding of 3*4/3.
        Assert.All(v, e => Assert.True(e == 0f || Math.Abs(e - 4f) < 1e-6, $"unexpected value {e}"));
        // The zero count is Binomial(10000, 0.25): std 43, so ±300 is a 7-sigma band.
        var zeros = v.Count(e => e == 0f);
        Assert.InRange(zeros, 2500 - 300, 2500 + 300);

        dropout.Eval();
        using var z = dropout.Forward(x);
        Assert.Equal(x.ToArray<float>(), z.ToArray<float>());
    }

    [Fact]
    public void FreezeStopsGradientsToTheFrozenPartOnly()
    {
        using var first = new Linear(3, 4);
        using var second = new Linear(4, 2);
        var seq = new Sequential(first, second);
        first.Freeze();
        Assert.All(first.Parameters(), p => Assert.False(p.RequiresGrad));
        using var x = torch.Randn([5, 3]);
        using var y = seq.Forward(x);
        using var g = torch.OnesLike(y);
        y.Backward(g);
        Assert.Null(first.Weight.Grad);
        Assert.Null(first.Bias!.Grad);
        using var gw = second.Weight.Grad;
        Assert.NotNull(gw);

        seq.ZeroGrad();
        Assert.Null(second.Weight.Grad);
        first.Unfreeze();
        Assert.All(seq.Parameters(), p => Assert.True(p.RequiresGrad));
    }

    [Fact]
    public void ToFloat64AndBackKeepsTensorObjectsGradFlagsAndValues()
    {
        using var m = new TinyBlock(new Generator(3)).Eval();
        using var x = torch.Randn([2, 3], new Generator(4));
        using var y32 = m.Forward(x);
        var weight = m.ProjIn.Weight;
        using var original = weight.Clone();
        m.Blocks[1][1].Freeze();
        using (var y = m.Forward(x))
        using (var ones = torch.OnesLike(y))
            y.Backward(ones);

        m.To(DType.Float64);
        Assert.Same(weight, m.ProjIn.Weight);
        Assert.All(m.Parameters(), p => Assert.Equal(DType.Float64, p.DType));
        Assert.Equal(DType.Int64, m.GetBuffer("position_ids")!.DType);
        Assert.Equal(DType.Float64, m.GetBuffer("cache")!.DType);
        Assert.True(weight.RequiresGrad);
        Assert.False(m.Blocks[1][1].GetParameter("weight")!.RequiresGrad);
        using (var grad = weight.Grad) Assert.Equal(DType.Float64, grad!.DType);
        using (var x64 = x.Double())
        using (var y64 = m.Forward(x64))
        {
            // The same network in double: agrees with float32 to float32 rounding (~1e-6 on O(1) values).
            var a = y64.ToArray<double>();
            var b = y32.ToArray<float>();
            for (var i = 0; i < a.Length; i++) Assert.Equal(b[i], a[i], 1e-5);
        }

        m.To(Device.Cpu, DType.Float32);
        Assert.Same(weight, m.ProjIn.Weight);
        Assert.Equal(DType.Float32, weight.DType);
        // float32 -> float64 -> float32 is exact.
        Assert.Equal(original.ToArray<float>(), weight.ToArray<float>());
        Assert.Throws<ArgumentException>(() => m.To(DType.Int32));
    }

    [Fact]
    public void RegistrationRejectsBadNamesAndNonLeafParameters()
    {
        using var m = new Linear(2, 2);
        Assert.Throws<ArgumentException>(() => m.RegisterParameter("a.b", torch.Zeros([1])));
        Assert.Throws<ArgumentException>(() => m.RegisterBuffer("weight", torch.Zeros([1])));
        using var leaf = torch.Ones([2]).RequiresGrad_();
        using var nonLeaf = leaf * 2;
        Assert.Throws<ArgumentException>(() => m.RegisterParameter("p", nonLeaf));
    }

    /// <summary>A forward written as one Chain, recording the intermediates it saw.</summary>
    private sealed class ChainedForward : Module<Tensor, Tensor>
    {
        public List<Tensor> Seen { get; } = [];

        public override Tensor Forward(Tensor input) => Chain(input, Record(x => x * 2), null, Record(x => x + 1), Record(x => x.Neg()));

        private Func<Tensor, Tensor> Record(Func<Tensor, Tensor> layer) => x =>
        {
            Seen.Add(x);
            return layer(x);
        };
    }

    [Fact]
    public void ChainFreesEachIntermediateAndKeepsTheInput()
    {
        using var chained = new ChainedForward();
        using var scope = torch.NewDisposeScope();
        var input = torch.Ones([2]);
        var output = chained.Forward(input);
        Assert.Equal([-3f, -3f], output.ToArray<float>());
        // The null layer was skipped: three layers saw the input and two intermediates.
        Assert.Equal(3, chained.Seen.Count);
        Assert.Same(input, chained.Seen[0]);
        Assert.False(input.IsDisposed);
        Assert.All(chained.Seen.Skip(1), t => Assert.True(t.IsDisposed));
        Assert.Equal(2, scope.Count);  // input and output: nothing else is alive
    }

    [Fact]
    public void ModulesBuiltInsideADisposeScopeOutliveIt()
    {
        Linear m;
        using (torch.NewDisposeScope()) m = new Linear(2, 2);
        using (m)
        {
            Assert.False(m.Weight.IsDisposed);
            Assert.False(m.Bias!.IsDisposed);
        }
        Assert.True(m.Weight.IsDisposed);
    }

    [Fact]
    public void ApplyVisitsChildrenBeforeParents()
    {
        using var m = new TinyBlock();
        var order = new List<string>();
        m.Apply(x => order.Add(x.GetType().Name));
        Assert.Equal(["Linear", "Linear", "Dropout", "Sequential", "LayerNorm", "Linear", "Sequential", "ModuleList`1", "TinyBlock"], order);
    }

    [Fact]
    public void PrintsLikePyTorch()
    {
        using var m = new Sequential(new Linear(3, 2), new Conv2d(4, 8, 3, padding: 1, bias: false));
        Assert.Equal(
            "Sequential(\n  (0): Linear(in_features=3, out_features=2, bias=True)\n  (1): Conv2d(4, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n)",
            m.ToString());
        using var list = new ModuleList(new Identity());
        Assert.Equal("ModuleList(\n  (0): Identity()\n)", list.ToString());
    }

    [Fact]
    public void CheckpointedBlockMatchesThePlainCallIncludingDropoutMasks()
    {
        using var block = new Sequential(new Linear(4, 16, generator: new Generator(5)), new Dropout(0.5), new Linear(16, 3, generator: new Generator(6)));
        using var x = torch.Randn([8, 4], new Generator(7)).RequiresGrad_();
        using var g = torch.Randn([8, 3], new Generator(8));

        (float[] Y, float[][] Grads) Run(bool checkpoint, ulong seed)
        {
            block.ZeroGrad();
            x.ZeroGrad();
            torch.ManualSeed(seed);
            using var y = checkpoint ? Autograd.Checkpoint(block.Forward, x) : block.Forward(x);
            y.Backward(g);
            var grads = block.Parameters().Append(x).Select(p =>
            {
                using var grad = p.Grad!;
                return grad.ToArray<float>();
            }).ToArray();
            return (y.ToArray<float>(), grads);
        }

        var plain = Run(false, 11);
        var checkpointed = Run(true, 11);
        var otherMask = Run(false, 12);
        // The same kernels on the same numbers: exact equality, not a tolerance.
        Assert.Equal(plain.Y, checkpointed.Y);
        for (var i = 0; i < plain.Grads.Length; i++) Assert.Equal(plain.Grads[i], checkpointed.Grads[i]);
        // The comparison can fail: another seed draws another mask and other gradients.
        Assert.NotEqual(plain.Grads[0], otherMask.Grads[0]);
    }
}
