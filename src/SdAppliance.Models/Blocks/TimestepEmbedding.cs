using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// The MLP over timestep features, as diffusers' <c>TimestepEmbedding</c>: <c>linear_1</c> → act →
/// <c>linear_2</c>. <c>cond_proj</c> (no bias) adds a projected condition to the input first, for
/// models with <c>time_cond_proj_dim</c> (LCM). SDXL also uses it as <c>add_embedding</c> over
/// the pooled text and size features.
/// </summary>
public sealed class TimestepEmbedding : Module<Tensor, Tensor>
{
    private readonly Linear linear1;
    private readonly Linear? condProj;
    private readonly Linear linear2;

    public TimestepEmbedding(long inChannels, long timeEmbedDim, string actFn = "silu", long? outDim = null,
        long? condProjDim = null, bool sampleProjBias = true, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        ActFn = Activation.Check(actFn);
        linear1 = RegisterModule("linear_1", o.Linear(inChannels, timeEmbedDim, sampleProjBias));
        if (condProjDim is { } c) condProj = RegisterModule("cond_proj", o.Linear(c, inChannels, bias: false));
        linear2 = RegisterModule("linear_2", o.Linear(timeEmbedDim, outDim ?? timeEmbedDim, sampleProjBias));
    }

    public string ActFn { get; }

    public override Tensor Forward(Tensor input) => Forward(input, null);

    /// <summary>[N, in] (plus a [N, cond] condition for cond_proj models) → [N, out].</summary>
    public Tensor Forward(Tensor sample, Tensor? condition)
    {
        using var scope = torch.NewDisposeScope();
        if (condition is not null && condProj is not null) sample = sample + condProj.Forward(condition);
        sample = linear1.Forward(sample);
        sample = Activation.Apply(ActFn, sample);
        sample = linear2.Forward(sample);
        return scope.MoveToOuterScope(sample);
    }
}
