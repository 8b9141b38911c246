using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// One transformer layer of the UNet, as diffusers' <c>BasicTransformerBlock</c> with layer norms:
/// self-attention (<c>norm1</c>, <c>attn1</c>), cross-attention to the text (<c>norm2</c>,
/// <c>attn2</c>, present when a context width is given), and the GEGLU MLP (<c>norm3</c>,
/// <c>ff</c>), each pre-normalised and added back to its input.
/// </summary>
public sealed class BasicTransformerBlock : Module
{
    private readonly LayerNorm norm1;
    private readonly Attention attn1;
    private readonly LayerNorm? norm2;
    private readonly Attention? attn2;
    private readonly LayerNorm norm3;
    private readonly FeedForward ff;

    /// <param name="onlyCrossAttention">attn1 attends to the context too (no self-attention).</param>
    public BasicTransformerBlock(long dim, long numAttentionHeads, long attentionHeadDim, double dropout = 0,
        long? crossAttentionDim = null, bool attentionBias = false, bool onlyCrossAttention = false,
        bool upcastAttention = false, double normEps = 1e-5, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        OnlyCrossAttention = onlyCrossAttention;
        norm1 = RegisterModule("norm1", o.LayerNorm(dim, normEps));
        attn1 = RegisterModule("attn1", new Attention(dim, onlyCrossAttention ? crossAttentionDim : null, numAttentionHeads,
            attentionHeadDim, dropout, attentionBias, upcastAttention, options: o));
        if (crossAttentionDim is not null)
        {
            norm2 = RegisterModule("norm2", o.LayerNorm(dim, normEps));
            attn2 = RegisterModule("attn2", new Attention(dim, crossAttentionDim, numAttentionHeads, attentionHeadDim,
                dropout, attentionBias, upcastAttention, options: o));
        }
        norm3 = RegisterModule("norm3", o.LayerNorm(dim, normEps));
        ff = RegisterModule("ff", new FeedForward(dim, dropout: dropout, options: o));
    }

    public bool OnlyCrossAttention { get; }

    /// <summary>Tokens [B, N, dim] and the text context [B, S, ctx] (null: self-attention only) → [B, N, dim].</summary>
    public Tensor Forward(Tensor hiddenStates, Tensor? encoderHiddenStates = null)
    {
        using var scope = torch.NewDisposeScope();
        var attnOutput = attn1.Forward(norm1.Forward(hiddenStates), OnlyCrossAttention ? encoderHiddenStates : null);
        hiddenStates = attnOutput + hiddenStates;

        if (attn2 is not null)
        {
            attnOutput = attn2.Forward(norm2!.Forward(hiddenStates), encoderHiddenStates);
            hiddenStates = attnOutput + hiddenStates;
        }

        var ffOutput = ff.Forward(norm3.Forward(hiddenStates));
        return scope.MoveToOuterScope(ffOutput + hiddenStates);
    }
}
