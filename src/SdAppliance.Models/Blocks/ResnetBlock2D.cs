using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Blocks;

/// <summary>
/// The residual block of the UNet and the VAE, as diffusers' <c>ResnetBlock2D</c> with
/// <c>time_embedding_norm="default"</c>: norm1 → act → conv1 (+ time_emb_proj(act(temb))) → norm2
/// → act → dropout → conv2, added to the input (through a 1×1 <c>conv_shortcut</c> when the
/// channel count changes) and divided by <c>output_scale_factor</c>.
/// </summary>
public sealed class ResnetBlock2D : Module
{
    private readonly GroupNorm norm1;
    private readonly Conv2d conv1;
    private readonly Linear? timeEmbProj;
    private readonly GroupNorm norm2;
    private readonly Dropout dropout;
    private readonly Conv2d conv2;
    private readonly Conv2d? convShortcut;

    /// <param name="tembChannels">Width of the time embedding; null for none (the VAE).</param>
    /// <param name="groupsOut">Groups of norm2; defaults to <paramref name="groups"/>.</param>
    /// <param name="nonLinearity">Activation name (diffusers' <c>non_linearity</c>).</param>
    /// <param name="skipTimeAct">Feed temb to time_emb_proj without the activation.</param>
    /// <param name="useInShortcut">Force the 1×1 shortcut on or off; by default it exists when the channels change.</param>
    public ResnetBlock2D(long inChannels, long? outChannels = null, long? tembChannels = 512, long groups = 32,
        long? groupsOut = null, double eps = 1e-6, double dropout = 0, string nonLinearity = "swish",
        bool skipTimeAct = false, double outputScaleFactor = 1.0, bool? useInShortcut = null, bool convShortcutBias = true,
        ModuleOptions? options = null)
    {
        var o = options ?? ModuleOptions.Default;
        var outCh = outChannels ?? inChannels;
        InChannels = inChannels;
        OutChannels = outCh;
        NonLinearity = Activation.Check(nonLinearity);
        SkipTimeAct = skipTimeAct;
        OutputScaleFactor = outputScaleFactor;
        norm1 = RegisterModule("norm1", o.GroupNorm(groups, inChannels, eps));
        conv1 = RegisterModule("conv1", o.Conv2d(inChannels, outCh, 3, padding: 1));
        if (tembChannels is { } temb) timeEmbProj = RegisterModule("time_emb_proj", o.Linear(temb, outCh));
        norm2 = RegisterModule("norm2", o.GroupNorm(groupsOut ?? groups, outCh, eps));
        this.dropout = RegisterModule("dropout", new Dropout(dropout));
        conv2 = RegisterModule("conv2", o.Conv2d(outCh, outCh, 3, padding: 1));
        if (useInShortcut ?? inChannels != outCh)
            convShortcut = RegisterModule("conv_shortcut", o.Conv2d(inChannels, outCh, 1, bias: convShortcutBias));
    }

    public long InChannels { get; }
    public long OutChannels { get; }
    public string NonLinearity { get; }
    public bool SkipTimeAct { get; }
    public double OutputScaleFactor { get; }

    /// <summary>[B, in, H, W] and the time embedding [B, temb] (or null) → [B, out, H, W].</summary>
    public Tensor Forward(Tensor input, Tensor? temb = null)
    {
        using var scope = torch.NewDisposeScope();
        Tensor Act(Tensor x) => Activation.Apply(NonLinearity, x);
        // After a norm the chain owns its input, the norm's fresh output: without a gradient through it, in place.
        Tensor ActAfterNorm(Tensor x) => Activation.ApplyOverOwned(NonLinearity, x);
        Tensor? timeEmb = null;
        if (timeEmbProj is not null && temb is not null)
        {
            timeEmb = timeEmbProj.Forward(SkipTimeAct ? temb : Act(temb));
            timeEmb = timeEmb.Unflatten(1, timeEmb.Size(1), 1, 1);
        }

        // One chain, so each full-size activation is freed once the next exists (the input is the caller's).
        var hiddenStates = Chain(input, norm1.Forward, ActAfterNorm, conv1.Forward, timeEmb is null ? null : h => h + timeEmb,
            norm2.Forward, ActAfterNorm, dropout.Forward, conv2.Forward);

        var shortcut = convShortcut is null ? input : convShortcut.Forward(input.Contiguous());
        // The sum goes over conv2's fresh output where no gradient flows through either (the same bits: IEEE addition
        // commutes), instead of into a third full-size tensor.
        var overHidden = !hiddenStates.RequiresGrad && !shortcut.RequiresGrad && hiddenStates.DType == shortcut.DType
            && hiddenStates.Shape.AsSpan().SequenceEqual(shortcut.Shape);
        var output = overHidden ? hiddenStates.Add_(shortcut) : shortcut + hiddenStates;
        if (OutputScaleFactor != 1) output = output / OutputScaleFactor;
        return scope.MoveToOuterScope(output);
    }
}
