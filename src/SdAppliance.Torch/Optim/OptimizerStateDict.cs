using SdAppliance.Formats;
using SdAppliance.Torch.Serialization;
using System.Text.Json.Nodes;

namespace SdAppliance.Torch.Optim;

/// <summary>
/// An optimizer's state, split the way it is saved: tensors keyed <c>state.{index}.{name}</c>
/// (for safetensors) and a JSON part (step counts, group hyperparameters). Disposing it frees
/// the tensor handles it holds.
/// </summary>
public sealed class OptimizerStateDict(IReadOnlyDictionary<string, Tensor> tensors, JsonObject json) : IDisposable
{
    public IReadOnlyDictionary<string, Tensor> Tensors { get; } = tensors;

    /// <summary><c>{"optimizer": name, "state": {"0": {"step": n}, ...}, "param_groups": [{hyperparameters..., "params": [ids]}]}</c>.</summary>
    public JsonObject Json { get; } = json;

    private const string JsonKey = "optimizer_state";

    /// <summary>Writes the state to one .safetensors file (tensors, and the JSON part as metadata), atomically.</summary>
    public void Save(string path) =>
        TensorFiles.Save(path, Tensors, new Dictionary<string, string> { [JsonKey] = Json.ToJsonString() });

    /// <summary>Reads a state written by <see cref="Save"/>; pass it to the optimizer's LoadStateDict.</summary>
    public static OptimizerStateDict Load(string path)
    {
        using var file = TensorFile.Open(path);
        if (!file.Metadata.TryGetValue(JsonKey, out var json) || JsonNode.Parse(json) is not JsonObject state)
            throw new InvalidDataException($"'{path}' is not an optimizer state: its metadata has no '{JsonKey}' object");
        return new OptimizerStateDict(file.ReadAll(), state);
    }

    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
    }
}
