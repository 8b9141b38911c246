using System.Text.Json.Nodes;
using SdAppliance.Formats;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Models.Vae;

namespace SdAppliance.Models.Tests;

/// <summary>
/// Broken and hostile <c>config.json</c> files: not JSON, nested absurdly, values of the wrong type, zero,
/// negative or huge widths, channels that do not split into their groups or heads. Each is refused as a
/// <see cref="ModelConfigException"/> naming the file and the field, when the file is read: before a
/// module is built from it.
/// </summary>
public sealed class HostileConfigTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("sdappliance-configs-").FullName;

    public void Dispose() => Directory.Delete(_folder, recursive: true);

    private static string Fixture(string component) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd", component, "config.json");

    // The fixture's config with one field set to `value` (JSON text), written to a new file.
    private string WithField(string component, string field, string value)
    {
        var config = JsonNode.Parse(File.ReadAllText(Fixture(component)))!.AsObject();
        config[field] = JsonNode.Parse(value);
        return Write(component, config.ToJsonString());
    }

    private string Write(string component, string text)
    {
        var path = Path.Combine(_folder, Guid.NewGuid().ToString("N"), component, "config.json");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    private static void Load(string component, string path)
    {
        switch (component)
        {
            case "unet":
                UNet2DConditionConfig.Load(path);
                break;
            case "vae":
                AutoencoderKLConfig.Load(path);
                break;
            default:
                ClipTextConfig.Load(path);
                break;
        }
    }

    private static void AssertRefused(string component, string path, string? field, string problem)
    {
        var e = Assert.Throws<ModelConfigException>(() => Load(component, path));
        Assert.IsAssignableFrom<UserInputException>(e);
        Assert.Equal(path, e.Subject);
        Assert.Equal(field, e.Field);
        Assert.Contains(problem, e.Problem);
        Assert.StartsWith($"{path}: ", e.Message);
    }

    // (component, field, value as JSON, the field named in the refusal, what the refusal says)
    public static TheoryData<string, string, string, string, string> BadValues() => new()
    {
        { "unet", "block_out_channels", "[0, 64]", "block_out_channels[0]", "is 0; it must be 1 to 8192" },
        { "unet", "block_out_channels", "[-32, 64]", "block_out_channels[0]", "is -32; it must be 1 to 8192" },
        { "unet", "block_out_channels", "[32, 1000000]", "block_out_channels[1]", "is 1000000; it must be 1 to 8192" },
        { "unet", "block_out_channels", "[32, 1e12]", "block_out_channels[1]", "cannot be read" },
        { "unet", "block_out_channels", "\"wide\"", "block_out_channels", "cannot be read" },
        { "unet", "block_out_channels", "[32, 64, 64, 64, 64, 64, 64, 64, 64]", "block_out_channels", "has 9 values; at most 8 are allowed" },
        { "unet", "block_out_channels", "[]", "block_out_channels", "is an empty list" },
        { "unet", "block_out_channels", "[32, 60]", "block_out_channels[1]", "is 60, which does not split into norm_num_groups = 8 equal parts" },
        { "unet", "norm_num_groups", "0", "norm_num_groups", "is 0; it must be 1 to 8192" },
        { "unet", "norm_num_groups", "-8", "norm_num_groups", "is -8; it must be 1 to 8192" },
        { "unet", "norm_num_groups", "7", "block_out_channels[0]", "is 32, which does not split into norm_num_groups = 7 equal parts" },
        { "unet", "norm_num_groups", "\"eight\"", "norm_num_groups", "cannot be read" },
        { "unet", "norm_num_groups", "8.5", "norm_num_groups", "cannot be read" },
        { "unet", "attention_head_dim", "0", "attention_head_dim", "is 0; it must be 1 to 256" },
        { "unet", "attention_head_dim", "3", "block_out_channels[0]", "is 32, which does not split into attention_head_dim = 3 equal parts" },
        { "unet", "attention_head_dim", "[8, 8, 8]", "attention_head_dim", "has 3 values for 2 blocks" },
        { "unet", "attention_head_dim", "99999999999", "attention_head_dim", "cannot be read" },
        { "unet", "attention_head_dim", "[[8], [8]]", "attention_head_dim", "cannot be read" },
        { "unet", "num_attention_heads", "1000", "num_attention_heads", "is 1000; it must be 1 to 256" },
        { "unet", "num_attention_heads", "[-1, 8]", "num_attention_heads[0]", "is -1; it must be 1 to 256" },
        { "unet", "layers_per_block", "0", "layers_per_block", "is 0; it must be 1 to 64" },
        { "unet", "layers_per_block", "100000", "layers_per_block", "is 100000; it must be 1 to 64" },
        { "unet", "layers_per_block", "[1, 2, 3]", "layers_per_block", "has 3 values for 2 blocks" },
        { "unet", "transformer_layers_per_block", "0", "transformer_layers_per_block", "is 0; it must be 1 to 64" },
        { "unet", "cross_attention_dim", "0", "cross_attention_dim", "is 0; it must be 1 to 8192" },
        { "unet", "cross_attention_dim", "99999", "cross_attention_dim", "is 99999; it must be 1 to 8192" },
        { "unet", "in_channels", "0", "in_channels", "is 0; it must be 1 to 8192" },
        { "unet", "in_channels", "-4", "in_channels", "is -4; it must be 1 to 8192" },
        { "unet", "out_channels", "2147483647", "out_channels", "is 2147483647; it must be 1 to 8192" },
        { "unet", "in_channels", "true", "in_channels", "cannot be read" },
        { "unet", "sample_size", "0", "sample_size", "is 0; it must be 1 to 4096" },
        { "unet", "sample_size", "100000", "sample_size", "is 100000; it must be 1 to 4096" },
        { "unet", "norm_eps", "0", "norm_eps", "is 0; it must be a finite number above 0" },
        { "unet", "norm_eps", "-1", "norm_eps", "is -1; it must be a finite number above 0" },
        { "unet", "down_block_types", "[\"DownBlock2D\"]", "down_block_types", "has 1 values for the 2 blocks of block_out_channels" },
        { "unet", "conv_in_kernel", "0", "conv_in_kernel", "is 0; it must be 1 to 15" },
        { "unet", "time_embedding_dim", "-5", "time_embedding_dim", "is -5; it must be 1 to 65536" },
        { "unet", "only_cross_attention", "[true, false, true]", "only_cross_attention", "has 3 values for 2 blocks" },
        { "unet", "only_cross_attention", "[1, 0]", "only_cross_attention", "cannot be read" },
        { "vae", "block_out_channels", "[0, 32, 32, 32]", "block_out_channels[0]", "is 0; it must be 1 to 8192" },
        { "vae", "block_out_channels", "[16, 32, 32, 100000]", "block_out_channels[3]", "is 100000; it must be 1 to 8192" },
        { "vae", "block_out_channels", "[16, 32, 32, 36]", "block_out_channels[3]", "is 36, which does not split into norm_num_groups = 8 equal parts" },
        { "vae", "norm_num_groups", "0", "norm_num_groups", "is 0; it must be 1 to 8192" },
        { "vae", "norm_num_groups", "5", "block_out_channels[0]", "is 16, which does not split into norm_num_groups = 5 equal parts" },
        { "vae", "latent_channels", "0", "latent_channels", "is 0; it must be 1 to 8192" },
        { "vae", "latent_channels", "\"4x\"", "latent_channels", "cannot be read" },
        { "vae", "layers_per_block", "1000", "layers_per_block", "is 1000; it must be 1 to 64" },
        { "vae", "sample_size", "-64", "sample_size", "is -64; it must be 1 to 4096" },
        { "vae", "scaling_factor", "0", "scaling_factor", "is 0; it must be a finite number above 0" },
        { "vae", "in_channels", "0", "in_channels", "is 0; it must be 1 to 8192" },
        { "vae", "up_block_types", "[\"UpDecoderBlock2D\"]", "up_block_types", "has 1 values for the 4 blocks of block_out_channels" },
        { "text_encoder", "vocab_size", "0", "vocab_size", "is 0; it must be 1 to 1048576" },
        { "text_encoder", "vocab_size", "-1", "vocab_size", "is -1; it must be 1 to 1048576" },
        { "text_encoder", "vocab_size", "1000000000", "vocab_size", "is 1000000000; it must be 1 to 1048576" },
        { "text_encoder", "vocab_size", "\"big\"", "vocab_size", "cannot be read" },
        { "text_encoder", "vocab_size", "900", "pad_token_id", "is 913, outside the vocabulary of vocab_size = 900 tokens" },
        { "text_encoder", "hidden_size", "0", "hidden_size", "is 0; it must be 1 to 8192" },
        { "text_encoder", "hidden_size", "33", "hidden_size", "is 33, which does not split into num_attention_heads = 4 equal parts" },
        { "text_encoder", "hidden_size", "100000", "hidden_size", "is 100000; it must be 1 to 8192" },
        { "text_encoder", "num_attention_heads", "0", "num_attention_heads", "is 0; it must be 1 to 256" },
        { "text_encoder", "num_attention_heads", "5", "hidden_size", "is 32, which does not split into num_attention_heads = 5 equal parts" },
        { "text_encoder", "num_hidden_layers", "0", "num_hidden_layers", "is 0; it must be 1 to 64" },
        { "text_encoder", "num_hidden_layers", "1000", "num_hidden_layers", "is 1000; it must be 1 to 64" },
        { "text_encoder", "intermediate_size", "-64", "intermediate_size", "is -64; it must be 1 to 65536" },
        { "text_encoder", "max_position_embeddings", "0", "max_position_embeddings", "is 0; it must be 1 to 4096" },
        { "text_encoder", "eos_token_id", "-1", "eos_token_id", "is -1, outside the vocabulary of vocab_size = 914 tokens" },
        { "text_encoder", "layer_norm_eps", "0", "layer_norm_eps", "is 0; it must be a finite number above 0" },
        { "text_encoder", "projection_dim", "[32]", "projection_dim", "cannot be read" },
    };

    [Theory]
    [MemberData(nameof(BadValues))]
    public void BadValueIsRefusedNamingTheFileAndTheField(string component, string field, string value, string named, string problem) =>
        AssertRefused(component, WithField(component, field, value), named, problem);

    public static TheoryData<string> Components() => ["unet", "vae", "text_encoder"];

    [Theory]
    [MemberData(nameof(Components))]
    public void TheFixtureConfigsPassTheChecks(string component) => Load(component, Fixture(component));

    [Theory]
    [MemberData(nameof(Components))]
    public void InvalidJsonIsRefusedNamingTheFile(string component)
    {
        // Cut off inside a list: the reader names the element it stopped at (block_out_channels[1] where the field is known).
        var path = Write(component, "{\"block_out_channels\": [32, 64");
        var e = Assert.Throws<ModelConfigException>(() => Load(component, path));
        Assert.Equal(path, e.Subject);
        Assert.StartsWith("block_out_channels", e.Field);
        Assert.Contains("cannot be read", e.Problem);
    }

    [Theory]
    [MemberData(nameof(Components))]
    public void AbsurdNestingIsRefusedNamingTheFile(string component)
    {
        // 100,000 nested arrays under a key no config has: the JSON reader's depth limit (64) stops it.
        var path = Write(component, "{\"extra\": " + new string('[', 100_000) + new string(']', 100_000) + "}");
        AssertRefused(component, path, "extra", "maximum configured depth of 64");
    }

    [Theory]
    [MemberData(nameof(Components))]
    public void NullConfigIsRefusedNamingTheFile(string component) => AssertRefused(component, Write(component, "null"), null, "is null");

    [Theory]
    [MemberData(nameof(Components))]
    public void HugeFileIsRefusedWithoutReadingIt(string component)
    {
        var path = Write(component, "{}" + new string(' ', 1 << 20));
        AssertRefused(component, path, null, "a config.json is a few kilobytes (at most 1048576 are read)");
    }

    [Fact]
    public void ModelFolderWithABrokenConfigIsRefusedBeforeAnythingIsBuilt()
    {
        var folder = Path.Combine(_folder, "model");
        foreach (var file in Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd"), "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(folder, Path.GetRelativePath(Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd"), file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        var config = Path.Combine(folder, "vae", "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        json["latent_channels"] = 1 << 30;
        File.WriteAllText(config, json.ToJsonString());

        var e = Assert.Throws<ModelConfigException>(() => ModelLoader.Load(folder).Dispose());
        Assert.Equal(config, e.Subject);
        Assert.Equal("latent_channels", e.Field);
        Assert.Contains("is 1073741824; it must be 1 to 8192", e.Problem);
    }
}
