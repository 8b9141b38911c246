using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// The schedule arithmetic diffusers does with torch float32 tensors and NumPy float64 arrays,
/// redone so that timesteps come out identical and sigmas agree to float32 rounding. Where the
/// reference mixes precisions (a float32 table read into float64 NumPy code) the comments say so,
/// because the mixture is what makes the numbers match.
/// </summary>
internal static class ScheduleMath
{
    /// <summary>The betas of the training schedule, as float32 like diffusers' tensor.</summary>
    public static float[] Betas(int numTrainTimesteps, double betaStart, double betaEnd, string schedule, double[]? trainedBetas)
    {
        if (trainedBetas is not null)
        {
            if (trainedBetas.Length != numTrainTimesteps)
                throw new ArgumentException($"trained_betas has {trainedBetas.Length} values but num_train_timesteps is {numTrainTimesteps}");
            return trainedBetas.Select(b => (float)b).ToArray();
        }
        switch (schedule)
        {
            case "linear":
            {
                // torch.linspace's own float32 algorithm (it is not start + i·step in float64).
                using var t = torch.Linspace(betaStart, betaEnd, numTrainTimesteps, DType.Float32);
                return t.ToArray<float>();
            }
            case "scaled_linear":
            {
                using var t = torch.Linspace(Math.Pow(betaStart, 0.5), Math.Pow(betaEnd, 0.5), numTrainTimesteps, DType.Float32);
                using var sq = t.Pow(2);
                return sq.ToArray<float>();
            }
            case "squaredcos_cap_v2":
                return CosineBetas(numTrainTimesteps);
            default:
                throw new NotSupportedException($"beta_schedule '{schedule}' is not supported (linear, scaled_linear, squaredcos_cap_v2)");
        }
    }

    /// <summary>Nichol & Dhariwal's cosine schedule, computed in float64 and stored as float32.</summary>
    private static float[] CosineBetas(int n, double maxBeta = 0.999)
    {
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        var betas = new float[n];
        for (var i = 0; i < n; i++)
        {
            var t1 = (double)i / n;
            var t2 = (double)(i + 1) / n;
            betas[i] = (float)Math.Min(1 - AlphaBar(t2) / AlphaBar(t1), maxBeta);
        }
        return betas;
    }

    /// <summary>
    /// Rescales betas to a zero terminal SNR (Lin et al. 2023, algorithm 1), in float32 like diffusers.
    /// </summary>
    public static float[] RescaleZeroTerminalSnr(float[] betas)
    {
        var ac = AlphasCumprod(betas);
        var sqrtAc = ac.Select(a => MathF.Sqrt(a)).ToArray();
        var first = sqrtAc[0];
        var last = sqrtAc[^1];
        var scale = first / (first - last);
        for (var i = 0; i < sqrtAc.Length; i++) sqrtAc[i] = (sqrtAc[i] - last) * scale;
        var acBar = sqrtAc.Select(s => s * s).ToArray();
        var result = new float[betas.Length];
        result[0] = 1 - acBar[0];
        for (var i = 1; i < betas.Length; i++) result[i] = 1 - acBar[i] / acBar[i - 1];
        return result;
    }

    /// <summary>
    /// cumprod(1 − β). torch's CPU cumprod accumulates a float32 input in double and rounds each
    /// partial product to float32; doing the same keeps alphas_cumprod bit-identical.
    /// </summary>
    public static float[] AlphasCumprod(float[] betas)
    {
        var ac = new float[betas.Length];
        double p = 1;
        for (var i = 0; i < betas.Length; i++)
        {
            p *= 1f - betas[i];
            ac[i] = (float)p;
        }
        return ac;
    }

    /// <summary>σ = ((1 − ᾱ)/ᾱ)^½ per training timestep, float32 (ascending in t).</summary>
    public static float[] TrainSigmas(float[] alphasCumprod) =>
        alphasCumprod.Select(a => MathF.Sqrt((1f - a) / a)).ToArray();

    /// <summary>log σ as NumPy computes it on a float32 array: in float32.</summary>
    public static float[] LogSigmas(float[] sigmas) => sigmas.Select(s => (float)Math.Log(s)).ToArray();

