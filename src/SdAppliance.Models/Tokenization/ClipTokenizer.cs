using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using SdAppliance.Formats;

namespace SdAppliance.Models.Tokenization;

/// <summary>
/// CLIP's byte-level BPE tokenizer (openai <c>SimpleTokenizer</c>'s algorithm) over a Hugging Face style
/// <c>vocab.json</c> + <c>merges.txt</c>. Thread-safe.
/// </summary>
public sealed class ClipTokenizer
{
    public const int DefaultModelMaxLength = 77;
    public const string DefaultBosToken = "<|startoftext|>";
    public const string DefaultEosToken = "<|endoftext|>";
    private const string EndOfWord = "</w>";
    // Bounds the memo of BPE results, which would otherwise grow with every new word a server sees.
    private const int MaxCacheEntries = 100_000;

    private readonly Dictionary<string, int> _encoder;
    private readonly Dictionary<int, string> _decoder;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly string[] _specials;
    private readonly int? _unkId;
    private readonly ConcurrentDictionary<string, string[]> _cache = new(StringComparer.Ordinal);

    public int BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public int ModelMaxLength { get; }
    public int VocabSize => _encoder.Count;

    public ClipTokenizer(IReadOnlyDictionary<string, int> vocab, IEnumerable<(string First, string Second)> merges,
        ClipTokenizerOptions? options = null)
    {
        options ??= new ClipTokenizerOptions();
        if (options.ModelMaxLength < 2)
            throw new ArgumentException($"ModelMaxLength must leave room for the start and end tokens (got {options.ModelMaxLength}).", nameof(options));
        _encoder = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        _decoder = [];
        foreach (var (token, id) in _encoder) _decoder[id] = token;
        _ranks = [];
        var rank = 0;
        // As the reference's dict(zip(merges, range(...))): a repeated pair keeps its last rank.
        foreach (var pair in merges) _ranks[pair] = rank++;

        var bos = options.BosToken ?? DefaultBosToken;
        var eos = options.EosToken ?? DefaultEosToken;
        BosId = RequireId(bos, "start");
        EosId = RequireId(eos, "end");
        PadId = options.PadTokenId ?? (options.PadToken is { } pad ? RequireId(pad, "padding") : EosId);
        _unkId = _encoder.TryGetValue(options.UnkToken ?? eos, out var unk) ? unk : null;
        _specials = bos == eos ? [bos] : [bos, eos];
        ModelMaxLength = options.ModelMaxLength;
    }

    // Tokens added after training (textual-inversion names baked into an export), matched whole before BPE as transformers does.
    private readonly Dictionary<string, int> _addedTokens = new(StringComparer.Ordinal);

    /// <summary>Whether <paramref name="token"/> is an added token (one id for the whole word, not BPE pieces).</summary>
    public bool HasAddedToken(string token) => _addedTokens.ContainsKey(token);

    private int RequireId(string token, string role) =>
        _encoder.TryGetValue(token, out var id) ? id
            : throw new UserInputException(null, $"the {role} token '{token}' is not in the tokenizer's vocabulary");

    /// <summary>
    /// Loads <c>vocab.json</c> and <c>merges.txt</c> from a tokenizer folder, with the special tokens of its
    /// <c>special_tokens_map.json</c> or <c>tokenizer_config.json</c> when present (options win over both).
    /// </summary>
    public static ClipTokenizer FromFolder(string folder, ClipTokenizerOptions? options = null)
    {
        var fromFiles = ReadSpecialTokens(folder);
        options ??= new ClipTokenizerOptions();
        options = options with
        {
            BosToken = options.BosToken ?? fromFiles.GetValueOrDefault("bos_token"),
            EosToken = options.EosToken ?? fromFiles.GetValueOrDefault("eos_token"),
            PadToken = options.PadToken ?? fromFiles.GetValueOrDefault("pad_token"),
            UnkToken = options.UnkToken ?? fromFiles.GetValueOrDefault("unk_token"),
        };
        return FromFiles(Path.Combine(folder, "vocab.json"), Path.Combine(folder, "merges.txt"), options);
    }

    public static ClipTokenizer FromFiles(string vocabPath, string mergesPath, ClipTokenizerOptions? options = null) =>
        new(ReadVocab(vocabPath), ReadMerges(mergesPath), options);

    public static Dictionary<string, int> ReadVocab(string path)
    {
        // A vocabulary is a JSON object mapping tokens to integer ids.
        return JsonFiles.Read<Dictionary<string, int>>(path);
    }

