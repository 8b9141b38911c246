using SdAppliance.Formats;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Runtime;

/// <summary>
/// The conditioning of an exported model's text encoder(s), with the prompt rules of <see cref="PromptEncoder"/>
/// (chunks encoded on their own, emphasis, chunks concatenated) and the clip skip of the libtorch encoders:
/// SD 1.x/2.x take <c>final_layer_norm(hidden_states[-n])</c> (<see cref="ClipPromptEncoder"/>), SDXL each encoder's
/// <c>hidden_states[-(n + 1)]</c> without it and the second encoder's <c>text_embeds</c> of the first chunk as pooled
/// (<see cref="SdxlPromptEncoder"/>). Textual-inversion vectors cannot be placed into a fixed graph: an export bakes its
/// embeddings into the table and the tokenizer, and the pipeline passes no others.
/// </summary>
internal sealed class OnnxPromptEncoder : PromptEncoder
{
    private readonly OnnxTextEncoder textEncoder;
    private readonly OnnxTextEncoder? textEncoder2;
    private readonly int defaultLayers;

    public OnnxPromptEncoder(OnnxTextEncoder textEncoder, OnnxTextEncoder? textEncoder2, int defaultLayers)
    {
        this.textEncoder = textEncoder;
        this.textEncoder2 = textEncoder2;
        this.defaultLayers = defaultLayers;
        if (textEncoder2 is not null && textEncoder2.Pooled != "text_embeds")
            throw new UserInputException(textEncoder2.Path, "is SDXL's second text encoder but has no text_embeds output (the pooled, projected embedding the UNet adds)",
                "export the model again (convert it to ONNX)");
    }

    // Where a graph does not tell its layers (no hidden-state outputs), the config's count is the bound; asking past the
    // last layer is then refused by the encoder naming its file.
    public override int MaxClipSkip => textEncoder2 is null
        ? textEncoder.Layers ?? defaultLayers
        : Math.Min(textEncoder.Layers ?? defaultLayers, textEncoder2.Layers ?? defaultLayers) - 1;

    public override TextConditioning Encode(PromptChunks prompt, int clipSkip = 1) => Encode(prompt, prompt, clipSkip);

    public override TextConditioning Encode(PromptChunks prompt, PromptChunks prompt2, int clipSkip = 1)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(prompt2);
        CheckClipSkip(clipSkip);
        RefuseVectors(prompt);
        using var scope = torch.NewDisposeScope();
        if (textEncoder2 is null)
        {
            var hidden = clipSkip == 1
                ? textEncoder.Run(prompt.IdsTensor(), [textEncoder.LastHiddenState])[0]
                : textEncoder.FinalLayerNorm(textEncoder.Run(prompt.IdsTensor(), [textEncoder.HiddenStateFromEnd(clipSkip)])[0]);
            return new TextConditioning(scope.MoveToOuterScope(ConcatenateChunks(Emphasize(hidden, prompt))), null);
        }

        RefuseVectors(prompt2);
        if (prompt.ChunkCount != prompt2.ChunkCount || prompt.ChunkLength != prompt2.ChunkLength)
            throw new ArgumentException($"the two tokenizations differ in shape: {prompt.ChunkCount}×{prompt.ChunkLength} and {prompt2.ChunkCount}×{prompt2.ChunkLength}", nameof(prompt2));
        var first = textEncoder.Run(prompt.IdsTensor(), [textEncoder.HiddenStateFromEnd(clipSkip + 1)])[0];
        var second = textEncoder2.Run(prompt2.IdsTensor(), [textEncoder2.HiddenStateFromEnd(clipSkip + 1), textEncoder2.Pooled!]);
        var promptEmbeds = torch.Cat([Emphasize(first, prompt), Emphasize(second[0], prompt2)], -1);
        var pooled = second[1].Narrow(0, 0, 1);
        return new TextConditioning(scope.MoveToOuterScope(ConcatenateChunks(promptEmbeds)), scope.MoveToOuterScope(pooled));
    }

    private void RefuseVectors(PromptChunks prompt)
    {
        if (prompt.Embeddings.Count > 0)
            throw new UserInputException(textEncoder.Path, "runs on ONNX Runtime, whose embedding table is fixed at export: textual-inversion vectors cannot be placed at run time",
                "bake the embeddings in when exporting (convert to ONNX with the embeddings), or generate with the libtorch backend");
    }
}
