using System.CommandLine;
using System.Globalization;
using SdAppliance.Appliance.Storage;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Formats.Hashing;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Runtime;
using SdAppliance.Torch;

namespace SdAppliance.Cli.Commands;

/// <summary>What <c>sdapp generate</c> was asked for, as parsed.</summary>
internal sealed record GenerateArguments
{
    public string? Model { get; init; }
    public required string Prompt { get; init; }
    public string NegativePrompt { get; init; } = "";
    public long Seed { get; init; } = -1;
    /// <summary>Null: the model's (<see cref="GenerationDefaults"/>), as for <see cref="Sampler"/> and <see cref="Cfg"/>.</summary>
    public int? Steps { get; init; }

    public string? Sampler { get; init; }
    public double? Cfg { get; init; }
    public int? Width { get; init; }
    public int? Height { get; init; }
    public int Batch { get; init; } = 1;
    public int ClipSkip { get; init; } = 1;
    public string? InitImage { get; init; }
    public double? Strength { get; init; }
    public IReadOnlyList<string> Loras { get; init; } = [];

    /// <summary>SDXL micro-conditioning as given: "H,W" / "T,L", read by the library.</summary>
    public string? OriginalSize { get; init; }
    public string? CropsCoordsTopLeft { get; init; }
    public string? TargetSize { get; init; }
    public string? NegativeOriginalSize { get; init; }
    public string? NegativeCropsCoordsTopLeft { get; init; }
    public string? NegativeTargetSize { get; init; }
    public string? Config { get; init; }
    public string? PredictionType { get; init; }
    public string Device { get; init; } = "cpu";
    public string DType { get; init; } = "float32";
    public bool VaeTiling { get; init; }

    /// <summary>A VAE file or diffusers VAE folder used in place of the model's own.</summary>
    public string? Vae { get; init; }
    public string Backend { get; init; } = BackendChoice.Auto;
    public required string Output { get; init; }
    public string? Refiner { get; init; }
    public double? RefinerSwitchAt { get; init; }
}

/// <summary>
/// <c>sdapp generate</c>: txt2img and img2img with A1111's defaults (20 steps, CFG 7, DPM++ 2M Karras, the
/// model's native size, a random seed), or a Turbo or LCM model's own (<see cref="GenerationDefaults"/>). Each PNG carries A1111's <c>parameters</c> text; seeds and paths are
/// printed. Mistakes (a missing model, an unknown sampler, a bad size or LoRA) are one line and exit code 1.
/// </summary>
public static class GenerateCommand
{
    private static readonly GenerationRequest Defaults = new();

    /// <summary>The flag of each field a refusal may name (<see cref="GenerationRequest"/>'s and the model options').</summary>
    internal static readonly IReadOnlyDictionary<string, string> Flags = new Dictionary<string, string>
    {
        ["prompt"] = "--prompt", ["negative_prompt"] = "--negative-prompt", ["seed"] = "--seed", ["steps"] = "--steps",
        ["sampler"] = "--sampler", ["cfg_scale"] = "--cfg", ["width"] = "--width", ["height"] = "--height", ["batch_size"] = "--batch",
        ["clip_skip"] = "--clip-skip", ["init_image"] = "--init-image", ["strength"] = "--strength", ["loras"] = "--lora",
        ["config_directory"] = "--config", ["prediction_type"] = "--prediction-type", ["device"] = "--device", ["dtype"] = "--dtype",
        ["backend"] = "--backend", ["provider"] = "--device", ["vae_tiling"] = "--vae-tiling", ["vae"] = "--vae",
        ["refiner"] = "--refiner", ["refiner_switch_at"] = "--refiner-switch-at",
        ["original_size"] = "--original-size", ["crops_coords_top_left"] = "--crops-coords-top-left", ["target_size"] = "--target-size",
        ["negative_original_size"] = "--negative-original-size", ["negative_crops_coords_top_left"] = "--negative-crops-coords-top-left",
        ["negative_target_size"] = "--negative-target-size",
    };

    public static Command Create() => Create(() => DataFolder.Discover());

