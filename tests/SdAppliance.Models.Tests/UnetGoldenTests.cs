using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;


/// <summary>The tiny UNet against diffusers' noise predictions (fixtures README, "UNet").</summary>
public sealed class UnetGoldenTests : IDisposable
{
    private const string File = "unet_golden.safetensors";
    private readonly UNet2DConditionModel unet = LoadTinyUnet();

    public void Dispose() => unet.Dispose();

    private Tensor Predict(Tensor timestep, string contextName)
    {
        using var latents = Golden(File, "latents");
        using var context = Golden(File, contextName);
        using var inference = Autograd.InferenceMode();
        return unet.Forward(latents, timestep, context);
    }

    [Theory]
    [InlineData("encoder_hidden_states_random", "noise_pred_random")]
    [InlineData("encoder_hidden_states_text", "noise_pred_text")]
    public void PerItemTimestepsMatchDiffusers(string context, string expected)
    {
        using var timesteps = Golden(File, "timesteps");
        Assert.Equal([999L, 1L], timesteps.ToArray<long>());
        using var prediction = Predict(timesteps, context);
        using var golden = Golden(File, expected);
        AssertClose(golden, prediction, GoldenAtol, GoldenRtol, expected);
    }

    [Fact]
    public void ScalarTimestepIsBroadcastToTheBatch()
    {
        using var golden = Golden(File, "noise_pred_text_t500");
        using (var t = torch.Scalar(500, DType.Int64))
        using (var fromTensor = Predict(t, "encoder_hidden_states_text"))
            AssertClose(golden, fromTensor, GoldenAtol, GoldenRtol, "0-d int64 timestep");

        using var latents = Golden(File, "latents");
        using var context = Golden(File, "encoder_hidden_states_text");
        using var inference = Autograd.InferenceMode();
        using var fromNumber = unet.Forward(latents, 500.0, context);
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
