using SdAppliance.Torch;

namespace SdAppliance.Models.Vae;


/// <summary>
/// The VAE's posterior, as diffusers' <c>DiagonalGaussianDistribution</c>: the encoder's moments
/// [B, 2·C, h, w] split into mean and log-variance (clamped to [−30, 20] so exp stays finite),
/// std = exp(logvar / 2). Owns its tensors.
/// </summary>
public sealed class DiagonalGaussianDistribution : IDisposable
{
    public DiagonalGaussianDistribution(Tensor parameters, bool deterministic = false)
    {
        using var scope = torch.NewDisposeScope();
        var halves = parameters.Chunk(2, 1);
        var (mean, logvar) = (halves[0], halves[1].Clamp(-30.0, 20.0));
        Parameters = scope.MoveToOuterScope(parameters);
        Mean = scope.MoveToOuterScope(mean);
        Logvar = scope.MoveToOuterScope(logvar);
        Deterministic = deterministic;
        Std = scope.MoveToOuterScope(deterministic ? torch.ZerosLike(mean) : logvar.Mul(0.5).Exp());
        Var = scope.MoveToOuterScope(deterministic ? torch.ZerosLike(mean) : logvar.Exp());
    }

    /// <summary>The moments as given (a handle of the caller's tensor).</summary>
    public Tensor Parameters { get; }
    public Tensor Mean { get; }
    public Tensor Logvar { get; }
    public Tensor Std { get; }
    public Tensor Var { get; }
    public bool Deterministic { get; }

    /// <summary>
    /// mean + std · ε with ε ~ N(0, 1) drawn from <paramref name="generator"/> (on the generator's
    /// device, then moved, so a CPU generator gives the same latents on any device, as diffusers'
    /// <c>randn_tensor</c>).
    /// </summary>
    public Tensor Sample(Generator? generator = null)
    {
        using var scope = torch.NewDisposeScope();
        var noise = torch.Randn(Mean.Shape, generator, Mean.DType, generator?.Device ?? Mean.Device).To(Mean.Device);
        return scope.MoveToOuterScope(Sample(noise));
    }

    /// <summary>mean + std · <paramref name="noise"/>, for noise drawn elsewhere.</summary>
    public Tensor Sample(Tensor noise)
    {
        using var scope = torch.NewDisposeScope();
        return scope.MoveToOuterScope(Mean + Std * noise);
    }

    /// <summary>The most likely latent: the mean (a new handle).</summary>
    public Tensor Mode() => Mean.Alias();

    /// <summary>KL divergence to N(0, 1) per batch item: ½ Σ (mean² + var − 1 − logvar).</summary>
    public Tensor Kl()
    {
        if (Deterministic) return torch.Zeros([Mean.Size(0)], Mean.DType, Mean.Device);
        using var scope = torch.NewDisposeScope();
        var terms = Mean.Square() + Var - 1 - Logvar;
        return scope.MoveToOuterScope(terms.Sum([1, 2, 3]) * 0.5);
    }

    public void Dispose()
    {
        Parameters.Dispose();
        Mean.Dispose();
        Logvar.Dispose();
        Std.Dispose();
        Var.Dispose();
    }
}
