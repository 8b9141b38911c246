using System.Diagnostics;
using System.Text.Json;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Diffusion.Schedulers;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Models.TextEncoders;
using SdAppliance.Models.Unet;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Optim;
using SdAppliance.Training.Data;
using SdAppliance.Training.Distributed;
using SdAppliance.Training.Methods;
using SdAppliance.Training.Runs;
using SdAppliance.Training.Samples;

namespace SdAppliance.Training;

/// <summary>What a finished (or stopped) run did and where its results are.</summary>
public sealed record TrainingReport(
    string RunFolder,
    string Method,
    long Steps,
    int Epochs,
    TimeSpan Duration,
    double FinalSmoothedLoss,
    IReadOnlyList<string> Outputs,
    IReadOnlyList<SkippedFile> SkippedFiles,
    IReadOnlyList<string> Samples,
    bool Completed)
{
    /// <summary>Latents the run kept in memory at its end (none when it does not cache them: <see cref="TrainingConfig.CachesLatents"/>).</summary>
    public int CachedLatents { get; init; }

    /// <summary>Their bytes.</summary>
    public long CachedLatentBytes { get; init; }
}

/// <summary>
/// The training loop of every method: noise and uniform timesteps, epsilon or v targets from the
/// model's scheduler config, kohya's losses (l2, l1, huber, smooth_l1; masked by a mask folder or the alpha channel) with
/// min-SNR-gamma and v-prediction weighting, noise offset, pyramid noise, input perturbation and zero terminal SNR (<see cref="Losses"/>), prior preservation,
/// gradient accumulation and clipping, the engine's optimizers and LR schedules, CUDA mixed
/// precision, gradient checkpointing; atomic saved training states from which a run resumes exactly
/// (trained values, optimizer, schedule, step, data position, random generators); data parallel over several
/// processes and machines (<see cref="DataParallel"/>), where rank 0 alone writes the run folder.
/// </summary>
public sealed class Trainer
{
    /// <summary>Starts a new run in <c>config.Output</c>.</summary>
    /// <param name="stepBoundary">
    /// Called after each optimizer step (after its save and samples): other work may use the device meanwhile (a
    /// generation during training). It may change the engine's thread count and the default generators; the run restores
    /// them, so its weights are those of a run never paused.
    /// </param>
    /// <param name="control">Requests from elsewhere (sample now, save now), taken at the next step boundary.</param>
    /// <param name="rank">This process's rank when num_processes x num_machines is above 1 (<see cref="DataParallelRank.FromEnvironment"/>).</param>
    public static TrainingReport Train(TrainingConfig config, IProgress<TrainingEvent>? progress = null, CancellationToken cancellationToken = default, Action? stepBoundary = null,
        RunControl? control = null, DataParallelRank? rank = null)
    {
        // The dataset config's settings are recorded in run.json with the rest, so a resume trains with the same ones.
        config = Kohya.KohyaDatasetConfig.Apply(config);
        config.Validate();
        var run = new RunFolder(config.Output!);
        using var parallel = DataParallel.Join(config, rank);
        if (parallel is null || parallel.IsMain)
        {
            if (run.HoldsRun)
                throw new TrainingConfigException($"output: '{run.Path}' already holds a run; resume it to continue, or choose another folder");
            Directory.CreateDirectory(run.Path);
            run.SaveConfig(config);
        }
        parallel?.Barrier();
        return new Trainer(config, run, parallel).Run(resumeFrom: null, progress, stepBoundary, control, cancellationToken);
    }