    /// <summary>NumPy's <c>linspace(start, stop, num)</c> (endpoint included) in float64.</summary>
    public static double[] Linspace(double start, double stop, int num)
    {
        if (num <= 0) return [];
        var y = new double[num];
        if (num == 1) { y[0] = start; return y; }
        var step = (stop - start) / (num - 1);
        for (var i = 0; i < num; i++) y[i] = i * step + start;
        y[^1] = stop;
        return y;
    }

    /// <summary>
    /// NumPy's <c>arange(start, stop, step)</c> for floats: length ⌈(stop − start)/step⌉ and values
    /// start + i·δ with δ re-derived from the first two elements, as NumPy's fill does.
    /// </summary>
    public static double[] Arange(double start, double stop, double step)
    {
        var len = (long)Math.Ceiling((stop - start) / step);
        if (len <= 0) return [];
        var delta = start + step - start;
        var y = new double[len];
        for (var i = 0; i < len; i++) y[i] = start + i * delta;
        return y;
    }

    /// <summary>NumPy's round (half to even), as <c>.round()</c> on timesteps.</summary>
    public static double Round(double x) => Math.Round(x, MidpointRounding.ToEven);

    /// <summary>
    /// <c>np.interp(x, arange(len(fp)), fp)</c> with a float32 table read as float64.
    /// </summary>
    public static double Interp(double x, float[] fp)
    {
        var n = fp.Length;
        if (double.IsNaN(x)) return double.NaN;
        if (x <= 0) return fp[0];
        if (x >= n - 1) return fp[n - 1];
        var j = (int)Math.Floor(x);
        if (j == x) return fp[j];
        var slope = (double)fp[j + 1] - fp[j]; // the grid spacing is 1
        return slope * (x - j) + fp[j];
    }

    /// <summary>
    /// diffusers' <c>_sigma_to_t</c>: the fractional training timestep whose log-sigma, linearly
    /// interpolated between neighbours of the float32 table, is ln σ. NumPy 1.x casts the float64
    /// scalar ln σ to the float32 of the table when the two meet (value-based casting), so the
    /// distances and the weight are float32; only the final blend of the indices is float64.
    /// </summary>
    public static double SigmaToT(double sigma, float[] logSigmas)
    {
        var logSigma = (float)Math.Log(Math.Max(sigma, 1e-10));
        var n = logSigmas.Length;
        var count = 0;
        for (var i = 0; i < n; i++)
            if (logSigma - logSigmas[i] >= 0f) count = i + 1; // the last index with dists >= 0, as cumsum().argmax()
        var low = Math.Min(Math.Max(count - 1, 0), n - 2);
        var high = low + 1;
        var lowV = logSigmas[low];
        var highV = logSigmas[high];
        var w = (lowV - logSigma) / (lowV - highV);
        w = Math.Clamp(w, 0f, 1f);
        return (double)(1f - w) * low + (double)w * high;
    }

    /// <summary>Karras et al. (2022) sigmas with ρ = 7: σmax → σmin over <paramref name="n"/> points.</summary>
    public static double[] KarrasSigmas(double sigmaMin, double sigmaMax, int n, double rho = 7.0)
    {
        var ramp = Linspace(0, 1, n);
        var minInvRho = Math.Pow(sigmaMin, 1 / rho);
        var maxInvRho = Math.Pow(sigmaMax, 1 / rho);
        return ramp.Select(r => Math.Pow(maxInvRho + r * (minInvRho - maxInvRho), rho)).ToArray();
    }

    /// <summary>Exponentially spaced sigmas, σmax → σmin.</summary>
    public static double[] ExponentialSigmas(double sigmaMin, double sigmaMax, int n) =>
        Linspace(Math.Log(sigmaMax), Math.Log(sigmaMin), n).Select(Math.Exp).ToArray();

