using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Formats;

namespace SdAppliance.Models.Tokenization;

/// <summary>
/// CLIP's byte-level BPE tokenizer (openai <c>SimpleTokenizer</c>'s algorithm) over a Hugging Face style
/// <c>vocab.json</c> + <c>merges.txt</c>, with transformers' added tokens (<c>added_tokens.json</c>,
/// <c>tokenizer_config.json</c>'s <c>added_tokens_decoder</c>): each is one id, matched in the text before BPE.
/// Immutable and thread-safe; <see cref="WithAddedTokens"/> makes an extended copy.
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
    private readonly List<(string First, string Second)> _merges;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly ClipTokenizerOptions _options;
    private readonly string[] _specials;
    private readonly int? _unkId;
    private readonly ConcurrentDictionary<string, string[]> _cache = new(StringComparer.Ordinal);

    public int BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public int ModelMaxLength { get; }
    public int VocabSize => _encoder.Count;

    /// <param name="addedTokens">Tokens added after training (see <see cref="ClipAddedToken"/>); an entry that repeats a
    /// vocabulary token with its own id (the special tokens of <c>added_tokens_decoder</c>) is the vocabulary's.</param>
    public ClipTokenizer(IReadOnlyDictionary<string, int> vocab, IEnumerable<(string First, string Second)> merges,
        ClipTokenizerOptions? options = null, IEnumerable<ClipAddedToken>? addedTokens = null)
    {
        options ??= new ClipTokenizerOptions();
        if (options.ModelMaxLength < 2)
            throw new ArgumentException($"ModelMaxLength must leave room for the start and end tokens (got {options.ModelMaxLength}).", nameof(options));
        _options = options;
        _encoder = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        _decoder = [];
        foreach (var (token, id) in _encoder) _decoder[id] = token;
        _merges = [.. merges];
        _ranks = [];
        var rank = 0;
        // As the reference's dict(zip(merges, range(...))): a repeated pair keeps its last rank.
        foreach (var pair in _merges) _ranks[pair] = rank++;

        var bos = options.BosToken ?? DefaultBosToken;
        var eos = options.EosToken ?? DefaultEosToken;
        BosId = RequireId(bos, "start");
        EosId = RequireId(eos, "end");
        PadId = options.PadTokenId ?? (options.PadToken is { } pad ? RequireId(pad, "padding") : EosId);
        _unkId = _encoder.TryGetValue(options.UnkToken ?? eos, out var unk) ? unk : null;
        _specials = bos == eos ? [bos] : [bos, eos];
        ModelMaxLength = options.ModelMaxLength;
        foreach (var added in addedTokens ?? []) Add(added);
        // Longest first, so that "name_1" is found where "name" would also match.
        _addedByLength = [.. _addedTokens.Values.OrderByDescending(t => t.Content.Length).ThenBy(t => t.Content, StringComparer.Ordinal)];
    }

    // Tokens added after training (textual-inversion names baked into an export), matched before BPE as transformers
    // does; keyed by their content, which is kept in the normalised (lower-case) form the text is matched in.
    private readonly Dictionary<string, ClipAddedToken> _addedTokens = new(StringComparer.Ordinal);
    private readonly ClipAddedToken[] _addedByLength;

    /// <summary>Whether <paramref name="token"/> (as a prompt spells it: case and spacing do not matter) is an added token: one id for the whole word, not BPE pieces.</summary>
    public bool HasAddedToken(string token) => _addedTokens.ContainsKey(ClipTextNormalizer.Normalize(token));

    /// <summary>The added tokens, by id.</summary>
    public IReadOnlyList<ClipAddedToken> AddedTokens => [.. _addedTokens.Values.OrderBy(t => t.Id)];

    /// <summary>The first id no token has (vocabulary or added): where new tokens go.</summary>
    public int NextFreeId => _decoder.Count == 0 ? 0 : _decoder.Keys.Max() + 1;

    /// <summary>
    /// How many of <paramref name="ids"/> from <paramref name="position"/> on are one baked multi-vector embedding
    /// (<c>name</c>, <c>name_1</c>, … as <see cref="Encode"/> expands it): at least 1, the token itself.
    /// </summary>
    public int AddedTokenRunLength(IReadOnlyList<int> ids, int position)
    {
        if (_addedTokens.Count == 0 || !_decoder.TryGetValue(ids[position], out var content)
            || !_addedTokens.TryGetValue(content, out var first) || first.Id != ids[position]) return 1;
        var length = 1;
        while (position + length < ids.Count && _addedTokens.TryGetValue($"{content}_{length}", out var next) && ids[position + length] == next.Id) length++;
        return length;
    }

    /// <summary>A copy of this tokenizer with <paramref name="tokens"/> added (refused when one is there already).</summary>
    public ClipTokenizer WithAddedTokens(IEnumerable<ClipAddedToken> tokens) =>
        new(_encoder, _merges, _options, [.. _addedTokens.Values.OrderBy(t => t.Id), .. tokens]);

    private void Add(ClipAddedToken token)
    {
        var content = ClipTextNormalizer.Normalize(token.Content);
        if (content.Length == 0)
            throw new UserInputException(null, $"the added token '{token.Content}' (id {token.Id}) is empty once normalised", "give it a name with letters or digits");
        if (_encoder.TryGetValue(content, out var vocabId) || _encoder.TryGetValue(token.Content, out vocabId))
        {
            if (vocabId == token.Id) return; // a vocabulary token listed again (added_tokens_decoder lists the special ones)
            // transformers would map the string to the vocabulary's id, so the added row could never be reached (diffusers' load_textual_inversion refuses it too).
            throw new UserInputException(null, $"'{token.Content}' is already a token of the vocabulary (id {vocabId}), so it cannot be added as id {token.Id}",
                "give the textual-inversion embedding (its file) another name");
        }
        if (_addedTokens.ContainsKey(content))
            throw new UserInputException(null, $"the token '{token.Content}' is added twice", "give each textual-inversion embedding its own name");
        if (_decoder.TryGetValue(token.Id, out var holder))
            throw new UserInputException(null, $"the added token '{token.Content}' wants id {token.Id}, which '{holder}' has");
        if (token.Id < 0) throw new UserInputException(null, $"the added token '{token.Content}' has the negative id {token.Id}");
        var normalized = token with { Content = content };
        _addedTokens[content] = normalized;
        _decoder[token.Id] = content;
    }

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
        return new ClipTokenizer(ReadVocab(Path.Combine(folder, "vocab.json")), ReadMerges(Path.Combine(folder, "merges.txt")), options,
            ReadAddedTokens(folder));
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

    /// <summary>
    /// transformers' added tokens of a folder: <c>added_tokens.json</c> (token → id) and the <c>added_tokens_decoder</c> of
    /// <c>tokenizer_config.json</c> (id → <c>{content, single_word, ...}</c>), which wins where both name an id.
    /// </summary>
    public static List<ClipAddedToken> ReadAddedTokens(string folder)
    {
        var byId = new SortedDictionary<int, ClipAddedToken>();
        var addedPath = Path.Combine(folder, AddedTokensFile);
        if (File.Exists(addedPath))
            foreach (var (content, id) in JsonFiles.Read<Dictionary<string, int>>(addedPath))
                byId[id] = new ClipAddedToken(content, id, SingleWord: false); // transformers' add_tokens default
        var configPath = Path.Combine(folder, "tokenizer_config.json");
        if (File.Exists(configPath) && JsonFiles.ReadObject(configPath)["added_tokens_decoder"] is JsonObject decoder)
        {
            foreach (var (key, value) in decoder)
            {
                if (!int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out var id))
                    throw new UserInputException(configPath, $"added_tokens_decoder has the key '{key}', which is not a token id");
                if (value is not JsonObject entry || entry["content"] is not JsonValue c || !c.TryGetValue<string>(out var content))
                    throw new UserInputException(configPath, $"added_tokens_decoder[\"{key}\"] must be an object with a \"content\" string");
                var singleWord = entry["single_word"] is JsonValue w && w.TryGetValue<bool>(out var b) && b;
                byId[id] = new ClipAddedToken(content, id, singleWord);
            }
        }
        return [.. byId.Values];
    }

    /// <summary>
    /// Writes the tokenizer as a transformers <c>CLIPTokenizer</c> folder (replacing <paramref name="folder"/> as a whole):
    /// <c>vocab.json</c>, <c>merges.txt</c>, <c>special_tokens_map.json</c>, <c>tokenizer_config.json</c> (with
    /// <c>added_tokens_decoder</c>) and <c>added_tokens.json</c>. No <c>tokenizer.json</c>: transformers builds its fast
    /// tokenizer from these files, added tokens included.
    /// </summary>
    public void SaveToFolder(string folder)
    {
        var unk = _unkId is { } u ? _decoder[u] : EosToken;
        AtomicFile.WriteFolder(folder, temp =>
        {
            var vocab = new JsonObject();
            foreach (var (token, id) in _encoder.OrderBy(e => e.Value)) vocab[token] = id;
            File.WriteAllText(Path.Combine(temp, "vocab.json"), vocab.ToJsonString(WriteOptions));

            var merges = new StringBuilder("#version: 0.2\n");
            foreach (var (first, second) in _merges) merges.Append(first).Append(' ').Append(second).Append('\n');
            File.WriteAllText(Path.Combine(temp, "merges.txt"), merges.ToString());

            var specials = new JsonObject { ["bos_token"] = BosToken, ["eos_token"] = EosToken, ["pad_token"] = PadToken, ["unk_token"] = unk };
            File.WriteAllText(Path.Combine(temp, "special_tokens_map.json"), specials.ToJsonString(WriteOptions));

            var decoder = new JsonObject();
            foreach (var id in new[] { BosId, EosId }.Distinct().Order())
                decoder[id.ToString(CultureInfo.InvariantCulture)] = DecoderEntry(_decoder[id], singleWord: false, special: true);
            foreach (var t in AddedTokens)
                decoder[t.Id.ToString(CultureInfo.InvariantCulture)] = DecoderEntry(t.Content, t.SingleWord, special: false);
            var config = new JsonObject
            {
                ["add_prefix_space"] = false,
                ["added_tokens_decoder"] = decoder,
                ["bos_token"] = BosToken,
                ["clean_up_tokenization_spaces"] = true,
                ["do_lower_case"] = true,
                ["eos_token"] = EosToken,
                ["errors"] = "replace",
                ["model_max_length"] = ModelMaxLength,
                ["pad_token"] = PadToken,
                ["tokenizer_class"] = "CLIPTokenizer",
                ["unk_token"] = unk,
            };
            File.WriteAllText(Path.Combine(temp, "tokenizer_config.json"), config.ToJsonString(WriteOptions));

            var added = new JsonObject();
            foreach (var t in AddedTokens) added[t.Content] = t.Id;
            File.WriteAllText(Path.Combine(temp, AddedTokensFile), added.ToJsonString(WriteOptions));
        });

        static JsonObject DecoderEntry(string content, bool singleWord, bool special) => new()
        {
            ["content"] = content, ["lstrip"] = false, ["normalized"] = !special, ["rstrip"] = false,
            ["single_word"] = singleWord, ["special"] = special,
        };
    }

    private const string AddedTokensFile = "added_tokens.json";

    // Indented like transformers' files; non-ASCII (the byte alphabet of the vocabulary) written as itself.
    private static readonly JsonSerializerOptions WriteOptions = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public string BosToken => _decoder[BosId];
    public string EosToken => _decoder[EosId];
    public string PadToken => _decoder[PadId];

    /// <summary>
    /// BPE ids of <paramref name="text"/>, without start/end tokens and without truncation. An added token is its one id;
    /// a multi-vector textual inversion baked in as <c>name</c>, <c>name_1</c>, ... expands from <c>name</c> to all of
    /// them, as diffusers' <c>maybe_convert_prompt</c> does.
    /// </summary>
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
            if (_addedTokens.ContainsKey(token) && _addedTokens[token].Id == id)
            {
                // A whole word, not byte-mapped BPE pieces.
                bytes.AddRange(Encoding.UTF8.GetBytes(token + EndOfWord));
                continue;
            }
            foreach (var c in token)
            {
                if (ByteEncoder.CharToByte.TryGetValue(c, out var b)) bytes.Add(b);
                else bytes.AddRange(Encoding.UTF8.GetBytes(c.ToString())); // a token outside the byte alphabet (added tokens)
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray()).Replace(EndOfWord, " ", StringComparison.Ordinal);
    }

    public int? TokenToId(string token) => _encoder.TryGetValue(token, out var id) ? id
        : _addedTokens.TryGetValue(token, out var added) ? added.Id : null;

    public string? IdToToken(int id) => _decoder.GetValueOrDefault(id);

    private void Run(string text, List<int>? ids, List<string>? tokens)
    {
        var normalized = ClipTextNormalizer.Normalize(text);
        var start = 0;
        while (FindAddedToken(normalized, start) is var (at, added))
        {
            RunBpe(normalized[start..at], ids, tokens);
            var next = added;
            for (var i = 1; next is not null; i++)
            {
                ids?.Add(next.Id);
                tokens?.Add(next.Content);
                next = _addedTokens.GetValueOrDefault($"{added.Content}_{i}");
            }
            start = at + added.Content.Length;
        }
        RunBpe(start == 0 ? normalized : normalized[start..], ids, tokens);
    }

    /// <summary>The first added token in <paramref name="text"/> from <paramref name="start"/> on (the longest where several start there), or null.</summary>
    private (int At, ClipAddedToken Token)? FindAddedToken(string text, int start)
    {
        if (_addedByLength.Length == 0) return null;
        for (var pos = start; pos < text.Length; pos++)
            foreach (var token in _addedByLength)
                if (string.CompareOrdinal(text, pos, token.Content, 0, token.Content.Length) == 0
                    && (!token.SingleWord || IsWordBoundary(text, pos) && IsWordBoundary(text, pos + token.Content.Length)))
                    return (pos, token);
        return null;
    }

    // transformers' single_word: no word character on both sides of the cut.
    private static bool IsWordBoundary(string text, int cut) =>
        cut == 0 || cut == text.Length || !(IsWordChar(text[cut - 1]) && IsWordChar(text[cut]));

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_' || char.IsSurrogate(c);

    private void RunBpe(string normalized, List<int>? ids, List<string>? tokens)
    {
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

/// <summary>
/// A token added to a trained vocabulary (transformers' <c>AddedToken</c>): <paramref name="Content"/> is one id wherever
/// it appears in the normalised (lower-case) text, and with <paramref name="SingleWord"/> only as a whole word.
/// </summary>
public sealed record ClipAddedToken(string Content, int Id, bool SingleWord = true);
