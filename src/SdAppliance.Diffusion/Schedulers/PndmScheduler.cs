using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// Pseudo numerical methods (Liu et al. 2022), diffusers' <c>PNDMScheduler</c>. With
/// <c>skip_prk_steps</c> (Stable Diffusion's config, and A1111's "PLMS") it is pure linear multistep:
/// the second timestep repeats the first interval once to average two model outputs, then
/// Adams–Bashforth of growing order up to 4. Without it, 3 Runge–Kutta (PRK) steps warm up first.
/// </summary>
public sealed class PndmScheduler : Scheduler
{
    /// <summary>diffusers' constructor defaults.</summary>
    public static readonly SchedulerConfig Defaults = new()
    {
        NumTrainTimesteps = 1000, BetaStart = 0.0001, BetaEnd = 0.02, BetaSchedule = "linear",
        SkipPrkSteps = false, SetAlphaToOne = false, PredictionType = "epsilon",
        TimestepSpacing = "leading", StepsOffset = 0,
    };

    private const int PndmOrder = 4;
    private readonly double finalAlphaCumprod;
    private readonly List<Tensor> ets = [];
    private long[] prkTimesteps = [];
    private Tensor? curModelOutput;
    private Tensor? curSample;
    private int counter;

    public PndmScheduler(SchedulerConfig? config = null) : base(config ?? new(), Defaults)
    {
        CheckPrediction("epsilon", "v_prediction");
        finalAlphaCumprod = Config.SetAlphaToOne == true ? 1.0 : AlphasCumprodValues[0];
    }