    /// <summary>
    /// Continues the run in <paramref name="runFolder"/> from its last saved training state, to <paramref name="maxTrainSteps"/>
    /// when given; what a killed process left half-written there is removed first.
    /// </summary>
    /// <param name="stepBoundary">As <see cref="Train"/>'s.</param>
    /// <param name="control">As <see cref="Train"/>'s.</param>
    /// <param name="rank">As <see cref="Train"/>'s: every rank resumes from the same saved state, so the run folder must be on storage every machine sees.</param>
    public static TrainingReport Resume(string runFolder, int? maxTrainSteps = null, IProgress<TrainingEvent>? progress = null, CancellationToken cancellationToken = default,
        Action? stepBoundary = null, RunControl? control = null, DataParallelRank? rank = null)
    {
        var run = RunFolder.ToResume(runFolder);
        var config = run.LoadConfig();
        if (maxTrainSteps is { } total) config = config with { MaxTrainSteps = total, MaxTrainEpochs = null };
        config.Validate();
        var state = run.StateToResume();
        using var parallel = DataParallel.Join(config, rank);
        if (parallel is null || parallel.IsMain)
        {
            if (maxTrainSteps is not null) run.SaveConfig(config);
            run.RemoveUnfinishedWrites();
        }
        parallel?.Barrier();
        return new Trainer(config, run, parallel).Run(state, progress, stepBoundary, control, cancellationToken);
    }

    private readonly TrainingConfig config;
    private readonly RunFolder run;
    // Null for a one-process run; else this rank, which writes to the run folder only when it is rank 0.
    private readonly DataParallel? parallel;
    private readonly TrainingMethodKind methodKind;
    private readonly AutocastPrecision precision;
    private readonly OptimizerKind optimizerKind;
    private readonly LossKind lossKind;
    private readonly HuberScheduleKind huberSchedule;
    private LossMasks? lossMasks;
    // Known once the dataset is scanned: max_train_epochs counts its batches, a prompt may be its first caption.
    private int totalSteps;
    private IReadOnlyList<SamplePrompt> samplePrompts = [];

    /// <param name="config">Validated: its named choices are parsed here, once, and only the enums are used past this point.</param>
    private Trainer(TrainingConfig config, RunFolder run, DataParallel? parallel)
    {
        this.config = config;
        this.run = run;
        this.parallel = parallel;
        methodKind = TrainingConfig.MethodChoices.Parse(config.Method);
        precision = TrainingConfig.PrecisionChoices.Parse(config.MixedPrecision);
        optimizerKind = config.ResolveOptimizer();
        lossKind = TrainingConfig.LossTypeChoices.Parse(config.LossType);
        huberSchedule = TrainingConfig.HuberScheduleChoices.Parse(config.HuberSchedule);
    }

