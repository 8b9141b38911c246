using System.Text.Json;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;
using static SdAppliance.Models.Tests.TextEncoderFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>
/// The released text encoders (SD 1.5 CLIP-L, SD 2.1 OpenCLIP-H, SDXL's CLIP-L and bigG) built
/// from their config.json declare exactly the reference's state-dict keys and shapes, in order
/// (fixtures/architectures, <c>diffusers.text_encoder*</c>), so real files load with nothing
/// missing or unexpected. Built on libtorch's meta device: shapes without storage, so the
/// 2.8 GB bigG costs nothing.
/// </summary>
public sealed class TextEncoderArchitectureTests
{
    private static readonly Device Meta = Device.Meta;

    public static TheoryData<string, string, bool> Components => new()
    {
        { "sd15", "text_encoder", false },
        { "sd21v", "text_encoder", false },
        { "sdxl_base", "text_encoder", false },
        { "sdxl_base", "text_encoder_2", true },
    };

    private static JsonElement Architecture(string model)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Fixture("architectures", model + ".json")));
        return doc.RootElement.Clone();
    }

    [Theory]
    [MemberData(nameof(Components))]
    public void StateDictKeysAndShapesEqualTheReference(string modelName, string component, bool withProjection)
    {
        var arch = Architecture(modelName);
        var config = ClipTextConfig.FromJson(arch.GetProperty("configs").GetProperty(component).GetRawText());
        var expected = arch.GetProperty("diffusers").GetProperty(component).EnumerateObject()
            .Select(p => $"{p.Name} [{string.Join(", ", p.Value.EnumerateArray().Select(d => d.GetInt64()))}]")
            .ToList();

        using var model = new ClipTextModel(config, withProjection, Meta);
        using var stateDict = model.StateDict();
        var actual = stateDict.Select(e => $"{e.Key} [{string.Join(", ", e.Value.Shape)}]").ToList();
        Assert.Equal(expected, actual);
        Assert.All(stateDict.Values, t => Assert.Equal(Meta, t.Device));

        var parameters = model.Parameters().Sum(p => p.NumEl);
        Assert.Equal(arch.GetProperty("param_counts").GetProperty(component).GetProperty("parameters").GetInt64(), parameters);
    }

    [Theory]
    [MemberData(nameof(Components))]
    public void PresetsEqualTheReleasedConfigs(string modelName, string component, bool withProjection)
    {
        var config = ClipTextConfig.FromJson(Architecture(modelName).GetProperty("configs").GetProperty(component).GetRawText());
        var preset = (modelName, component) switch
        {
            ("sd21v", _) => ClipTextConfig.OpenClipVitH14Sd2,
            (_, "text_encoder_2") => ClipTextConfig.OpenClipVitBigG14,
            _ => ClipTextConfig.ClipVitL14,
        };
        Assert.Equal(preset, config);
        Assert.Equal(withProjection, component == "text_encoder_2");
    }

    [Fact]
    public void Sd21TextEncoderHas23LayersAndErfGelu()
    {
        // SD 2.x conditions on OpenCLIP-H's penultimate block: diffusers keeps 23 of 24 blocks, so
        // the last hidden state (with the final layer norm) is that block's output.
        var config = ClipTextConfig.FromJson(Architecture("sd21v").GetProperty("configs").GetProperty("text_encoder").GetRawText());
        Assert.Equal((23, "gelu", 1024), (config.NumHiddenLayers, config.HiddenAct, config.HiddenSize));
    }

    [Fact]
    public void ConfigDefaultsAreTransformers()
    {
        var c = ClipTextConfig.FromJson("{}");
        Assert.Equal((49408, 512, 2048, 12, 8, 77, "quick_gelu"), (c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.MaxPositionEmbeddings, c.HiddenAct));
        Assert.Equal((49406L, 49407L, 1L), (c.BosTokenId, c.EosTokenId, c.PadTokenId));
        Assert.Equal(c, ClipTextConfig.FromJson(c.ToJson()));
    }

    [Fact]
    public void UnknownActivationAndBadHeadCountAreRefused()
    {
        Assert.Throws<NotSupportedException>(() => new ClipTextModel(new ClipTextConfig { HiddenSize = 8, NumAttentionHeads = 2, HiddenAct = "relu6" }, device: Meta));
        Assert.Throws<ArgumentException>(() => new ClipTextModel(new ClipTextConfig { HiddenSize = 10, NumAttentionHeads = 4 }, device: Meta));
    }
}
