using SdAppliance.Models.Blocks;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Unet;


/// <summary>SDXL's extra conditioning: the pooled text embedding and the six size/crop numbers per image.</summary>
/// <param name="TextEmbeds">[B, 1280] pooled output of the second text encoder.</param>
/// <param name="TimeIds">[B, 6] original size (h, w), crop top-left (y, x), target size (h, w).</param>
public sealed record UNetAddedConditions(Tensor TextEmbeds, Tensor TimeIds);

/// <summary>
/// The denoising UNet of Stable Diffusion 1.x, 2.x and SDXL, as diffusers'
/// <c>UNet2DConditionModel</c> with the same module names, so a diffusers state dict loads 1:1:
/// <c>conv_in</c>, <c>time_embedding</c> (over <c>time_proj</c> features), SDXL's
/// <c>add_time_proj</c>/<c>add_embedding</c>, <c>down_blocks</c>, <c>up_blocks</c>,
/// <c>mid_block</c>, <c>conv_norm_out</c>, <c>conv_out</c>.
/// </summary>
public sealed class UNet2DConditionModel : Module
{
    private readonly Conv2d convIn;
    private readonly Timesteps timeProj;
    private readonly TimestepEmbedding timeEmbedding;
    private readonly Timesteps? addTimeProj;
    private readonly TimestepEmbedding? addEmbedding;
    private readonly ModuleList downBlocks;
    private readonly ModuleList upBlocks;
    private readonly IUNetMidBlock? midBlock;
    private readonly GroupNorm convNormOut;
    private readonly Conv2d convOut;