    private TrainingReport Run(string? resumeFrom, IProgress<TrainingEvent>? progress, Action? stepBoundary, RunControl? control, CancellationToken cancellationToken)
    {
        var started = Stopwatch.StartNew();
        var isMain = parallel is null || parallel.IsMain;
        // Ranks stop together, at a step's end (DataParallel.EndStep): work inside a step is not cut short on one rank only.
        var stepToken = parallel is null ? cancellationToken : CancellationToken.None;
        var device = Device.Parse(parallel is null ? config.DeviceName : DataParallel.DeviceName(config, parallel.Rank));
        if (precision == AutocastPrecision.Float16 && !device.IsCuda)
            throw new TrainingConfigException("mixed_precision: fp16 needs a CUDA device (device cuda); on CPU use no or bf16");
        var dataset = TrainingDataset.Scan(DatasetOptions.Of(config), cancellationToken);
        if (methodKind == TrainingMethodKind.TextualInversion && !dataset.Items.Any(i => i.Caption.Contains(config.PlaceholderToken!, StringComparison.Ordinal)))
            throw new TrainingConfigException(
                $"placeholder_token: '{config.PlaceholderToken}' appears in no caption, so nothing would train it; put it in the captions or set instance_prompt to \"a photo of {config.PlaceholderToken}\" without caption files");
        var name = config.OutputName ?? Path.GetFileName(run.Path);
        // Read now, so that a mistake in a prompt file stops the run before the model loads.
        samplePrompts = SamplePrompt.Of(config, dataset.Items.FirstOrDefault()?.Caption ?? "");
        // And the masks: a missing one stops the run before the model loads.
        using var masks = LossMasks.ForRun(config, dataset);
        lossMasks = masks;

        using var model = ModelLoader.Load(config.Model ?? throw new TrainingConfigException("model: give the base model (a diffusers folder or a .safetensors/.ckpt file)"),
            new ModelLoadOptions(Device: device, Vae: config.Vae), cancellationToken);
        // Its time ids carry an aesthetic score no dataset gives, and kohya trains no refiner either.
        if (model.Family == ModelFamily.XlRefiner)
            throw new TrainingConfigException($"model: '{config.Model}' is an SDXL refiner, which finishes a base model's images; train the SDXL base model instead");
        // kohya refuses the first without v-parameterization and warns of the second ("training will be unexpected"): here both refuse.
        if (config.ScaleVPredLossLikeNoisePred && model.PredictionType != "v_prediction")
            throw new TrainingConfigException(
                $"scale_v_pred_loss_like_noise_pred: '{config.Model}' predicts {model.PredictionType}, and this scale is for v_prediction models; leave it off");
        if (config.ZeroTerminalSnr && model.PredictionType != "v_prediction")
            throw new TrainingConfigException(
                $"zero_terminal_snr: '{config.Model}' predicts {model.PredictionType}, which cannot learn the last timestep's pure noise; leave it off or train a v_prediction model");
        // The ranks of one machine share its cores.
        Engine.UseThreads(model.UnetThreadDemand(config.TrainBatchSize, config.Resolution, config.Resolution) with { ConcurrentJobs = parallel is null ? 1 : config.NumProcesses });
        if (isMain) dataset = new ClassImageGenerator(model, config).Complete(dataset, cancellationToken);
        if (parallel is not null)
        {
            // The others see the class images rank 0 drew once it has drawn them.
            parallel.Barrier();
            if (!isMain) dataset = new ClassImageGenerator(model, config).Complete(TrainingDataset.Scan(DatasetOptions.Of(config), cancellationToken), cancellationToken);
        }

        model.Unet.Freeze();
        model.TextEncoder.Freeze();
        model.TextEncoder2?.Freeze();
        model.Vae.Freeze();
        if (config.GradientCheckpointing) model.Unet.EnableGradientCheckpointing();

        // Each rank takes train_batch_size images of every global batch.
        var globalBatchSize = config.TrainBatchSize * (parallel?.WorldSize ?? 1);
        var batchesPerEpoch = dataset.BatchesPerEpoch(globalBatchSize);
        totalSteps = config.TotalSteps(batchesPerEpoch);
        var totalEpochs = config.Epochs(batchesPerEpoch);

        using var noiseGenerator = new Generator((ulong)config.Seed);
        torch.ManualSeed((ulong)config.Seed);
        using var method = TrainingMethod.Create(methodKind, model, config, noiseGenerator);
        using var optimizer = OptimizerFactory.Create(optimizerKind, config, method.ParameterGroups);
        var schedule = new LrScheduler(optimizer, config.LrScheduler, config.LrWarmupSteps, totalSteps, config.LrNumCycles, config.LrPower);
        using var embeddings = new EmbeddingLibrary(model.Tokenizer);
        foreach (var e in method.Embeddings) embeddings.Add(e, owns: false);
        var conditioner = new PromptConditioner(model, embeddings);
        using var latentCache = LatentCache.ForRun(config, model.Vae);
        Func<TrainingExample, Tensor> latentsOf = latentCache is null ? e => LatentCache.Encode(model.Vae, e) : e => latentCache.Get(e, stepToken);
        var captionsFixed = !config.ShuffleCaption && config.CaptionDropoutRate == 0;
        using var textCache = !method.TrainsTextConditioning && captionsFixed
            ? new TextEmbeddingCache(caption => Encode(conditioner, [caption], grad: false))
            : null;
        using var scheduler = Losses.TrainingScheduler(model.SchedulerConfig.ToJsonString(), config.ZeroTerminalSnr);
        var target = TargetOf(scheduler);
        var lossScaler = precision == AutocastPrecision.Float16 ? new LossScaler() : null;

        var state = new RunState();
        if (resumeFrom is not null)
        {
            state = TrainingStates.Load(resumeFrom, method, optimizer, schedule, noiseGenerator, parallel?.Rank);
            lossScaler?.RestoreFrom(state);
        }
        var trained = method.ParameterGroups.SelectMany(g => g.Parameters).ToList();
        parallel?.BroadcastFromMain(trained);
        var buckets = parallel?.Buckets(trained, config.DdpBucketCapMb);
        void SaveState()
        {
            lossScaler?.SaveTo(state);
            // A collective: every rank's default generator goes into rank 0's saved state.
            var generators = parallel?.GatherDefaultGenerators();
            if (isMain) TrainingStates.Save(run.StatesFolder, state, method, optimizer, schedule, noiseGenerator, config.SaveLastK, generators);
        }

        using var log = isMain ? new RunLog(run.Path) : null;
        var samples = new List<string>();
        var microSteps = 0;
        var stepTimer = Stopwatch.StartNew();
        var stepsThisSession = 0L;
        var completed = false;
        var stopAll = false;
        var epochsDone = EpochsDone(state, batchesPerEpoch);
        // The baseline: what the model draws before any training, to compare the samples with.
        if (isMain && config.SampleAtStart && state.Step == 0)
            samples.AddRange(Preserving(() => Sample(model, method, 0, stepToken)));
        try
        {
            while (state.Step < totalSteps)
            {
                foreach (var batch in dataset.Batches(state.Epoch, globalBatchSize, (ulong)config.Seed, state.BatchInEpoch))
                {
                    if (stopAll) throw new OperationCanceledException(cancellationToken);
                    if (parallel is null) cancellationToken.ThrowIfCancellationRequested();
                    // The last micro-batch of an accumulation all-reduces the gradients during its backward.
                    var synchronise = (microSteps + 1) % config.GradientAccumulationSteps == 0;
                    if (synchronise) buckets?.Prepare();
                    var loss = MicroStep(model, method, conditioner, textCache, latentsOf, scheduler, target, noiseGenerator, batch, lossScaler);
                    if (synchronise) buckets?.Finish();
                    state.BatchInEpoch++;
                    state.AccumulatedLoss += loss;
                    if (++microSteps % config.GradientAccumulationSteps != 0) continue;

                    var stepped = OptimizerStep(method, optimizer, lossScaler);
                    // As accelerate's scheduler: a step the loss scaler skipped does not advance the learning rate.
                    if (stepped) schedule.Step();
                    state.Step++;
                    stepsThisSession++;
                    if (stepped) method.AfterOptimizerStep(state.Step);
                    var stepLoss = state.AccumulatedLoss / config.GradientAccumulationSteps;
                    if (parallel is not null)
                    {
                        // Each rank's loss is its share of the global batch's.
                        var (sum, stop) = parallel.EndStep(state.AccumulatedLoss, cancellationToken.IsCancellationRequested);
                        stepLoss = sum / config.GradientAccumulationSteps;
                        stopAll = stop;
                    }
                    state.AccumulatedLoss = 0;
                    // kohya shows a moving average over the recent steps; an exponential one keeps no history.
                    state.SmoothedLoss = state.Step == 1 || double.IsNaN(state.SmoothedLoss) ? stepLoss : 0.9 * state.SmoothedLoss + 0.1 * stepLoss;
                    var rate = stepsThisSession / Math.Max(stepTimer.Elapsed.TotalSeconds, 1e-9);
                    var evt = new TrainingEvent(state.Step, totalSteps, state.Epoch + 1, totalEpochs, stepLoss, state.SmoothedLoss,
                        optimizer.ReportedLearningRate, rate, TimeSpan.FromSeconds((totalSteps - state.Step) / Math.Max(rate, 1e-9)), MemoryBytes(device));
                    log?.Write(evt);
                    progress?.Report(evt);
                    if (config.StopOnNan && !double.IsFinite(stepLoss))
                        throw new LossNotFiniteException(state.Step, stepLoss);

                    // The epoch marks fall on the step that takes an epoch's last batch (or the first after it, when the
                    // accumulation runs across the epoch's end).
                    var epochsNow = EpochsDone(state, batchesPerEpoch);
                    bool EpochMark(int? every) => every is { } n && epochsNow / n > epochsDone / n;
                    var epochSaved = EpochMark(config.SaveEveryNEpochs) && state.Step < totalSteps;
                    var saved = epochSaved || (config.SaveEveryNSteps is { } every && state.Step % every == 0 && state.Step < totalSteps);
                    if (saved)
                    {
                        SaveState();
                        log?.Flush();
                    }
                    if (epochSaved && isMain)
                    {
                        // kohya's name for an epoch's results: NAME-000001.
                        method.TrainedOn = (dataset, epochsNow);
                        Preserving(() => method.Export(run.Path, $"{name}-{epochsNow:D6}", state.Step));
                    }
                    var sampled = EpochMark(config.SampleEveryNEpochs) || (config.SampleEveryNSteps is { } sampleEvery && state.Step % sampleEvery == 0);
                    epochsDone = epochsNow;
                    if (sampled && isMain)
                        samples.AddRange(Sample(model, method, state.Step, stepToken));
                    // Requests and lending the device are the main process's (the appliance hosts rank 0).
                    if (control is not null && parallel is null)
                        TakeRequests(control, saved, sampled, model, method, optimizer, schedule, noiseGenerator, lossScaler, dataset, state, name, log!, samples, cancellationToken);
                    if (stepBoundary is not null && parallel is null) LendDevice(stepBoundary);
                    if (state.Step >= totalSteps) break;
                }
                if (state.Step >= totalSteps) break;
                state.Epoch++;
                state.BatchInEpoch = 0;
            }
            completed = true;
        }
        catch (OperationCanceledException) when (state.Step > 0)
        {
            // Stopped by the user: keep what was trained. Micro-batches of an unfinished accumulation
            // are given back to the data order, so the resumed run redoes them exactly.
            optimizer.ZeroGrad();
            state.BatchInEpoch -= microSteps % config.GradientAccumulationSteps;
            state.AccumulatedLoss = 0;
            SaveState();
            throw;
        }
        finally
        {
            log?.Flush();
        }

        SaveState();
        var outputs = new List<string>();
        if (isMain)
        {
            method.TrainedOn = (dataset, state.Epoch + 1);
            outputs.AddRange(method.Export(run.Path, name, state.Step));
            if (config.SampleEveryNSteps is not null || config.SampleEveryNEpochs is not null) samples.AddRange(Sample(model, method, state.Step, cancellationToken));
        }
        var report = new TrainingReport(run.Path, config.Method, state.Step, state.Epoch + 1, started.Elapsed, state.SmoothedLoss,
            outputs, dataset.Skipped, samples, completed)
        {
            CachedLatents = latentCache?.Count ?? 0,
            CachedLatentBytes = latentCache?.Bytes ?? 0,
        };
        if (isMain) AtomicFile.WriteAllText(run.ReportFile, JsonSerializer.Serialize(report, TrainingConfig.Json));
        return report;
    }

