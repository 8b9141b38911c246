using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.TextEncoders;

/// <summary>
/// The CLIP text transformer as Hugging Face's <c>CLIPTextModel</c>, or with
/// <paramref name="withProjection"/> <c>CLIPTextModelWithProjection</c> (SDXL's
/// <c>text_encoder_2</c>): parameter names, declaration order and state-dict keys are exactly
/// the reference's (<c>text_model.embeddings.token_embedding.weight</c>,
/// <c>text_model.encoder.layers.N.self_attn.{k,v,q,out}_proj</c>, ..., <c>text_projection.weight</c>),
/// so a diffusers <c>text_encoder</c> file loads 1:1. Pre-LayerNorm blocks with a causal mask
/// and no padding mask, as Stable Diffusion runs them.
/// </summary>
public sealed class ClipTextModel : Module
{
    public ClipTextModel(ClipTextConfig config, bool withProjection = false, Device? device = null, DType dtype = DType.Float32)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.NumAttentionHeads <= 0 || config.HiddenSize % config.NumAttentionHeads != 0)
            throw new ArgumentException($"hidden_size ({config.HiddenSize}) must be divisible by num_attention_heads ({config.NumAttentionHeads})", nameof(config));
        _ = ClipMlp.Activation(config.HiddenAct);  // refuse before building anything
        Config = config;
        WithProjection = withProjection;
        TextModel = RegisterModule("text_model", new ClipTextTransformer(config, device, dtype));
        if (withProjection)
            TextProjection = RegisterModule("text_projection", new Linear(config.HiddenSize, config.ProjectionDim, bias: false, device, dtype));
    }

    public ClipTextConfig Config { get; }
    public bool WithProjection { get; }
    public ClipTextTransformer TextModel { get; }
    public Linear? TextProjection { get; }
    public LayerNorm FinalLayerNorm => TextModel.FinalLayerNorm;

    /// <summary>
    /// Encodes token ids [B, L] (L ≤ max_position_embeddings). With
    /// <paramref name="outputHiddenStates"/> the output keeps the embeddings and every layer's
    /// output (as HF's <c>output_hidden_states=True</c>); otherwise only the last.
    /// </summary>
    public ClipTextOutput Forward(Tensor inputIds, bool outputHiddenStates = true, IReadOnlyList<TokenOverride>? tokenOverrides = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.Dim != 2)
            throw new ArgumentException($"input_ids must be [batch, tokens], got [{string.Join(", ", inputIds.Shape)}]", nameof(inputIds));
        if (inputIds.Size(1) > Config.MaxPositionEmbeddings)
            throw new ArgumentException($"{inputIds.Size(1)} tokens exceed max_position_embeddings ({Config.MaxPositionEmbeddings}): encode longer prompts in chunks", nameof(inputIds));

        using var scope = torch.NewDisposeScope();
        var hiddenStates = new List<Tensor>();
        var x = TextModel.Embeddings.Forward(inputIds, tokenOverrides);
        foreach (var layer in TextModel.Encoder.Layers)
        {
            if (outputHiddenStates) hiddenStates.Add(x);
            x = layer.Forward(x);
        }
        if (outputHiddenStates) hiddenStates.Add(x);
        var lastHiddenState = FinalLayerNorm.Forward(x);
        var pooledOutput = Pool(lastHiddenState, inputIds);
        var textEmbeds = TextProjection?.Forward(pooledOutput);
        return new ClipTextOutput(scope.MoveToOuterScope(lastHiddenState), scope.MoveToOuterScope(hiddenStates),
            scope.MoveToOuterScope(pooledOutput), scope.MoveToOuterScope(textEmbeds));
    }

    /// <summary>
    /// The row of each sequence at its end-of-text token, as HF's pooler: configs with the legacy
    /// <c>eos_token_id</c> 2 (all released SD ones) take the argmax of the ids, which is the
    /// first <c>&lt;|endoftext|&gt;</c> because that token has the largest id; other configs take
    /// the first position whose id equals <c>eos_token_id</c> (position 0 when there is none).
    /// </summary>
    public Tensor Pool(Tensor lastHiddenState, Tensor inputIds)
    {
        using var scope = torch.NewDisposeScope();
        var (batch, channels) = (lastHiddenState.Size(0), lastHiddenState.Size(2));
        var index = EosPositions(inputIds).View(batch, 1, 1).Expand(batch, 1, channels);
        return scope.MoveToOuterScope(lastHiddenState.Gather(1, index).Squeeze(1));
    }

    /// <summary>The pooled position per row [B] (int64), as <see cref="Pool"/> chooses it.</summary>
    public Tensor EosPositions(Tensor inputIds)
    {
        // torch.argmax returns the first of equal maxima, which is what makes both rules "first".
        if (Config.EosTokenId == 2) return inputIds.Argmax(-1);
        using var scope = torch.NewDisposeScope();
        return scope.MoveToOuterScope(inputIds.Eq(Config.EosTokenId).To(DType.Int32).Argmax(-1));
    }

    protected override string ExtraRepr() => WithProjection ? "with_projection=True" : "";
}

