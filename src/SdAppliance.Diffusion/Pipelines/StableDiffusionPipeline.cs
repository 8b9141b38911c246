using System.Globalization;
using SdAppliance.Diffusion.Images;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Tokenization;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Pipelines;

/// <param name="LoraFolders">Where <c>&lt;lora:NAME:w&gt;</c> finds <c>NAME.safetensors</c>.</param>
/// <param name="EmbeddingFolders">Textual-inversion embeddings, used when their file name appears in a prompt.</param>
/// <param name="HypernetworkFolders">Where <c>&lt;hypernet:NAME:w&gt;</c> finds <c>NAME.pt</c>.</param>
public sealed record AdapterFolders(IReadOnlyList<string> LoraFolders, IReadOnlyList<string> EmbeddingFolders, IReadOnlyList<string>? HypernetworkFolders = null)
{
    public static AdapterFolders None { get; } = new([], []);
}

/// <summary>
/// txt2img and img2img in the order of operations of diffusers' <c>StableDiffusionPipeline</c> (and
/// its SDXL and img2img variants), so that on CPU in float32 a seed reproduces the reference: initial
/// latents from <c>Generator(seed + i)</c>, the stochastic samplers' noise from the same generator,
/// the <c>[uncond, cond]</c> guidance batch, the VAE scaling and NumPy's rounding to uint8. Prompts
/// are read the A1111 way: emphasis, <c>BREAK</c>, 75-token chunks, adapters in angle brackets. What it
/// cannot apply it leaves out and reports in <see cref="GenerationResult.Warnings"/> (and the PNG info).
/// </summary>
public sealed class StableDiffusionPipeline
{
    private readonly IDiffusionModel model;
    private readonly AdapterFolders folders;

    /// <summary>A pipeline over <paramref name="model"/>: libtorch's modules, or an ONNX export (which takes no LoRA or hypernetwork at run time).</summary>
    public StableDiffusionPipeline(IDiffusionModel model, AdapterFolders? folders = null)
    {
        this.model = model;
        this.folders = folders ?? AdapterFolders.None;
    }

    public IDiffusionModel Model => model;

    /// <summary>
    /// The SDXL refiner a request with <see cref="GenerationRequest.RefinerSwitchAt"/> hands off to: it continues the model's
    /// latents with its own text encoder, UNet and scheduler, and its VAE decodes the result. Adapters apply to the model only.
    /// </summary>
    public IDiffusionModel? Refiner { get; init; }

    /// <summary>The refiner's A1111 model hash, for the PNG info's <c>Refiner: name [hash]</c>; null leaves the brackets out.</summary>
    public string? RefinerHash { get; init; }

    /// <summary>The model hash A1111 shows (first 10 hex digits of the file's SHA-256); null leaves it out.</summary>
    public string? ModelHash { get; init; }

    /// <summary>Embeddings to use besides the folder's (a textual inversion being trained); the caller keeps them.</summary>
    public IReadOnlyList<TextualInversionEmbedding> ExtraEmbeddings { get; init; } = [];

