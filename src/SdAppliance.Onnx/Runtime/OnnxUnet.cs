using Microsoft.ML.OnnxRuntime;
using SdAppliance.Formats;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Runtime;

/// <summary>
/// An exported UNet: <c>sample</c>, <c>timestep</c>, <c>encoder_hidden_states</c> (SDXL: <c>text_embeds</c>,
/// <c>time_ids</c>; an LCM: <c>timestep_cond</c>) → <c>out_sample</c>, in the element types and ranks the graph declares (timestep rank 0 for optimum,
/// [1] for OnnxStack, [batch] for diffusers' script; float32, float16 or int64). One IO binding serves the whole
/// denoising loop: the timestep lives in one small buffer rewritten each step, the conditioning (the same tensors every
/// step) stays bound, the sample is bound over the scheduler's tensor and the prediction written straight into a tensor
/// allocated for it, so no step copies a latent (except to cast it for an fp16 graph).
/// </summary>
internal sealed class OnnxUnet : IDisposable
{
    private readonly OnnxSession session;
    private readonly OrtIoBinding binding;
    private readonly DType sampleType, timestepType;
    private readonly int timestepRank;
    private readonly long? timestepLength;
    private readonly string output;
    private readonly DType outputType;
    private readonly Dictionary<string, BoundTensor> steady = new(StringComparer.Ordinal);
    private Tensor? timestepBuffer;
    private OrtValue? timestepValue;

    public OnnxUnet(OnnxSession session)
    {
        this.session = session;
        session.RequireInput("sample", "the noisy latents");
        session.RequireInput("timestep", "the timestep");
        session.RequireInput("encoder_hidden_states", "the text conditioning");
        sampleType = session.InputDType("sample");
        timestepType = session.InputDType("timestep");
        var timestepDims = session.Inputs["timestep"].Dimensions;
        timestepRank = timestepDims.Length;
        if (timestepRank > 1)
            throw new UserInputException(session.Path, $"takes a timestep of rank {timestepRank}; exports take a scalar, [1] or [batch]", "export the model again (convert it to ONNX)");
        timestepLength = timestepRank == 1 ? session.FixedDim("timestep", 0) : null;
        IsSdxl = session.HasInput("text_embeds") || session.HasInput("time_ids");
        if (IsSdxl)
        {
            session.RequireInput("text_embeds", "SDXL's pooled text embedding");
            session.RequireInput("time_ids", "SDXL's size conditioning");
        }
        if (session.HasInput("timestep_cond"))
            TimeCondProjDim = (int)(session.FixedDim("timestep_cond", 1)
                ?? throw new UserInputException(session.Path, "takes a timestep_cond whose width is not fixed; the guidance embedding needs it", "export the model again (convert it to ONNX)"));
        output = session.RequireOutput("the noise prediction", "out_sample");
        outputType = session.OutputDType(output);
        binding = session.CreateBinding();
    }

    public string Path => session.Path;
    public bool IsSdxl { get; }

    /// <summary>The width of the guidance embedding the graph takes as <c>timestep_cond</c> (LCM); null when it takes none.</summary>
    public int? TimeCondProjDim { get; }

    /// <summary>The latent channels the graph fixes (4); null when symbolic.</summary>
    public long? LatentChannels => session.FixedDim("sample", 1);

    /// <summary>The latent height the graph fixes (a static export); null when symbolic.</summary>
    public long? FixedLatentHeight => session.FixedDim("sample", 2);

    /// <summary>The width of the text conditioning (768 SD 1.x, 1024 SD 2.x, 2048 SDXL); null when symbolic.</summary>
    public long? CrossAttentionDim => session.FixedDim("encoder_hidden_states", 2);

    public Tensor Predict(Tensor sample, double timestep, Tensor encoderHiddenStates, UNetAddedConditions? added, Tensor? timestepCond = null)
    {
        var batch = sample.Size(0);
        using var sampleInput = OnnxSession.AsInput(sample, sampleType);
        using var sampleValue = OnnxSession.Over(sampleInput);
        binding.BindInput("sample", sampleValue);
        BindTimestep(timestep, batch);
        BindSteady("encoder_hidden_states", encoderHiddenStates);
        if (IsSdxl)
        {
            if (added is null)
                throw new ArgumentException($"{Path} is an SDXL UNet: it needs the pooled text embeddings and time ids", nameof(added));
            BindSteady("text_embeds", added.TextEmbeds);
            BindSteady("time_ids", added.TimeIds);
        }
        if (TimeCondProjDim is not null)
            BindSteady("timestep_cond", timestepCond ?? throw new ArgumentException($"{Path} takes a guidance embedding (timestep_cond)", nameof(timestepCond)));
        // A fresh tensor per step, written in place by ONNX Runtime: schedulers keep earlier predictions (PNDM, the
        // multistep solvers), so one buffer reused across steps would change them under their feet.
        var prediction = torch.Empty(sample.Shape, outputType);
        try
        {
            using (var predictionValue = OnnxSession.Over(prediction))
            {
                binding.BindOutput(output, predictionValue);
                session.Run(binding);
            }
            if (outputType == DType.Float32) return prediction;
            using (prediction) return prediction.To(DType.Float32);
        }
        catch
        {
            prediction.Dispose();
            throw;
        }
    }

    // Integer timesteps round: the samplers' fractional ones (Karras sigmas) cannot be passed to an int64 graph.
    private void BindTimestep(double timestep, long batch)
    {
        long[] shape = timestepRank == 0 ? [] : [timestepLength ?? batch];
        if (timestepBuffer is null || !timestepBuffer.Shape.SequenceEqual(shape))
        {
            timestepValue?.Dispose();
            timestepBuffer?.Dispose();
            // Kept across steps: out of the caller's dispose scope.
            timestepBuffer = torch.Empty(shape, timestepType).DetachFromDisposeScope();
            timestepValue = OnnxSession.Over(timestepBuffer);
            binding.BindInput("timestep", timestepValue);
        }
        timestepBuffer.Fill_(timestepType is DType.Int64 or DType.Int32 ? Math.Round(timestep) : timestep);
    }

    /// <summary>
    /// Binds an input that stays the same over the loop once: while the caller passes the same tensor (its memory and
    /// shape), the binding made at the first step stands. The tensor is held, so its memory cannot be another's meanwhile.
    /// </summary>
    private void BindSteady(string name, Tensor tensor)
    {
        if (steady.TryGetValue(name, out var bound) && bound.Source.DataPointer == tensor.DataPointer && bound.Source.Shape.SequenceEqual(tensor.Shape)
            && bound.Source.DType == tensor.DType)
            return;
        bound?.Dispose();
        var source = tensor.Alias().DetachFromDisposeScope();
        var input = OnnxSession.AsInput(tensor, session.InputDType(name)).DetachFromDisposeScope();
        var value = OnnxSession.Over(input);
        steady[name] = new BoundTensor(source, input, value);
        binding.BindInput(name, value);
    }

    public void Dispose()
    {
        foreach (var b in steady.Values) b.Dispose();
        timestepValue?.Dispose();
        timestepBuffer?.Dispose();
        binding.Dispose();
        session.Dispose();
    }

    private sealed record BoundTensor(Tensor Source, Tensor Input, OrtValue Value) : IDisposable
    {
        public void Dispose()
        {
            Value.Dispose();
            Input.Dispose();
            Source.Dispose();
        }
    }
}