/// <summary>
/// What <see cref="ClipTextModel.Forward"/> returns; disposing it frees every tensor in it.
/// <see cref="HiddenStates"/> is HF's tuple: [0] the embeddings, [i] the output of layer i
/// (no final layer norm), so [^1] is the last layer's raw output and [^2] the penultimate.
/// </summary>
public sealed class ClipTextOutput(Tensor lastHiddenState, IReadOnlyList<Tensor> hiddenStates, Tensor pooledOutput, Tensor? textEmbeds) : IDisposable
{
    /// <summary>[B, L, hidden]: the last layer's output through the final layer norm.</summary>
    public Tensor LastHiddenState { get; } = lastHiddenState;

    /// <summary>Embeddings then every layer's output (empty unless hidden states were asked for).</summary>
    public IReadOnlyList<Tensor> HiddenStates { get; } = hiddenStates;

    /// <summary>[B, hidden]: <see cref="LastHiddenState"/> at each row's end-of-text token.</summary>
    public Tensor PooledOutput { get; } = pooledOutput;

    /// <summary>[B, projection_dim]: the pooled output through text_projection (only with a projection).</summary>
    public Tensor? TextEmbeds { get; } = textEmbeds;

    public void Dispose()
    {
        LastHiddenState.Dispose();
        foreach (var t in HiddenStates) t.Dispose();
        PooledOutput.Dispose();
        TextEmbeds?.Dispose();
    }
}

/// <summary>HF's <c>CLIPTextTransformer</c> (the <c>text_model</c> submodule).</summary>
public sealed class ClipTextTransformer : Module
{
    public ClipTextTransformer(ClipTextConfig config, Device? device = null, DType dtype = DType.Float32)
    {
        Embeddings = RegisterModule("embeddings", new ClipTextEmbeddings(config, device, dtype));
        Encoder = RegisterModule("encoder", new ClipEncoder(config, device, dtype));
        FinalLayerNorm = RegisterModule("final_layer_norm", new LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype));
    }

    public ClipTextEmbeddings Embeddings { get; }
    public ClipEncoder Encoder { get; }
    public LayerNorm FinalLayerNorm { get; }
}

/// <summary>Token embedding plus learned absolute position embedding, as <c>CLIPTextEmbeddings</c>.</summary>
public sealed class ClipTextEmbeddings : Module<Tensor, Tensor>
{
    public ClipTextEmbeddings(ClipTextConfig config, Device? device = null, DType dtype = DType.Float32)
    {
        TokenEmbedding = RegisterModule("token_embedding", new Embedding(config.VocabSize, config.HiddenSize, device, dtype));
        PositionEmbedding = RegisterModule("position_embedding", new Embedding(config.MaxPositionEmbeddings, config.HiddenSize, device, dtype));
    }

    public Embedding TokenEmbedding { get; }
    public Embedding PositionEmbedding { get; }

    /// <summary>[B, L] ids → [B, L, hidden]; positions are 0..L-1.</summary>
    public override Tensor Forward(Tensor input) => Forward(input, null);

    /// <summary>As <see cref="Forward(Tensor)"/>, with token vectors replaced where <paramref name="overrides"/> say (textual inversion).</summary>
    public Tensor Forward(Tensor input, IReadOnlyList<TokenOverride>? overrides)
    {
        using var scope = torch.NewDisposeScope();
        var inputsEmbeds = TokenEmbedding.Forward(input);
        foreach (var o in overrides ?? [])
            inputsEmbeds.Narrow(0, o.Row, 1).Narrow(1, o.Offset, o.Vectors.Size(0)).Copy_(o.Vectors.To(inputsEmbeds.Device, inputsEmbeds.DType));
        var positionEmbeds = PositionEmbedding.Weight.Narrow(0, 0, input.Size(1));
        return scope.MoveToOuterScope(inputsEmbeds.Add(positionEmbeds));
    }
}

/// <summary>Token vectors [n, hidden] that replace the embeddings of row <paramref name="Row"/> from position <paramref name="Offset"/> on.</summary>
public sealed record TokenOverride(int Row, int Offset, Tensor Vectors);

/// <summary>The stack of encoder layers, as <c>CLIPEncoder</c> (its only state is <c>layers</c>).</summary>
public sealed class ClipEncoder : Module
{
    public ClipEncoder(ClipTextConfig config, Device? device = null, DType dtype = DType.Float32)
    {
        Layers = RegisterModule("layers", new ModuleList<ClipEncoderLayer>(
            Enumerable.Range(0, config.NumHiddenLayers).Select(_ => new ClipEncoderLayer(config, device, dtype))));
    }

