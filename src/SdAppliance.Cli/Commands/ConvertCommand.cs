using System.CommandLine;
using System.Globalization;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Conversion;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Export;

namespace SdAppliance.Cli.Commands;

/// <summary>
/// <c>sdapp convert</c>: a diffusers folder to one original-layout file (.safetensors or .ckpt) and back,
/// optionally to float16; or, with <c>--to onnx</c>, a model to the folder ONNX Stable Diffusion apps load, LoRAs merged.
/// The work is <see cref="ModelConverter"/>'s and <see cref="OnnxPipelineExporter"/>'s; this prints progress and the result.
/// </summary>
public static class ConvertCommand
{
    public static Command Create() => Create(() => DataFolder.Discover());

    internal static Command Create(Func<DataFolder> paths)
    {
        var input = new Option<string>("--input", "-i") { Description = "A diffusers folder or a .safetensors/.ckpt file", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "The file or folder to write", Required = true };
        var to = new Option<string?>("--to") { Description = "diffusers, safetensors, ckpt or onnx (default: from the output's extension, else diffusers)" };
        to.AcceptOnlyFromAmong([.. ModelConverter.FormatNames.Keys, Onnx]);
        var half = new Option<bool>("--half") { Description = "Store floating-point weights as float16" };
        var prune = new Option<bool>("--prune") { Description = "A single file without its EMA copy (model_ema.*); a .ckpt's optimizer states never travel" };
        var emaOnly = new Option<bool>("--ema-only") { Description = "A single file's EMA weights (model_ema.*) written as the model's; refused for a file without EMA" };
        var config = new Option<string?>("--config") { Description = "A diffusers folder whose configs describe a single file that is not a standard family" };
        var prediction = new Option<string?>("--prediction-type") { Description = "epsilon or v_prediction, written into the scheduler config" };
        prediction.AcceptOnlyFromAmong("epsilon", "v_prediction");

        var layout = new Option<string?>("--layout") { Description = "onnx: optimum (default) or diffusers, the app whose folder layout is written" };
        layout.AcceptOnlyFromAmong([.. OnnxExportOptions.LayoutNames.Keys]);
        var fp16 = new Option<bool>("--fp16") { Description = "onnx: float16 weights and arithmetic (for CUDA)" };
        var lora = new Option<string[]>("--lora") { Description = "onnx: a LoRA file merged at its weight, FILE:W (repeatable)", HelpName = "FILE:W" };
        var embedding = new Option<string[]>("--embedding") { Description = "onnx: a textual-inversion embedding whose token is baked in (repeatable)", HelpName = "FILE" };
        var attention = new Option<string?>("--attention") { Description = "onnx: standard operators (default, any runtime) or fused (ONNX Runtime's MultiHeadAttention)" };
        attention.AcceptOnlyFromAmong([.. OnnxExportOptions.AttentionNames.Keys]);
        var overwrite = new Option<bool>("--overwrite") { Description = "onnx: replace an existing output folder" };

        var command = new Command("convert", "Convert a model between a diffusers folder and a single .safetensors/.ckpt file, or export it to ONNX.")
        {
            input, output, to, half, prune, emaOnly, config, prediction, layout, fp16, lora, embedding, attention, overwrite,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            var io = parse.InvocationConfiguration;
            var onnx = new OnnxArguments(parse.GetValue(layout), parse.GetValue(fp16), parse.GetValue(lora) ?? [], parse.GetValue(embedding) ?? [],
                parse.GetValue(attention), parse.GetValue(overwrite));
            if (parse.GetValue(to) == Onnx)
            {
                if (parse.GetValue(half)) return Task.FromResult(CliErrors.Report(io.Error, new UsageException("--half is for checkpoint files; an ONNX export takes --fp16")));
                if (parse.GetValue(prune) || parse.GetValue(emaOnly))
                    return Task.FromResult(CliErrors.Report(io.Error, new UsageException($"{(parse.GetValue(emaOnly) ? "--ema-only" : "--prune")} is for checkpoint files; convert to a single file first, then export that to ONNX")));
                return Task.FromResult(RunOnnx(parse.GetValue(input)!, parse.GetValue(output)!, onnx,
                    new ModelLoadOptions(parse.GetValue(config), parse.GetValue(prediction), SearchRoots: paths().SearchRoots), io.Output, io.Error, cancellationToken));
            }
            if (onnx.Given() is { } onnxOnly)
                return Task.FromResult(CliErrors.Report(io.Error, new UsageException($"{onnxOnly} is for an ONNX export: add --to onnx")));
            var format = ModelConverter.ParseFormat(parse.GetValue(to), "--to");
            var options = new ConversionOptions(format, parse.GetValue(half), parse.GetValue(config), parse.GetValue(prediction), paths().SearchRoots,
                Prune: parse.GetValue(prune), EmaOnly: parse.GetValue(emaOnly));
            return Task.FromResult(Run(parse.GetValue(input)!, parse.GetValue(output)!, options, io.Output, io.Error, cancellationToken));
        });
        return command;
    }

    /// <summary>The target name of an ONNX export.</summary>
    private const string Onnx = "onnx";

    /// <summary>The flags of an ONNX export as given (names as the command line spells them).</summary>
    internal sealed record OnnxArguments(string? Layout, bool Fp16, IReadOnlyList<string> Loras, IReadOnlyList<string> Embeddings, string? Attention, bool Overwrite)
    {
        /// <summary>The first ONNX-only flag given, for refusing it without <c>--to onnx</c>; null when none is.</summary>
        public string? Given() =>
            Layout is not null ? "--layout" : Fp16 ? "--fp16" : Loras.Count > 0 ? "--lora" : Embeddings.Count > 0 ? "--embedding"
                : Attention is not null ? "--attention" : Overwrite ? "--overwrite" : null;
    }

    /// <summary>The flag of each export option a message may name.</summary>
    private static readonly IReadOnlyDictionary<string, string> OnnxFlags = new Dictionary<string, string>
    {
        ["config_directory"] = "--config", ["prediction_type"] = "--prediction-type", ["layout"] = "--layout", ["attention"] = "--attention",
    };

    /// <summary>
    /// Loads the model on the CPU and exports it: everything that can be checked without the model (the layout, the
    /// output folder) is checked before loading it. Prints each part as it is written, then the folder and its files.
    /// </summary>
    internal static int RunOnnx(string input, string output, OnnxArguments args, ModelLoadOptions load, TextWriter stdout, TextWriter error, CancellationToken cancellationToken = default)
    {
        try
        {
            var options = new OnnxExportOptions
            {
                Layout = OnnxExportOptions.ParseLayout(args.Layout, "layout"),
                Precision = args.Fp16 ? OnnxPrecision.Float16 : OnnxPrecision.Float32,
                Attention = OnnxExportOptions.ParseAttention(args.Attention, "attention"),
                Overwrite = args.Overwrite,
            };
            OnnxPipelineExporter.CheckTarget(output, options);
            var loras = args.Loras.Select(GenerateCommand.ParseLora).Select(l => new OnnxExportLora(l.Path, l.Weight, l.Weight)).ToList();
            ModelLoader.Check(input, load);
            var interactive = ProgressBar.IsTerminal(error);
            if (interactive) error.WriteLine($"loading {input}");
            using var model = ModelLoader.Load(input, load, cancellationToken);
            var parts = OnnxPipelineExporter.Parts(model);
            var bar = new ProgressBar(error, interactive, "exporting", "parts", "parts/s");
            OnnxExportResult result;
            try
            {
                var done = 0;
                result = OnnxPipelineExporter.Export(model, output, options, loras, args.Embeddings,
                    new ProgressCallback<string>(part =>
                    {
                        bar.Update(done++, parts.Count, part);
                        if (!interactive) error.WriteLine($"writing {part}");
                    }), cancellationToken);
                bar.Update(parts.Count, parts.Count, "done");
            }
            finally
            {
                bar.Finish();
            }
            foreach (var warning in result.Warnings) error.WriteLine("warning: " + warning);
            var layout = OnnxExportOptions.LayoutNames.First(l => l.Value == options.Layout).Key;
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wrote {result.Folder} (ONNX, {layout} layout, {FamilyName(model.Family)}, {(args.Fp16 ? "float16" : "float32")}, {result.Files.Count} files, {result.Bytes / 1e6:0.0} MB)"));
            foreach (var file in result.Files)
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {file}  {new FileInfo(Path.Combine(result.Folder, file)).Length} bytes"));
            return 0;
        }
        catch (OperationCanceledException)
        {
            return CliErrors.Cancelled(error);
        }
        catch (Exception e)
        {
            return CliErrors.Report(error, e, OnnxFlags);
        }
    }

    /// <summary>The flag of each conversion option a message may name.</summary>
    private static readonly IReadOnlyDictionary<string, string> Flags = new Dictionary<string, string>
    {
        ["config_directory"] = "--config", ["prediction_type"] = "--prediction-type", ["ema_only"] = "--ema-only", ["prune"] = "--prune",
    };

    internal static int Run(string input, string output, ConversionOptions options, TextWriter stdout, TextWriter error, CancellationToken cancellationToken = default)
    {
        try
        {
            var bar = new ProgressBar(error, ProgressBar.IsTerminal(error), "converting", "tensors", "tensors/s");
            ConversionResult result;
            try
            {
                result = ModelConverter.Convert(input, output, options, new ProgressCallback<ConversionProgress>(p => bar.Update(p.Done, p.Total)), cancellationToken);
            }
            finally
            {
                bar.Finish();
            }
            foreach (var warning in result.Warnings) error.WriteLine("warning: " + CliErrors.FlagsInText(warning, Flags));
            if (!bar.IsInteractive)
                error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"converted {result.TensorCount} tensors in {bar.Elapsed.TotalSeconds:0.0} s"));
            var kind = result.Format switch
            {
                ModelFormat.Diffusers => "diffusers folder",
                ModelFormat.Safetensors => "safetensors file",
                _ => "ckpt file",
            };
            stdout.WriteLine($"wrote {result.OutputPath} ({kind}, {FamilyName(result.Family)}, {result.TensorCount} tensors{(options.EmaOnly ? ", EMA weights" : options.Prune ? ", pruned" : "")}{(options.Half ? ", float16" : "")})");
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

    private static string FamilyName(ModelFamily family) => family switch
    {
        ModelFamily.V1 => "SD 1.x",
        ModelFamily.V2 => "SD 2.x",
        ModelFamily.XlBase => "SDXL",
        ModelFamily.XlRefiner => "SDXL refiner",
        _ => "unknown family",
    };
}
