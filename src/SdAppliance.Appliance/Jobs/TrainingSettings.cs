using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Generation;
using SdAppliance.Training;

namespace SdAppliance.Appliance.Jobs;

/// <summary>How a setting is edited: free text, a whole number, a number, on/off, one of <see cref="TrainingSetting.Choices"/>, or one item per line.</summary>
public enum TrainingSettingKind
{
    Text,
    Integer,
    Number,
    Switch,
    Choice,
    Lines,
}

/// <summary>
/// One field of <see cref="TrainingConfig"/> as a form shows it: its run.json name (kohya's), its description, how it is
/// edited, whether it may be left empty, the methods it applies to (null: every method) and whether it is among the
/// common settings shown first (the rest are advanced).
/// </summary>
public sealed record TrainingSetting(
    string Name, string Description, TrainingSettingKind Kind, bool Optional, IReadOnlyList<string> Choices, IReadOnlyList<string>? Methods, bool Common)
{
    public bool AppliesTo(string method) => Methods is null || Methods.Contains(method, StringComparer.Ordinal);
}

/// <summary>A training method with one line on what it does and when to choose it.</summary>
public sealed record TrainingMethodInfo(string Name, string Title, string Summary);

/// <summary>
/// A run as the Train page (or any form) gives it: the method, an optional preset, the base model and dataset as a
/// request names them (paths in the data folder; null model: the demo model), and the text of each setting by its
/// run.json name (<see cref="TrainingSettings.Fields"/>).
/// </summary>
public sealed record TrainingForm(string Method, string? Preset, string? Model, string? Data, IReadOnlyDictionary<string, string> Values);

/// <summary>
/// The settings of a training run for a form, made from <see cref="TrainingConfig"/> itself (its fields, descriptions,
/// defaults, presets and choices), and the job request of a filled-in form. Nothing is checked here beyond reading each
/// text as its field's type: the training layer's own validation runs when the job is submitted.
/// </summary>
public static class TrainingSettings
{
    /// <summary>
    /// Fields the form sets by its own pickers (method, preset, model, data) or the appliance sets (output, the device or
    /// devices of num_processes ranks, their rendezvous; a run across machines starts from the command line).
    /// </summary>
    private static readonly HashSet<string> NotFields = new(StringComparer.Ordinal)
    {
        "method", "preset", "model", "data", "output", "device", "devices", "num_machines", "main_process_ip", "main_process_port",
    };

    /// <summary>The settings shown first, in this order; the others are advanced, in the config's order.</summary>
    private static readonly string[] CommonOrder =
    [
        "resolution", "max_train_steps", "train_batch_size", "learning_rate",
        "network_dim", "network_alpha", "conv_dim",
        "instance_prompt", "class_prompt", "class_data", "num_class_images",
        "placeholder_token", "initializer_token", "num_vectors",
        "hypernetwork_layer_structure", "hypernetwork_activation",
        "sample_prompts", "sample_every_n_steps", "save_every_n_steps",
    ];

    private const string Lora = "lora", DreamBooth = "dreambooth", TextualInversion = "textual-inversion", Finetune = "finetune", Hypernetwork = "hypernetwork";

    /// <summary>Settings that mean something for some methods only.</summary>
    private static readonly Dictionary<string, string[]> MethodsOf = new(StringComparer.Ordinal)
    {
        ["network_dim"] = [Lora], ["network_alpha"] = [Lora], ["network_dropout"] = [Lora], ["conv_dim"] = [Lora], ["conv_alpha"] = [Lora],
        ["network_algo"] = [Lora], ["lokr_factor"] = [Lora], ["lokr_decompose_both"] = [Lora], ["use_tucker"] = [Lora], ["dora_wd"] = [Lora],
        ["loraplus_lr_ratio"] = [Lora], ["loraplus_unet_lr_ratio"] = [Lora], ["loraplus_text_encoder_lr_ratio"] = [Lora],
        ["down_lr_weight"] = [Lora], ["mid_lr_weight"] = [Lora], ["up_lr_weight"] = [Lora], ["block_lr_zero_threshold"] = [Lora],
        ["block_dims"] = [Lora], ["block_alphas"] = [Lora], ["conv_block_dims"] = [Lora], ["conv_block_alphas"] = [Lora],
        ["train_text_encoder"] = [Lora, DreamBooth], ["text_encoder_lr"] = [Lora, DreamBooth],
        ["class_prompt"] = [DreamBooth], ["class_data"] = [DreamBooth], ["num_class_images"] = [DreamBooth], ["prior_loss_weight"] = [DreamBooth],
        ["placeholder_token"] = [TextualInversion], ["initializer_token"] = [TextualInversion], ["num_vectors"] = [TextualInversion],
        ["hypernetwork_layer_structure"] = [Hypernetwork], ["hypernetwork_activation"] = [Hypernetwork],
        ["use_ema"] = [Finetune], ["ema_decay"] = [Finetune], ["save_live_weights"] = [Finetune], ["save_diffusers"] = [DreamBooth, Finetune],
    };

