using System.Globalization;
using SdAppliance.Diffusion.Images;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Imaging;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Pipelines;

/// <param name="LoraFolders">Where <c>&lt;lora:NAME:w&gt;</c> finds <c>NAME.safetensors</c>.</param>
/// <param name="EmbeddingFolders">Textual-inversion embeddings, used when their file name appears in a prompt.</param>
public sealed record AdapterFolders(IReadOnlyList<string> LoraFolders, IReadOnlyList<string> EmbeddingFolders)
{
    public static AdapterFolders None { get; } = new([], []);
}

/// <summary>
/// txt2img and img2img in the order of operations of diffusers' <c>StableDiffusionPipeline</c> (and
/// its SDXL and img2img variants), so that on CPU in float32 a seed reproduces the reference: initial
/// latents from <c>Generator(seed + i)</c>, the stochastic samplers' noise from the same generator,
/// the <c>[uncond, cond]</c> guidance batch, the VAE scaling and NumPy's rounding to uint8. Prompts
/// are read the A1111 way: emphasis, <c>BREAK</c>, 75-token chunks, adapters in angle brackets.
/// </summary>
public sealed class StableDiffusionPipeline
{
    private readonly StableDiffusionModel model;
    private readonly AdapterFolders folders;

    public StableDiffusionPipeline(StableDiffusionModel model, AdapterFolders? folders = null)
    {
        this.model = model;
        this.folders = folders ?? AdapterFolders.None;
    }

    public StableDiffusionModel Model => model;

    /// <summary>The model hash A1111 shows (first 10 hex digits of the file's SHA-256); null leaves it out.</summary>
    public string? ModelHash { get; init; }

    /// <summary>Embeddings to use besides the folder's (a textual inversion being trained); the caller keeps them.</summary>
    public IReadOnlyList<TextualInversionEmbedding> ExtraEmbeddings { get; init; } = [];

    public IReadOnlyList<GeneratedImage> Generate(GenerationRequest request, IProgress<GenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        request.Validate();
        var seed = request.Seed >= 0 ? request.Seed : Random.Shared.NextInt64(0, 4294967295L);
        var (width, height) = Size(request);
        var prompt = PromptAdapters.Extract(request.Prompt);
        var negative = PromptAdapters.Extract(request.NegativePrompt);

        var loras = new List<LoraApplication>();
        try
        {
            foreach (var adapter in prompt.Adapters.Where(a => a.IsLora))
                loras.Add(new LoraApplication(LoraFile.Load(FindLora(adapter.Name)), adapter.Multiplier, adapter.UnetMultiplier));
            foreach (var (path, weight) in request.Loras)
                loras.Add(new LoraApplication(LoraFile.Load(path), weight, weight));
            using var patch = loras.Count == 0 ? null : LoraPatch.Apply(loras, LoraModelNames.Targets(model), loraAlternateNames ??= LoraModelNames.AlternateNames(model.Unet));
            using var embeddings = LoadEmbeddings();
            using var inference = Autograd.InferenceMode();

            var generators = Enumerable.Range(0, request.BatchSize).Select(i => new Generator((ulong)(seed + i))).ToList();
            try
            {
                var images = Sample(request, prompt.Text, negative.Text, embeddings, generators, width, height, progress, cancellationToken);
                return [.. images.Select((image, i) => Finish(image, seed + i, request, width, height))];
            }
            finally
            {
                foreach (var g in generators) g.Dispose();
            }
        }
        finally
        {
            foreach (var lora in loras) lora.File.Dispose();
        }
    }

    private (int Width, int Height) Size(GenerationRequest request)
    {
        var multiple = model.VaeScaleFactor;
        return (Side(nameof(request.Width), request.Width, request.InitImage?.Width), Side(nameof(request.Height), request.Height, request.InitImage?.Height));

        // A side not given is the init image's, else the model's native size.
        int Side(string property, int? given, int? init)
        {
            var size = given ?? init ?? model.DefaultResolution;
            if (size >= multiple && size % multiple == 0) return size;
            if (given is null && init is not null)
                throw new GenerationRequestException("init_image", $"its {property.ToLowerInvariant()}, {size}, is not a multiple of {multiple} (this model's VAE scale)",
                    $"give {GenerationRequest.FieldName(property)} and the image is resized to it");
            throw new GenerationRequestException(GenerationRequest.FieldName(property), $"must be a positive multiple of {multiple} (this model's VAE works on multiples of {multiple} pixels), got {size}");
        }
    }

