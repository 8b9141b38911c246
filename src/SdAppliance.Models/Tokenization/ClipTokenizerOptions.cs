namespace SdAppliance.Models.Tokenization;

/// <summary>
/// Settings of a <see cref="ClipTokenizer"/>. Token strings left null come from the folder's
/// <c>special_tokens_map.json</c> / <c>tokenizer_config.json</c>, and failing that CLIP's defaults
/// (<c>&lt;|startoftext|&gt;</c>, <c>&lt;|endoftext|&gt;</c>, padding with the end token as SD 1.x does).
/// </summary>
/// <param name="PadToken">SD 2.x and SDXL's second tokenizer pad with "!" (id 0 in the CLIP vocabulary).</param>
/// <param name="PadTokenId">Pads with this id regardless of the token strings; wins over <paramref name="PadToken"/>.</param>
/// <param name="ModelMaxLength">Sequence length the text encoder takes, start and end tokens included.</param>
public sealed record ClipTokenizerOptions(
    string? BosToken = null,
    string? EosToken = null,
    string? PadToken = null,
    string? UnkToken = null,
    int? PadTokenId = null,
    int ModelMaxLength = ClipTokenizer.DefaultModelMaxLength);

/// <summary>
/// Ids as the text encoder takes them: <c>[bos] + ids[..max-2] + [eos]</c> padded to the model length.
/// </summary>
/// <param name="NumUnpadded">How many ids precede the padding (start and end tokens included).</param>
/// <param name="Truncated">Whether prompt tokens were dropped to fit.</param>
public sealed record PaddedTokenIds(int[] Ids, int NumUnpadded, bool Truncated);
