using System.Text.Json.Nodes;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Blocks;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Training.Exports;

/// <summary>
/// Whole-model results of training: a LoRA merged into the weights for good, and the model written as
/// an original-layout single file (what A1111 and ComfyUI load from models/Stable-diffusion) or as a
/// diffusers folder. Both load back through <see cref="ModelLoader"/>.
/// </summary>
public static class ModelExport
{
    /// <summary>
    /// Adds <c>weight · alpha/rank · up·down</c> of every module of the LoRA file to the matching
    /// weight of the model, permanently (unlike <see cref="LoraPatch"/>, nothing is kept to undo it).
    /// The arithmetic is LoraPatch's, so the merged model generates exactly what a patched one does.
    /// Names are matched as the generation path matches them, plus the original-layout UNet names
    /// (kohya's SDXL naming). A file that matches no layer at all is refused before anything changes.
    /// </summary>
    public static LoraMergeResult MergeLora(StableDiffusionModel model, string loraFilePath, double weight)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var file = LoraFile.Load(loraFilePath);
        return LoraPatch.MergePermanently(file, weight, LoraModelNames.Targets(model), LoraModelNames.AlternateNames(model.Unet));
    }

    /// <summary>
    /// The model as one original-layout <c>.safetensors</c> (<c>model.diffusion_model.</c>,
    /// <c>first_stage_model.</c>, <c>cond_stage_model.</c>/<c>conditioner.</c>), through
    /// <see cref="LdmKeyMap.FromDiffusers"/> and the converter's writer (<see cref="ModelWriter"/>);
    /// <paramref name="half"/> writes every floating tensor as float16, as diffusers' converter's
    /// <c>--half</c>. Streamed one tensor at a time, written atomically.
    /// </summary>
    public static void SaveSingleFile(StableDiffusionModel model, string path, bool half)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(path);
        var states = StateDicts(model);
        try
        {
            var tensors = Tensors(states, half);
            var mapping = LdmKeyMap.FromDiffusers(tensors.ToDictionary(t => t.Key, t => t.Shape.ToArray()), model.Family);
            if (mapping.Unmapped.Count > 0)
                throw new InvalidOperationException($"the model has tensors the single-file layout has no place for: {string.Join(", ", mapping.Unmapped.Take(5))}");
            ModelWriter.WriteSingleFile(path, ModelFormat.Safetensors, ModelWriter.Remap(mapping, tensors));
        }
        finally
        {
            foreach (var state in states.Values) state.Dispose();
        }
    }

    /// <summary>
    /// The model as a diffusers folder, written by the converter's writer (<see cref="ModelWriter"/>) and
    /// replacing <paramref name="folder"/> as a whole: model_index.json, unet/, vae/, text_encoder/ (and
    /// SDXL's text_encoder_2/, tokenizer_2/), tokenizer/, scheduler/, with config.json files from the
    /// loaded configs and weights as <c>.safetensors</c> (float16 with <paramref name="half"/>).
    /// </summary>
    public static void SaveDiffusersFolder(StableDiffusionModel model, string folder, bool half)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(folder);
        var configs = ComponentConfigs.Of(model);
        // Each text encoder's tokenizer: text_encoder's is tokenizer, text_encoder_2's tokenizer_2.
        var tokenizers = model.TextEncoders.Select(e => e.Component.Replace("text_encoder", "tokenizer", StringComparison.Ordinal)).ToDictionary(
            sub => sub, sub => TokenizerLocator.Find(model.SourcePath, "clip", ModelLoader.SearchRoots(new ModelLoadOptions()), sub), StringComparer.Ordinal);

        var states = StateDicts(model);
        try
        {
            ModelWriter.WriteDiffusersFolder(folder, new DiffusersFolderContent(
                Tensors(states, half), configs, model.SchedulerConfig.DeepClone().AsObject(), tokenizers, model.Family));
        }
        finally
        {
            foreach (var state in states.Values) state.Dispose();
        }
    }

    private static Dictionary<string, StateDict> StateDicts(StableDiffusionModel model)
    {
        var components = new List<(string Name, Module Module)>
        {
            (ModelComponents.Unet, model.Unet),
            (ModelComponents.Vae, model.Vae),
        };
        components.AddRange(model.TextEncoders.Select(e => (e.Component, (Module)e.Encoder)));
        return components.ToDictionary(c => c.Name, c => c.Module.StateDict());
    }

    /// <summary>The components' tensors as the writer takes them, each copied to the host (as float16 with <paramref name="half"/>) when it is written.</summary>
    private static List<ModelTensor> Tensors(Dictionary<string, StateDict> states, bool half) =>
        [.. states.SelectMany(component => component.Value.Select(kv =>
        {
            var dtype = Stored(kv.Value.DType, half);
            return new ModelTensor(new TensorKey(component.Key, kv.Key), TensorFiles.ToSafetensors(dtype, kv.Key), kv.Value.Shape, () => HostBytes(kv.Value, dtype));
        }))];

    private static DType Stored(DType dtype, bool half) => half && dtype.IsFloatingPoint() ? DType.Float16 : dtype;

    private static byte[] HostBytes(Tensor tensor, DType dtype)
    {
        if (tensor.DType == dtype && tensor.Device.Type == DeviceType.Cpu) return tensor.ToBytes();
        using var converted = tensor.To(Device.Cpu, dtype);
        return converted.ToBytes();
    }
}