    /// <summary>
    /// What <paramref name="control"/> asks for at this step boundary: the samples (unless the step just drew them), a
    /// training state (unless the step just saved one) and the results so far as <c>NAME-step-NNNNNN</c>; at the last
    /// step a save is left to the run's end, which saves anyway. The run's own generators are kept as they were,
    /// so its weights are those of a run never asked.
    /// </summary>
    private void TakeRequests(RunControl control, bool saved, bool sampled, StableDiffusionModel model, TrainingMethod method, Optimizer optimizer, LrScheduler schedule,
        Generator noiseGenerator, LossScaler? lossScaler, TrainingDataset dataset, RunState state, string name, RunLog log, List<string> samples, CancellationToken cancellationToken)
    {
        if (state.Step < totalSteps && control.TakeSave())
        {
            if (!saved)
            {
                lossScaler?.SaveTo(state);
                TrainingStates.Save(run.StatesFolder, state, method, optimizer, schedule, noiseGenerator, config.SaveLastK);
                log.Flush();
            }
            method.TrainedOn = (dataset, state.Epoch + 1);
            var files = Preserving(() => method.Export(run.Path, $"{name}-step-{state.Step:D6}", state.Step));
            control.Report($"saved step {state.Step}: {string.Join(", ", files.Select(Path.GetFileName))}");
        }
        if (control.TakeSample())
        {
            if (!sampled) samples.AddRange(Preserving(() => Sample(model, method, state.Step, cancellationToken)));
            control.Report($"sampled step {state.Step}");
        }
    }

