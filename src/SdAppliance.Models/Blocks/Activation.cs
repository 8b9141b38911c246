using SdAppliance.Torch;

namespace SdAppliance.Models.Blocks;

/// <summary>The activations a diffusers config names (<c>act_fn</c>), as diffusers' <c>get_activation</c>.</summary>
public static class Activation
{
    /// <summary>Throws for a name diffusers does not know, so a bad config fails at construction, not mid-forward.</summary>
    public static string Check(string name) => name switch
    {
        "swish" or "silu" or "mish" or "gelu" or "relu" => name,
        _ => throw new NotSupportedException($"unknown activation function '{name}' (silu, swish, mish, gelu, relu)"),
    };

    /// <summary>
    /// The activation of a tensor its caller owns and that no gradient flows through (a norm's fresh output in inference
    /// or with frozen weights), written over it where the activation has an in-place form: no second full-size tensor
    /// to allocate and write. Otherwise, or when autograd could need the input, a new tensor as <see cref="Apply"/>.
    /// </summary>
    public static Tensor ApplyOverOwned(string name, Tensor owned) =>
        name is "swish" or "silu" && !owned.RequiresGrad ? Functional.Silu_(owned) : Apply(name, owned);

    public static Tensor Apply(string name, Tensor input) => name switch
    {
        "swish" or "silu" => Functional.Silu(input),
        "mish" => Functional.Mish(input),
        "gelu" => Functional.Gelu(input),
        "relu" => Functional.Relu(input),
        _ => throw new NotSupportedException($"unknown activation function '{name}'"),
    };
}