    private string FindLora(string name)
    {
        foreach (var folder in folders.LoraFolders)
            foreach (var ext in new[] { ".safetensors" })
            {
                var file = Path.Combine(folder, name + ext);
                if (File.Exists(file)) return file;
            }
        throw new GenerationRequestException(GenerationRequest.FieldName(nameof(GenerationRequest.Prompt)), folders.LoraFolders.Count == 0
            ? $"names <lora:{name}>, but no LoRA folder is configured"
            : $"names <lora:{name}>, but {name}.safetensors is in none of: {string.Join(", ", folders.LoraFolders)}",
            folders.LoraFolders.Count == 0 ? "give the file in loras instead" : null);
    }

    // The UNet's original-layout names, worked out at the first LoRA and kept: the model does not change shape.
    private Func<LoraTarget, string, string?>? loraAlternateNames;

    private EmbeddingLibrary LoadEmbeddings()
    {
        var library = new EmbeddingLibrary(model.Tokenizer);
        foreach (var extra in ExtraEmbeddings) library.Add(extra, owns: false);
        foreach (var folder in folders.EmbeddingFolders)
            foreach (var file in Directory.Exists(folder) ? Directory.EnumerateFiles(folder).Where(IsEmbeddingFile).Order(StringComparer.Ordinal) : Enumerable.Empty<string>())
            {
                var embedding = TextualInversionEmbedding.Load(file);
                if (embedding.Vectors.Size(1) != model.TextEncoder.Config.HiddenSize || (model.IsSdxl && embedding.Vectors2 is null))
                    embedding.Dispose();  // made for another model family: A1111 lists these as skipped
                else
                    library.Add(embedding);
            }
        return library;
    }

    private static bool IsEmbeddingFile(string file) => Path.GetExtension(file).ToLowerInvariant() is ".safetensors" or ".pt" or ".bin";

    // ---- the sampling loop ----
    private List<RgbImage> Sample(GenerationRequest request, string prompt, string negative, EmbeddingLibrary embeddings,
        List<Generator> generators, int width, int height, IProgress<GenerationProgress>? progress, CancellationToken cancellationToken)
    {
        using var scope = torch.NewDisposeScope();
        var batch = request.BatchSize;
        var guided = request.CfgScale > 1;
        var (cond, uncond) = EncodePrompts(prompt, negative, embeddings, request.ClipSkip);
        var condBatch = Repeat(cond.PromptEmbeds, batch);
        var embeds = guided ? torch.Cat([Repeat(uncond.PromptEmbeds, batch), condBatch]) : condBatch;
        var added = AddedConditions(cond, uncond, batch, width, height, guided);

        using var scheduler = SchedulerRegistry.Create(request.Sampler, SchedulerConfig.FromJson(model.SchedulerConfig.ToJsonString()));
        scheduler.SetTimesteps(request.Steps, model.Device);
        var timesteps = scheduler.TimestepValues;
        var noise = NoiseSource.FromGenerators(generators);
        var latentShape = new long[] { batch, model.Unet.Config.InChannels, height / model.VaeScaleFactor, width / model.VaeScaleFactor };

        Tensor latents;
        var start = 0;
        if (request.InitImage is { } init)
        {
            // diffusers' img2img: skip the first (1 - strength) of the schedule, noise the encoded image to where it starts.
            var initSteps = Math.Min((int)(request.Steps * request.Strength), request.Steps);
            start = Math.Max(request.Steps - initSteps, 0) * scheduler.Order;
            scheduler.SetBeginIndex(start);
            var initLatents = EncodeImage(init, width, height, batch, noise);
            var startNoise = noise.Randn(latentShape, model.DType, model.Device);
            using var t0 = torch.Full([batch], timesteps[start], DType.Float32, model.Device);
            latents = scheduler.AddNoise(initLatents, startNoise, t0);
        }
        else
        {
            latents = noise.Randn(latentShape, model.DType, model.Device).Mul(scheduler.InitNoiseSigma);
        }
        latents.DetachFromDisposeScope();

        for (var i = start; i < timesteps.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var stepScope = torch.NewDisposeScope();
            var t = timesteps[i];
            var input = guided ? torch.Cat([latents, latents]) : latents;
            var scaled = scheduler.ScaleModelInput(input, t);
            var prediction = model.Unet.Forward(scaled, t, embeds, added);
            if (guided)
            {
                var halves = prediction.Chunk(2);
                prediction = halves[0] + (halves[1] - halves[0]) * request.CfgScale;
            }
            var next = scheduler.Step(prediction, t, latents, noise).PrevSample.DetachFromDisposeScope();
            latents.Dispose();
            latents = next;
            progress?.Report(new GenerationProgress(i - start + 1, timesteps.Count - start));
        }

        var decoded = model.Vae.Decode(latents.Div(model.Vae.Config.ScalingFactor));
        latents.Dispose();
        return [.. ImageTensors.ToImages(decoded)];
    }