    /// <summary>The epochs whose every batch the run has drawn.</summary>
    private static int EpochsDone(RunState state, int batchesPerEpoch) => state.Epoch + (state.BatchInEpoch >= batchesPerEpoch ? 1 : 0);

    /// <summary>Runs <paramref name="work"/> and puts back the default CPU generator, which this run's saved states keep.</summary>
    private static T Preserving<T>(Func<T> work)
    {
        using var cpuDefault = Generator.Default(Device.Cpu);
        var cpuState = cpuDefault.GetStateBytes();
        try
        {
            return work();
        }
        finally
        {
            cpuDefault.SetStateBytes(cpuState);
        }
    }

    /// <summary>
    /// Runs <paramref name="stepBoundary"/> and then puts back what other work on the engine changes and this run depends
    /// on: the intra-op thread count (sums are split by it) and the default CPU generator (the run seeded it and its saved
    /// states keep it, as the run's own noise generator; building another model's layers draws from it).
    /// </summary>
    private static void LendDevice(Action stepBoundary)
    {
        var threads = Engine.NumThreads;
        using var cpuDefault = Generator.Default(Device.Cpu);
        var cpuState = cpuDefault.GetStateBytes();
        try
        {
            stepBoundary();
        }
        finally
        {
            Engine.NumThreads = threads;
            cpuDefault.SetStateBytes(cpuState);
        }
    }

