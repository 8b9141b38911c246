using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SdAppliance.Formats;

namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// A diffusers <c>scheduler_config.json</c>, key for key. Every setting is nullable because, as in
/// diffusers' <c>from_config</c>, a key the file leaves out takes the default of the class that is
/// built from it, and those defaults differ between classes (e.g. <c>timestep_spacing</c> is
/// <c>leading</c> for DDIM but <c>linspace</c> for Euler). Each scheduler exposes its resolved
/// config, where every setting it uses is filled in. Keys this record does not know are kept in
/// <see cref="Extra"/> so a config round-trips.
/// </summary>
public sealed partial record SchedulerConfig
{
    [JsonPropertyName("_class_name")] public string? ClassName { get; init; }
    [JsonPropertyName("_diffusers_version")] public string? DiffusersVersion { get; init; }

    // ---- the training noise schedule ----
    [JsonPropertyName("num_train_timesteps")] public int? NumTrainTimesteps { get; init; }
    [JsonPropertyName("beta_start")] public double? BetaStart { get; init; }
    [JsonPropertyName("beta_end")] public double? BetaEnd { get; init; }
    /// <summary><c>linear</c>, <c>scaled_linear</c> or <c>squaredcos_cap_v2</c>.</summary>
    [JsonPropertyName("beta_schedule")] public string? BetaSchedule { get; init; }
    [JsonPropertyName("trained_betas")] public double[]? TrainedBetas { get; init; }
    [JsonPropertyName("rescale_betas_zero_snr")] public bool? RescaleBetasZeroSnr { get; init; }
    /// <summary><c>epsilon</c>, <c>v_prediction</c> or <c>sample</c>.</summary>
    [JsonPropertyName("prediction_type")] public string? PredictionType { get; init; }

    // ---- inference timesteps ----
    /// <summary><c>leading</c>, <c>trailing</c> or <c>linspace</c>.</summary>
    [JsonPropertyName("timestep_spacing")] public string? TimestepSpacing { get; init; }
    [JsonPropertyName("steps_offset")] public int? StepsOffset { get; init; }
    [JsonPropertyName("set_alpha_to_one")] public bool? SetAlphaToOne { get; init; }
    [JsonPropertyName("skip_prk_steps")] public bool? SkipPrkSteps { get; init; }

    // ---- x0 clipping ----
    [JsonPropertyName("clip_sample")] public bool? ClipSample { get; init; }
    [JsonPropertyName("clip_sample_range")] public double? ClipSampleRange { get; init; }
    [JsonPropertyName("thresholding")] public bool? Thresholding { get; init; }
    [JsonPropertyName("dynamic_thresholding_ratio")] public double? DynamicThresholdingRatio { get; init; }
    [JsonPropertyName("sample_max_value")] public double? SampleMaxValue { get; init; }

    // ---- sigma schedules (Euler, LMS, DPM-Solver, UniPC) ----
    [JsonPropertyName("interpolation_type")] public string? InterpolationType { get; init; }
    [JsonPropertyName("use_karras_sigmas")] public bool? UseKarrasSigmas { get; init; }
    [JsonPropertyName("use_exponential_sigmas")] public bool? UseExponentialSigmas { get; init; }
    [JsonPropertyName("use_beta_sigmas")] public bool? UseBetaSigmas { get; init; }
    [JsonPropertyName("sigma_min")] public double? SigmaMin { get; init; }
    [JsonPropertyName("sigma_max")] public double? SigmaMax { get; init; }
    /// <summary><c>discrete</c> or <c>continuous</c> (Euler: continuous v-prediction models take 0.25·ln σ as timestep).</summary>
    [JsonPropertyName("timestep_type")] public string? TimestepType { get; init; }
    /// <summary><c>zero</c> or <c>sigma_min</c>: the sigma after the last step.</summary>
    [JsonPropertyName("final_sigmas_type")] public string? FinalSigmasType { get; init; }

