using System.CommandLine;
using System.Globalization;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Conversion;

namespace SdAppliance.Cli.Commands;

/// <summary>
/// <c>sdapp convert</c>: a diffusers folder to one original-layout file (.safetensors or .ckpt) and back,
/// optionally to float16. The work is <see cref="ModelConverter"/>'s; this prints progress and the result.
/// </summary>
public static class ConvertCommand
{
    public static Command Create() => Create(() => DataFolder.Discover());

    internal static Command Create(Func<DataFolder> paths)
    {
        var input = new Option<string>("--input", "-i") { Description = "A diffusers folder or a .safetensors/.ckpt file", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "The file or folder to write", Required = true };
        var to = new Option<string?>("--to") { Description = "diffusers, safetensors or ckpt (default: from the output's extension, else diffusers)" };
        to.AcceptOnlyFromAmong([.. ModelConverter.FormatNames.Keys]);
        var half = new Option<bool>("--half") { Description = "Store floating-point weights as float16" };
        var config = new Option<string?>("--config") { Description = "A diffusers folder whose configs describe a single file that is not a standard family" };
        var prediction = new Option<string?>("--prediction-type") { Description = "epsilon or v_prediction, written into the scheduler config" };
        prediction.AcceptOnlyFromAmong("epsilon", "v_prediction");

        var command = new Command("convert", "Convert a model between a diffusers folder and a single .safetensors/.ckpt file.")
        {
            input, output, to, half, config, prediction,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            var format = ModelConverter.ParseFormat(parse.GetValue(to), "--to");
            var options = new ConversionOptions(format, parse.GetValue(half), parse.GetValue(config), parse.GetValue(prediction), paths().SearchRoots);
            var io = parse.InvocationConfiguration;
            return Task.FromResult(Run(parse.GetValue(input)!, parse.GetValue(output)!, options, io.Output, io.Error, cancellationToken));
        });
        return command;
    }

    /// <summary>The flag of each conversion option a message may name.</summary>
    private static readonly IReadOnlyDictionary<string, string> Flags = new Dictionary<string, string>
    {
        ["config_directory"] = "--config", ["prediction_type"] = "--prediction-type",
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
            stdout.WriteLine($"wrote {result.OutputPath} ({kind}, {FamilyName(result.Family)}, {result.TensorCount} tensors{(options.Half ? ", float16" : "")})");
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
        _ => "unknown family",
    };
}
