namespace SdAppliance.Torch.Nn;

/// <summary>Zeroes elements with probability p and scales the rest by 1/(1-p) in training mode; the identity in eval mode.</summary>
public sealed class Dropout : Module<Tensor, Tensor>
{
    public Dropout(double p = 0.5)
    {
        if (p is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability has to be between 0 and 1");
        P = p;
    }

    public double P { get; }

    public override Tensor Forward(Tensor input) => Functional.Dropout(input, P, IsTraining);

    protected override string ExtraRepr() => $"p={P:R}, inplace=False";
}
