using SdAppliance.Models.Blocks;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;


/// <summary>
/// A tiny UNet against diffusers' noise predictions. Both golden files name their inputs and outputs alike; an SDXL
/// UNet (<c>addition_embed_type "text_time"</c>) also gets the case's <c>text_embeds_*</c> and <c>time_ids_*</c>.
/// </summary>
public abstract class UnetGoldenTestsBase(string model, string file) : IDisposable
{
    protected string File { get; } = file;
    protected UNet2DConditionModel Unet { get; } = LoadTinyUnet(model);

    public void Dispose()
    {
        Unet.Dispose();
        GC.SuppressFinalize(this);
    }

    private bool IsSdxl => Unet.Config.AdditionEmbedType == "text_time";

    /// <summary>The added conditions of the golden case <paramref name="inputs"/> ("random" or "text"), null for an SD 1.x UNet.</summary>
    protected UNetAddedConditions? AddedConditions(string inputs) =>
        IsSdxl ? new UNetAddedConditions(Golden(File, "text_embeds_" + inputs), Golden(File, "time_ids_" + inputs)) : null;

    private Tensor Predict(Func<Tensor, Tensor, UNetAddedConditions?, Tensor> forward, string inputs)
    {
        using var scope = torch.NewDisposeScope();
        using var inference = Autograd.InferenceMode();
        var latents = Golden(File, "latents");
        var context = Golden(File, "encoder_hidden_states_" + inputs);
        return scope.MoveToOuterScope(forward(latents, context, AddedConditions(inputs)));
    }

    [Theory]
    [InlineData("random")]
    [InlineData("text")]
    public void PerItemTimestepsMatchDiffusers(string inputs)
    {
        using var timesteps = Golden(File, "timesteps");
        Assert.Equal([999L, 1L], timesteps.ToArray<long>());
        using var prediction = Predict((latents, context, added) => Unet.Forward(latents, timesteps, context, added), inputs);
        using var golden = Golden(File, "noise_pred_" + inputs);
        AssertClose(golden, prediction, GoldenAtol, GoldenRtol, "noise_pred_" + inputs);
    }

    [Fact]
    public void ScalarTimestepIsBroadcastToTheBatch()
    {
        using var golden = Golden(File, "noise_pred_text_t500");
        using (var t = torch.Scalar(500, DType.Int64))
        using (var fromTensor = Predict((latents, context, added) => Unet.Forward(latents, t, context, added), "text"))
            AssertClose(golden, fromTensor, GoldenAtol, GoldenRtol, "0-d int64 timestep");

        using var fromNumber = Predict((latents, context, added) => Unet.Forward(latents, 500.0, context, added), "text");
        AssertClose(golden, fromNumber, GoldenAtol, GoldenRtol, "timestep as a number");
    }

    [Fact]
    public void TimestepsChangeThePrediction()
    {
        // Guards the comparison above against a model that ignores its time input.
        using var golden500 = Golden(File, "noise_pred_text_t500");
        using var golden = Golden(File, "noise_pred_text");
        Assert.True(MaxAbsDiff(golden500, golden) > 100 * GoldenAtol);
    }
}

/// <summary>The tiny SD 1.x UNet (fixtures README, "UNet").</summary>
public sealed class UnetGoldenTests() : UnetGoldenTestsBase(TinySd, "unet_golden.safetensors");

/// <summary>
/// The tiny SDXL UNet with its added conditions (fixtures README, "SDXL", "UNet"): the predictions, and the
/// time and added embeddings of the random case, module by module, so a miss says where it starts.
/// </summary>
public sealed class SdxlUnetGoldenTests() : UnetGoldenTestsBase(TinySdxl, Path.Combine("sdxl", "unet_golden.safetensors"))
{
    [Fact]
    public void TimeAndAddedEmbeddingsMatchDiffusersIntermediates()
    {
        using var scope = torch.NewDisposeScope();
        using var inference = Autograd.InferenceMode();
        var timeProj = (Timesteps)Unet.GetSubmodule("time_proj");
        var timeEmbedding = (TimestepEmbedding)Unet.GetSubmodule("time_embedding");
        var addTimeProj = (Timesteps)Unet.GetSubmodule("add_time_proj");
        var addEmbedding = (TimestepEmbedding)Unet.GetSubmodule("add_embedding");
        var added = AddedConditions("random")!;
        Assert.Equal([64f, 64, 0, 0, 64, 64, 1024, 768, 64, 32, 768, 1024], added.TimeIds.Flatten().ToArray<float>());

        var tEmb = timeProj.Forward(Golden(File, "timesteps"));
        AssertClose(Golden(File, "intermediates_random/t_emb"), tEmb, GoldenAtol, GoldenRtol, "t_emb");
        AssertClose(Golden(File, "intermediates_random/temb"), timeEmbedding.Forward(tEmb), GoldenAtol, GoldenRtol, "temb");
        var timeIdsProj = addTimeProj.Forward(added.TimeIds.Flatten());
        AssertClose(Golden(File, "intermediates_random/add_time_proj"), timeIdsProj, GoldenAtol, GoldenRtol, "add_time_proj");
        var addEmbeds = torch.Cat([added.TextEmbeds, timeIdsProj.Reshape(2, -1)], -1);
        AssertClose(Golden(File, "intermediates_random/add_embeds"), addEmbeds, GoldenAtol, GoldenRtol, "add_embeds");
        AssertClose(Golden(File, "intermediates_random/aug_emb"), addEmbedding.Forward(addEmbeds), GoldenAtol, GoldenRtol, "aug_emb");
    }

    [Fact]
    public void AddedConditionsChangeThePredictionAndAreRequired()
    {
        // Guards the comparisons against a UNet that ignores text_embeds/time_ids: the other case's micro-conditioning
        // row (the second row's time ids for both) must move the prediction far beyond the tolerance.
        using var scope = torch.NewDisposeScope();
        using var inference = Autograd.InferenceMode();
        var latents = Golden(File, "latents");
        var context = Golden(File, "encoder_hidden_states_random");
        var timesteps = Golden(File, "timesteps");
        var added = AddedConditions("random")!;
        var sameRows = added with { TimeIds = added.TimeIds.Narrow(0, 1, 1).Expand(2, 6) };
        var golden = Golden(File, "noise_pred_random");
        var prediction = Unet.Forward(latents, timesteps, context, sameRows);
        Assert.True(MaxAbsDiff(golden.Narrow(0, 0, 1), prediction.Narrow(0, 0, 1)) > 100 * GoldenAtol);
        var e = Assert.Throws<ArgumentException>(() => Unet.Forward(latents, timesteps, context));
        Assert.Contains("text_embeds and time_ids", e.Message);
    }
}
