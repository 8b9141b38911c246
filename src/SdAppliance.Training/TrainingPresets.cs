namespace SdAppliance.Training;

/// <summary>
/// The recipes users follow, by name. A preset fills settings before the config file and the flags,
/// which override it. Sources are in docs/training.md ("Presets").
/// </summary>
public static class TrainingPresets
{
    public static IReadOnlyDictionary<string, Dictionary<string, string>> All { get; } = new Dictionary<string, Dictionary<string, string>>
    {
        // diffusers' DreamBooth study (huggingface.co/blog/dreambooth): objects, batch 4, 400 steps at lr 2e-6.
        ["dreambooth-object"] = new()
        {
            ["method"] = "dreambooth", ["learning_rate"] = "2e-6", ["max_train_steps"] = "400", ["train_batch_size"] = "4",
            ["lr_scheduler"] = "constant",
        },
        // Same study: faces need prior preservation, batch 2, 800-1200 steps at lr 1e-6 (2e-6 also worked).
        ["dreambooth-face"] = new()
        {
            ["method"] = "dreambooth", ["learning_rate"] = "1e-6", ["max_train_steps"] = "1000", ["train_batch_size"] = "2",
            ["prior_loss_weight"] = "1.0", ["num_class_images"] = "200", ["lr_scheduler"] = "constant",
        },
        // kohya sd-scripts' common LoRA starting point: unet lr 1e-4, network_dim 16, network_alpha 8.
        ["lora"] = new()
        {
            ["method"] = "lora", ["learning_rate"] = "1e-4", ["network_dim"] = "16", ["network_alpha"] = "8",
        },
        // A1111's textual-inversion default embedding learning rate: 0.005.
        ["textual-inversion"] = new()
        {
            ["method"] = "textual-inversion", ["learning_rate"] = "5e-3",
        },
    };

    /// <summary>The preset's settings, or an error listing the names.</summary>
    public static Dictionary<string, string> Get(string name) =>
        All.TryGetValue(name, out var preset) ? preset
            : throw new TrainingConfigException($"preset: '{name}' is not one of {string.Join(", ", All.Keys)}");
}
