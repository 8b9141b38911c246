using System.CommandLine;
using System.Globalization;
using SdAppliance.Appliance.Storage;
using SdAppliance.Onnx.Tagging;

namespace SdAppliance.Cli.Commands;

/// <summary>
/// <c>sdapp caption</c>: writes a <c>.txt</c> caption beside every image of a dataset with a WD14 tagger run by ONNX
/// Runtime, as kohya's <c>tag_images_by_wd14_tagger.py</c> does. The rules are <see cref="DatasetCaptioner"/>'s; this
/// maps flags to them and prints what it wrote and what it skipped.
/// </summary>
public static class CaptionCommand
{
    public static Command Create() => Create(() => DataFolder.Discover());

    internal static Command Create(Func<DataFolder> paths)
    {
        var tagger = new Option<string>("--tagger") { Description = "A WD14 tagger folder (model.onnx + selected_tags.csv), or the name of one in models/taggers/", Required = true, HelpName = "DIR" };
        var data = new Option<string>("--data") { Description = "The dataset folder: every image under it is captioned (kohya's N_name folders too)", Required = true, HelpName = "DATASET" };
        var threshold = new Option<double>("--threshold") { Description = "The score a general tag needs", DefaultValueFactory = _ => CaptionOptions.DefaultThreshold };
        var characterThreshold = new Option<double>("--character-threshold") { Description = "The score a character tag needs", DefaultValueFactory = _ => CaptionOptions.DefaultCharacterThreshold };
        var undesired = new Option<string?>("--undesired-tags") { Description = "Comma-separated tags never to write (with underscores or spaces)", HelpName = "TAGS" };
        var append = new Option<bool>("--append") { Description = "Add the tags an existing caption lacks after its own" };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace existing captions (without --append or --overwrite, images with a caption are skipped)" };
        var extension = new Option<string>("--caption-extension") { Description = "The caption files' extension", DefaultValueFactory = _ => CaptionOptions.DefaultCaptionExtension };
        var keepUnderscores = new Option<bool>("--keep-underscores") { Description = "Write tags as the tagger spells them (long_hair), not with spaces" };
        var rating = new Option<bool>("--use-rating-tags") { Description = "Write the likeliest rating tag (general, sensitive...) first" };

        var command = new Command("caption", "Caption a dataset's images with a WD14 tagger (ONNX), writing .txt files beside them.")
        {
            tagger, data, threshold, characterThreshold, undesired, append, overwrite, extension, keepUnderscores, rating,
        };
        command.SetAction((parse, cancellationToken) =>
        {
            var io = parse.InvocationConfiguration;
            if (parse.GetValue(append) && parse.GetValue(overwrite))
                return Task.FromResult(CliErrors.Report(io.Error, new UsageException("--append and --overwrite do not go together: choose one")));
            var options = new CaptionOptions
            {
                Threshold = parse.GetValue(threshold),
                CharacterThreshold = parse.GetValue(characterThreshold),
                UndesiredTags = CaptionOptions.ParseTagList(parse.GetValue(undesired)),
                Mode = parse.GetValue(append) ? CaptionMode.Append : parse.GetValue(overwrite) ? CaptionMode.Overwrite : CaptionMode.Skip,
                CaptionExtension = parse.GetValue(extension)!,
                KeepUnderscores = parse.GetValue(keepUnderscores),
                RatingTag = parse.GetValue(rating),
            };
            return Task.FromResult(Run(TaggerFolder(parse.GetValue(tagger)!, paths), parse.GetValue(data)!, options, io.Output, io.Error, cancellationToken));
        });
        return command;
    }

    /// <summary>The flag of each caption option a message may name.</summary>
    private static readonly IReadOnlyDictionary<string, string> Flags = new Dictionary<string, string>
    {
        ["threshold"] = "--threshold", ["character_threshold"] = "--character-threshold", ["caption_extension"] = "--caption-extension",
    };

    internal static int Run(string taggerFolder, string dataset, CaptionOptions options, TextWriter stdout, TextWriter error, CancellationToken cancellationToken = default)
    {
        try
        {
            options.Validate();
            using var tagger = WdTagger.Load(taggerFolder);
            var bar = new ProgressBar(error, ProgressBar.IsTerminal(error), "captioning", "images", "images/s");
            CaptioningResult result;
            try
            {
                result = DatasetCaptioner.Caption(tagger, dataset, options, new ProgressCallback<CaptioningProgress>(p => bar.Update(p.Done, p.Total)), cancellationToken);
            }
            finally
            {
                bar.Finish();
            }
            foreach (var skipped in result.Skipped) error.WriteLine($"skipped {skipped.Image}: {skipped.Reason}");
            foreach (var written in result.Written) stdout.WriteLine($"{written.Image}: {written.Caption}");
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"captioned {result.Written.Count} of {result.Total} images in {dataset} ({result.Skipped.Count} skipped) in {bar.Elapsed.TotalSeconds:0.0} s"));
            return 0;
        }
        catch (OperationCanceledException)
        {
            // Each caption is written whole or not at all, so what was written before the interrupt stays.
            error.WriteLine("cancelled; the captions written so far are kept");
            return Interrupts.ExitCode;
        }
        catch (Exception e)
        {
            return CliErrors.Report(error, e, Flags);
        }
    }

    /// <summary>A folder as given, else a tagger of that name in the data folder's (or the application's) <c>models/taggers/</c>.</summary>
    private static string TaggerFolder(string given, Func<DataFolder> paths)
    {
        if (Directory.Exists(given) || given.Contains('/') || given.Contains('\\')) return given;
        return paths().TaggerFolders.Select(f => Path.Combine(f, given)).FirstOrDefault(Directory.Exists) ?? given;
    }
}