    /// <summary>
    /// The "leading"/"trailing"/"linspace" timestep spacings as DDIM, DDPM and the sigma schedulers
    /// compute them (descending). <paramref name="roundLinspace"/>: DDIM/DDPM round linspace to
    /// integers, Euler/LMS keep it fractional (float32).
    /// </summary>
    public static double[] Spacing(string spacing, int numTrainTimesteps, int steps, int stepsOffset, bool roundLinspace, bool float32 = true)
    {
        switch (spacing)
        {
            case "linspace":
            {
                var ts = Linspace(0, numTrainTimesteps - 1, steps);
                if (roundLinspace) ts = ts.Select(Round).ToArray();
                else if (float32) ts = ts.Select(t => (double)(float)t).ToArray();
                Array.Reverse(ts);
                return ts;
            }
            case "leading":
            {
                var ratio = numTrainTimesteps / steps;
                var ts = new double[steps];
                for (var i = 0; i < steps; i++) ts[i] = (double)(steps - 1 - i) * ratio + stepsOffset;
                return ts;
            }
            case "trailing":
            {
                var ratio = (double)numTrainTimesteps / steps;
                return TrailingTimesteps(numTrainTimesteps, ratio);
            }
            default:
                throw new NotSupportedException($"timestep_spacing '{spacing}' is not supported (leading, trailing, linspace)");
        }
    }

    /// <summary>
    /// round(arange(start, 0, −ratio)) − 1. NumPy's length rule can add one element just below 0
    /// (e.g. 61 steps of 1000), which would become timestep −1 and make diffusers index ᾱ[−1], the
    /// noisiest level; we drop it.
    /// </summary>
    private static double[] TrailingTimesteps(double start, double ratio) =>
        Arange(start, 0, -ratio).Select(t => Round(t) - 1).Where(t => t >= 0).ToArray();

    /// <summary>
    /// DPM-Solver's and UniPC's spacings: n + 1 points with the last one dropped, so the final
    /// step does not land on t = 0.
    /// </summary>
    public static double[] SpacingSkipLast(string spacing, int numTrainTimesteps, int lastTimestep, int steps, int stepsOffset)
    {
        switch (spacing)
        {
            case "linspace":
            {
                var ts = Linspace(0, lastTimestep - 1, steps + 1).Select(Round).ToArray();
                Array.Reverse(ts);
                return ts[..^1];
            }
            case "leading":
            {
                var ratio = lastTimestep / (steps + 1);
                var ts = new double[steps];
                for (var i = 0; i < steps; i++) ts[i] = (double)(steps - i) * ratio + stepsOffset;
                return ts;
            }
            case "trailing":
            {
                var ratio = (double)numTrainTimesteps / steps;
                return TrailingTimesteps(lastTimestep, ratio);
            }
            default:
                throw new NotSupportedException($"timestep_spacing '{spacing}' is not supported (leading, trailing, linspace)");
        }
    }

    /// <summary>e^x − 1 without the cancellation of Exp(x) − 1 near 0 (torch.expm1 in diffusers).</summary>
    public static double ExpM1(double x) => Math.Abs(x) < 1e-5 ? x + x * x / 2 + x * x * x / 6 : Math.Exp(x) - 1;

    /// <summary>Solves A·x = b (small, dense) by Gaussian elimination with partial pivoting.</summary>
    public static double[] Solve(double[,] a, double[] b)
    {
        var n = b.Length;
        var m = (double[,])a.Clone();
        var x = (double[])b.Clone();
        for (var col = 0; col < n; col++)
        {
            var pivot = col;
            for (var r = col + 1; r < n; r++)
                if (Math.Abs(m[r, col]) > Math.Abs(m[pivot, col])) pivot = r;
            if (pivot != col)
            {
                for (var c = 0; c < n; c++) (m[col, c], m[pivot, c]) = (m[pivot, c], m[col, c]);
                (x[col], x[pivot]) = (x[pivot], x[col]);
            }
            for (var r = col + 1; r < n; r++)
            {
                var f = m[r, col] / m[col, col];
                for (var c = col; c < n; c++) m[r, c] -= f * m[col, c];
                x[r] -= f * x[col];
            }
        }
        for (var r = n - 1; r >= 0; r--)
        {
            var s = x[r];
            for (var c = r + 1; c < n; c++) s -= m[r, c] * x[c];
            x[r] = s / m[r, r];
        }
        return x;
    }
}
