using System.Diagnostics.CodeAnalysis;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// Where a stochastic sampler's Gaussian noise comes from. A <see cref="Generator"/> converts
/// implicitly, so <c>Step(eps, t, x, generator)</c> reads like diffusers' <c>step(..., generator=g)</c>
/// and draws exactly what diffusers' <c>randn_tensor</c> draws from the same generator.
/// </summary>
public abstract class NoiseSource
{
    /// <summary>A standard-normal tensor of <paramref name="shape"/> on <paramref name="device"/>.</summary>
    public abstract Tensor Randn(long[] shape, DType dtype, Device device);

    /// <summary>A generator as noise source; a null generator stays null (the default generator is used).</summary>
    [return: NotNullIfNotNull(nameof(generator))]
    public static implicit operator NoiseSource?(Generator? generator) => generator is null ? null : FromGenerator(generator);

    /// <summary>Draws with <c>torch.randn(shape, generator)</c> on the generator's device, then moves there.</summary>
    public static NoiseSource FromGenerator(Generator generator) => new GeneratorNoise([generator]);

    /// <summary>
    /// One generator per batch item, as diffusers' list of generators: item i is drawn from
    /// generator i with batch size 1, and the items are concatenated.
    /// </summary>
    public static NoiseSource FromGenerators(IReadOnlyList<Generator> generators) =>
        generators.Count > 0 ? new GeneratorNoise(generators) : throw new ArgumentException("no generators", nameof(generators));

    /// <summary>The process-wide default generator (what diffusers uses when no generator is passed).</summary>
    public static NoiseSource Default { get; } = new GeneratorNoise([]);

    /// <summary>
    /// Replays recorded draws in order (tests, or an RNG outside the engine); the tensors stay the
    /// caller's.
    /// </summary>
    public static NoiseSource FromTensors(IEnumerable<Tensor> draws) => new ReplayNoise(draws);

    private sealed class GeneratorNoise(IReadOnlyList<Generator> generators) : NoiseSource
    {
        public override Tensor Randn(long[] shape, DType dtype, Device device)
        {
            if (generators.Count == 0) return torch.Randn(shape, null, dtype, device);
            if (generators.Count == 1) return Draw(generators[0], shape, dtype, device);
            if (shape.Length == 0 || shape[0] != generators.Count)
                throw new ArgumentException($"{generators.Count} generators for a batch of {(shape.Length == 0 ? 0 : shape[0])}");
            var one = (long[])shape.Clone();
            one[0] = 1;
            var parts = new List<Tensor>(generators.Count);
            try
            {
                foreach (var g in generators) parts.Add(Draw(g, one, dtype, device));
                return torch.Cat(parts);
            }
            finally
            {
                foreach (var p in parts) p.Dispose();
            }
        }

        private static Tensor Draw(Generator g, long[] shape, DType dtype, Device device)
        {
            // A CPU generator draws on the CPU (the seed contract), then the noise moves to the sample.
            if (g.Device == device) return torch.Randn(shape, g, dtype, device);
            using var t = torch.Randn(shape, g, dtype, g.Device);
            return t.To(device);
        }
    }

    private sealed class ReplayNoise(IEnumerable<Tensor> draws) : NoiseSource
    {
        private readonly IEnumerator<Tensor> next = draws.GetEnumerator();

        public override Tensor Randn(long[] shape, DType dtype, Device device)
        {
            if (!next.MoveNext()) throw new InvalidOperationException("the recorded noise is exhausted");
            var t = next.Current;
            if (!t.Shape.SequenceEqual(shape))
                throw new ArgumentException($"recorded noise has shape [{string.Join(", ", t.Shape)}], the sampler asked for [{string.Join(", ", shape)}]");
            return t.To(device, dtype, copy: true);
        }
    }
}