    public ModuleList<ClipEncoderLayer> Layers { get; }
}

/// <summary>One pre-LayerNorm transformer block, as <c>CLIPEncoderLayer</c>.</summary>
public sealed class ClipEncoderLayer : Module<Tensor, Tensor>
{
    public ClipEncoderLayer(ClipTextConfig config, Device? device = null, DType dtype = DType.Float32)
    {
        // Registration order is HF's declaration order, which is the state-dict order.
        SelfAttn = RegisterModule("self_attn", new ClipAttention(config, device, dtype));
        LayerNorm1 = RegisterModule("layer_norm1", new LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype));
        Mlp = RegisterModule("mlp", new ClipMlp(config, device, dtype));
        LayerNorm2 = RegisterModule("layer_norm2", new LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype));
    }

    public ClipAttention SelfAttn { get; }
    public LayerNorm LayerNorm1 { get; }
    public ClipMlp Mlp { get; }
    public LayerNorm LayerNorm2 { get; }

    public override Tensor Forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        var hiddenStates = input.Add(SelfAttn.Forward(LayerNorm1.Forward(input)));
        hiddenStates = hiddenStates.Add(Mlp.Forward(LayerNorm2.Forward(hiddenStates)));
        return scope.MoveToOuterScope(hiddenStates);
    }
}

/// <summary>Multi-head causal self-attention, as <c>CLIPAttention</c>.</summary>
public sealed class ClipAttention : Module<Tensor, Tensor>
{
    public ClipAttention(ClipTextConfig config, Device? device = null, DType dtype = DType.Float32)
    {
        NumHeads = config.NumAttentionHeads;
        HeadDim = config.HeadDim;
        var d = config.HiddenSize;
        KProj = RegisterModule("k_proj", new Linear(d, d, device: device, dtype: dtype));
        VProj = RegisterModule("v_proj", new Linear(d, d, device: device, dtype: dtype));
        QProj = RegisterModule("q_proj", new Linear(d, d, device: device, dtype: dtype));
        OutProj = RegisterModule("out_proj", new Linear(d, d, device: device, dtype: dtype));
    }

    public int NumHeads { get; }
    public int HeadDim { get; }
    public Linear KProj { get; }
    public Linear VProj { get; }
    public Linear QProj { get; }
    public Linear OutProj { get; }

    /// <summary>[B, L, C] → [B, L, C]; token i attends to tokens 0..i.</summary>
    public override Tensor Forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        var (batch, length, channels) = (input.Size(0), input.Size(1), input.Size(2));
        var q = Heads(QProj, input, batch, length);
        var k = Heads(KProj, input, batch, length);
        var v = Heads(VProj, input, batch, length);
        var attnOutput = Functional.ScaledDotProductAttention(q, k, v, isCausal: true).Transpose(1, 2).Reshape(batch, length, channels);
        return scope.MoveToOuterScope(OutProj.Forward(attnOutput));
    }

    /// <summary>The projection split into heads: [B, heads, L, head_dim].</summary>
    private Tensor Heads(Linear projection, Tensor input, long batch, long length) =>
        projection.Forward(input).View(batch, length, NumHeads, HeadDim).Transpose(1, 2);
}

/// <summary>fc1 → activation → fc2, as <c>CLIPMLP</c>.</summary>
public sealed class ClipMlp : Module<Tensor, Tensor>
{
    private readonly Func<Tensor, Tensor> activation;

    public ClipMlp(ClipTextConfig config, Device? device = null, DType dtype = DType.Float32)
    {
        HiddenAct = config.HiddenAct;
        activation = Activation(config.HiddenAct);
        Fc1 = RegisterModule("fc1", new Linear(config.HiddenSize, config.IntermediateSize, device: device, dtype: dtype));
        Fc2 = RegisterModule("fc2", new Linear(config.IntermediateSize, config.HiddenSize, device: device, dtype: dtype));
    }

    /// <summary>The function HF's <c>ACT2FN</c> maps <paramref name="hiddenAct"/> to.</summary>
    public static Func<Tensor, Tensor> Activation(string hiddenAct) => hiddenAct switch
    {
        "quick_gelu" => Functional.QuickGelu,
        "gelu" => x => Functional.Gelu(x),
        "gelu_new" or "gelu_pytorch_tanh" => x => Functional.Gelu(x, "tanh"),
        _ => throw new NotSupportedException($"hidden_act '{hiddenAct}' is not supported: use quick_gelu, gelu, gelu_new or gelu_pytorch_tanh"),
    };

    public string HiddenAct { get; }
    public Linear Fc1 { get; }
    public Linear Fc2 { get; }

    public override Tensor Forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        return scope.MoveToOuterScope(Fc2.Forward(activation(Fc1.Forward(input))));
    }

    protected override string ExtraRepr() => $"hidden_act={HiddenAct}";
}
