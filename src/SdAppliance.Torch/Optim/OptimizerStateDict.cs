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

    public void Dispose()
    {
        foreach (var t in Tensors.Values) t.Dispose();
    }
}
