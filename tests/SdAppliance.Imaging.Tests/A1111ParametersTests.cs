namespace SdAppliance.Imaging.Tests;

// Expected values were produced by running A1111's create_infotext/quote/parse_generation_parameters logic
// (modules/processing.py, modules/infotext_utils.py) under python3 on the same inputs.
public class A1111ParametersTests
{
    private const string DocstringExample =
        "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n" +
        "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n" +
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b";

    [Fact]
    public void ParsesA1111sOwnExample()
    {
        var p = A1111Parameters.Parse(DocstringExample);
        Assert.StartsWith("girl with an artist's beret, determined,", p.Prompt);
        Assert.EndsWith("detailed, intricate", p.Prompt);
        Assert.StartsWith("ugly, fat, obese", p.NegativePrompt);
        Assert.Equal(
            [new("Steps", "20"), new("Sampler", "Euler a"), new("CFG scale", "7"), new("Seed", "965400086"), new("Size", "512x512"), new("Model hash", "45dee52b")],
            p.Settings);

        var dict = p.ToDictionary();
        Assert.Equal("512", dict["Size-1"]);
        Assert.Equal("512", dict["Size-2"]);
        Assert.False(dict.ContainsKey("Size"));
        Assert.Equal("1", dict["Clip skip"]);
        Assert.Equal("GPU", dict["RNG"]);
        Assert.Equal("Automatic", dict["Schedule type"]);
        // Writing it back gives the same text.
        Assert.Equal(DocstringExample, p.ToString());
    }

    [Fact]
    public void WritesAndReadsQuotedValues()
    {
        var p = new A1111Parameters { Prompt = "a cat\nsecond line", NegativePrompt = "dog, blurry" }
            .Add("Steps", "30")
            .Add("Sampler", "DPM++ SDE Karras")
            .Add("CFG scale", A1111Parameters.FormatFloat(7))
            .Add("Seed", "2750444522")
            .Add("Size", "512x512")
            .Add("Model hash", "9aba26abdf")
            .Add("Lora hashes", "cat: abc123, dog: def456")
            .Add("Note", "say \"hi\"\\ok\tx")
            .Add("Version", "v1.10.1")
            .Add("Hires upscaler", "Latent")
            .Add("Flag", "Flag")
            .Add("Names", "日本, 語");
        string text = p.ToString();
        Assert.Equal(
            "a cat\nsecond line\nNegative prompt: dog, blurry\nSteps: 30, Sampler: DPM++ SDE Karras, CFG scale: 7.0, Seed: 2750444522, " +
            "Size: 512x512, Model hash: 9aba26abdf, Lora hashes: \"cat: abc123, dog: def456\", Note: say \"hi\"\\ok\tx, Version: v1.10.1, " +
            "Hires upscaler: Latent, Flag, Names: \"日本, 語\"",
            text);

        var back = A1111Parameters.Parse(text);
        Assert.Equal(p.Prompt, back.Prompt);
        Assert.Equal(p.NegativePrompt, back.NegativePrompt);
        Assert.Equal("cat: abc123, dog: def456", back["Lora hashes"]);
        Assert.Equal("say \"hi\"\\ok\tx", back["Note"]);
        Assert.Equal("日本, 語", back["Names"]);
        // A bare flag is not a "Key: value" pair, so A1111's parser (and ours) loses it.
        Assert.Null(back["Flag"]);
        Assert.Equal(p.Settings.Where(kv => kv.Key != "Flag"), back.Settings);
    }

    [Fact]
    public void QuoteEscapesLikePythonJsonDumps()
    {
        Assert.Equal("plain text", A1111Parameters.Quote("plain text"));
        Assert.Equal("\"a, b\"", A1111Parameters.Quote("a, b"));
        Assert.Equal("\"k: \\\"v\\\" \\\\ \\n \\u0001 é\"", A1111Parameters.Quote("k: \"v\" \\ \n \u0001 é"));
    }

    [Fact]
    public void ALastLineWithFewerThanThreeSettingsIsPrompt()
    {
        var p = A1111Parameters.Parse("just a prompt, Steps: 3\nSteps: 20, Seed: 1");
        Assert.Equal("just a prompt, Steps: 3\nSteps: 20, Seed: 1", p.Prompt);
        Assert.Empty(p.Settings);

        var q = A1111Parameters.Parse("a: b, c: d\nNegative prompt: x");
        Assert.Equal("a: b, c: d", q.Prompt);
        Assert.Equal("x", q.NegativePrompt);
    }

    [Fact]
    public void EmptyValuesAreDropped()
    {
        var p = A1111Parameters.Parse("p\nSteps: 20, Sampler: , Seed: 5, CFG scale: 7.5");
        Assert.Equal([new("Steps", "20"), new("Seed", "5"), new("CFG scale", "7.5")], p.Settings);
    }

    [Fact]
    public void ExampleFromTheFormatsNotes()
    {
        var p = A1111Parameters.Parse("a knight\nSteps: 30, Sampler: DPM++ SDE Karras, CFG scale: 7.0, Seed: 2750444522, Size: 512x512, Model hash: 9aba26abdf");
        Assert.Equal("a knight", p.Prompt);
        Assert.Equal("", p.NegativePrompt);
        Assert.Equal("DPM++ SDE Karras", p["Sampler"]);
        Assert.Equal("2750444522", p["Seed"]);
        Assert.Equal("9aba26abdf", p["Model hash"]);
    }

    [Theory]
    [InlineData(7.0, "7.0")]
    [InlineData(7.5, "7.5")]
    [InlineData(0.75, "0.75")]
    [InlineData(1e-05, "1e-05")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(123456789.123, "123456789.123")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(0.1 + 0.2, "0.30000000000000004")]
    [InlineData(3e-7, "3e-07")]
    [InlineData(1.5e20, "1.5e+20")]
    [InlineData(0.0, "0.0")]
    public void FormatFloatMatchesPythonStr(double value, string expected)
    {
        Assert.Equal(expected, A1111Parameters.FormatFloat(value));
    }

    [Fact]
    public void SurvivesAPngRoundTrip()
    {
        var image = TestImages.Gradient(8, 8, 3);
        image.Text[ImageCodec.ParametersKey] = A1111Parameters.Parse(DocstringExample).ToString();
        var decoded = ImageCodec.Decode(ImageCodec.Encode(image));
        Assert.Equal(DocstringExample, decoded.Text[ImageCodec.ParametersKey]);
    }
}
