using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;


/// <summary>
/// A UNet up level with text cross-attention, as diffusers' <c>CrossAttnUpBlock2D</c>: like
/// <see cref="UpBlock2D"/> with <c>attentions.N</c> after each <c>resnets.N</c>, of the transformer depth
/// <paramref name="transformerLayersPerLayer"/> gives for that layer (1 each when null).
/// </summary>
public sealed class CrossAttnUpBlock2D : Module, IUNetUpBlock
{
    private readonly ModuleList<Transformer2DModel> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly Upsample2D? upsampler;

    public CrossAttnUpBlock2D(long inChannels, long prevOutputChannels, long outChannels, long tembChannels,
        long crossAttentionDim, int numLayers = 1, IReadOnlyList<int>? transformerLayersPerLayer = null, long numAttentionHeads = 1,
        double dropout = 0, double resnetEps = 1e-6, string resnetActFn = "swish", long resnetGroups = 32,
        double outputScaleFactor = 1.0, bool addUpsample = true, bool useLinearProjection = false,
        bool onlyCrossAttention = false, bool upcastAttention = false, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var resnetList = new List<ResnetBlock2D>();
        var attentionList = new List<Transformer2DModel>();
        for (var i = 0; i < numLayers; i++)
        {
            var skipChannels = i == numLayers - 1 ? inChannels : outChannels;
            var resnetIn = i == 0 ? prevOutputChannels : outChannels;
            resnetList.Add(new ResnetBlock2D(resnetIn + skipChannels, outChannels, tembChannels, resnetGroups, eps: resnetEps,
                dropout: dropout, nonLinearity: resnetActFn, outputScaleFactor: outputScaleFactor, options: o));
            attentionList.Add(new Transformer2DModel(numAttentionHeads, outChannels / numAttentionHeads, outChannels,
                transformerLayersPerLayer?[i] ?? 1, normNumGroups: resnetGroups, crossAttentionDim: crossAttentionDim,
                useLinearProjection: useLinearProjection, onlyCrossAttention: onlyCrossAttention,
                upcastAttention: upcastAttention, options: o));
        }
        attentions = RegisterModule("attentions", new ModuleList<Transformer2DModel>(attentionList));
        resnets = RegisterModule("resnets", new ModuleList<ResnetBlock2D>(resnetList));
        if (addUpsample)
        {
            upsampler = new Upsample2D(outChannels, outChannels, options: o);
            RegisterModule("upsamplers", new ModuleList<Upsample2D>(upsampler));
        }
    }

    public bool GradientCheckpointing { get; set; }

    public int ResnetCount => resnets.Count;

    public Tensor Forward(Tensor hiddenStates, IReadOnlyList<Tensor> resSamples, Tensor? temb, Tensor? encoderHiddenStates, long[]? upsampleSize)
    {
        if (resSamples.Count != resnets.Count)
            throw new ArgumentException($"this up block takes {resnets.Count} skip tensors, got {resSamples.Count}", nameof(resSamples));
        using var scope = torch.NewDisposeScope();
        for (var i = 0; i < resnets.Count; i++)
        {
            hiddenStates = torch.Cat([hiddenStates, resSamples[^(i + 1)]], 1);
            hiddenStates = Checkpointing.Call(GradientCheckpointing, resnets[i].Forward, hiddenStates, temb);
            hiddenStates = attentions[i].Forward(hiddenStates, encoderHiddenStates);
        }
        if (upsampler is not null) hiddenStates = upsampler.Forward(hiddenStates, upsampleSize);
        return scope.MoveToOuterScope(hiddenStates);
    }
}
