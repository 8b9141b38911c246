using SdAppliance.Formats.Adapters;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Adapters;

/// <summary>
/// A1111's <c>HypernetworkModule</c>: an MLP <c>linear</c> (a Sequential) over a context of width
/// <see cref="Dim"/>, applied as <c>x + linear(x) · multiplier</c> (multiplier 1 in training mode).
/// For each step i of the layer structure: Linear(dim·s[i] → dim·s[i+1]), then the activation (not
/// after the last Linear unless activate_output; none for "linear"), then LayerNorm, then Dropout
/// where the dropout structure says, so the Sequential's indices (<c>linear.0.weight</c>,
/// <c>linear.2.weight</c>…) are A1111's for the same options.
/// </summary>
public sealed class HypernetworkModule : Module<Tensor, Tensor>
{
    private readonly Sequential linear;

    internal HypernetworkModule(long dim, HypernetworkOptions options, IReadOnlyList<double> dropoutStructure, Device device, Generator? generator)
    {
        Dim = dim;
        var s = options.LayerStructure;
        var layers = new List<Module<Tensor, Tensor>>();
        var linears = new List<Linear>();
        for (var i = 0; i < s.Length - 1; i++)
        {
            var fc = new Linear((long)(dim * s[i]), (long)(dim * s[i + 1]), bias: true, device, DType.Float32, generator);
            layers.Add(fc);
            linears.Add(fc);
            var last = i >= s.Length - 2;
            if (options.ActivationFunc != "linear" && (!last || options.ActivateOutput))
                layers.Add(new HypernetworkActivation(options.ActivationFunc));
            if (options.IsLayerNorm)
                layers.Add(new LayerNorm((long)(dim * s[i + 1]), device: device, dtype: DType.Float32));
            if (dropoutStructure[i + 1] > 0)
                layers.Add(new Dropout(dropoutStructure[i + 1]));
        }
        linear = RegisterModule("linear", new Sequential(layers));
        Initialise(options, generator);
    }

    /// <summary>The context width this module applies to (the dict key in the .pt file).</summary>
    public long Dim { get; }

    /// <summary>Set by the owning network; used outside training mode only, as A1111.</summary>
    public double Multiplier { get; set; } = 1;

    // A1111 draws after every layer is built: Normal (and every LayerNorm) N(0, 0.01) weights and
    // N(0, 0) biases, the others zero biases.
    private void Initialise(HypernetworkOptions options, Generator? generator)
    {
        if (Init.IsSkipping) return;
        foreach (var layer in linear)
        {
            if (layer is not (Linear or LayerNorm)) continue;
            var w = layer.GetParameter("weight")!;
            var b = layer.GetParameter("bias")!;
            if (options.WeightInitialization == "Normal" || layer is LayerNorm)
            {
                Init.Normal_(w, 0, 0.01, generator);
                Init.Normal_(b, 0, 0, generator);
                continue;
            }
            var (fanIn, fanOut) = Init.CalculateFanInAndFanOut(w);
            // kaiming_* with nonlinearity relu, or leaky_relu at its default slope 0: both have gain √2.
            switch (options.WeightInitialization)
            {
                case "XavierUniform":
                    var bound = Math.Sqrt(6.0 / (fanIn + fanOut));
                    Init.Uniform_(w, -bound, bound, generator);
                    break;
                case "XavierNormal":
                    Init.Normal_(w, 0, Math.Sqrt(2.0 / (fanIn + fanOut)), generator);
                    break;
                case "KaimingUniform":
                    Init.KaimingUniform_(w, 0, generator);
                    break;
                case "KaimingNormal":
                    Init.Normal_(w, 0, Math.Sqrt(2.0) / Math.Sqrt(fanIn), generator);
                    break;
                default:
                    throw new ArgumentException($"weight_initialization '{options.WeightInitialization}' is not one of Normal, XavierUniform, XavierNormal, KaimingUniform, KaimingNormal");
            }
            Init.Zeros_(b);
        }
    }

