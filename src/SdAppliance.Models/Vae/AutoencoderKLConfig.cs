using System.Text.Json.Serialization;
using SdAppliance.Models.Blocks;

namespace SdAppliance.Models.Vae;

/// <summary>
/// The <c>config.json</c> of a diffusers <c>AutoencoderKL</c>, with diffusers' defaults for absent
/// keys (SD 1.5's and 2.1's omit <c>scaling_factor</c>, whose default 0.18215 is theirs).
/// </summary>
public sealed record AutoencoderKLConfig : IModelConfig
{
    public int InChannels { get; init; } = 3;
    public int OutChannels { get; init; } = 3;
    public IReadOnlyList<string> DownBlockTypes { get; init; } = ["DownEncoderBlock2D"];
    public IReadOnlyList<string> UpBlockTypes { get; init; } = ["UpDecoderBlock2D"];
    public IReadOnlyList<int> BlockOutChannels { get; init; } = [64];
    public int LayersPerBlock { get; init; } = 1;
    public string ActFn { get; init; } = "silu";
    public int LatentChannels { get; init; } = 4;
    public int NormNumGroups { get; init; } = 32;

    /// <summary>Image size the VAE was trained at; the tile size of tiled encode/decode.</summary>
    [JsonConverter(typeof(NumberOrListConverter))]
    public IReadOnlyList<int> SampleSize { get; init; } = [32];

    /// <summary>Latents are multiplied by this after encoding (and divided before decoding) so they have unit variance.</summary>
    public double ScalingFactor { get; init; } = 0.18215;

    /// <summary>Subtracted before scaling (newer VAEs); null for SD's.</summary>
    public double? ShiftFactor { get; init; }

    public IReadOnlyList<double>? LatentsMean { get; init; }
    public IReadOnlyList<double>? LatentsStd { get; init; }

    /// <summary>The VAE overflows in float16 (SD's do at high resolution); pipelines run it in float32.</summary>
    public bool ForceUpcast { get; init; } = true;

    public bool UseQuantConv { get; init; } = true;
    public bool UsePostQuantConv { get; init; } = true;
    public bool MidBlockAddAttention { get; init; } = true;

    public static AutoencoderKLConfig Parse(string json) => DiffusersConfig.Parse<AutoencoderKLConfig>(json);

    public static AutoencoderKLConfig Load(string path) => DiffusersConfig.Load<AutoencoderKLConfig>(path);

    public string ToJson() => DiffusersConfig.ToJson(this);

    /// <summary>Spatial factor between image and latent: 2^(levels − 1), 8 for Stable Diffusion.</summary>
    [JsonIgnore]
    public int DownscaleFactor => 1 << (BlockOutChannels.Count - 1);

    /// <inheritdoc/>
    public void CheckValues(string source)
    {
        var check = new ConfigChecks(source);
        var blocks = BlockOutChannels.Count;
        check.Length("block_out_channels", blocks, ConfigChecks.MaxBlocks)
            .Counts("block_out_channels", BlockOutChannels, ConfigChecks.MaxChannels)
            .OnePerBlock("down_block_types", DownBlockTypes.Count, blocks)
            .OnePerBlock("up_block_types", UpBlockTypes.Count, blocks)
            .Count("in_channels", InChannels, ConfigChecks.MaxChannels)
            .Count("out_channels", OutChannels, ConfigChecks.MaxChannels)
            .Count("latent_channels", LatentChannels, ConfigChecks.MaxChannels)
            .Count("layers_per_block", LayersPerBlock, ConfigChecks.MaxLayers)
            .Counts("sample_size", SampleSize, ConfigChecks.MaxSampleSize)
            .Positive("scaling_factor", ScalingFactor)
            .Count("norm_num_groups", NormNumGroups, ConfigChecks.MaxChannels);
        for (var i = 0; i < blocks; i++)
            check.Divides($"block_out_channels[{i}]", BlockOutChannels[i], "norm_num_groups", NormNumGroups);
    }

    /// <summary>Throws <see cref="NotSupportedException"/> for block types this implementation does not build.</summary>
    public void Validate()
    {
        if (DownBlockTypes.Count != BlockOutChannels.Count || UpBlockTypes.Count != BlockOutChannels.Count)
            throw new ArgumentException($"down_block_types ({DownBlockTypes.Count}), up_block_types ({UpBlockTypes.Count}) and block_out_channels ({BlockOutChannels.Count}) must have the same length");
        foreach (var t in DownBlockTypes)
            if (t != "DownEncoderBlock2D") throw new NotSupportedException($"AutoencoderKL config: down block type '{t}' is not supported");
        foreach (var t in UpBlockTypes)
            if (t != "UpDecoderBlock2D") throw new NotSupportedException($"AutoencoderKL config: up block type '{t}' is not supported");
        Activation.Check(ActFn);
    }
}
