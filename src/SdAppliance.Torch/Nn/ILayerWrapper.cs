namespace SdAppliance.Torch.Nn;

/// <summary>
/// Wraps a layer's forward without replacing the layer, as kohya's networks replace
/// <c>org_module.forward</c>: the layer keeps its parameters and names (so the model's state dict
/// is unchanged), the wrapper decides what happens around it. A LoRA adds a low-rank branch to
/// the output; a hypernetwork transforms the input. The wrapper's own parameters live in the
/// wrapper, not in the model. ("Adapter" means the add-on networks themselves: LoRA, hypernetwork, embedding.)
/// </summary>
public interface ILayerWrapper
{
    /// <summary>The wrapped output; <paramref name="layer"/> runs the layer itself on any input.</summary>
    Tensor Forward(Tensor input, Func<Tensor, Tensor> layer);
}