    public override Tensor Forward(Tensor input)
    {
        using var mlp = linear.Forward(input);
        var scale = IsTraining ? 1 : Multiplier;
        if (scale == 1) return input.Add(mlp);
        using var scaled = mlp.Mul(scale);
        return input.Add(scaled);
    }

    protected override string ExtraRepr() => $"dim={Dim}";
}

/// <summary>The parameterless activations A1111 accepts by name (its dict plus torch.nn's activation classes, lower-cased).</summary>
internal sealed class HypernetworkActivation : Module<Tensor, Tensor>
{
    private readonly Func<Tensor, Tensor> function;

    public HypernetworkActivation(string name)
    {
        Name = name;
        function = Resolve(name) ?? throw new ArgumentException(
            $"hypernetwork activation_func '{name}' is not supported: use one of {string.Join(", ", HypernetworkOptions.Activations)}", nameof(name));
    }

    public string Name { get; }

    // torch.nn defaults for each: LeakyReLU slope 0.01, ELU/CELU alpha 1, SELU's constants, Softplus
    // beta 1 threshold 20, Hardtanh [-1, 1]; "swish" is A1111's name for Hardswish. Written with the
    // engine's public ops; each has PyTorch's gradient choice at its kinks (x > 0 selects the
    // positive branch).
    private static Func<Tensor, Tensor>? Resolve(string name) => name switch
    {
        "relu" => x => x.Relu(),
        "leakyrelu" => x => Select(x, x.Mul(0.01)),
        "elu" or "celu" => x => Select(x, ExpMinusOne(x)),
        "selu" => x =>
        {
            const double Alpha = 1.6732632423543772848170429916717, Scale = 1.0507009873554804934193349852946;
            using var negative = ExpMinusOne(x);
            using var scaledNegative = negative.Mul(Alpha);
            using var selected = Select(x, scaledNegative);
            return selected.Mul(Scale);
        },
        "swish" or "hardswish" => x =>
        {
            using var gate = HardSigmoid(x);
            return x.Mul(gate);
        },
        "hardsigmoid" => HardSigmoid,
        "hardtanh" => x => x.Clamp(-1, 1),
        "relu6" => x => x.Clamp(0, 6),
        "tanh" => x => x.Tanh(),
        "sigmoid" => x => x.Sigmoid(),
        "gelu" => x => Functional.Gelu(x),
        "silu" => Functional.Silu,
        "mish" => Functional.Mish,
        "softplus" => Softplus,
        "softsign" => x =>
        {
            using var abs = x.Abs();
            using var denominator = abs.Add(1);
            return x.Div(denominator);
        },
        "tanhshrink" => x =>
        {
            using var t = x.Tanh();
            return x.Sub(t);
        },
        "logsigmoid" => x =>
        {
            using var negated = x.Neg();
            using var softplus = Softplus(negated);
            return softplus.Neg();
        },
        _ => null,
    };

    // x where x > 0, otherwise `negative` (which this disposes).
    private static Tensor Select(Tensor x, Tensor negative)
    {
        using (negative)
        using (var positive = x.Gt(0))
            return torch.Where(positive, x, negative);
    }

    // eˣ - 1 for the negative branch, on min(x, 0) so large inputs cannot overflow it.
    private static Tensor ExpMinusOne(Tensor x)
    {
        using var clamped = x.ClampMax(0);
        using var e = clamped.Exp();
        return e.Sub(1);
    }

    private static Tensor HardSigmoid(Tensor x)
    {
        using var shifted = x.Add(3);
        using var clamped = shifted.Clamp(0, 6);
        return clamped.Div(6);
    }

    // softplus(x) = log(1 + eˣ), linear above the threshold 20 as torch's; the exponential sees the
    // clamped input so the unused branch cannot overflow into a NaN gradient.
    private static Tensor Softplus(Tensor x)
    {
        using var clamped = x.ClampMax(20);
        using var e = clamped.Exp();
        using var onePlus = e.Add(1);
        using var soft = onePlus.Log();
        using var large = x.Gt(20);
        return torch.Where(large, x, soft);
    }

    public override Tensor Forward(Tensor input) => function(input);

    protected override string ExtraRepr() => Name;
}