    public UNet2DConditionModel(UNet2DConditionConfig config, ModuleOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var o = options ?? ModuleOptions.Default;
        var channels = config.BlockOutChannels;
        var n = config.NumBlocks;
        var heads = config.HeadsPerBlock;
        var layers = config.LayersPerBlockList;
        var crossDims = config.CrossAttentionDimPerBlock;
        var downDepths = config.DownTransformerDepths;
        var upDepths = config.UpTransformerDepths;
        var onlyCross = config.OnlyCrossAttentionPerBlock;
        var groups = config.NormNumGroups!.Value;
        var upcast = config.UpcastAttention ?? false;
        var act = config.ActFn;
        var timeEmbedDim = config.TimeEmbedDim;

        convIn = RegisterModule("conv_in", o.Conv2d(config.InChannels, channels[0], config.ConvInKernel, padding: (config.ConvInKernel - 1) / 2));
        timeProj = RegisterModule("time_proj", new Timesteps(channels[0], config.FlipSinToCos, config.FreqShift));
        timeEmbedding = RegisterModule("time_embedding", new TimestepEmbedding(channels[0], timeEmbedDim, act,
            condProjDim: config.TimeCondProjDim, options: o));
        if (config.AdditionEmbedType == "text_time")
        {
            addTimeProj = RegisterModule("add_time_proj", new Timesteps(config.AdditionTimeEmbedDim!.Value, config.FlipSinToCos, config.FreqShift));
            addEmbedding = RegisterModule("add_embedding", new TimestepEmbedding(config.ProjectionClassEmbeddingsInputDim!.Value, timeEmbedDim, options: o));
        }

        // diffusers creates both (empty) lists before the mid block: that is the state-dict order.
        downBlocks = RegisterModule("down_blocks", new ModuleList());
        upBlocks = RegisterModule("up_blocks", new ModuleList());

        var outputChannel = channels[0];
        for (var i = 0; i < n; i++)
        {
            var inputChannel = outputChannel;
            outputChannel = channels[i];
            var isFinal = i == n - 1;
            downBlocks.Append(config.DownBlockTypes[i] == "CrossAttnDownBlock2D"
                ? new CrossAttnDownBlock2D(inputChannel, outputChannel, timeEmbedDim, crossDims[i], layers[i], downDepths[i],
                    heads[i], config.Dropout, config.NormEps, act, groups, addDownsample: !isFinal,
                    downsamplePadding: config.DownsamplePadding, useLinearProjection: config.UseLinearProjection,
                    onlyCrossAttention: onlyCross[i], upcastAttention: upcast, options: o)
                : new DownBlock2D(inputChannel, outputChannel, timeEmbedDim, layers[i], config.Dropout, config.NormEps, act, groups,
                    addDownsample: !isFinal, downsamplePadding: config.DownsamplePadding, options: o));
        }

        midBlock = config.MidBlockType switch
        {
            "UNetMidBlock2DCrossAttn" => RegisterModule("mid_block", new UNetMidBlock2DCrossAttn(channels[^1], timeEmbedDim, crossDims[^1],
                transformerLayersPerBlock: config.MidTransformerDepth, numAttentionHeads: heads[^1], dropout: config.Dropout,
                resnetEps: config.NormEps, resnetActFn: act, resnetGroups: groups, outputScaleFactor: config.MidBlockScaleFactor,
                useLinearProjection: config.UseLinearProjection, upcastAttention: upcast, options: o)),
            "UNetMidBlock2D" => RegisterModule("mid_block", new UNetMidBlock2D(channels[^1], timeEmbedDim, numLayers: 0,
                dropout: config.Dropout, resnetEps: config.NormEps, resnetActFn: act, resnetGroups: groups, addAttention: false,
                outputScaleFactor: config.MidBlockScaleFactor, options: o)),
            _ => null,
        };

        var reversedChannels = channels.Reverse().ToArray();
        var reversedHeads = heads.Reverse().ToArray();
        var reversedLayers = layers.Reverse().ToArray();
        var reversedCrossDims = crossDims.Reverse().ToArray();
        var reversedOnlyCross = onlyCross.Reverse().ToArray();
        outputChannel = reversedChannels[0];
        for (var i = 0; i < n; i++)
        {
            var isFinal = i == n - 1;
            var prevOutputChannel = outputChannel;
            outputChannel = reversedChannels[i];
            var inputChannel = reversedChannels[Math.Min(i + 1, n - 1)];
            if (!isFinal) NumUpsamplers++;
            upBlocks.Append(config.UpBlockTypes[i] == "CrossAttnUpBlock2D"
                ? new CrossAttnUpBlock2D(inputChannel, prevOutputChannel, outputChannel, timeEmbedDim, reversedCrossDims[i],
                    reversedLayers[i] + 1, upDepths[i], reversedHeads[i], config.Dropout, config.NormEps, act, groups,
                    addUpsample: !isFinal, useLinearProjection: config.UseLinearProjection,
                    onlyCrossAttention: reversedOnlyCross[i], upcastAttention: upcast, options: o)
                : new UpBlock2D(inputChannel, prevOutputChannel, outputChannel, timeEmbedDim, reversedLayers[i] + 1, config.Dropout,
                    config.NormEps, act, groups, addUpsample: !isFinal, options: o));
        }

        convNormOut = RegisterModule("conv_norm_out", o.GroupNorm(groups, channels[0], config.NormEps));
        convOut = RegisterModule("conv_out", o.Conv2d(channels[0], config.OutChannels, config.ConvOutKernel, padding: (config.ConvOutKernel - 1) / 2));
    }

    public UNet2DConditionConfig Config { get; }

    /// <summary>How many times the up path doubles the resolution; inputs not divisible by 2^this get explicit upsample sizes.</summary>
    public int NumUpsamplers { get; }

    /// <summary>Turns gradient checkpointing on or off in every block (diffusers' <c>enable_gradient_checkpointing</c>).</summary>
    public void EnableGradientCheckpointing(bool enable = true)
    {
        foreach (var m in Modules().OfType<IGradientCheckpointing>()) m.GradientCheckpointing = enable;
    }

    public void DisableGradientCheckpointing() => EnableGradientCheckpointing(false);

    /// <summary>As <see cref="Forward(Tensor, Tensor, Tensor, UNetAddedConditions?, Tensor?, IReadOnlyList{Tensor}?, Tensor?)"/> with one timestep for the whole batch.</summary>
    public Tensor Forward(Tensor sample, double timestep, Tensor encoderHiddenStates, UNetAddedConditions? addedConditions = null,
        Tensor? timestepCond = null, IReadOnlyList<Tensor>? downBlockAdditionalResiduals = null, Tensor? midBlockAdditionalResidual = null)
    {
        using var t = torch.Scalar(timestep, DType.Float64, sample.Device);
        return Forward(sample, t, encoderHiddenStates, addedConditions, timestepCond, downBlockAdditionalResiduals, midBlockAdditionalResidual);
    }

