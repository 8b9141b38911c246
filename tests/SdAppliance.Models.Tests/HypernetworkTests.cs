using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Tests;

/// <summary>
/// A1111 hypernetworks on the tiny model: the MLP layout and initialisation A1111 builds, where they
/// apply, and the .pt file (its pickle as A1111 writes it, and the round trip through our unpickler).
/// </summary>
public sealed class HypernetworkTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-hypernet-").FullName;
    private readonly StableDiffusionModel model = ModelLoader.Load(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd"));

    public void Dispose()
    {
        model.Dispose();
        Directory.Delete(folder, recursive: true);
    }

    private static readonly HypernetworkOptions Full = new([1, 2, 1], "relu", IsLayerNorm: true, UseDropout: true);

    // One UNet step on fixed inputs: the tiny UNet sees the 32-wide text context and 32/64-wide image tokens.
    private float[] UnetOutput()
    {
        using var generator = new Generator(17);
        using var sample = torch.Randn([1, 4, 8, 8], generator);
        using var context = torch.Randn([1, 77, 32], generator);
        using var noGrad = Autograd.NoGrad();
        using var output = model.Unet.Forward(sample, 500, context);
        return output.ToArray<float>();
    }

    [Fact]
    public void SizesDefaultToEveryAttentionContextWidthCrossAttentionFirst()
    {
        Assert.Equal([32L, 64], Hypernetwork.ContextWidths(model.Unet));
        using var network = Hypernetwork.Create(model, new HypernetworkOptions([1, 2, 1]), "h");
        Assert.Equal([32L, 64], network.Sizes);
        // Each size has a k and a v MLP: 2 × 2 × (32·64 + 64 + 64·32 + 32) for 32, and the same for 64 with 4× the weights.
        Assert.Equal(2 * (2 * 32 * 64 + 64 + 32) + 2 * (2 * 64 * 128 + 128 + 64), network.TrainableParameters.Sum(p => p.NumEl));
    }

    [Fact]
    public void LayersAreNumberedAsA1111Sequential()
    {
        using var full = Hypernetwork.Create(model, Full with { EnableSizes = [32] }, "full");
        using (var state = full.Layers(32).K.StateDict())
            Assert.Equal(
                [("linear.0.weight", "64,32"), ("linear.0.bias", "64"), ("linear.2.weight", "64"), ("linear.2.bias", "64"),
                 ("linear.4.weight", "32,64"), ("linear.4.bias", "32"), ("linear.5.weight", "32"), ("linear.5.bias", "32")],
                state.Select(kv => (kv.Key, string.Join(",", kv.Value.Shape))).ToList());
        full.Dispose();

        // "linear" adds no activation module; activate_output adds one after the last Linear too.
        using (var plain = Hypernetwork.Create(model, new HypernetworkOptions([1, 1.5, 1]) { EnableSizes = [32] }, "plain"))
        using (var state = plain.Layers(32).V.StateDict())
            Assert.Equal(["linear.0.weight", "linear.0.bias", "linear.1.weight", "linear.1.bias"], state.Keys);
        using (var activated = Hypernetwork.Create(model, new HypernetworkOptions([1, 2, 1], "tanh", ActivateOutput: true) { EnableSizes = [32] }, "a"))
        using (var state = activated.Layers(32).V.StateDict())
            Assert.Equal(["linear.0.weight", "linear.0.bias", "linear.2.weight", "linear.2.bias"], state.Keys);
    }

    [Fact]
    public void InitialisationIsA1111s()
    {
        using var noGrad = Autograd.NoGrad();
        using (var normal = Hypernetwork.Create(model, new HypernetworkOptions([1, 2, 1], "relu", IsLayerNorm: true) { EnableSizes = [64] }, "n", new Generator(1)))
            foreach (var (name, p) in normal.NamedParameters())
            {
                if (name.EndsWith("bias", StringComparison.Ordinal))
                {
                    Assert.Equal(0, p.Abs().Max().Item());
                    continue;
                }
                // N(0, 0.01), LayerNorm weights included: over ≥ 64 draws the sample deviation is within
                // ±35% of 0.01 with overwhelming probability.
                Assert.InRange(p.Std().Item(), 0.0065, 0.0135);
            }
        using var xavier = Hypernetwork.Create(model, new HypernetworkOptions([1, 2, 1], WeightInitialization: "XavierUniform") { EnableSizes = [64] }, "x", new Generator(2));
        var w = xavier.Layers(64).K.GetParameter("linear.0.weight")!;
        var bound = Math.Sqrt(6.0 / (64 + 128));
        Assert.InRange(w.Abs().Max().Item(), 0.9 * bound, bound);
        Assert.Equal(0, xavier.Layers(64).K.GetParameter("linear.0.bias")!.Abs().Max().Item());
    }

    [Fact]
    public void AppliesToKeysAndValuesAndDetachesCleanly()
    {
        var plain = UnetOutput();
        using var network = Hypernetwork.Create(model, Full, "h", new Generator(3));
        network.Eval();
        var adapted = UnetOutput();
        Assert.NotEqual(plain, adapted);
        // Multiplier 0 in eval mode is the identity (context + 0·mlp): the model's own output.
        network.Multiplier = 0;
        Assert.Equal(plain, UnetOutput());
        network.Multiplier = 1;
        network.Detach();
        Assert.Equal(plain, UnetOutput());
        network.Attach();
        Assert.Equal(adapted, UnetOutput());
    }

    [Fact]
    public void PtFileHasA1111sPickleLayout()
    {
        using var network = Hypernetwork.Create(model, Full, "myhn", new Generator(4));
        var file = Path.Combine(folder, "myhn.pt");
        network.SavePt(file, 1234, "abcdef0123", "tiny-sd");

        using var checkpoint = TorchCheckpoint.Open(file);
        var root = Assert.IsType<PickleDict>(checkpoint.Root);
        Assert.False(root.IsOrdered);
        Assert.Equal(new object?[] { 32L, 64L, "step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
            "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure", "last_layer_dropout", "optional_info" }, root.Keys.ToArray());
        var pair = Assert.IsType<PickleTuple>(root[32L]);
        Assert.Equal(2, pair.Count);
        var k = Assert.IsType<PickleDict>(pair[0]);
        Assert.True(k.IsOrdered);
        Assert.Equal(["linear.0.weight", "linear.0.bias", "linear.2.weight", "linear.2.bias", "linear.4.weight", "linear.4.bias", "linear.5.weight", "linear.5.bias"],
            k.Keys.Cast<string>());
        var weight = Assert.IsType<TorchTensor>(k["linear.0.weight"]);
        Assert.Equal([64L, 32], weight.Shape);
        Assert.Equal(SafetensorsDType.F32, weight.DType);
        using (var expected = network.Layers(32).K.GetParameter("linear.0.weight")!.Detach())
            Assert.Equal(expected.ToBytes(), weight.ReadBytes());

        Assert.Equal(1234L, root["step"]);
        Assert.Equal("myhn", root["name"]);
        Assert.Equal(new object?[] { 1.0, 2.0, 1.0 }, Assert.IsType<List<object?>>(root["layer_structure"]));
        Assert.Equal("relu", root["activation_func"]);
        Assert.True(Assert.IsType<bool>(root["is_layer_norm"]));
        Assert.Equal("Normal", root["weight_initialization"]);
        Assert.Equal("abcdef0123", root["sd_checkpoint"]);
        Assert.Equal("tiny-sd", root["sd_checkpoint_name"]);
        Assert.False(Assert.IsType<bool>(root["activate_output"]));
        Assert.True(Assert.IsType<bool>(root["use_dropout"]));
        // A1111's parse_dropout_structure([1, 2, 1], use_dropout, last_layer_dropout=True).
        Assert.Equal(new object?[] { 0.0, 0.3, 0.0 }, Assert.IsType<List<object?>>(root["dropout_structure"]));
        Assert.True(Assert.IsType<bool>(root["last_layer_dropout"]));
        Assert.Null(root["optional_info"]);
    }

    [Fact]
    public void PtRoundTripGivesTheSameOutputs()
    {
        var file = Path.Combine(folder, "round.pt");
        float[] adapted;
        using (var network = Hypernetwork.Create(model, Full with { ActivationFunc = "leakyrelu", WeightInitialization = "KaimingNormal" }, "round", new Generator(5)))
        {
            network.Eval();
            adapted = UnetOutput();
            network.SavePt(file, 7, "0000000000", "tiny");
        }
        using var loaded = Hypernetwork.LoadPt(file, model);
        Assert.False(loaded.IsTraining);
        Assert.Equal(("round", 7, "leakyrelu", "KaimingNormal"), (loaded.Name, loaded.Step, loaded.Options.ActivationFunc, loaded.Options.WeightInitialization));
        Assert.Equal(adapted, UnetOutput());
    }

    [Fact]
    public void LegacyLinear1Linear2FilesLoad()
    {
        // An early A1111 file: no layer_structure (so [1, 2, 1]), no activation, keys linear1/linear2.
        SafetensorsTensor Tensor(string name, long[] shape, float value) =>
            new(name, SafetensorsDType.F32, shape, Enumerable.Repeat(value, (int)shape.Aggregate(1L, (a, d) => a * d)).SelectMany(BitConverter.GetBytes).ToArray());
        PickleDict State(float value)
        {
            var d = new PickleDict(isOrdered: true);
            d.Set("linear1.weight", Tensor("a", [64, 32], value));
            d.Set("linear1.bias", Tensor("b", [64], 0));
            d.Set("linear2.weight", Tensor("c", [32, 64], value));
            d.Set("linear2.bias", Tensor("d", [32], 0));
            return d;
        }
        var root = new PickleDict();
        root.Set(32L, new PickleTuple(State(0.01f), State(0.02f)));
        root.Set("step", 3L);
        var file = Path.Combine(folder, "legacy.pt");
        TorchSaveWriter.Write(file, root);

        using var loaded = Hypernetwork.LoadPt(file, model);
        Assert.Equal("legacy", loaded.Name);  // no name key: the file name, as A1111
        Assert.Equal([1.0, 2.0, 1.0], loaded.Options.LayerStructure);
        Assert.True(loaded.Options.ActivateOutput);  // A1111's default for files without the key
        Assert.Equal(0.02f, loaded.Layers(32).V.GetParameter("linear.1.weight")!.ToArray<float>()[0]);
    }

    [Fact]
    public void BadOptionsAndFilesAreRefused()
    {
        Assert.Throws<ArgumentException>(() => Hypernetwork.Create(model, new HypernetworkOptions([2, 1]), "h"));
        Assert.Contains("activation_func", Assert.Throws<ArgumentException>(() => Hypernetwork.Create(model, new HypernetworkOptions([1, 2, 1], "softmax2d"), "h")).Message);
        Assert.Contains("weight_initialization", Assert.Throws<ArgumentException>(() => Hypernetwork.Create(model, new HypernetworkOptions([1, 2, 1], WeightInitialization: "Zeros"), "h")).Message);
        var file = Path.Combine(folder, "empty.pt");
        var root = new PickleDict();
        root.Set("name", "nothing");
        TorchSaveWriter.Write(file, root);
        Assert.Contains(file, Assert.Throws<UserInputException>(() => Hypernetwork.LoadPt(file, model)).Message);
    }
}
