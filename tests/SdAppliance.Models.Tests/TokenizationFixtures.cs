using System.Text.Json;

namespace SdAppliance.Models.Tests;

/// <summary>One case of <c>tokenizer_golden.json</c> (or its real-vocabulary twin).</summary>
public sealed record TokenizerGoldenCase(
    string Text, int[] BpeIds, string[] BpeTokens, int[] InputIds77, int NumUnpadded, bool Truncated);

public sealed record TokenizerGolden(int BosId, int EosId, int PadId, int VocabSize, int MaxLength, TokenizerGoldenCase[] Cases);

public static class TokenizationFixtures
{
    public static string Fixture(params string[] parts) =>
        Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    public static string TinyTokenizerFolder => Fixture("tiny-sd", "tokenizer");

    public static TokenizerGolden ReadGolden(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var root = doc.RootElement;
        var cases = root.GetProperty("cases").EnumerateArray().Select(c => new TokenizerGoldenCase(
            c.GetProperty("text").GetString()!,
            c.GetProperty("bpe_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            c.GetProperty("bpe_tokens").EnumerateArray().Select(e => e.GetString()!).ToArray(),
            c.GetProperty("input_ids_77").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
            c.GetProperty("num_unpadded").GetInt32(),
            c.GetProperty("truncated").GetBoolean())).ToArray();
        return new TokenizerGolden(root.GetProperty("bos_id").GetInt32(), root.GetProperty("eos_id").GetInt32(),
            root.GetProperty("pad_id").GetInt32(), root.GetProperty("vocab_size").GetInt32(),
            root.GetProperty("max_length").GetInt32(), cases);
    }

    public static readonly Lazy<TokenizerGolden> TinyGolden = new(() => ReadGolden(Fixture("tokenizer_golden.json")));

    /// <summary>The same strings through SDXL's tokenizer_2 (pad id 0).</summary>
    public static readonly Lazy<TokenizerGolden> TinySdxlGolden2 = new(() => ReadGolden(Fixture("sdxl", "tokenizer_2_golden.json")));

    /// <summary>
    /// A folder of the shared fixture set beside the repository (<c>../shared/fixtures/NAME</c> from the folder
    /// holding SdAppliance.sln), or null when absent: third-party data such as the real CLIP vocabulary is not
    /// committed, so tests that need it run only where that set is.
    /// </summary>
    public static string? SharedFixtureFolder(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (!File.Exists(Path.Combine(dir.FullName, "SdAppliance.sln"))) continue;
            var folder = Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "fixtures", name));
            return Directory.Exists(folder) ? folder : null;
        }
        return null;
    }

    public const string RealClip = "real-clip";
}

/// <summary>A fact that is skipped, with the reason, when a folder of the shared fixture set is not there.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class FactWhenFixtureExistsAttribute : FactAttribute
{
    public FactWhenFixtureExistsAttribute(string sharedFixtureFolder)
    {
        if (TokenizationFixtures.SharedFixtureFolder(sharedFixtureFolder) is null)
            Skip = $"../shared/fixtures/{sharedFixtureFolder} (beside the repository) is not available; it is third-party data and not committed";
    }
}