    /// <summary>Merge pairs in rank order; a first line <c>#version: ...</c> is a header, not a merge.</summary>
    public static List<(string, string)> ReadMerges(string path)
    {
        var merges = new List<(string, string)>();
        var lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal)) continue;
            if (string.IsNullOrWhiteSpace(line)) continue;
            var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2)
                throw new UserInputException($"{path}:{lineNumber}", $"a merge line must hold two symbols separated by a space, found '{line}'");
            merges.Add((parts[0], parts[1]));
        }
        return merges;
    }

    // pad_token etc. are either a plain string or an AddedToken object {"content": ...}.
    private static Dictionary<string, string> ReadSpecialTokens(string folder)
    {
        var result = new Dictionary<string, string>();
        foreach (var file in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            var path = Path.Combine(folder, file);
            if (!File.Exists(path)) continue;
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllText(path));
                if (doc.RootElement.ValueKind != JsonValueKind.Object) continue;
                foreach (var key in new[] { "bos_token", "eos_token", "pad_token", "unk_token" })
                {
                    if (!doc.RootElement.TryGetProperty(key, out var value)) continue;
                    var content = value.ValueKind switch
                    {
                        JsonValueKind.String => value.GetString(),
                        JsonValueKind.Object when value.TryGetProperty("content", out var c) => c.GetString(),
                        _ => null,
                    };
                    // special_tokens_map.json is read last, so it wins, as in transformers.
                    if (content is not null) result[key] = content;
                }
            }
            catch (JsonException e)
            {
                throw JsonFiles.Refusal(path, e);
            }
        }
        return result;
    }

    /// <summary>BPE ids of <paramref name="text"/>, without start/end tokens and without truncation.</summary>
    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        Run(text, ids, null);
        return ids;
    }

    /// <summary>BPE token strings of <paramref name="text"/> (byte-mapped characters, <c>&lt;/w&gt;</c> ends a word).</summary>
    public List<string> Tokenize(string text)
    {
        var tokens = new List<string>();
        Run(text, null, tokens);
        return tokens;
    }

    /// <summary>The <see cref="ModelMaxLength"/> ids an SD pipeline feeds the text encoder.</summary>
    public int[] EncodeForModel(string text) => PadForModel(Encode(text)).Ids;

    /// <summary><c>[bos] + ids[..max-2] + [eos]</c>, then padding: truncation keeps the end token.</summary>
    public PaddedTokenIds PadForModel(IReadOnlyList<int> ids)
    {
        var room = ModelMaxLength - 2;
        var kept = Math.Min(ids.Count, room);
        var result = new int[ModelMaxLength];
        result[0] = BosId;
        for (var i = 0; i < kept; i++) result[1 + i] = ids[i];
        result[1 + kept] = EosId;
        Array.Fill(result, PadId, kept + 2, ModelMaxLength - kept - 2);
        return new PaddedTokenIds(result, kept + 2, ids.Count > room);
    }

    /// <summary>
    /// Text of <paramref name="ids"/> as the reference decodes it: token strings joined, byte-mapped back to
    /// UTF-8 (invalid sequences replaced), each <c>&lt;/w&gt;</c> turned into a space.
    /// </summary>
    /// <param name="skipSpecialTokens">Leaves out start and end tokens and the trailing padding; a pad id that is
    /// an ordinary token ("!" in SD 2.x) is kept inside the text.</param>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var list = ids.ToList();
        if (skipSpecialTokens)
        {
            var end = list.Count;
            while (end > 0 && list[end - 1] == PadId) end--;
            list.RemoveRange(end, list.Count - end);
        }
        var bytes = new List<byte>();
        foreach (var id in list)
        {
            if (skipSpecialTokens && (id == BosId || id == EosId)) continue;
            if (!_decoder.TryGetValue(id, out var token))
                throw new ArgumentOutOfRangeException(nameof(ids), $"Token id {id} is not in the vocabulary.");
            foreach (var c in token)
            {
                if (ByteEncoder.CharToByte.TryGetValue(c, out var b)) bytes.Add(b);
                else bytes.AddRange(Encoding.UTF8.GetBytes(c.ToString())); // a token outside the byte alphabet (added tokens)
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray()).Replace(EndOfWord, " ", StringComparison.Ordinal);
    }

    public int? TokenToId(string token) => _encoder.TryGetValue(token, out var id) ? id : null;

    public string? IdToToken(int id) => _decoder.GetValueOrDefault(id);

    private void Run(string text, List<int>? ids, List<string>? tokens)
    {
        var normalized = ClipTextNormalizer.Normalize(text);
        foreach (var piece in ClipPreTokenizer.Split(normalized, _specials))
        {
            if (piece.Special >= 0)
            {
                ids?.Add(piece.Special == 0 ? BosId : EosId);
                tokens?.Add(_specials[piece.Special]);
                continue;
            }
            foreach (var token in Bpe(ByteEncoder.Encode(piece.Text)))
            {
                tokens?.Add(token);
                if (ids is null) continue;
                if (_encoder.TryGetValue(token, out var id)) ids.Add(id);
                else ids.Add(_unkId ?? throw new InvalidOperationException(
                    $"BPE produced '{token}', which is not in the vocabulary, and the vocabulary has no unknown token."));
            }
        }
    }

    private string[] Bpe(string token)
    {
        if (_cache.TryGetValue(token, out var cached)) return cached;

        var word = new List<string>(token.Length);
        for (var i = 0; i < token.Length - 1; i++) word.Add(token[i].ToString());
        word.Add(token[^1] + EndOfWord);

        while (word.Count > 1)
        {
            // The lowest-ranked adjacent pair merges next; its every occurrence is merged left to right.
            (string, string)? best = null;
            var bestRank = int.MaxValue;
            for (var i = 0; i < word.Count - 1; i++)
            {
                if (_ranks.TryGetValue((word[i], word[i + 1]), out var r) && r < bestRank)
                {
                    bestRank = r;
                    best = (word[i], word[i + 1]);
                }
            }
            if (best is not { } pair) break;
            var (first, second) = pair;

            var merged = new List<string>(word.Count);
            for (var i = 0; i < word.Count; i++)
            {
                if (i < word.Count - 1 && word[i] == first && word[i + 1] == second)
                {
                    merged.Add(first + second);
                    i++;
                }
                else merged.Add(word[i]);
            }
            word = merged;
        }

        var result = word.ToArray();
        if (_cache.Count >= MaxCacheEntries) _cache.Clear();
        _cache[token] = result;
        return result;
    }
}
