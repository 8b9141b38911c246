using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;


public sealed class VaeBehaviourTests : IDisposable
{
    private readonly AutoencoderKL vae = LoadTinyVae();

    public void Dispose() => vae.Dispose();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EncodeAndDecodeLeaveNoIntermediateAlive(bool tiled)
    {
        vae.EnableTiling(tiled);
        using var generator = new Generator(31);
        using var raw = torch.Rand([1, 3, 96, 80], generator);
        using var z = torch.Randn([1, 4, 12, 10], generator);
        using var inference = Autograd.InferenceMode();
        using var scope = torch.NewDisposeScope();
        using (var posterior = vae.Encode(raw))
        using (var sample = posterior.Sample(generator))
            Assert.Equal([1L, 4, 12, 10], sample.Shape);
        using (var decoded = vae.Decode(z))
            Assert.Equal([1L, 3, 96, 80], decoded.Shape);
        Assert.Equal(0, scope.Count);
    }

    [Fact]
    public void PosteriorStatisticsFollowFromTheMoments()
    {
        // Log-variances beyond [−30, 20] are clamped before exp, as diffusers does.
        using var moments = torch.Tensor(new float[] { 1f, -2f, -40f, 25f }, 1, 4, 1, 1);
        using var posterior = new DiagonalGaussianDistribution(moments);
        Assert.Equal([1f, -2f], posterior.Mean.ToArray<float>());
        Assert.Equal([-30f, 20f], posterior.Logvar.ToArray<float>());
        Assert.Equal([(float)Math.Exp(-15), (float)Math.Exp(10)], posterior.Std.ToArray<float>());
        using var mode = posterior.Mode();
        Assert.Equal([1f, -2f], mode.ToArray<float>());
        using var noise = torch.Tensor(new float[] { 0.5f, -1f }, 1, 2, 1, 1);
        using var sample = posterior.Sample(noise);
        Assert.Equal(1 + Math.Exp(-15) * 0.5, sample.ToArray<float>()[0], 6);
        using var kl = posterior.Kl();
        var expected = 0.5 * (1 + Math.Exp(-30) - 1 + 30 + 4 + Math.Exp(20) - 1 - 20);
        Assert.Equal(expected, kl.Item(), expected * 1e-6);
    }
}