    internal static Command Create(Func<DataFolder> paths)
    {
        var model = new Option<string?>("--model", "-m") { Description = "A diffusers folder or a .safetensors/.ckpt file (default: models/demo when present)" };
        var prompt = new Option<string>("--prompt", "-p") { Description = "What to draw; A1111 syntax: (word:1.2), [word], BREAK, <lora:name:0.8>", Required = true };
        var negative = new Option<string>("--negative-prompt", "-n") { Description = "What to avoid", DefaultValueFactory = _ => "" };
        var seed = new Option<long>("--seed", "-s") { Description = "Seed of the first image (image i uses seed + i); -1 draws one", DefaultValueFactory = _ => Defaults.Seed };
        var steps = new Option<int?>("--steps") { Description = $"Sampler steps (default: the model's; {Defaults.Steps}, or a Turbo or LCM model's few)" };
        var sampler = new Option<string?>("--sampler") { Description = $"\"DPM++ 2M Karras\", euler_a, LCM, DDIM... or a diffusers class name (default: the model's; {Defaults.Sampler})" };
        var cfg = new Option<double?>("--cfg") { Description = $"Classifier-free guidance scale; 1 or less: none (default: the model's; {Defaults.CfgScale.ToString(CultureInfo.InvariantCulture)})" };
        var width = new Option<int?>("--width", "-W") { Description = "Image width, a multiple of 8 (default: the model's native size)" };
        var height = new Option<int?>("--height", "-H") { Description = "Image height, a multiple of 8 (default: the model's native size)" };
        var batch = new Option<int>("--batch") { Description = "How many images; more than one are written as FILE-0.png, FILE-1.png...", DefaultValueFactory = _ => Defaults.BatchSize };
        var clipSkip = new Option<int>("--clip-skip") { Description = "1 = the text encoder's last layer, 2 = the penultimate (A1111 numbering)", DefaultValueFactory = _ => Defaults.ClipSkip };
        var initImage = new Option<string?>("--init-image") { Description = "img2img: the image to start from" };
        var strength = new Option<double?>("--strength") { Description = $"img2img: how much to change the init image, 0..1 (default {Defaults.Strength.ToString(CultureInfo.InvariantCulture)})" };
        var lora = new Option<string[]>("--lora") { Description = "A LoRA file and its weight, FILE:W (repeatable)", HelpName = "FILE:W" };
        var config = new Option<string?>("--config") { Description = "A diffusers folder whose configs describe a single file that is not a standard family" };
        var prediction = new Option<string?>("--prediction-type") { Description = "epsilon or v_prediction, overriding the model's" };
        prediction.AcceptOnlyFromAmong("epsilon", "v_prediction");
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:N", DefaultValueFactory = _ => "cpu" };
        var dtype = new Option<string>("--dtype") { Description = "float32, float16 or bfloat16", DefaultValueFactory = _ => "float32" };
        dtype.AcceptOnlyFromAmong("float32", "float16", "bfloat16");
        var vaeTiling = new Option<bool>("--vae-tiling") { Description = "Decode the image in tiles (large sizes in less memory)" };
        var vae = new Option<string?>("--vae") { Description = "A VAE used in place of the model's own: a .safetensors/.pt/.ckpt VAE file or a diffusers VAE folder (A1111's sd_vae)", HelpName = "FILE" };
        var backend = new Option<string>("--backend")
        {
            Description = "What runs the networks: libtorch, onnx (an ONNX export's folder, on ONNX Runtime) or auto (onnx for an export with no LoRA asked, when it is the faster engine here; the choice and why are printed)",
            DefaultValueFactory = _ => BackendChoice.Auto,
        };
        backend.AcceptOnlyFromAmong([.. BackendChoice.Names]);
        var originalSize = new Option<string?>("--original-size") { Description = "SDXL: the original size the picture is conditioned on (default: the image's size)", HelpName = ConditioningSize.Form };
        var crop = new Option<string?>("--crops-coords-top-left") { Description = "SDXL: the crop's top-left corner it is conditioned on (default 0,0)", HelpName = CropTopLeft.Form };
        var targetSize = new Option<string?>("--target-size") { Description = "SDXL: the target size it is conditioned on (default: the image's size)", HelpName = ConditioningSize.Form };
        var negativeOriginalSize = new Option<string?>("--negative-original-size") { Description = "SDXL: --original-size of the negative prompt's half (default: --original-size)", HelpName = ConditioningSize.Form };
        var negativeCrop = new Option<string?>("--negative-crops-coords-top-left") { Description = "SDXL: --crops-coords-top-left of the negative half", HelpName = CropTopLeft.Form };
        var negativeTargetSize = new Option<string?>("--negative-target-size") { Description = "SDXL: --target-size of the negative half", HelpName = ConditioningSize.Form };
        var output = new Option<string>("--output", "-o") { Description = "The PNG to write", Required = true };
        var refiner = new Option<string?>("--refiner") { Description = "An SDXL refiner (diffusers folder or single file) that finishes the image from --refiner-switch-at on" };
        var refinerSwitchAt = new Option<double?>("--refiner-switch-at")
        {
            Description = $"With --refiner: the fraction of the steps after which the refiner takes over (default {GenerationRequest.DefaultRefinerSwitchAt.ToString(CultureInfo.InvariantCulture)})",
        };

        var command = new Command("generate", "Generate images from a prompt (txt2img, or img2img with --init-image).")
        {
            model, prompt, negative, seed, steps, sampler, cfg, width, height, batch, clipSkip, initImage, strength, lora,
            originalSize, crop, targetSize, negativeOriginalSize, negativeCrop, negativeTargetSize,
            config, prediction, device, dtype, vaeTiling, vae, backend, output, refiner, refinerSwitchAt,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            var arguments = new GenerateArguments
            {
                Model = parse.GetValue(model),
                Prompt = parse.GetValue(prompt)!,
                NegativePrompt = parse.GetValue(negative) ?? "",
                Seed = parse.GetValue(seed),
                Steps = parse.GetValue(steps),
                Sampler = parse.GetValue(sampler),
                Cfg = parse.GetValue(cfg),
                Width = parse.GetValue(width),
                Height = parse.GetValue(height),
                Batch = parse.GetValue(batch),
                ClipSkip = parse.GetValue(clipSkip),
                InitImage = parse.GetValue(initImage),
                Strength = parse.GetValue(strength),
                Loras = parse.GetValue(lora) ?? [],
                OriginalSize = parse.GetValue(originalSize),
                CropsCoordsTopLeft = parse.GetValue(crop),
                TargetSize = parse.GetValue(targetSize),
                NegativeOriginalSize = parse.GetValue(negativeOriginalSize),
                NegativeCropsCoordsTopLeft = parse.GetValue(negativeCrop),
                NegativeTargetSize = parse.GetValue(negativeTargetSize),
                Config = parse.GetValue(config),
                PredictionType = parse.GetValue(prediction),
                Device = parse.GetValue(device)!,
                DType = parse.GetValue(dtype)!,
                VaeTiling = parse.GetValue(vaeTiling),
                Vae = parse.GetValue(vae),
                Backend = parse.GetValue(backend)!,
                Output = parse.GetValue(output)!,
                Refiner = parse.GetValue(refiner),
                RefinerSwitchAt = parse.GetValue(refinerSwitchAt),
            };
            var io = parse.InvocationConfiguration;
            return Task.FromResult(Run(arguments, paths(), io.Output, io.Error, cancellationToken));
        });
        return command;
    }

    internal static int Run(GenerateArguments args, DataFolder paths, TextWriter output, TextWriter error, CancellationToken cancellationToken = default)
    {
        try
        {
            // Everything that can be checked without the model is checked before loading it (seconds to minutes).
            var modelPath = args.Model ?? paths.DemoModel
                ?? throw new UsageException("no --model given and no default model (models/demo) found");
            var defaults = GenerationDefaults.For(modelPath, args.Prompt, args.Loras.Select(l => ParseLora(l).Path));
            var request = Request(args, defaults);
            if (defaults.Kind != FewStepKind.None)
                error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"defaults: {defaults.Kind} ({defaults.Reason}): {request.Sampler}, {request.Steps} step{(request.Steps == 1 ? "" : "s")}, CFG {request.CfgScale}{(request.TimestepSpacing is { } s ? $", {s} timesteps" : "")}"));
            var files = OutputFiles(args.Output, args.Batch);
            var device = Device.Parse(args.Device);
            var options = new ModelLoadOptions(args.Config, args.PredictionType, device, DTypeExtensions.Parse(args.DType), paths.SearchRoots, args.Vae);
            if (!Directory.Exists(modelPath)) ModelLoader.Check(modelPath, options);
            // --vae applies to the refiner too, as A1111's sd_vae applies to whichever checkpoint is loaded: the refiner decodes the image.
            var refinerOptions = options with { ConfigDirectory = null, PredictionType = null };
            if (args.Refiner is not null) ModelLoader.Check(args.Refiner, refinerOptions);
            var backend = BackendChoice.Choose(args.Backend, modelPath, BackendChoice.AsksForRuntimeAdapters(request));
            if (backend.Backend == InferenceBackend.OnnxRuntime) CheckOnnxFlags(args);
            else ModelLoader.Check(modelPath, options);
            // Said where there was a choice to make: a model with an export could run on either engine.
            if (BackendChoice.HasOnnxExport(modelPath)) error.WriteLine($"backend: {backend.Name} ({backend.Reason})");

            var interactive = ProgressBar.IsTerminal(error);
            if (interactive) error.WriteLine($"loading {modelPath}");
            using IDiffusionModel model = backend.Backend == InferenceBackend.OnnxRuntime
                ? OnnxDiffusionModel.Load(modelPath, OnnxOptions(args, device, paths))
                : LoadLibtorch(modelPath, options, args, cancellationToken);
            using var refinerModel = args.Refiner is null ? null : LoadLibtorch(args.Refiner, refinerOptions, args, cancellationToken);
            var pipeline = new StableDiffusionPipeline(model, new AdapterFolders(paths.LoraFolders, paths.EmbeddingFolders, paths.HypernetworkFolders))
            {
                ModelHash = File.Exists(modelPath) ? new FileHashes(paths.HashCache).ModelShortHash(modelPath) : null,
                Refiner = refinerModel,
                RefinerHash = args.Refiner is not null && File.Exists(args.Refiner) ? new FileHashes(paths.HashCache).ModelShortHash(args.Refiner) : null,
            };

            var steps = 0;
            var bar = new ProgressBar(error, interactive, "generating", "steps", "it/s");
            GenerationResult images;
            try
            {
                images = pipeline.Generate(request, new ProgressCallback<GenerationProgress>(p =>
                {
                    steps = p.TotalSteps;
                    bar.Update(p.Step, p.TotalSteps);
                }), cancellationToken);
            }
            finally
            {
                bar.Finish();
            }

            var seconds = bar.Elapsed.TotalSeconds;
            for (var i = 0; i < images.Count; i++)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(files[i]))!);
                ImageCodec.Save(images[i].Image, files[i]);
                if (!bar.IsInteractive)
                    error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"image {i + 1}/{images.Count}: {steps} steps, {seconds:0.0} s for the batch ({(seconds > 0 ? steps / seconds : 0):0.00} it/s)"));
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"seed {images[i].Seed}: {files[i]}"));
            }
            foreach (var warning in images.Warnings) error.WriteLine($"warning: {warning}");
            return 0;
        }
        catch (OperationCanceledException)
        {
            return CliErrors.Cancelled(error);
        }
        catch (Exception e)
        {
            return CliErrors.Report(error, e, Flags);
        }
    }

    private static StableDiffusionModel LoadLibtorch(string modelPath, ModelLoadOptions options, GenerateArguments args, CancellationToken cancellationToken)
    {
        var model = ModelLoader.Load(modelPath, options, cancellationToken);
        if (args.VaeTiling) model.Vae.EnableTiling();
        Engine.UseThreads(model.UnetThreadDemand(2L * args.Batch, args.Height ?? model.DefaultResolution, args.Width ?? model.DefaultResolution));
        return model;
    }

    // An export's architecture, precision and VAE are fixed in its graphs: the flags that would change them cannot apply.
    private static void CheckOnnxFlags(GenerateArguments args)
    {
        if (args.Config is not null) throw new UsageException("--config describes a single file's architecture; an ONNX export carries its own");
        if (args.DType != "float32") throw new UsageException("--dtype applies to libtorch; an ONNX export's precision was chosen when it was exported");
        if (args.VaeTiling) throw new UsageException("--vae-tiling applies to libtorch; the ONNX backend decodes whole images");
        if (args.Vae is not null) throw new UsageException("--vae applies to libtorch; an ONNX export's VAE is fixed in its vae_decoder graph (give --backend libtorch)");
    }

    private static OnnxRuntimeOptions OnnxOptions(GenerateArguments args, Device device, DataFolder paths) => new()
    {
        Provider = device.IsCuda ? OnnxProvider.Cuda : OnnxProvider.Cpu,
        DeviceId = device.IsCuda ? Math.Max(device.Index, 0) : 0,
        PredictionType = args.PredictionType,
        SearchRoots = paths.SearchRoots,
    };

    /// <summary>The request the flags describe, validated (the rules are <see cref="GenerationRequest.Validate"/>'s).</summary>
    private static GenerationRequest Request(GenerateArguments args, GenerationDefaults defaults)
    {
        // Only the command line can give a strength without an image (a request always has one); it would do nothing.
        if (args.Strength is not null && args.InitImage is null)
            throw new UsageException("--strength applies to img2img: give --init-image too");
        if (args.RefinerSwitchAt is not null && args.Refiner is null)
            throw new UsageException("--refiner-switch-at says when the refiner takes over: give --refiner too");
        var request = defaults.ApplyTo(new GenerationRequest
        {
            Prompt = args.Prompt,
            NegativePrompt = args.NegativePrompt,
            Seed = args.Seed < 0 ? -1 : args.Seed,
            Width = args.Width,
            Height = args.Height,
            BatchSize = args.Batch,
            ClipSkip = args.ClipSkip,
            Strength = args.Strength ?? Defaults.Strength,
            Loras = [.. args.Loras.Select(ParseLora)],
            RefinerSwitchAt = args.Refiner is null ? null : args.RefinerSwitchAt ?? GenerationRequest.DefaultRefinerSwitchAt,
            OriginalSize = Size(args.OriginalSize, nameof(GenerationRequest.OriginalSize)),
            CropsCoordsTopLeft = Crop(args.CropsCoordsTopLeft, nameof(GenerationRequest.CropsCoordsTopLeft)),
            TargetSize = Size(args.TargetSize, nameof(GenerationRequest.TargetSize)),
            NegativeOriginalSize = Size(args.NegativeOriginalSize, nameof(GenerationRequest.NegativeOriginalSize)),
            NegativeCropsCoordsTopLeft = Crop(args.NegativeCropsCoordsTopLeft, nameof(GenerationRequest.NegativeCropsCoordsTopLeft)),
            NegativeTargetSize = Size(args.NegativeTargetSize, nameof(GenerationRequest.NegativeTargetSize)),
        }, args.Sampler, args.Steps, args.Cfg, imageToImage: args.InitImage is not null);
        request.Validate();
        // The image is read last: everything that costs nothing is checked first.
        if (args.InitImage is null) return request;
        if (!File.Exists(args.InitImage)) throw new UserInputException("init_image", $"'{args.InitImage}' does not exist");
        var imageToImage = request with { InitImage = ImageCodec.Load(args.InitImage, new ImageDecodeOptions { Channels = ChannelMode.Rgb }) };
        imageToImage.Validate();
        return imageToImage;
    }

    private static ConditioningSize? Size(string? text, string property) =>
        text is null ? null : ConditioningSize.Parse(text, GenerationRequest.FieldName(property));

    private static CropTopLeft? Crop(string? text, string property) =>
        text is null ? null : CropTopLeft.Parse(text, GenerationRequest.FieldName(property));

    /// <summary><c>FILE:W</c>, or a bare FILE with weight 1; the colon is the last one, so paths may hold colons.</summary>
    internal static (string Path, double Weight) ParseLora(string spec)
    {
        var colon = spec.LastIndexOf(':');
        var (path, weight) = colon > 0 && double.TryParse(spec.AsSpan(colon + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out var w)
            ? (spec[..colon], w)
            : (spec, 1.0);
        return (path, weight);  // the request's rules check the file and the weight
    }

    /// <summary>FILE.png for one image; FILE-0.png, FILE-1.png... for a batch.</summary>
    internal static IReadOnlyList<string> OutputFiles(string output, int batch)
    {
        ImageCodec.FormatFromExtension(output);  // an unknown extension fails here, before any work
        if (batch == 1) return [output];
        var extension = Path.GetExtension(output);
        var stem = output[..^extension.Length];
        return [.. Enumerable.Range(0, batch).Select(i => string.Create(CultureInfo.InvariantCulture, $"{stem}-{i}{extension}"))];
    }

}