    /// <summary>
    /// Predicts the noise (or v) for <paramref name="sample"/> [B, in, H, W] at
    /// <paramref name="timestep"/> (a scalar tensor or one per batch item) given the text context
    /// <paramref name="encoderHiddenStates"/> [B, S, cross_attention_dim]. SDXL needs
    /// <paramref name="addedConditions"/>. ControlNet residuals, when given, are added to the skip
    /// tensors (one per skip tensor) and to the mid-block output.
    /// </summary>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, UNetAddedConditions? addedConditions = null,
        Tensor? timestepCond = null, IReadOnlyList<Tensor>? downBlockAdditionalResiduals = null, Tensor? midBlockAdditionalResidual = null)
    {
        if (sample.Dim != 4) throw new ArgumentException($"sample must be [B, C, H, W], got {sample.Dim}-D", nameof(sample));
        using var scope = torch.NewDisposeScope();
        // The up path needs explicit sizes when a downsampling rounded an odd size.
        var factor = 1L << NumUpsamplers;
        var forwardUpsampleSize = sample.Size(2) % factor != 0 || sample.Size(3) % factor != 0;

        var emb = TimeEmbedding(sample, timestep, timestepCond, addedConditions);

        if (Config.CenterInputSample) sample = sample * 2 - 1;
        sample = convIn.Forward(sample);

        var downBlockResSamples = new List<Tensor> { sample };
        foreach (var block in downBlocks.Cast<IUNetDownBlock>())
        {
            (sample, var resSamples) = block.Forward(sample, emb, encoderHiddenStates);
            downBlockResSamples.AddRange(resSamples);
        }

        if (downBlockAdditionalResiduals is not null)
        {
            if (downBlockAdditionalResiduals.Count != downBlockResSamples.Count)
                throw new ArgumentException($"{downBlockResSamples.Count} down-block residuals expected, got {downBlockAdditionalResiduals.Count}",
                    nameof(downBlockAdditionalResiduals));
            downBlockResSamples = [.. downBlockResSamples.Zip(downBlockAdditionalResiduals, (resSample, residual) => resSample + residual)];
        }

        if (midBlock is not null) sample = midBlock.Forward(sample, emb, encoderHiddenStates);
        if (midBlockAdditionalResidual is not null) sample = sample + midBlockAdditionalResidual;

        for (var i = 0; i < upBlocks.Count; i++)
        {
            var block = (IUNetUpBlock)upBlocks[i];
            var resSamples = downBlockResSamples[^block.ResnetCount..];
            downBlockResSamples.RemoveRange(downBlockResSamples.Count - block.ResnetCount, block.ResnetCount);
            var upsampleSize = i < upBlocks.Count - 1 && forwardUpsampleSize ? downBlockResSamples[^1].Shape[2..] : null;
            sample = block.Forward(sample, resSamples, emb, encoderHiddenStates, upsampleSize);
        }

        sample = convNormOut.Forward(sample);
        sample = Activation.ApplyOverOwned(Config.ActFn, sample);  // the norm's fresh output
        sample = convOut.Forward(sample);
        return scope.MoveToOuterScope(sample);
    }

    /// <summary>The time embedding [B, time_embed_dim] the blocks receive (plus SDXL's size and pooled-text embedding).</summary>
    private Tensor TimeEmbedding(Tensor sample, Tensor timestep, Tensor? timestepCond, UNetAddedConditions? added)
    {
        var batch = sample.Size(0);
        if (timestep.Device != sample.Device) timestep = timestep.To(sample.Device);
        if (timestep.Dim == 0) timestep = timestep.Unsqueeze(0);
        var tEmb = timeProj.Forward(timestep.Expand(batch));
        // Timesteps computes in float32; the embedding MLP runs in the model's dtype.
        var emb = timeEmbedding.Forward(tEmb.To(sample.DType), timestepCond);
        if (addEmbedding is null) return emb;

        if (added is null)
            throw new ArgumentException("this UNet (addition_embed_type 'text_time', SDXL) needs added conditions: text_embeds and time_ids");
        var timeEmbeds = addTimeProj!.Forward(added.TimeIds.Flatten()).Reshape(added.TextEmbeds.Size(0), -1);
        var addEmbeds = torch.Cat([added.TextEmbeds, timeEmbeds], -1).To(emb.DType);
        return emb + addEmbedding.Forward(addEmbeds);
    }
}