    private TextConditioning Encode(PromptConditioner conditioner, IReadOnlyList<string> captions, bool grad)
    {
        if (grad) return conditioner.EncodeBatch(captions, config.ClipSkip);
        using var noGrad = Autograd.NoGrad();
        return conditioner.EncodeBatch(captions, config.ClipSkip);
    }

    /// <summary>
    /// One forward and backward pass over this rank's share of a global batch (all of it in one process); returns the
    /// share's part of the batch loss. The noise, timesteps and loss weights are those of the whole batch, drawn and
    /// computed as one process does, of which the share keeps its rows: the ranks' gradients sum to the batch's.
    /// </summary>
    private double MicroStep(StableDiffusionModel model, TrainingMethod method, PromptConditioner conditioner, TextEmbeddingCache? textCache,
        Func<TrainingExample, Tensor> latentsOf, Scheduler scheduler, PredictionTarget predicted, Generator generator, IReadOnlyList<TrainingExample> batch, LossScaler? scaler)
    {
        using var scope = torch.NewDisposeScope();
        var device = model.Device;
        var (start, count) = parallel?.Share(batch.Count) ?? (0, batch.Count);
        var share = batch.Skip(start).Take(count).ToList();
        // A share left empty by a batch smaller than the ranks (a bucket's last) still draws the batch's numbers.
        var latents = torch.Cat([.. (count > 0 ? share : batch.Take(1)).Select(latentsOf)]).To(device, model.DType);
        long[] batchShape = [batch.Count, latents.Size(1), latents.Size(2), latents.Size(3)];
        var b = batch.Count;
        // Drawn on CPU from the run's generator (the resume state), then moved: the same numbers on any device.
        var noise = torch.Randn(batchShape, generator);
        if (config.NoiseOffset > 0)
            noise = noise + torch.Randn([b, batchShape[1], 1, 1], generator) * config.NoiseOffset;
        // kohya's order of draws: noise, offset, pyramid, timesteps, input perturbation.
        if (config.MultiresNoiseIterations is { } iterations)
            noise = Losses.PyramidNoise(noise, iterations, config.MultiresNoiseDiscount, generator);
        var drawnSteps = torch.Randint(0, scheduler.NumTrainTimesteps, [b], generator);
        var perturbation = config.IpNoiseGamma > 0 ? torch.Randn(batchShape, generator) * config.IpNoiseGamma : null;
        // The per-example weights and thresholds read the steps here, where they were drawn, not back from the device.
        var batchSteps = drawnSteps.ToArray<long>();
        var weights = LossWeights(scheduler, predicted, batchSteps, batch);
        if (count == 0) return 0;

        Tensor Rows(Tensor t) => t.Narrow(0, start, count).To(device, latents.DType);
        noise = Rows(noise);
        var steps = batchSteps[start..(start + count)];
        var timesteps = drawnSteps.Narrow(0, start, count).To(device);
        var captions = share.Select(e => e.Caption).ToList();
        TextConditioning text;
        if (textCache is not null)
        {
            var cached = captions.Select(textCache.Get).ToList();
            text = new TextConditioning(torch.Cat([.. cached.Select(c => c.PromptEmbeds)]),
                cached[0].PooledPromptEmbeds is null ? null : torch.Cat([.. cached.Select(c => c.PooledPromptEmbeds!)]));
        }
        else
        {
            text = Encode(conditioner, captions, grad: method.TrainsTextConditioning);
        }
        // Input perturbation: the latents are noised with more than the target's noise.
        var noisy = perturbation is not null
            ? scheduler.AddNoise(latents, noise + Rows(perturbation), timesteps)
            : scheduler.AddNoise(latents, noise, timesteps);
        var target = predicted == PredictionTarget.Velocity ? scheduler.GetVelocity(latents, noise, timesteps) : noise;

        UNetAddedConditions? added = null;
        if (model.IsSdxl)
        {
            var ids = share.SelectMany(e => new MicroConditioning(new(e.BucketHeight, e.BucketWidth), new(e.CropTop, e.CropLeft), new(e.BucketHeight, e.BucketWidth)).TimeIds()).ToArray();
            added = new UNetAddedConditions(text.PooledPromptEmbeds!, torch.Tensor(ids, count, 6).To(device, model.DType));
        }

        Tensor prediction;
        using (AutocastFor(device))
            prediction = model.Unet.Forward(noisy, timesteps, text.PromptEmbeds, added);
        // The threshold of huber and smooth_l1 follows each example's timestep.
        var huberC = lossKind is LossKind.Huber or LossKind.SmoothL1
            ? Losses.HuberThresholds(lossKind, huberSchedule, config.HuberC, config.HuberScale, scheduler.AlphasCumprod, scheduler.NumTrainTimesteps, steps)
            : null;
        var mask = lossMasks?.Batch(share, latents.Size(2), latents.Size(3));
        var perExample = Losses.PerExample(prediction.Float(), target.Float(), lossKind, huberC is null ? null : torch.Tensor(huberC), mask);
        perExample = perExample * torch.Tensor(weights[start..(start + count)]).To(device);
        var loss = perExample.Sum() / config.GradientAccumulationSteps;
        var value = loss.Item() * config.GradientAccumulationSteps;
        (scaler is null ? loss : loss * scaler.Scale).Backward();
        return value;
    }

