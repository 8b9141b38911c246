using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SdAppliance.Diffusion.Images;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Onnx.Runtime;

namespace SdAppliance.Onnx.Tagging;

/// <summary>
/// A WD14 image tagger (SmilingWolf's wd-v1-4 and wd-*-tagger-v3 models, and those made like them) run by ONNX Runtime:
/// a folder with <c>model.onnx</c> and <c>selected_tags.csv</c>. The model takes one NHWC float32 image
/// <c>[1, H, W, 3]</c> (448×448 for the published ones; read from the model) and gives one sigmoid score per tag of
/// the CSV, in its order.
/// <para>
/// The image is prepared as the taggers were trained and as their loaders (SmilingWolf's app, kohya's
/// <c>tag_images_by_wd14_tagger.py</c>) prepare it: alpha flattened onto white, padded to a square with white
/// (centred, the odd pixel right and below), resized to the model's size with antialiased bicubic filtering (PIL's
/// <c>BICUBIC</c>, what SmilingWolf's app uses both ways), channels in BGR order, values 0-255 as float32 with no
/// normalisation.
/// </para>
/// </summary>
public sealed class WdTagger : IDisposable
{
    public const string ModelFileName = "model.onnx";
    public const string TagsFileName = "selected_tags.csv";

    private readonly InferenceSession session;
    private readonly string inputName;
    private readonly string outputName;

    private WdTagger(string folder, InferenceSession session, IReadOnlyList<TaggerTag> tags, string inputName, string outputName, int height, int width)
    {
        Folder = folder;
        this.session = session;
        Tags = tags;
        this.inputName = inputName;
        this.outputName = outputName;
        Height = height;
        Width = width;
    }

    /// <summary>The tagger's folder.</summary>
    public string Folder { get; }

    /// <summary>The tags, one per score, in the model's output order.</summary>
    public IReadOnlyList<TaggerTag> Tags { get; }

    /// <summary>The image size the model takes.</summary>
    public int Height { get; }

    public int Width { get; }

    /// <summary>Whether <paramref name="folder"/> has what a tagger needs (the files, not yet checked).</summary>
    public static bool IsTaggerFolder(string folder) =>
        File.Exists(Path.Combine(folder, ModelFileName)) && File.Exists(Path.Combine(folder, TagsFileName));