    public override void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        if (numInferenceSteps < 1 || numInferenceSteps > NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), $"must be in [1, {NumTrainTimesteps}]");
        NumInferenceSteps = numInferenceSteps;
        var n = NumTrainTimesteps;
        // PNDM keeps its base grid ascending (diffusers' _timesteps).
        long[] grid = Config.TimestepSpacing switch
        {
            "linspace" => ScheduleMath.Linspace(0, n - 1, numInferenceSteps).Select(v => (long)ScheduleMath.Round(v)).ToArray(),
            "leading" => Enumerable.Range(0, numInferenceSteps).Select(i => (long)i * (n / numInferenceSteps) + (Config.StepsOffset ?? 0)).ToArray(),
            "trailing" => ScheduleMath.Spacing("trailing", n, numInferenceSteps, 0, roundLinspace: true).Select(v => (long)v).Reverse().ToArray(),
            _ => throw new NotSupportedException($"timestep_spacing '{Config.TimestepSpacing}' is not supported (leading, trailing, linspace)"),
        };

        long[] plms;
        if (Config.SkipPrkSteps == true)
        {
            prkTimesteps = [];
            // grid[:-1] + grid[-2:-1] + grid[-1:], reversed: the second timestep appears twice.
            var list = grid[..^1].Concat(grid.Length >= 2 ? grid[^2..^1] : []).Concat(grid[^1..]).ToArray();
            Array.Reverse(list);
            plms = list;
        }
        else
        {
            if (numInferenceSteps < PndmOrder)
                throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), $"PNDM's Runge-Kutta warm-up needs at least {PndmOrder} steps (or skip_prk_steps)");
            var half = n / numInferenceSteps / 2;
            var lastFour = grid[^PndmOrder..];
            var prk = new List<long>();
            foreach (var g in lastFour) { prk.Add(g); prk.Add(g + half); }
            // prk[:-1].repeat(2)[1:-1], reversed
            var repeated = prk.Take(prk.Count - 1).SelectMany(v => new[] { v, v }).ToList();
            var trimmed = repeated.Skip(1).Take(repeated.Count - 2).ToArray();
            Array.Reverse(trimmed);
            prkTimesteps = trimmed;
            plms = grid[..^3];
            Array.Reverse(plms);
        }
        var all = prkTimesteps.Concat(plms).Select(v => (double)v).ToArray();
        ResetState();
        SetSchedule(all, DType.Int64, device, null);
    }

    public override SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, NoiseSource? noise = null)
    {
        if (NumInferenceSteps is null) throw NotReady();
        using var scope = torch.NewDisposeScope();
        var mo = Upcast(modelOutput);
        var x = Upcast(sample);
        var prev = counter < prkTimesteps.Length && Config.SkipPrkSteps != true
            ? StepPrk(mo, TrainIndex(timestep), x)
            : StepPlms(mo, TrainIndex(timestep), x);
        counter++;
        return new SchedulerOutput(CastLike(prev, modelOutput).MoveToOuterScope(), null);
    }

    private Tensor StepPrk(Tensor mo, int timestep, Tensor x)
    {
        var steps = NumInferenceSteps!.Value;
        var diffToPrev = counter % 2 != 0 ? 0 : NumTrainTimesteps / steps / 2;
        var prevTimestep = timestep - diffToPrev;
        var t = (int)prkTimesteps[counter / 4 * 4];
        switch (counter % 4)
        {
            case 0:
                Replace(ref curModelOutput, mo * (1.0 / 6));
                Remember(mo);
                Replace(ref curSample, x.Alias());
                break;
            case 1:
            case 2:
                Replace(ref curModelOutput, curModelOutput! + mo * (1.0 / 3));
                break;
            default:
                mo = curModelOutput! + mo * (1.0 / 6);
                Replace(ref curModelOutput, null);
                break;
        }
        var cur = curSample ?? x;
        return PrevSample(cur, t, prevTimestep, mo);
    }

    private Tensor StepPlms(Tensor mo, int timestep, Tensor x)
    {
        var steps = NumInferenceSteps!.Value;
        if (Config.SkipPrkSteps != true && ets.Count < 3)
            throw new InvalidOperationException("PNDM without skip_prk_steps must run its Runge-Kutta warm-up steps first");
        var stride = NumTrainTimesteps / steps;
        var prevTimestep = timestep - stride;
        if (counter != 1)
        {
            while (ets.Count > 3)
            {
                ets[0].Dispose();
                ets.RemoveAt(0);
            }
            Remember(mo);
        }
        else
        {
            // The repeated timestep: redo the first interval with the average of both outputs.
            prevTimestep = timestep;
            timestep += stride;
        }

        Tensor output;
        Tensor? consumed = null;
        if (ets.Count == 1 && counter == 0)
        {
            output = mo;
            Replace(ref curSample, x.Alias());
        }
        else if (ets.Count == 1 && counter == 1)
        {
            output = (mo + ets[^1]) / 2;
            x = consumed = curSample!;
            curSample = null;
        }
        else if (ets.Count == 2)
            output = (3 * ets[^1] - ets[^2]) / 2;
        else if (ets.Count == 3)
            output = (23 * ets[^1] - 16 * ets[^2] + 5 * ets[^3]) / 12;
        else
            output = (1.0 / 24) * (55 * ets[^1] - 59 * ets[^2] + 37 * ets[^3] - 9 * ets[^4]);
        var prev = PrevSample(x, timestep, prevTimestep, output);
        consumed?.Dispose();
        return prev;
    }

    /// <summary>The PNDM transfer from x_t to x_{t−δ} (formula 9 of the paper).</summary>
    private Tensor PrevSample(Tensor sample, int timestep, int prevTimestep, Tensor modelOutput)
    {
        double alphaProd = AlphasCumprodValues[timestep];
        var alphaProdPrev = prevTimestep >= 0 ? AlphasCumprodValues[prevTimestep] : finalAlphaCumprod;
        var betaProd = 1 - alphaProd;
        var betaProdPrev = 1 - alphaProdPrev;
        if (PredictionType == "v_prediction")
            modelOutput = Math.Sqrt(alphaProd) * modelOutput + Math.Sqrt(betaProd) * sample;
        var sampleCoeff = Math.Sqrt(alphaProdPrev / alphaProd);
        var denom = alphaProd * Math.Sqrt(betaProdPrev) + Math.Sqrt(alphaProd * betaProd * alphaProdPrev);
        return sampleCoeff * sample - (alphaProdPrev - alphaProd) / denom * modelOutput;
    }

    private void Remember(Tensor mo) => ets.Add(mo.Alias().DetachFromDisposeScope());

    private static void Replace(ref Tensor? slot, Tensor? value)
    {
        slot?.Dispose();
        slot = value?.DetachFromDisposeScope();
    }

    private void ResetState()
    {
        foreach (var e in ets) e.Dispose();
        ets.Clear();
        Replace(ref curModelOutput, null);
        Replace(ref curSample, null);
        counter = 0;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) ResetState();
        base.Dispose(disposing);
    }
}
