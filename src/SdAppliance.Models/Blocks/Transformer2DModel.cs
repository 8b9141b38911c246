using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// The spatial transformer of the UNet, as diffusers' <c>Transformer2DModel</c> on continuous
/// input: group <c>norm</c>, <c>proj_in</c> (1×1 conv, or linear with
/// <c>use_linear_projection</c> as SD 2.x and SDXL), <c>transformer_blocks.N</c>, <c>proj_out</c>,
/// plus the input (residual). Images [B, C, H, W] in and out.
/// </summary>
public sealed class Transformer2DModel : Module, IGradientCheckpointing
{
    private readonly GroupNorm norm;
    private readonly Module<Tensor, Tensor> projIn;
    private readonly ModuleList<BasicTransformerBlock> transformerBlocks;
    private readonly Module<Tensor, Tensor> projOut;

    public Transformer2DModel(long numAttentionHeads, long attentionHeadDim, long inChannels, long numLayers = 1,
        double dropout = 0, long normNumGroups = 32, long? crossAttentionDim = null, bool useLinearProjection = false,
        bool onlyCrossAttention = false, bool upcastAttention = false, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        UseLinearProjection = useLinearProjection;
        var inner = numAttentionHeads * attentionHeadDim;
        norm = RegisterModule("norm", o.GroupNorm(normNumGroups, inChannels, 1e-6));
        projIn = RegisterModule("proj_in", useLinearProjection ? o.Linear(inChannels, inner) : (Module<Tensor, Tensor>)o.Conv2d(inChannels, inner, 1));
        var blocks = new List<BasicTransformerBlock>();
        for (var i = 0; i < numLayers; i++)
            blocks.Add(new BasicTransformerBlock(inner, numAttentionHeads, attentionHeadDim, dropout, crossAttentionDim,
                onlyCrossAttention: onlyCrossAttention, upcastAttention: upcastAttention, options: o));
        transformerBlocks = RegisterModule("transformer_blocks", new ModuleList<BasicTransformerBlock>(blocks));
        projOut = RegisterModule("proj_out", useLinearProjection ? o.Linear(inner, inChannels) : (Module<Tensor, Tensor>)o.Conv2d(inner, inChannels, 1));
    }

    public bool UseLinearProjection { get; }

    /// <summary>Checkpoints each transformer block (diffusers does the same inside this model).</summary>
    public bool GradientCheckpointing { get; set; }

    public Tensor Forward(Tensor hiddenStates, Tensor? encoderHiddenStates = null)
    {
        using var scope = torch.NewDisposeScope();
        var (batch, height, width) = (hiddenStates.Size(0), hiddenStates.Size(2), hiddenStates.Size(3));
        var residual = hiddenStates;

        // [B, C, H, W] → tokens [B, H·W, inner]; the projection is applied on whichever side of the
        // reshape its kind needs (conv before, linear after), and back the same way.
        hiddenStates = norm.Forward(hiddenStates);
        hiddenStates = UseLinearProjection
            ? projIn.Forward(ToTokens(hiddenStates, batch, height * width))
            : ToTokens(projIn.Forward(hiddenStates), batch, height * width);

        foreach (var block in transformerBlocks)
            hiddenStates = Checkpointing.Call(GradientCheckpointing, block.Forward, hiddenStates, encoderHiddenStates);

        hiddenStates = UseLinearProjection
            ? ToImage(projOut.Forward(hiddenStates), batch, height, width)
            : projOut.Forward(ToImage(hiddenStates, batch, height, width));
        return scope.MoveToOuterScope(hiddenStates + residual);
    }

    private static Tensor ToTokens(Tensor image, long batch, long length) => image.Permute(0, 2, 3, 1).Reshape(batch, length, image.Size(1));

    private static Tensor ToImage(Tensor tokens, long batch, long height, long width) =>
        tokens.Reshape(batch, height, width, tokens.Size(2)).Permute(0, 3, 1, 2).Contiguous();
}
