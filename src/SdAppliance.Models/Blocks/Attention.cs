using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// Multi-head attention as diffusers' <c>Attention</c>: <c>to_q</c>, <c>to_k</c>, <c>to_v</c>,
/// <c>to_out.0</c> (linear) and <c>to_out.1</c> (dropout). Self-attention when no context is
/// given, cross-attention over <c>encoder_hidden_states</c> otherwise. The VAE's mid-block variant
/// adds a <c>group_norm</c> in front, takes [B, C, H, W] images, and adds its input back
/// (<paramref name="residualConnection"/>).
/// </summary>
public sealed class Attention : Module
{
    private readonly GroupNorm? groupNorm;
    private readonly Linear toQ;
    private readonly Linear toK;
    private readonly Linear toV;
    private readonly Linear toOut;
    private readonly Dropout outDropout;

    /// <param name="queryDim">Channels of the queries (and of the output).</param>
    /// <param name="crossAttentionDim">Channels of the context; null for self-attention (keys from the queries' input).</param>
    /// <param name="heads">Number of heads.</param>
    /// <param name="dimHead">Channels per head; the projections are heads × dimHead wide.</param>
    /// <param name="upcastAttention">Compute q·kᵀ and the softmax in float32 (SD 2.x's fp16 overflow guard).</param>
    /// <param name="upcastSoftmax">Compute the softmax in float32.</param>
    /// <param name="normNumGroups">Groups of the leading group norm (VAE); null for none.</param>
    public Attention(long queryDim, long? crossAttentionDim = null, long heads = 8, long dimHead = 64, double dropout = 0,
        bool bias = false, bool upcastAttention = false, bool upcastSoftmax = false, bool outBias = true,
        long? normNumGroups = null, double eps = 1e-5, bool residualConnection = false, double rescaleOutputFactor = 1.0,
        ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        Heads = heads;
        DimHead = dimHead;
        Scale = 1 / Math.Sqrt(dimHead);
        UpcastAttention = upcastAttention;
        UpcastSoftmax = upcastSoftmax;
        ResidualConnection = residualConnection;
        RescaleOutputFactor = rescaleOutputFactor;
        var inner = heads * dimHead;
        if (normNumGroups is { } groups) groupNorm = RegisterModule("group_norm", o.GroupNorm(groups, queryDim, eps));
        toQ = RegisterModule("to_q", o.Linear(queryDim, inner, bias));
        toK = RegisterModule("to_k", o.Linear(crossAttentionDim ?? queryDim, inner, bias));
        toV = RegisterModule("to_v", o.Linear(crossAttentionDim ?? queryDim, inner, bias));
        toOut = o.Linear(inner, queryDim, outBias);
        outDropout = new Dropout(dropout);
        RegisterModule("to_out", new ModuleList(toOut, outDropout));
    }

    public long Heads { get; }
    public long DimHead { get; }
    public double Scale { get; }
    public bool UpcastAttention { get; }
    public bool UpcastSoftmax { get; }
    public bool ResidualConnection { get; }
    public double RescaleOutputFactor { get; }

    /// <summary>
    /// Attends from <paramref name="hiddenStates"/> ([B, L, C], or [B, C, H, W] images) to
    /// <paramref name="encoderHiddenStates"/> ([B, S, C_ctx]) or to itself; same shape out.
    /// </summary>
    public Tensor Forward(Tensor hiddenStates, Tensor? encoderHiddenStates = null)
    {
        using var scope = torch.NewDisposeScope();
        var image = hiddenStates.Dim == 4;
        var shape = hiddenStates.Shape;
        var residual = hiddenStates;

        // Group norm over [B, C, ...] is the same whether the spatial dims are flat or not, so it runs
        // on the input as given; the tokens are then [B, H·W, C] views.
        if (groupNorm is not null)
            hiddenStates = image ? groupNorm.Forward(hiddenStates) : groupNorm.Forward(hiddenStates.Transpose(1, 2)).Transpose(1, 2);
        if (image) hiddenStates = hiddenStates.Flatten(2).Transpose(1, 2);

        var context = encoderHiddenStates ?? hiddenStates;
        hiddenStates = Attend(toQ.Forward(hiddenStates), toK.Forward(context), toV.Forward(context));
        hiddenStates = toOut.Forward(hiddenStates);
        hiddenStates = outDropout.Forward(hiddenStates);

        if (image) hiddenStates = hiddenStates.Transpose(1, 2).Reshape(shape);
        if (ResidualConnection) hiddenStates = hiddenStates + residual;
        if (RescaleOutputFactor != 1) hiddenStates = hiddenStates / RescaleOutputFactor;
        return scope.MoveToOuterScope(hiddenStates);
    }

    /// <summary>softmax(q kᵀ / √d) v per head, for q [B, L, H·D] and k, v [B, S, H·D]; returns [B, L, H·D].</summary>
    private Tensor Attend(Tensor q, Tensor k, Tensor v)
    {
        (q, k, v) = (SplitHeads(q), SplitHeads(k), SplitHeads(v));
        var lowPrecision = q.DType is not (DType.Float32 or DType.Float64);
        var heads = (UpcastAttention || UpcastSoftmax) && lowPrecision
            ? AttendUpcast(q, k, v)
            : Functional.ScaledDotProductAttention(q, k, v, scale: Scale);
        return heads.Transpose(1, 2).Flatten(2);
    }

    /// <summary>[B, N, H·D] → [B, H, N, D].</summary>
    private Tensor SplitHeads(Tensor x) => x.Unflatten(-1, Heads, DimHead).Transpose(1, 2);

    /// <summary>
    /// Attention computed in float32 for half-precision inputs, as upcast_attention/upcast_softmax
    /// ask: half precision q·kᵀ overflows for SD 2.x's large activations. Unlike diffusers' classic
    /// processor (which multiplies the float32 probabilities, cast back to half, with v), the whole
    /// product stays in float32 so the fused kernels can run it without materialising the scores.
    /// </summary>
    private Tensor AttendUpcast(Tensor q, Tensor k, Tensor v) =>
        Functional.ScaledDotProductAttention(q.Float(), k.Float(), v.Float(), scale: Scale).To(q.DType);
}