    /// <summary>
    /// Per-example weights whose sum is the batch loss: the reference DreamBooth loss (instance mean +
    /// prior_loss_weight × class mean), min-SNR-gamma (weights min(SNR, γ)/SNR, or /(SNR+1) for v) and
    /// scale_v_pred_loss_like_noise_pred (SNR/(SNR+1), kohya's SNR capped at 1000).
    /// </summary>
    private float[] LossWeights(Scheduler scheduler, PredictionTarget predicted, long[] timesteps, IReadOnlyList<TrainingExample> batch)
    {
        var priors = batch.Count(e => e.Item.IsPrior);
        var instances = batch.Count - priors;
        var weights = batch.Select(e => e.Item.IsPrior ? config.PriorLossWeight / priors : 1.0 / instances).ToArray();
        if (config.MinSnrGamma is { } gamma)
        {
            for (var i = 0; i < weights.Length; i++)
            {
                var ac = scheduler.AlphasCumprod[(int)timesteps[i]];
                var snr = ac / (1 - ac);
                weights[i] *= Math.Min(snr, gamma) / (predicted == PredictionTarget.Velocity ? snr + 1 : snr);
            }
        }
        if (config.ScaleVPredLossLikeNoisePred)
            for (var i = 0; i < weights.Length; i++) weights[i] *= Losses.VPredictionScale(scheduler.AlphasCumprod[(int)timesteps[i]]);
        return [.. weights.Select(w => (float)w)];
    }