    // ---- multistep solvers ----
    /// <summary>DPM-Solver: <c>dpmsolver++</c>, <c>sde-dpmsolver++</c>, <c>dpmsolver</c>, <c>sde-dpmsolver</c>.</summary>
    [JsonPropertyName("algorithm_type")] public string? AlgorithmType { get; init; }
    [JsonPropertyName("solver_order")] public int? SolverOrder { get; init; }
    /// <summary>DPM-Solver: <c>midpoint</c> or <c>heun</c>; UniPC: <c>bh1</c> or <c>bh2</c>.</summary>
    [JsonPropertyName("solver_type")] public string? SolverType { get; init; }
    [JsonPropertyName("lower_order_final")] public bool? LowerOrderFinal { get; init; }
    [JsonPropertyName("euler_at_final")] public bool? EulerAtFinal { get; init; }
    [JsonPropertyName("lambda_min_clipped")] public double? LambdaMinClipped { get; init; }
    [JsonPropertyName("use_lu_lambdas")] public bool? UseLuLambdas { get; init; }
    /// <summary>Flow-matching sigmas (not supported by these samplers; kept so configs round-trip).</summary>
    [JsonPropertyName("use_flow_sigmas")] public bool? UseFlowSigmas { get; init; }
    [JsonPropertyName("flow_shift")] public double? FlowShift { get; init; }
    [JsonPropertyName("use_dynamic_shifting")] public bool? UseDynamicShifting { get; init; }
    [JsonPropertyName("time_shift_type")] public string? TimeShiftType { get; init; }
    /// <summary>DDPM: <c>fixed_small</c>, <c>fixed_small_log</c>, <c>fixed_large</c>, <c>learned</c>, <c>learned_range</c>.</summary>
    [JsonPropertyName("variance_type")] public string? VarianceType { get; init; }
    [JsonPropertyName("predict_x0")] public bool? PredictX0 { get; init; }
    [JsonPropertyName("disable_corrector")] public int[]? DisableCorrector { get; init; }

    // ---- LCM ----
    [JsonPropertyName("original_inference_steps")] public int? OriginalInferenceSteps { get; init; }
    [JsonPropertyName("timestep_scaling")] public double? TimestepScaling { get; init; }

    // ---- DPM++ SDE ----
    [JsonPropertyName("noise_sampler_seed")] public long? NoiseSamplerSeed { get; init; }
    /// <summary>
    /// Ours, not diffusers': how DPM++ SDE draws its noise, <c>brownian</c> (default) or
    /// <c>independent</c>; see <see cref="DpmSolverSdeScheduler"/>.
    /// </summary>
    [JsonPropertyName("noise_sampler")] public string? NoiseSampler { get; init; }

    /// <summary>Keys this record does not model, kept verbatim.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; init; }

    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        WriteIndented = true,
    };

    /// <summary>Parses a <c>scheduler_config.json</c> text (Python's bare <c>Infinity</c>/<c>NaN</c> accepted).</summary>
    public static SchedulerConfig FromJson(string json) =>
        JsonSerializer.Deserialize<SchedulerConfig>(QuoteNonFiniteLiterals(json), JsonOptions)
        ?? throw new FormatException("scheduler config: the JSON is null");

    public static SchedulerConfig Load(string path) => JsonFiles.Read<SchedulerConfig>(path, JsonOptions, QuoteNonFiniteLiterals);

    /// <summary>The config as diffusers writes it (non-finite numbers as Python's bare literals).</summary>
    public string ToJson() => NamedLiteral().Replace(JsonSerializer.Serialize(this, JsonOptions), "$1$2");

    [GeneratedRegex("(:\\s*)\"(-?Infinity|NaN)\"")]
    private static partial Regex NamedLiteral();

    /// <summary>
    /// This config with every setting that <paramref name="overrides"/> gives replaced, like the
    /// keyword arguments of diffusers' <c>from_config(config, **overrides)</c>.
    /// </summary>
    public SchedulerConfig With(SchedulerConfig? overrides)
    {
        if (overrides is null) return this;
        var baseNode = JsonSerializer.SerializeToNode(this, JsonOptions)!.AsObject();
        foreach (var (key, value) in JsonSerializer.SerializeToNode(overrides, JsonOptions)!.AsObject())
            baseNode[key] = value?.DeepClone();
        return baseNode.Deserialize<SchedulerConfig>(JsonOptions)!;
    }

    /// <summary>The value of an unmodelled key, if present.</summary>
    public JsonElement? GetExtra(string key) => Extra is not null && Extra.TryGetValue(key, out var v) ? v : null;

    /// <summary>
    /// diffusers writes float('inf') as the bare token <c>-Infinity</c>, which is not JSON; quote
    /// such tokens (outside strings) so the named-literal number handling reads them.
    /// </summary>
    internal static string QuoteNonFiniteLiterals(string json)
    {
        if (!json.Contains("Infinity", StringComparison.Ordinal) && !json.Contains("NaN", StringComparison.Ordinal)) return json;
        var sb = new StringBuilder(json.Length + 16);
        var inString = false;
        for (var i = 0; i < json.Length; i++)
        {
            var c = json[i];
            if (inString)
            {
                sb.Append(c);
                if (c == '\\' && i + 1 < json.Length) sb.Append(json[++i]);
                else if (c == '"') inString = false;
                continue;
            }
            if (c == '"') { inString = true; sb.Append(c); continue; }
            var matched = false;
            foreach (var token in (ReadOnlySpan<string>)["-Infinity", "Infinity", "NaN"])
            {
                if (string.CompareOrdinal(json, i, token, 0, token.Length) == 0)
                {
                    sb.Append('"').Append(token).Append('"');
                    i += token.Length - 1;
                    matched = true;
                    break;
                }
            }
            if (!matched) sb.Append(c);
        }
        return sb.ToString();
    }
}
