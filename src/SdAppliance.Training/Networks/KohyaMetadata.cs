using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Training.Networks;

/// <summary>
/// The <c>ss_*</c> safetensors metadata kohya sd-scripts writes into a LoRA (FORMATS §4.2): here the
/// minimum set it keeps even with <c>--no_metadata</c> (<c>SS_METADATA_MINIMUM_KEYS</c>); the trainer
/// adds the training keys. Values are strings written as Python's <c>str()</c> writes them
/// ("True", "8.0"), because tools compare them as kohya wrote them.
/// </summary>
public static class KohyaMetadata
{
    public const string NetworkModule = "networks.lora";

    /// <summary>kohya's <c>MODEL_VERSION_SDXL_BASE_V1_0</c>.</summary>
    public const string SdxlBaseVersion = "sdxl_base_v1-0";

    /// <summary>The minimum set for a network trained on <paramref name="model"/>.</summary>
    public static Dictionary<string, string> Build(StableDiffusionModel model, LoraNetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Build(model.Family, model.PredictionType == "v_prediction", options);
    }

    /// <summary>
    /// <c>ss_v2</c>, <c>ss_base_model_version</c> ("sd_v1", "sd_v2", "sd_v2_v" with v-prediction,
    /// "sdxl_base_v1-0"), <c>ss_network_module</c>, <c>ss_network_dim</c>, <c>ss_network_alpha</c>,
    /// <c>ss_network_dropout</c> when there is dropout, and <c>ss_network_args</c> (JSON of the string
    /// arguments, as kohya gets them from <c>--network_args conv_dim=4 …</c>) only when there are any,
    /// as kohya writes it.
    /// </summary>
    public static Dictionary<string, string> Build(ModelFamily family, bool vPrediction, LoraNetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var version = family switch
        {
            ModelFamily.XlBase => SdxlBaseVersion,
            // kohya's get_model_version_str_for_sd1_sd2.
            ModelFamily.V2 => vPrediction ? "sd_v2_v" : "sd_v2",
            _ => vPrediction ? "sd_v1_v" : "sd_v1",
        };
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["ss_v2"] = family == ModelFamily.V2 ? "True" : "False",
            ["ss_base_model_version"] = version,
            ["ss_network_module"] = NetworkModule,
            ["ss_network_dim"] = options.NetworkDim.ToString(CultureInfo.InvariantCulture),
            ["ss_network_alpha"] = PythonFloat(options.NetworkAlpha),
        };
        if (options.Dropout > 0) metadata["ss_network_dropout"] = PythonFloat(options.Dropout);
        var args = new Dictionary<string, string>();
        if (options.ConvDim is { } convDim)
        {
            args["conv_dim"] = convDim.ToString(CultureInfo.InvariantCulture);
            args["conv_alpha"] = PythonNumber(options.EffectiveConvAlpha);
        }
        if (args.Count > 0) metadata["ss_network_args"] = PythonJson(args);
        return metadata;
    }

    /// <summary>
    /// kohya's <c>precalculate_safetensors_hashes</c>: the addnet hashes of a file holding
    /// <paramref name="tensors"/> with only the <c>ss_*</c> keys of <paramref name="metadata"/>
    /// (so that user metadata added later does not change them). The file is written in
    /// <paramref name="scratchFolder"/> and deleted.
    /// </summary>
    public static (string ModelHash, string LegacyHash) PrecalculateHashes(IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string> metadata, string scratchFolder)
    {
        var training = metadata.Where(kv => kv.Key.StartsWith("ss_", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var scratch = Path.Combine(scratchFolder, $".sshs-{Guid.NewGuid():N}.safetensors");
        try
        {
            Safetensors.Save(scratch, tensors, training);
            using var stream = File.OpenRead(scratch);
            return (AddnetModelHash(stream), AddnetLegacyHash(stream));
        }
        finally
        {
            File.Delete(scratch);
        }
    }

    /// <summary><c>addnet_hash_safetensors</c>: SHA-256 (hex) of everything after the 8-byte length and the header.</summary>
    public static string AddnetModelHash(Stream safetensors)
    {
        ArgumentNullException.ThrowIfNull(safetensors);
        Span<byte> prefix = stackalloc byte[8];
        safetensors.Seek(0, SeekOrigin.Begin);
        safetensors.ReadExactly(prefix);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        safetensors.Seek(checked(8 + (long)headerLength), SeekOrigin.Begin);
        return Convert.ToHexStringLower(SHA256.HashData(safetensors));
    }

    /// <summary><c>addnet_hash_legacy</c>: the first 8 hex digits of SHA-256 over the 64 KiB at offset 0x100000 (fewer, or none, in a smaller file).</summary>
    public static string AddnetLegacyHash(Stream file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var buffer = new byte[0x10000];
        var count = 0;
        if (file.Length > 0x100000)
        {
            file.Seek(0x100000, SeekOrigin.Begin);
            count = file.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        }
        return Convert.ToHexStringLower(SHA256.HashData(buffer.AsSpan(0, count)))[..8];
    }

    /// <summary>Python's <c>str(float)</c>: "8.0", "0.0001", "1e-05", "1e+16".</summary>
    public static string PythonFloat(double value)
    {
        if (double.IsNaN(value)) return "nan";
        if (double.IsInfinity(value)) return value > 0 ? "inf" : "-inf";
        var abs = Math.Abs(value);
        if (value == Math.Floor(value) && abs < 1e16) return value.ToString("0", CultureInfo.InvariantCulture) + ".0";
        // Both print the shortest round-tripping digits; Python uses an exponent below 1e-4 and from
        // 1e16 on, written with a sign and at least two digits.
        var digits = value.ToString("E16", CultureInfo.InvariantCulture);
        var exponent = int.Parse(digits[(digits.IndexOf('E') + 1)..], CultureInfo.InvariantCulture);
        var shortest = value.ToString("R", CultureInfo.InvariantCulture);
        if (abs is >= 1e-4 and < 1e16 && !shortest.Contains('E')) return shortest;
        var mantissa = shortest.Contains('E') ? shortest[..shortest.IndexOf('E')] : (value / Math.Pow(10, exponent)).ToString("R", CultureInfo.InvariantCulture);
        return $"{mantissa}e{(exponent < 0 ? "-" : "+")}{Math.Abs(exponent):00}";
    }

    /// <summary>A number as a user types it in <c>--network_args</c>: "1" for 1, "0.5" for 0.5.</summary>
    private static string PythonNumber(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < 1e16 ? value.ToString("0", CultureInfo.InvariantCulture) : value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Python's <c>json.dumps</c> of a flat string dict: ", " and ": " separators, ASCII escapes.</summary>
    private static string PythonJson(Dictionary<string, string> values) =>
        "{" + string.Join(", ", values.Select(kv => $"{JsonSerializer.Serialize(kv.Key)}: {JsonSerializer.Serialize(kv.Value)}")) + "}";
}