    private IDisposable? AutocastFor(Device device) => precision switch
    {
        AutocastPrecision.BFloat16 => Autograd.Autocast(device.Type, DType.BFloat16),
        AutocastPrecision.Float16 => Autograd.Autocast(device.Type, DType.Float16),
        _ => null,
    };

    /// <summary>What the UNet learns to predict, from the model's scheduler config (parsed here, once).</summary>
    private static PredictionTarget TargetOf(Scheduler scheduler) => scheduler.PredictionType switch
    {
        "epsilon" => PredictionTarget.Noise,
        "v_prediction" => PredictionTarget.Velocity,
        var other => throw new TrainingConfigException(
            $"model: its scheduler predicts '{other}'; training supports epsilon and v_prediction models"),
    };

    private enum PredictionTarget
    {
        Noise,
        Velocity,
    }

    /// <summary>Unscales (fp16), clips and steps; false when an overflow skipped the step.</summary>
    private bool OptimizerStep(TrainingMethod method, Optimizer optimizer, LossScaler? scaler)
    {
        var parameters = method.ParameterGroups.SelectMany(g => g.Parameters).ToList();
        if (scaler is not null && !scaler.Unscale(parameters))
        {
            optimizer.ZeroGrad();
            return false;
        }
        if (config.MaxGradNorm > 0)
            using (GradClipping.ClipGradNorm(parameters, config.MaxGradNorm)) { }
        optimizer.Step();
        optimizer.ZeroGrad();
        return true;
    }

    private IReadOnlyList<string> Sample(StableDiffusionModel model, TrainingMethod method, long step, CancellationToken cancellationToken)
    {
        var folder = run.SamplesFolder;
        Directory.CreateDirectory(folder);
        var pipeline = new StableDiffusionPipeline(model) { ExtraEmbeddings = method.Embeddings };
        var files = new List<string>();
        model.Unet.Eval();
        try
        {
            for (var i = 0; i < samplePrompts.Count; i++)
            {
                var image = pipeline.Generate(samplePrompts[i].Request(config, i), cancellationToken: cancellationToken)[0];
                var file = Path.Combine(folder, $"step-{step:D6}-{i}.png");
                ImageCodec.Save(image.Image, file);
                files.Add(file);
            }
        }
        finally
        {
            model.Unet.Train();
        }
        return files;
    }

    private static long MemoryBytes(Device device) =>
        device.IsCuda && Cuda.HasMemoryStats ? Cuda.GetMemoryStats(Math.Max(device.Index, 0)).AllocatedBytes : Environment.WorkingSet;
}