    private static Tensor Repeat(Tensor t, int batch) => batch == 1 ? t : t.Repeat([batch, .. Enumerable.Repeat(1L, t.Dim - 1)]);

    private Tensor EncodeImage(RgbImage init, int width, int height, int batch, NoiseSource noise)
    {
        var resized = init.Width == width && init.Height == height ? init : ImageTensors.Resize(init, width, height);
        var pixels = ImageTensors.ToTensor(resized, model.Device).To(model.DType);
        using var posterior = model.Vae.Encode(Repeat(pixels, batch));
        var draw = noise.Randn(posterior.Mean.Shape, model.DType, model.Device);
        return posterior.Sample(draw).Mul(model.Vae.Config.ScalingFactor);
    }

    /// <summary>Encodes prompt and negative prompt to the same number of chunks (the shorter padded with empty chunks, as A1111).</summary>
    private (TextConditioning Cond, TextConditioning Uncond) EncodePrompts(string prompt, string negative, EmbeddingLibrary embeddings, int clipSkip)
    {
        var encoded = new PromptConditioner(model, embeddings).Encode([prompt, negative], clipSkip);
        if (model.IsSdxl && string.IsNullOrWhiteSpace(negative))
        {
            // diffusers' force_zeros_for_empty_prompt for SDXL
            var c = encoded[0];
            encoded[1].Dispose();
            return (c, new TextConditioning(torch.ZerosLike(c.PromptEmbeds), c.PooledPromptEmbeds is null ? null : torch.ZerosLike(c.PooledPromptEmbeds)));
        }
        return (encoded[0], encoded[1]);
    }

    /// <summary>SDXL's micro-conditioning: pooled text embeddings and (original size, crop, target size) = (H, W, 0, 0, H, W).</summary>
    private UNetAddedConditions? AddedConditions(TextConditioning cond, TextConditioning uncond, int batch, int width, int height, bool guided)
    {
        if (!model.IsSdxl) return null;
        var pooled = Repeat(cond.PooledPromptEmbeds!, batch);
        if (guided) pooled = torch.Cat([Repeat(uncond.PooledPromptEmbeds!, batch), pooled]);
        var rows = guided ? 2 * batch : batch;
        var ids = Enumerable.Range(0, rows).SelectMany(_ => new float[] { height, width, 0, 0, height, width }).ToArray();
        var timeIds = torch.Tensor(ids, rows, 6).To(model.Device, model.DType);
        return new UNetAddedConditions(pooled, timeIds);
    }

    // ---- PNG info ----
    private GeneratedImage Finish(RgbImage image, long seed, GenerationRequest request, int width, int height)
    {
        var p = new A1111Parameters { Prompt = request.Prompt, NegativePrompt = request.NegativePrompt };
        p.Add("Steps", request.Steps.ToString(CultureInfo.InvariantCulture));
        p.Add("Sampler", SchedulerRegistry.TryFind(request.Sampler, out var info) ? info.DisplayName : request.Sampler);
        p.Add("CFG scale", A1111Parameters.FormatFloat(request.CfgScale));
        p.Add("Seed", seed.ToString(CultureInfo.InvariantCulture));
        p.Add("Size", $"{width}x{height}");
        if (ModelHash is not null) p.Add("Model hash", ModelHash);
        p.Add("Model", model.Name);
        if (request.InitImage is not null) p.Add("Denoising strength", A1111Parameters.FormatFloat(request.Strength));
        if (request.ClipSkip > 1) p.Add("Clip skip", request.ClipSkip.ToString(CultureInfo.InvariantCulture));
        p.Add("Version", "SdAppliance");
        var text = p.ToString();
        image.Text["parameters"] = text;
        return new GeneratedImage(image, seed, text);
    }
}