    public GenerationResult Generate(GenerationRequest request, IProgress<GenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        request.Validate();
        request.CheckMicroConditioningApplies(model.IsSdxl, model.Name);
        var seed = request.Seed >= 0 ? request.Seed : Random.Shared.NextInt64(0, 4294967295L);
        var (width, height) = Size(request);
        var prompt = ExtraNetworkTags.Extract(request.Prompt);
        var negative = ExtraNetworkTags.Extract(request.NegativePrompt);
        var warnings = new List<AdapterWarning>();
        foreach (var tag in negative.Tags)
            warnings.Add(new AdapterWarning(tag.Kind, tag.Name, "tags in the negative prompt are not applied; it was left out"));
        foreach (var tag in prompt.Tags.Where(t => !t.IsLora && t.Kind != ExtraNetworkTag.Hypernetwork))
            warnings.Add(new AdapterWarning(tag.Kind, tag.Name, $"'{tag.Kind}' is not an adapter kind we apply (lora, lyco, hypernet); the tag was left out"));

        var loras = new List<LoraApplication>();
        var hypernetworks = new List<Hypernetwork>();
        try
        {
            var torchModel = model as StableDiffusionModel;
            if (torchModel is null) RefuseRuntimeAdapters(prompt.Tags, request);
            foreach (var tag in prompt.Tags.Where(a => a.IsLora))
                loras.Add(new LoraApplication(LoraFile.Load(FindLora(tag.Name)), tag.Multiplier, tag.UnetMultiplier));
            foreach (var (path, weight) in request.Loras)
                loras.Add(new LoraApplication(LoraFile.Load(path), weight, weight));
            using var patch = loras.Count == 0 ? null : LoraPatch.Apply(loras, LoraModelNames.Targets(torchModel!), loraAlternateNames ??= LoraModelNames.AlternateNames(torchModel!.Unet));
            if (patch is not null) warnings.AddRange(UnmatchedLoras(loras, patch));
            foreach (var tag in prompt.Tags.Where(t => t.Kind == ExtraNetworkTag.Hypernetwork))
                AttachHypernetwork(tag, hypernetworks, warnings);
            using var embeddings = LoadEmbeddings(prompt.Text, warnings);
            using var inference = Autograd.InferenceMode();

            var generators = Enumerable.Range(0, request.BatchSize).Select(i => new Generator((ulong)(seed + i))).ToList();
            try
            {
                var images = Sample(request, prompt.Text, negative.Text, embeddings.Library, generators, width, height, progress, cancellationToken);
                var info = new Infotext(request, model, ModelHash, width, height, loras, embeddings, warnings, Refiner is null ? null : (Refiner, RefinerHash));
                return new GenerationResult([.. images.Select((image, i) => Finish(image, seed + i, info))], warnings);
            }
            finally
            {
                foreach (var g in generators) g.Dispose();
            }
        }
        finally
        {
            // Detached last-attached first: a network chains onto the ones attached before it.
            for (var i = hypernetworks.Count - 1; i >= 0; i--) hypernetworks[i].Dispose();
            foreach (var lora in loras) lora.File.Dispose();
        }
    }

    /// <summary>
    /// An exported model's weights are fixed in its graph: a LoRA or hypernetwork asked for at run time cannot be applied,
    /// and leaving it out silently would draw something else than asked. Merging at export is the way.
    /// </summary>
    private void RefuseRuntimeAdapters(IReadOnlyList<ExtraNetworkTag> tags, GenerationRequest request)
    {
        var asked = tags.Where(t => t.IsLora || t.Kind == ExtraNetworkTag.Hypernetwork).Select(t => $"<{t.Kind}:{t.Name}>")
            .Concat(request.Loras.Select(l => Path.GetFileName(l.Path))).ToList();
        if (asked.Count == 0) return;
        throw new GenerationRequestException(GenerationRequest.FieldName(nameof(GenerationRequest.Prompt)),
            $"asks for {string.Join(", ", asked)}, but this model runs on {model.Backend}, whose networks are fixed at export",
            "merge LoRAs when exporting (convert to ONNX with loras at their weights), or generate with the libtorch backend");
    }

    /// <summary>A warning per LoRA with modules that match no layer: left out entirely when none matches.</summary>
    private static IEnumerable<AdapterWarning> UnmatchedLoras(List<LoraApplication> loras, LoraPatch patch)
    {
        foreach (var application in loras)
        {
            var unmatched = patch.UnmatchedModules.Where(u => ReferenceEquals(u.File, application.File)).Select(u => u.Module).ToList();
            if (unmatched.Count == 0) continue;
            var total = application.File.Modules.Count;
            yield return new AdapterWarning("lora", application.File.Name, unmatched.Count == total
                ? $"none of its {total} modules matches a layer of this model (it was made for another architecture); it had no effect"
                : $"{unmatched.Count} of its {total} modules match no layer of this model and were left out (first: {unmatched[0].Target} {unmatched[0].Name})");
        }
    }

