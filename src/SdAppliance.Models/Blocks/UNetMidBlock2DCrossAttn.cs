using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// The UNet bottleneck, as diffusers' <c>UNetMidBlock2DCrossAttn</c>: <c>resnets.0</c>, then for
/// each layer <c>attentions.N</c> and <c>resnets.N+1</c>.
/// </summary>
public sealed class UNetMidBlock2DCrossAttn : Module, IUNetMidBlock
{
    private readonly ModuleList<Transformer2DModel> attentions;
    private readonly ModuleList<ResnetBlock2D> resnets;

    public UNetMidBlock2DCrossAttn(long inChannels, long tembChannels, long crossAttentionDim, int numLayers = 1,
        int transformerLayersPerBlock = 1, long numAttentionHeads = 1, double dropout = 0, double resnetEps = 1e-6,
        string resnetActFn = "swish", long? resnetGroups = 32, double outputScaleFactor = 1.0,
        bool useLinearProjection = false, bool upcastAttention = false, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var groups = resnetGroups ?? Math.Min(inChannels / 4, 32);
        var resnetList = new List<ResnetBlock2D> { NewResnet() };
        var attentionList = new List<Transformer2DModel>();
        for (var i = 0; i < numLayers; i++)
        {
            attentionList.Add(new Transformer2DModel(numAttentionHeads, inChannels / numAttentionHeads, inChannels,
                transformerLayersPerBlock, normNumGroups: groups, crossAttentionDim: crossAttentionDim,
                useLinearProjection: useLinearProjection, upcastAttention: upcastAttention, options: o));
            resnetList.Add(NewResnet());
        }
        attentions = RegisterModule("attentions", new ModuleList<Transformer2DModel>(attentionList));
        resnets = RegisterModule("resnets", new ModuleList<ResnetBlock2D>(resnetList));

        ResnetBlock2D NewResnet() => new(inChannels, inChannels, tembChannels, groups, eps: resnetEps, dropout: dropout,
            nonLinearity: resnetActFn, outputScaleFactor: outputScaleFactor, options: o);
    }

    public bool GradientCheckpointing { get; set; }

    public Tensor Forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates)
    {
        using var scope = torch.NewDisposeScope();
        hiddenStates = Checkpointing.Call(GradientCheckpointing, resnets[0].Forward, hiddenStates, temb);
        for (var i = 0; i < attentions.Count; i++)
        {
            hiddenStates = attentions[i].Forward(hiddenStates, encoderHiddenStates);
            hiddenStates = Checkpointing.Call(GradientCheckpointing, resnets[i + 1].Forward, hiddenStates, temb);
        }
        return scope.MoveToOuterScope(hiddenStates);
    }
}
