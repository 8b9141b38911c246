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

    public static Tensor Apply(string name, Tensor input) => name switch
    {
        "swish" or "silu" => Functional.Silu(input),
        "mish" => Functional.Mish(input),
        "gelu" => Functional.Gelu(input),
        "relu" => Functional.Relu(input),
        _ => throw new NotSupportedException($"unknown activation function '{name}'"),
    };
}