    /// <summary>
    /// Loads the tagger in <paramref name="folder"/>; refuses, naming the file, a folder without its files, a tag list
    /// without its columns, a model that is not an NHWC float image tagger, or one whose scores are not one per tag.
    /// </summary>
    public static WdTagger Load(string folder, OnnxRuntimeOptions? options = null)
    {
        if (!Directory.Exists(folder))
            throw new UserInputException(folder, "is not a folder", "give a tagger folder holding model.onnx and selected_tags.csv (a WD14 tagger as published)");
        var modelPath = Path.Combine(folder, ModelFileName);
        var tagsPath = Path.Combine(folder, TagsFileName);
        foreach (var needed in (string[])[modelPath, tagsPath])
            if (!File.Exists(needed))
                throw new UserInputException(needed, "is missing", "a WD14 tagger folder holds model.onnx and selected_tags.csv; download both from the tagger's page");
        var tags = TaggerTags.Read(tagsPath);
        var session = OpenSession(modelPath, options ?? new OnnxRuntimeOptions());
        try
        {
            var (input, height, width) = CheckInput(session, modelPath);
            var output = CheckOutput(session, modelPath, tags.Count);
            return new WdTagger(folder, session, tags, input, output, height, width);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>The score of each tag for <paramref name="image"/>.</summary>
    public float[] Score(RgbImage image)
    {
        var pixels = Prepare(image, Width, Height);
        using var value = OrtValue.CreateTensorValueFromMemory(pixels, [1, Height, Width, 3]);
        using var run = new RunOptions();
        using var results = session.Run(run, [inputName], [value], [outputName]);
        var scores = results[0].GetTensorDataAsSpan<float>();
        if (scores.Length != Tags.Count)
            throw new UserInputException(Path.Combine(Folder, ModelFileName), $"gave {scores.Length} scores for the {Tags.Count} tags of {TagsFileName}",
                "use the selected_tags.csv that came with this model");
        return scores.ToArray();
    }

    /// <summary>
    /// <paramref name="image"/> as the model's input, <c>[H, W, 3]</c> row-major: flattened onto white, padded to a white
    /// square, resized to <paramref name="width"/>×<paramref name="height"/>, BGR, 0-255.
    /// </summary>
    public static float[] Prepare(RgbImage image, int width, int height)
    {
        var rgb = image.HasAlpha ? image.FlattenAlpha(Rgb.White) : image;
        var square = ImageTensors.Resize(PadToSquare(rgb), width, height);
        var pixels = square.Pixels;
        var input = new float[width * height * 3];
        for (var i = 0; i < width * height; i++)
        {
            input[i * 3] = pixels[i * 3 + 2];
            input[i * 3 + 1] = pixels[i * 3 + 1];
            input[i * 3 + 2] = pixels[i * 3];
        }
        return input;
    }

    /// <summary>An RGB image centred on a white square as wide as its longer side (the taggers' loaders put the odd pixel right and below).</summary>
    internal static RgbImage PadToSquare(RgbImage rgb)
    {
        var size = Math.Max(rgb.Width, rgb.Height);
        if (rgb.Width == size && rgb.Height == size) return rgb;
        var left = (size - rgb.Width) / 2;
        var top = (size - rgb.Height) / 2;
        var pixels = new byte[(long)size * size * 3];
        pixels.AsSpan().Fill(255);
        for (var y = 0; y < rgb.Height; y++)
            rgb.Pixels.AsSpan(y * rgb.Width * 3, rgb.Width * 3).CopyTo(pixels.AsSpan(((top + y) * size + left) * 3));
        return new RgbImage(size, size, 3, pixels);
    }

    public void Dispose() => session.Dispose();

    private static InferenceSession OpenSession(string modelPath, OnnxRuntimeOptions options)
    {
        using var sessionOptions = OnnxSession.SessionOptionsFor(options);
        try
        {
            return new InferenceSession(modelPath, sessionOptions);
        }
        catch (OnnxRuntimeException e)
        {
            throw new UserInputException(modelPath, $"cannot be loaded by ONNX Runtime: {e.Message}", "download the tagger's model.onnx again", e);
        }
    }

    private static (string Name, int Height, int Width) CheckInput(InferenceSession session, string modelPath)
    {
        if (session.InputNames.Count != 1)
            throw new UserInputException(modelPath, $"has {session.InputNames.Count} inputs; a WD14 tagger has one, the image", "use a WD14 tagger's model.onnx");
        var name = session.InputNames[0];
        var input = session.InputMetadata[name];
        var dims = input.IsTensor ? input.Dimensions : [];
        if (!input.IsTensor || input.ElementDataType != TensorElementType.Float || dims.Length != 4 || dims[3] != 3)
            throw new UserInputException(modelPath,
                $"input '{name}' is {Describe(input)}, not a float32 image [batch, height, width, 3] (NHWC, as WD14 taggers take it)", "use a WD14 tagger's model.onnx");
        if (dims[0] > 1)
            throw new UserInputException(modelPath, $"input '{name}' takes batches of exactly {dims[0]} images", "export the tagger with a batch of 1 or a free batch size");
        // A size the model leaves free is given the published taggers' 448.
        const int PublishedSize = 448;
        return (name, dims[1] > 0 ? dims[1] : PublishedSize, dims[2] > 0 ? dims[2] : PublishedSize);
    }

    private static string CheckOutput(InferenceSession session, string modelPath, int tagCount)
    {
        var name = session.OutputNames[0];
        var output = session.OutputMetadata[name];
        var dims = output.IsTensor ? output.Dimensions : [];
        if (!output.IsTensor || output.ElementDataType != TensorElementType.Float || dims.Length != 2)
            throw new UserInputException(modelPath, $"output '{name}' is {Describe(output)}, not float32 scores [batch, tags]", "use a WD14 tagger's model.onnx");
        if (dims[1] > 0 && dims[1] != tagCount)
            throw new UserInputException(modelPath, $"gives {dims[1]} scores, but {TagsFileName} lists {tagCount} tags",
                "use the selected_tags.csv that came with this model");
        return name;
    }

    private static string Describe(NodeMetadata value) => value.IsTensor
        ? $"{value.ElementDataType.ToString().ToLowerInvariant()} [{string.Join(", ", value.Dimensions.Select((d, i) => d > 0 ? d.ToString(System.Globalization.CultureInfo.InvariantCulture) : value.SymbolicDimensions[i] is { Length: > 0 } s ? s : "?"))}]"
        : value.OnnxValueType.ToString();
}
