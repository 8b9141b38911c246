using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// The transformer MLP of Stable Diffusion, as diffusers' <c>FeedForward</c> with
/// <c>activation_fn="geglu"</c>: <c>net.0</c> = GEGLU (dim → inner), <c>net.1</c> = dropout,
/// <c>net.2</c> = Linear(inner → dim), <c>net.3</c> = dropout only with <paramref name="finalDropout"/>.
/// </summary>
public sealed class FeedForward : Module<Tensor, Tensor>
{
    private readonly Geglu geglu;
    private readonly Dropout dropout;
    private readonly Linear output;
    private readonly Dropout? finalDropout;

    public FeedForward(long dim, long? dimOut = null, long mult = 4, double dropout = 0, bool finalDropout = false,
        long? innerDim = null, bool bias = true, ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var inner = innerDim ?? dim * mult;
        geglu = new Geglu(dim, inner, bias, o);
        this.dropout = new Dropout(dropout);
        output = o.Linear(inner, dimOut ?? dim, bias);
        var net = new ModuleList(geglu, this.dropout, output);
        if (finalDropout) net.Append(this.finalDropout = new Dropout(dropout));
        RegisterModule("net", net);
    }

    public override Tensor Forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        var hiddenStates = geglu.Forward(input);
        hiddenStates = dropout.Forward(hiddenStates);
        hiddenStates = output.Forward(hiddenStates);
        if (finalDropout is not null) hiddenStates = finalDropout.Forward(hiddenStates);
        return scope.MoveToOuterScope(hiddenStates);
    }
}

/// <summary>
/// Gated GELU, as diffusers' <c>GEGLU</c>: one projection <c>proj</c> to twice the width, split in
/// halves (value, gate), value · gelu(gate).
/// </summary>
public sealed class Geglu : Module<Tensor, Tensor>
{
    private readonly Linear proj;

    public Geglu(long dimIn, long dimOut, bool bias = true, ModuleOptions? options = null) =>
        proj = RegisterModule("proj", (options ?? ModuleOptions.Default).Linear(dimIn, dimOut * 2, bias));

    public override Tensor Forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        var halves = proj.Forward(input).Chunk(2, -1);
        var (hiddenStates, gate) = (halves[0], halves[1]);
        return scope.MoveToOuterScope(hiddenStates * Functional.Gelu(gate));
    }
}