    private static readonly Dictionary<string, IReadOnlyList<string>> ChoicesOf = new(StringComparer.Ordinal)
    {
        ["optimizer"] = TrainingConfig.Optimizers,
        ["lr_scheduler"] = Torch.Optim.LrSchedule.Names,
        ["mixed_precision"] = TrainingConfig.PrecisionChoices.Names,
        ["loss_type"] = TrainingConfig.LossTypeChoices.Names,
        ["huber_schedule"] = TrainingConfig.HuberScheduleChoices.Names,
        ["network_algo"] = TrainingConfig.NetworkAlgoChoices.Names,
    };

    /// <summary>The five methods, each with what it does and when to choose it.</summary>
    public static IReadOnlyList<TrainingMethodInfo> Methods { get; } =
    [
        new(Lora, "LoRA / LoCon", "Small low-rank add-on (a few MB) for a style, character or object; the usual first choice, quick and light on memory (conv_dim adds the convolutions: LoCon)."),
        new(DreamBooth, "DreamBooth", "Retrains the whole UNet on a subject from a few photos, with prior preservation (class images) so the class keeps its look; choose it for a person or product that must be exact."),
        new(TextualInversion, "Textual Inversion", "Learns a new word's embedding only, the model unchanged (a few KB); choose it for a simple object or style the model can nearly draw already."),
        new(Finetune, "Full fine-tune", "Trains every UNet weight on a large captioned dataset (with an EMA); choose it to shift a whole model's style, with thousands of images and plenty of memory."),
        new(Hypernetwork, "Hypernetwork", "A1111's small network on the cross-attention keys and values; choose it for an A1111 workflow that already uses hypernetworks."),
    ];

    /// <summary>Every setting of <see cref="TrainingConfig"/> the form edits: the common ones first, then the advanced ones.</summary>
    public static IReadOnlyList<TrainingSetting> Fields { get; } = MakeFields();

    private static TrainingSetting[] MakeFields()
    {
        var fields = TrainingConfig.Fields.Where(f => !NotFields.Contains(TrainingConfig.FieldName(f))).Select(Describe).ToList();
        return [.. fields.Where(f => f.Common).OrderBy(f => Array.IndexOf(CommonOrder, f.Name)), .. fields.Where(f => !f.Common)];
    }

    private static TrainingSetting Describe(PropertyInfo property)
    {
        var name = TrainingConfig.FieldName(property);
        var underlying = Nullable.GetUnderlyingType(property.PropertyType);
        var type = underlying ?? property.PropertyType;
        var optional = underlying is not null || (type == typeof(string) && new NullabilityInfoContext().Create(property).WriteState == NullabilityState.Nullable);
        var choices = ChoicesOf.GetValueOrDefault(name) ?? [];
        var kind = choices.Count > 0 ? TrainingSettingKind.Choice
            : type == typeof(bool) ? TrainingSettingKind.Switch
            : type == typeof(int) || type == typeof(long) ? TrainingSettingKind.Integer
            : type == typeof(double) ? TrainingSettingKind.Number
            : type == typeof(IReadOnlyList<string>) ? TrainingSettingKind.Lines
            : TrainingSettingKind.Text;
        // A list is edited one item per line here (the CLI separates its items with |).
        var description = kind == TrainingSettingKind.Lines ? TrainingConfig.Description(property).Replace("separated by |", "one per line", StringComparison.Ordinal)
            : TrainingConfig.Description(property);
        return new TrainingSetting(name, description, kind, optional, choices, MethodsOf.GetValueOrDefault(name), CommonOrder.Contains(name));
    }

    /// <summary>The presets of <paramref name="method"/> (<see cref="TrainingPresets"/>), the plainest first (DreamBooth: the object's, without prior preservation).</summary>
    public static IReadOnlyList<string> PresetsFor(string method) =>
        [.. TrainingPresets.All.Where(p => p.Value.GetValueOrDefault("method") == method).OrderBy(p => p.Value.Count).ThenBy(p => p.Key, StringComparer.Ordinal).Select(p => p.Key)];

    /// <summary>The method a preset trains with.</summary>
    public static string MethodOf(string preset) => TrainingPresets.Get(preset).GetValueOrDefault("method") ?? new TrainingConfig().Method;

    /// <summary>The text of every field (<see cref="Fields"/>) for a new run of <paramref name="method"/>: the config's defaults, with <paramref name="preset"/> applied.</summary>
    public static Dictionary<string, string> Defaults(string method, string? preset)
    {
        var texts = Texts(Baseline(method, preset));
        foreach (var (name, text) in FormDefaults) texts[name] = text;
        return texts;
    }