    /// <summary>A1111's <c>&lt;hypernet:NAME:w&gt;</c>: the network on the attentions whose context width it has layers for, at strength w.</summary>
    private void AttachHypernetwork(ExtraNetworkTag tag, List<Hypernetwork> attached, List<AdapterWarning> warnings)
    {
        var network = Hypernetwork.LoadPt(FindAdapter(folders.HypernetworkFolders ?? [], tag.Kind, tag.Name, ".pt"), ((StableDiffusionModel)model).Unet);
        attached.Add(network);
        network.Multiplier = tag.Multiplier;
        if (network.AttachedLayerCount == 0)
            warnings.Add(new AdapterWarning(tag.Kind, tag.Name,
                $"it has layers for context widths {string.Join(", ", network.Sizes)}, and no attention of this model has one of them; it had no effect"));
        else if (network.UnusedSizes() is { Count: > 0 } unused)
            warnings.Add(new AdapterWarning(tag.Kind, tag.Name, $"its layers for context widths {string.Join(", ", unused)} match no attention of this model and were left out"));
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

    private string FindLora(string name) => FindAdapter(folders.LoraFolders, "lora", name, ".safetensors");

    private static string FindAdapter(IReadOnlyList<string> searched, string kind, string name, string extension)
    {
        foreach (var folder in searched)
        {
            var file = Path.Combine(folder, name + extension);
            if (File.Exists(file)) return file;
        }
        throw new GenerationRequestException(GenerationRequest.FieldName(nameof(GenerationRequest.Prompt)), searched.Count == 0
            ? $"names <{kind}:{name}>, but no {kind} folder is configured"
            : $"names <{kind}:{name}>, but {name}{extension} is in none of: {string.Join(", ", searched)}",
            searched.Count == 0 && kind == "lora" ? "give the file in loras instead" : null);
    }

    // The UNet's original-layout names, worked out at the first LoRA and kept: the model does not change shape.
    private Func<LoraTarget, string, string?>? loraAlternateNames;

    /// <summary>
    /// The embeddings of the embedding folders that fit the model (and <see cref="ExtraEmbeddings"/>). As A1111,
    /// a file of another model family is skipped, and one that cannot be read too (so one bad file does not
    /// stop every generation); each is a warning, a skipped family's only when the prompt uses its name.
    /// </summary>
    private LoadedEmbeddings LoadEmbeddings(string prompt, List<AdapterWarning> warnings)
    {
        var loaded = new LoadedEmbeddings(new EmbeddingLibrary(model.Tokenizer));
        var promptTokens = model.Tokenizer.Encode(prompt);
        if (model is not StableDiffusionModel torchModel)
        {
            // An export's tokenizer and embedding table carry the embeddings baked in at export; the folders' others cannot be placed.
            foreach (var name in folders.EmbeddingFolders.Where(Directory.Exists).SelectMany(Directory.EnumerateFiles).Where(IsEmbeddingFile).Select(Path.GetFileNameWithoutExtension))
                if (Uses(promptTokens, name!) && !model.Tokenizer.HasAddedToken(name!))
                    warnings.Add(new AdapterWarning("embedding", name!, $"this model runs on {model.Backend}, which applies only the embeddings baked in at export; the prompt reads its name as words"));
            return loaded;
        }
        foreach (var extra in ExtraEmbeddings) loaded.Library.Add(extra, owns: false);
        foreach (var folder in folders.EmbeddingFolders)
            foreach (var file in Directory.Exists(folder) ? Directory.EnumerateFiles(folder).Where(IsEmbeddingFile).Order(StringComparer.Ordinal) : Enumerable.Empty<string>())
            {
                var name = Path.GetFileNameWithoutExtension(file);
                TextualInversionEmbedding embedding;
                try
                {
                    embedding = TextualInversionEmbedding.Load(file);
                }
                catch (Exception e) when (e is UserInputException or InvalidDataException or NotSupportedException or IOException)
                {
                    warnings.Add(new AdapterWarning("embedding", name, $"'{file}' cannot be read and was skipped: {e.Message}"));
                    continue;
                }
                var width = embedding.Vectors.Size(1);
                if (width != torchModel.TextEncoder.Config.HiddenSize || (model.IsSdxl && embedding.Vectors2 is null))
                {
                    embedding.Dispose();
                    if (Uses(promptTokens, name))
                        warnings.Add(new AdapterWarning("embedding", name, $"it was made for another model family (vectors {width} wide; this model's text encoder is {torchModel.TextEncoder.Config.HiddenSize}); the prompt reads its name as words"));
                    continue;
                }
                loaded.Library.Add(embedding);
                loaded.Files[embedding.Name] = file;
            }
        return loaded;
    }

    // Whether the tokens of an embedding's name appear in the prompt, as the chunker would find them.
    private bool Uses(IReadOnlyList<int> promptTokens, string name)
    {
        var tokens = model.Tokenizer.Encode(name);
        if (tokens.Count == 0) return false;
        for (var i = 0; i + tokens.Count <= promptTokens.Count; i++)
            if (Enumerable.Range(0, tokens.Count).All(j => promptTokens[i + j] == tokens[j])) return true;
        return false;
    }

    private static bool IsEmbeddingFile(string file) => Path.GetExtension(file).ToLowerInvariant() is ".safetensors" or ".pt" or ".bin";

    // ---- the sampling loop ----
    private List<RgbImage> Sample(GenerationRequest request, string prompt, string negative, EmbeddingLibrary embeddings,
        List<Generator> generators, int width, int height, IProgress<GenerationProgress>? progress, CancellationToken cancellationToken)
    {
        using var scope = torch.NewDisposeScope();
        var batch = request.BatchSize;
        var refiner = HandOffRefiner(request);
        var conditioning = Condition(model, request, prompt, negative, embeddings, width, height);

        using var scheduler = CreateScheduler(model, request);
        var timesteps = scheduler.TimestepValues;
        var noise = NoiseSource.FromGenerators(generators);
        var latentShape = new long[] { batch, model.LatentChannels, height / model.VaeScaleFactor, width / model.VaeScaleFactor };

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

        if (refiner is null)
        {
            var steps = new StepCounter(timesteps.Count - start, progress);
            latents = Denoise(model, conditioning, scheduler, start, timesteps.Count, latents, request.CfgScale, noise, steps, cancellationToken);
            return Decode(model, latents);
        }

        // diffusers' hand-off: the base runs the timesteps at or above the cutoff (denoising_end), the refiner, its scheduler
        // set to the same steps, those below it (denoising_start), from the base's latents as they are.
        var switchAt = request.RefinerSwitchAt!.Value;
        var end = Math.Max(start, timesteps.Count(t => t >= TimestepCutoff(scheduler, switchAt)));
        using var refinerScheduler = CreateScheduler(refiner, request);
        var refinerStart = RefinerBeginIndex(refinerScheduler, switchAt);
        refinerScheduler.SetBeginIndex(refinerStart);
        var refinerSteps = refinerScheduler.TimestepValues.Count - refinerStart;
        var counter = new StepCounter(end - start + refinerSteps, progress);
        latents = Denoise(model, conditioning, scheduler, start, end, latents, request.CfgScale, noise, counter, cancellationToken);
        using var noEmbeddings = new EmbeddingLibrary(refiner.Tokenizer);
        var refinerConditioning = Condition(refiner, request, prompt, negative, noEmbeddings, width, height);
        counter.ByRefiner = true;
        latents = Denoise(refiner, refinerConditioning, refinerScheduler, refinerStart, refinerScheduler.TimestepValues.Count, latents, request.CfgScale, noise, counter, cancellationToken);
        return Decode(refiner, latents);
    }

    /// <summary>The refiner a request hands off to, checked against the model; null when it asks for none.</summary>
    private IDiffusionModel? HandOffRefiner(GenerationRequest request)
    {
        if (request.RefinerSwitchAt is null) return null;
        var field = GenerationRequest.FieldName(nameof(GenerationRequest.RefinerSwitchAt));
        var refiner = Refiner ?? throw new GenerationRequestException(field, "asks for a hand-off to a refiner, but no refiner was given", "give a refiner model, or leave refiner_switch_at out");
        if (refiner.LatentChannels != model.LatentChannels || refiner.VaeScaleFactor != model.VaeScaleFactor || refiner.IsSdxl != model.IsSdxl)
            throw new GenerationRequestException("refiner", $"'{refiner.Name}' ({refiner.Family}) does not continue the latents of '{model.Name}' ({model.Family}): " +
                $"{refiner.LatentChannels} latent channels at 1/{refiner.VaeScaleFactor} against {model.LatentChannels} at 1/{model.VaeScaleFactor}",
                "pair an SDXL base with an SDXL refiner");
        return refiner;
    }

    /// <summary>diffusers' <c>discrete_timestep_cutoff</c>: <c>round(T - fraction × T)</c> for T training timesteps.</summary>
    private static double TimestepCutoff(Scheduler scheduler, double fraction) =>
        Math.Round(scheduler.NumTrainTimesteps - fraction * scheduler.NumTrainTimesteps, MidpointRounding.ToEven);

    /// <summary>
    /// diffusers' img2img <c>get_timesteps</c> with <c>denoising_start</c>: the steps below the cutoff, one more for a
    /// second-order scheduler whose count is even (so the hand-off does not fall between its two evaluations).
    /// </summary>
    private static int RefinerBeginIndex(Scheduler scheduler, double denoisingStart)
    {
        var timesteps = scheduler.TimestepValues;
        var cutoff = TimestepCutoff(scheduler, denoisingStart);
        var count = timesteps.Count(t => t < cutoff);
        if (scheduler.Order == 2 && count % 2 == 0) count++;
        return Math.Max(timesteps.Count - count, 0);
    }

    private static Scheduler CreateScheduler(IDiffusionModel stageModel, GenerationRequest request)
    {
        var scheduler = SchedulerRegistry.Create(request.Sampler, SchedulerConfig.FromJson(stageModel.SchedulerConfig.ToJsonString()),
            request.TimestepSpacing is { } spacing ? new SchedulerConfig { TimestepSpacing = spacing } : null);
        scheduler.SetTimesteps(request.Steps, stageModel.Device);
        return scheduler;
    }

    /// <summary>What a stage's UNet reads beside the latents: the text embeddings and SDXL's added conditions, in the guidance batch.</summary>
    /// <param name="Guided">diffusers' do_classifier_free_guidance: a scale above 1, on a UNet that does not take the guidance as an embedding.</param>
    /// <param name="TimestepCond">The guidance embedding of a UNet that takes one (<see cref="IDiffusionModel.TimeCondProjDim"/>).</param>
    private sealed record StageConditioning(Tensor Embeds, UNetAddedConditions? Added, bool Guided, Tensor? TimestepCond);

    private StageConditioning Condition(IDiffusionModel stageModel, GenerationRequest request, string prompt, string negative, EmbeddingLibrary embeddings, int width, int height)
    {
        var batch = request.BatchSize;
        var guided = request.CfgScale > 1 && stageModel.TimeCondProjDim is null;
        var (cond, uncond) = EncodePrompts(stageModel, prompt, guided ? negative : null, embeddings, request.ClipSkip);
        var condBatch = Repeat(cond.PromptEmbeds, batch);
        var embeds = uncond is not null ? torch.Cat([Repeat(uncond.PromptEmbeds, batch), condBatch]) : condBatch;
        var timestepCond = stageModel.TimeCondProjDim is { } condDim
            ? GuidanceEmbedding.Compute(request.CfgScale, batch, condDim, stageModel.Device).To(stageModel.DType)
            : null;
        return new(embeds, AddedConditions(stageModel, request, cond, uncond, width, height), guided, timestepCond);
    }

    /// <summary>Steps <paramref name="from"/> to <paramref name="to"/> of the schedule on <paramref name="stageModel"/>'s UNet: the one loop of both stages.</summary>
    private static Tensor Denoise(IDiffusionModel stageModel, StageConditioning conditioning, Scheduler scheduler, int from, int to, Tensor latents, double cfgScale,
        NoiseSource noise, StepCounter steps, CancellationToken cancellationToken)
    {
        var timesteps = scheduler.TimestepValues;
        var guided = conditioning.Guided;
        for (var i = from; i < to; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var stepScope = torch.NewDisposeScope();
            var t = timesteps[i];
            var input = guided ? torch.Cat([latents, latents]) : latents;
            var scaled = scheduler.ScaleModelInput(input, t);
            var prediction = stageModel.PredictNoise(scaled, t, conditioning.Embeds, conditioning.Added, conditioning.TimestepCond);
            if (guided)
            {
                var halves = prediction.Chunk(2);
                prediction = halves[0] + (halves[1] - halves[0]) * cfgScale;
            }
            var next = scheduler.Step(prediction, t, latents, noise).PrevSample.DetachFromDisposeScope();
            latents.Dispose();
            latents = next;
            steps.Report(stageModel, latents);
        }
        return latents;
    }

    /// <summary>Progress over both stages; the preview and latents are drawn only when the listener asks, from the latents of that step.</summary>
    private sealed class StepCounter(int total, IProgress<GenerationProgress>? progress)
    {
        private int done;

        public bool ByRefiner { get; set; }

        public void Report(IDiffusionModel stageModel, Tensor latents)
        {
            done++;
            progress?.Report(new GenerationProgress(done, total)
            {
                Preview = () => LatentPreview.Render(stageModel, latents),
                Latents = latents,
                ByRefiner = ByRefiner,
            });
        }
    }

    private static List<RgbImage> Decode(IDiffusionModel stageModel, Tensor latents)
    {
        var decoded = stageModel.DecodeLatents(latents.Div(stageModel.VaeScalingFactor));
        latents.Dispose();
        return [.. ImageTensors.ToImages(decoded)];
    }

    private static Tensor Repeat(Tensor t, int batch) => batch == 1 ? t : t.Repeat([batch, .. Enumerable.Repeat(1L, t.Dim - 1)]);

    private Tensor EncodeImage(RgbImage init, int width, int height, int batch, NoiseSource noise)
    {
        var resized = init.Width == width && init.Height == height ? init : ImageTensors.Resize(init, width, height);
        var pixels = ImageTensors.ToTensor(resized, model.Device).To(model.DType);
        using var posterior = model.EncodeImages(Repeat(pixels, batch));
        var draw = noise.Randn(posterior.Mean.Shape, model.DType, model.Device);
        return posterior.Sample(draw).Mul(model.VaeScalingFactor);
    }

    /// <summary>
    /// Encodes prompt and negative prompt to the same number of chunks (the shorter padded with empty chunks, as A1111);
    /// a null negative (no unconditional batch) is not encoded at all.
    /// </summary>
    private static (TextConditioning Cond, TextConditioning? Uncond) EncodePrompts(IDiffusionModel stageModel, string prompt, string? negative, EmbeddingLibrary embeddings, int clipSkip)
    {
        if (negative is null) return (new PromptConditioner(stageModel, embeddings).Encode([prompt], clipSkip)[0], null);
        var encoded = new PromptConditioner(stageModel, embeddings).Encode([prompt, negative], clipSkip);
        if (stageModel.ForceZerosForEmptyPrompt && string.IsNullOrWhiteSpace(negative))
        {
            var c = encoded[0];
            encoded[1].Dispose();
            return (c, new TextConditioning(torch.ZerosLike(c.PromptEmbeds), c.PooledPromptEmbeds is null ? null : torch.ZerosLike(c.PooledPromptEmbeds)));
        }
        return (encoded[0], encoded[1]);
    }

    /// <summary>
    /// SDXL's added conditions: pooled text embeddings and the time ids, in the batch order [uncond, cond]; the refiner's time
    /// ids carry the aesthetic scores (<see cref="MicroConditioning.TimeIds(double)"/>).
    /// </summary>
    private static UNetAddedConditions? AddedConditions(IDiffusionModel stageModel, GenerationRequest request, TextConditioning cond, TextConditioning? uncond, int width, int height)
    {
        if (!stageModel.IsSdxl) return null;
        var batch = request.BatchSize;
        var (micro, negativeMicro) = (request.Conditioning(width, height), request.NegativeConditioning(width, height));
        var pooled = Repeat(cond.PooledPromptEmbeds!, batch);
        if (uncond is not null) pooled = torch.Cat([Repeat(uncond.PooledPromptEmbeds!, batch), pooled]);
        var (row, negativeRow) = stageModel.RequiresAestheticsScore
            ? (micro.TimeIds(request.AestheticScore), negativeMicro.TimeIds(request.NegativeAestheticScore))
            : (micro.TimeIds(), negativeMicro.TimeIds());
        var rows = Enumerable.Repeat(row, batch);
        if (uncond is not null) rows = Enumerable.Repeat(negativeRow, batch).Concat(rows);
        var ids = rows.SelectMany(r => r).ToArray();
        var timeIds = torch.Tensor(ids, ids.Length / row.Length, row.Length).To(stageModel.Device, stageModel.DType);
        return new UNetAddedConditions(pooled, timeIds);
    }

    // ---- PNG info ----
    private static GeneratedImage Finish(RgbImage image, long seed, Infotext info)
    {
        var text = info.For(seed);
        image.Text["parameters"] = text;
        return new GeneratedImage(image, seed, text);
    }
}
