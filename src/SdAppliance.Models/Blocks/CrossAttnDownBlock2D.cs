using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// A UNet down level with text cross-attention, as diffusers' <c>CrossAttnDownBlock2D</c>: each
/// <c>resnets.N</c> is followed by <c>attentions.N</c> (a <see cref="Transformer2DModel"/>), then
/// <c>downsamplers.0</c>. Heads are <paramref name="numAttentionHeads"/> of out_channels / heads
/// channels each; <paramref name="transformerLayersPerLayer"/> gives each attention's transformer depth
/// (1 each when null; distilled SDXL UNets vary it per block and per layer).
/// </summary>
public sealed class CrossAttnDownBlock2D : Module, IUNetDownBlock
{
    private readonly ModuleList<Transformer2DModel> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly Downsample2D? downsampler;

    public CrossAttnDownBlock2D(long inChannels, long outChannels, long tembChannels, long crossAttentionDim,
        int numLayers = 1, IReadOnlyList<int>? transformerLayersPerLayer = null, long numAttentionHeads = 1, double dropout = 0,
        double resnetEps = 1e-6, string resnetActFn = "swish", long resnetGroups = 32, double outputScaleFactor = 1.0,
        bool addDownsample = true, long downsamplePadding = 1, bool useLinearProjection = false,
        bool onlyCrossAttention = false, bool upcastAttention = false, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var resnetList = new List<ResnetBlock2D>();
        var attentionList = new List<Transformer2DModel>();
        // Built in diffusers' order (resnet, attention, resnet...) so a seeded initialisation draws alike.
        for (var i = 0; i < numLayers; i++)
        {
            resnetList.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, resnetGroups, eps: resnetEps,
                dropout: dropout, nonLinearity: resnetActFn, outputScaleFactor: outputScaleFactor, options: o));
            attentionList.Add(new Transformer2DModel(numAttentionHeads, outChannels / numAttentionHeads, outChannels,
                transformerLayersPerLayer?[i] ?? 1, normNumGroups: resnetGroups, crossAttentionDim: crossAttentionDim,
                useLinearProjection: useLinearProjection, onlyCrossAttention: onlyCrossAttention,
                upcastAttention: upcastAttention, options: o));
        }
        attentions = RegisterModule("attentions", new ModuleList<Transformer2DModel>(attentionList));
        resnets = RegisterModule("resnets", new ModuleList<ResnetBlock2D>(resnetList));
        if (addDownsample)
        {
            downsampler = new Downsample2D(outChannels, outChannels, downsamplePadding, options: o);
            RegisterModule("downsamplers", new ModuleList<Downsample2D>(downsampler));
        }
    }

    public bool GradientCheckpointing { get; set; }

    public (Tensor Hidden, List<Tensor> ResSamples) Forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates)
    {
        using var scope = torch.NewDisposeScope();
        var outputStates = new List<Tensor>();
        for (var i = 0; i < resnets.Count; i++)
        {
            hiddenStates = Checkpointing.Call(GradientCheckpointing, resnets[i].Forward, hiddenStates, temb);
            hiddenStates = attentions[i].Forward(hiddenStates, encoderHiddenStates);
            outputStates.Add(hiddenStates);
        }
        if (downsampler is not null)
        {
            hiddenStates = downsampler.Forward(hiddenStates);
            outputStates.Add(hiddenStates);
        }
        return (scope.MoveToOuterScope(hiddenStates), scope.MoveToOuterScope(outputStates));
    }
}