    /// <summary>
    /// Where a run started from the browser differs from the config's defaults (and so from the CLI's): a baseline
    /// sample at step 0, so the run page shows what the base model draws before any training.
    /// </summary>
    private static readonly Dictionary<string, string> FormDefaults = new(StringComparer.Ordinal) { ["sample_at_start"] = "true" };

    /// <summary>
    /// The form's texts when the base model becomes <paramref name="next"/>: <c>resolution</c> is its native size (the
    /// demo model's 64, SD 2.x's 768, SDXL's 1024) unless the user typed another than <paramref name="previous"/>'s
    /// (null: the form is new, the preset's value gives way).
    /// </summary>
    public static Dictionary<string, string> ForModel(IReadOnlyDictionary<string, string> values, ModelEntry? previous, ModelEntry? next)
    {
        ArgumentNullException.ThrowIfNull(values);
        var texts = new Dictionary<string, string>(values, StringComparer.Ordinal);
        if (next is not null && (previous is null || texts.GetValueOrDefault("resolution") == NativeResolution(previous)))
            texts["resolution"] = NativeResolution(next);
        return texts;
    }

    private static string NativeResolution(ModelEntry model) => SizePresets.For(model)[0].Width.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// The form's texts when the method or preset changes: the new method's and preset's defaults, except where the user
    /// changed a setting from the old ones; what they typed is kept.
    /// </summary>
    public static Dictionary<string, string> Rebase(IReadOnlyDictionary<string, string> values, string oldMethod, string? oldPreset, string method, string? preset)
    {
        ArgumentNullException.ThrowIfNull(values);
        var before = Defaults(oldMethod, oldPreset);
        var after = Defaults(method, preset);
        foreach (var (name, text) in values)
            if (after.ContainsKey(name) && text != before.GetValueOrDefault(name)) after[name] = text;
        return after;
    }

    /// <summary>
    /// The training job request of <paramref name="form"/>: its preset, method, model and data, and each field that
    /// applies to the method and differs from the preset's value. A text that is not of its field's type is refused
    /// naming the field (<see cref="TrainingConfigException"/>); the rest is the job's own check at submission.
    /// </summary>
    public static JsonElement Request(TrainingForm form)
    {
        ArgumentNullException.ThrowIfNull(form);
        var baseline = Baseline(form.Method, form.Preset);
        var defaults = Texts(baseline);
        var changed = new Dictionary<string, string>(StringComparer.Ordinal);
        var cleared = new List<string>();
        foreach (var field in Fields)
        {
            if (!field.AppliesTo(form.Method) || !form.Values.TryGetValue(field.Name, out var text)) continue;
            text = field.Kind == TrainingSettingKind.Lines ? string.Join('|', Lines(text)) : text.Trim();
            if (text == Normal(field, defaults.GetValueOrDefault(field.Name, ""))) continue;
            if (text.Length == 0 && field.Optional) cleared.Add(field.Name);
            else changed[field.Name] = text;
        }
        var config = baseline.With(changed);
        var json = JsonSerializer.SerializeToNode(config, TrainingConfig.Json)!.AsObject();
        var request = new JsonObject();
        if (!string.IsNullOrWhiteSpace(form.Preset)) request["preset"] = form.Preset;
        request["method"] = form.Method;
        if (!string.IsNullOrWhiteSpace(form.Model)) request["model"] = form.Model;
        if (!string.IsNullOrWhiteSpace(form.Data)) request["data"] = form.Data;
        foreach (var name in changed.Keys) request[name] = json[name]?.DeepClone();
        foreach (var name in cleared) request[name] = null;
        return JsonSerializer.SerializeToElement(request);
    }

    private static TrainingConfig Baseline(string method, string? preset)
    {
        var config = new TrainingConfig();
        if (!string.IsNullOrWhiteSpace(preset)) config = config.With(TrainingPresets.Get(preset));
        return config with { Method = method };
    }

    private static Dictionary<string, string> Texts(TrainingConfig config)
    {
        var json = JsonSerializer.SerializeToNode(config, TrainingConfig.Json)!.AsObject();
        var texts = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var field in Fields)
            texts[field.Name] = json[field.Name] switch
            {
                null => "",
                JsonArray items => string.Join('\n', items.Select(i => i?.GetValue<string>() ?? "")),
                JsonValue value when value.TryGetValue<double>(out var number) => number.ToString("R", CultureInfo.InvariantCulture),
                JsonValue value when value.TryGetValue<bool>(out var flag) => flag ? "true" : "false",
                var value => value.GetValue<string>(),
            };
        return texts;
    }

    /// <summary>A default as the form's text is compared with it.</summary>
    private static string Normal(TrainingSetting field, string text) => field.Kind == TrainingSettingKind.Lines ? string.Join('|', Lines(text)) : text;

    private static IEnumerable<string> Lines(string text) =>
        text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0);
}
