using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace SdAppliance.Tools.TrainDemo;

/// <summary>
/// Learns a byte-level BPE in the CLIP scheme from a caption corpus: words split as CLIP's pre-tokenizer
/// does for plain lower-case text (letters runs), the last symbol of a word carrying <c>&lt;/w&gt;</c>, then
/// greedy merges of the most frequent adjacent pair (ties: the lexicographically smallest pair) until no
/// pair occurs twice or <c>maxMerges</c> is reached. The vocabulary is laid out as openai's SimpleTokenizer
/// builds it: 256 byte symbols, the same with <c>&lt;/w&gt;</c>, one entry per merge, then the two specials.
/// </summary>
public static class BpeLearner
{
    public static (IReadOnlyList<string> Vocab, IReadOnlyList<(string, string)> Merges) Learn(IEnumerable<string> captions, int maxMerges)
    {
        var words = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var caption in captions)
            foreach (var word in caption.ToLowerInvariant().Split(' ', StringSplitOptions.RemoveEmptyEntries))
                words[word] = words.GetValueOrDefault(word) + 1;

        var byteChars = ByteMap();
        // Each distinct word as its symbol list, with its frequency.
        var corpus = words.Select(w =>
        {
            var symbols = Encoding.UTF8.GetBytes(w.Key).Select(b => byteChars[b].ToString()).ToList();
            symbols[^1] += "</w>";
            return (Symbols: symbols, Count: w.Value);
        }).ToList();

        var merges = new List<(string, string)>();
        while (merges.Count < maxMerges)
        {
            var pairs = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in corpus)
                for (var i = 0; i + 1 < symbols.Count; i++)
                    pairs[(symbols[i], symbols[i + 1])] = pairs.GetValueOrDefault((symbols[i], symbols[i + 1])) + count;
            if (pairs.Count == 0) break;
            var best = pairs.OrderByDescending(p => p.Value)
                .ThenBy(p => p.Key.Item1, StringComparer.Ordinal).ThenBy(p => p.Key.Item2, StringComparer.Ordinal).First();
            if (best.Value < 2) break;
            merges.Add(best.Key);
            foreach (var (symbols, _) in corpus)
                for (var i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == best.Key.Item1 && symbols[i + 1] == best.Key.Item2)
                    {
                        symbols[i] += symbols[i + 1];
                        symbols.RemoveAt(i + 1);
                    }
        }

        var alphabet = Alphabet();
        var vocab = new List<string>(alphabet.Select(c => c.ToString()));
        vocab.AddRange(alphabet.Select(c => c + "</w>"));
        vocab.AddRange(merges.Select(m => m.Item1 + m.Item2));
        vocab.Add("<|startoftext|>");
        vocab.Add("<|endoftext|>");
        return (vocab, merges);
    }

    /// <summary>Writes vocab.json, merges.txt and the two tokenizer config files of a CLIPTokenizer folder.</summary>
    public static void Write(string folder, IReadOnlyList<string> vocab, IReadOnlyList<(string, string)> merges)
    {
        Directory.CreateDirectory(folder);
        var json = new StringBuilder("{");
        for (var i = 0; i < vocab.Count; i++)
        {
            if (i > 0) json.Append(", ");
            json.Append(JsonSerializer.Serialize(vocab[i], Escaping)).Append(": ").Append(i);
        }
        json.Append('}');
        File.WriteAllText(Path.Combine(folder, "vocab.json"), json.ToString());
        File.WriteAllText(Path.Combine(folder, "merges.txt"),
            "#version: 0.2\n" + string.Concat(merges.Select(m => $"{m.Item1} {m.Item2}\n")));
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), """
            {
              "tokenizer_class": "CLIPTokenizer",
              "add_prefix_space": false,
              "do_lower_case": true,
              "errors": "replace",
              "model_max_length": 77,
              "bos_token": "<|startoftext|>",
              "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>"
            }
            """);
        File.WriteAllText(Path.Combine(folder, "special_tokens_map.json"), """
            {
              "bos_token": "<|startoftext|>",
              "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>"
            }
            """);
    }

    // Hugging Face writes vocab.json with non-ASCII characters unescaped.
    private static readonly JsonSerializerOptions Escaping = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>GPT-2/CLIP bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards in byte order.</summary>
    public static char[] ByteMap()
    {
        var map = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
        {
            var printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    public static char[] Alphabet()
    {
        var map = ByteMap();
        // SimpleTokenizer orders the alphabet as bytes_to_unicode's values list: printable ones first, then the shifted ones.
        var printableFirst = Enumerable.Range(0, 256).Where(b => map[b] < 256).Concat(Enumerable.Range(0, 256).Where(b => map[b] >= 256));
        return [.. printableFirst.Select(b => map[b])];
    }
}
