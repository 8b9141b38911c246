using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;
using static SdAppliance.Models.Tests.TextEncoderFixtures;

namespace SdAppliance.Models.Tests;

/// <summary>
/// tiny-sdxl's two text encoders, as the loader builds them, against the reference (fixtures README, "SDXL", "Text
/// encoders"): every output of each, and the conditioning our SDXL prompt encoder makes of them.
/// </summary>
public sealed class SdxlTextEncoderGoldenTests : IClassFixture<SdxlTextEncoderGoldenTests.TinySdxl>
{
    public sealed class TinySdxl : IDisposable
    {
        public StableDiffusionModel Model { get; } = ModelLoader.Load(Fixture(UnetVaeFixtures.TinySdxl));

        public void Dispose() => Model.Dispose();
    }

    private static readonly string File = Path.Combine("sdxl", "text_encoders_golden.safetensors");
    private static readonly string UnetFile = Path.Combine("sdxl", "unet_golden.safetensors");
    private readonly StableDiffusionModel model;

    public SdxlTextEncoderGoldenTests(TinySdxl tiny) => model = tiny.Model;

    private static Tensor Golden(string name) => UnetVaeFixtures.Golden(File, name);

    [Theory]
    [InlineData("text_encoder", "input_ids", 4)]
    [InlineData("text_encoder_2", "input_ids_2", 11)]
    public void EachEncoderReproducesEveryGoldenOutput(string encoder, string ids, int hiddenStates)
    {
        var textModel = encoder == "text_encoder" ? model.TextEncoder : model.TextEncoder2!;
        using var scope = torch.NewDisposeScope();
        using var inference = Autograd.InferenceMode();
        using var output = textModel.Forward(Golden(ids));

        AssertClose(Golden(encoder + "/last_hidden_state"), output.LastHiddenState, GoldenAtol, encoder + " last_hidden_state");
        Assert.Equal(hiddenStates, output.HiddenStates.Count);
        AssertClose(Golden(encoder + "/hidden_states"), torch.Stack([.. output.HiddenStates]), GoldenAtol, encoder + " hidden_states");
        AssertClose(Golden(encoder + "/penultimate_hidden_state"), output.HiddenStates[^2], GoldenAtol, encoder + " penultimate_hidden_state");
        AssertClose(Golden(encoder + "/pooled"), output.PooledOutput, GoldenAtol, encoder + " pooled");
        if (encoder == "text_encoder_2")
            AssertClose(Golden("text_encoder_2/text_embeds"), output.TextEmbeds!, GoldenAtol, "text_encoder_2 text_embeds");
        else
            Assert.Null(output.TextEmbeds);
    }

    [Fact]
    public void TheTwoTokenizationsPadDifferently()
    {
        // Guards the encoder comparison against inputs that would not tell the pads apart: the empty prompt's row
        // is all padding after its eos, 913 for the first encoder and 0 for the second.
        using var ids = Golden("input_ids");
        using var ids2 = Golden("input_ids_2");
        Assert.Equal([912, 913, 913, 913], IdsRow(ids, 1)[..4]);
        Assert.Equal([912, 913, 0, 0], IdsRow(ids2, 1)[..4]);
    }

    [Fact]
    public void PromptEncoderGivesTheConcatenatedPenultimateLayersAndTheProjectedPool()
    {
        Assert.IsType<SdxlPromptEncoder>(model.PromptEncoder);
        using var ids = Golden("input_ids");
        using var ids2 = Golden("input_ids_2");
        using var promptEmbeds = Golden("prompt_embeds");
        using var textEmbeds = Golden("text_encoder_2/text_embeds");
        Assert.Equal([4L, 77, 96], promptEmbeds.Shape);
        using var inference = Autograd.InferenceMode();
        for (var row = 0; row < 4; row++)
        {
            using var scope = torch.NewDisposeScope();
            using var conditioning = model.PromptEncoder.Encode(PromptChunks.Unweighted(IdsRow(ids, row)), PromptChunks.Unweighted(IdsRow(ids2, row)));
            AssertClose(promptEmbeds.Narrow(0, row, 1), conditioning.PromptEmbeds, GoldenAtol, $"prompt_embeds, prompt {row}");
            AssertClose(textEmbeds.Narrow(0, row, 1), conditioning.PooledPromptEmbeds!, GoldenAtol, $"pooled text_embeds, prompt {row}");
        }
    }

    [Fact]
    public void TheUnetGoldensTextConditioningIsOurs()
    {
        // unet_golden's text case was fed the pipeline's conditioning of its prompts: ours must be it, so that the UNet
        // golden and the pipeline runs test the same inputs.
        using var ids = UnetVaeFixtures.Golden(UnetFile, "input_ids_text");
        using var ids2 = UnetVaeFixtures.Golden(UnetFile, "input_ids_2_text");
        using var context = UnetVaeFixtures.Golden(UnetFile, "encoder_hidden_states_text");
        using var textEmbeds = UnetVaeFixtures.Golden(UnetFile, "text_embeds_text");
        using var inference = Autograd.InferenceMode();
        for (var row = 0; row < 2; row++)
        {
            using var scope = torch.NewDisposeScope();
            Assert.Equal(model.Tokenizer.EncodeForModel(row == 0 ? "a photo of a cat" : "a red circle"), IdsRow(ids, row));
            Assert.Equal(model.Tokenizer2!.EncodeForModel(row == 0 ? "a photo of a cat" : "a red circle"), IdsRow(ids2, row));
            using var conditioning = model.PromptEncoder.Encode(PromptChunks.Unweighted(IdsRow(ids, row)), PromptChunks.Unweighted(IdsRow(ids2, row)));
            AssertClose(context.Narrow(0, row, 1), conditioning.PromptEmbeds, GoldenAtol, $"encoder_hidden_states_text, prompt {row}");
            AssertClose(textEmbeds.Narrow(0, row, 1), conditioning.PooledPromptEmbeds!, GoldenAtol, $"text_embeds_text, prompt {row}");
        }
    }
}
