namespace SdAppliance.Imaging.Tests;

/// <summary>Randomly damaged files must decode or fail with <see cref="ImageFormatException"/>, never anything else.</summary>
public class DamagedFileTests
{
    public static TheoryData<string> Formats => ["png", "jpeg", "webp", "webp-lossless"];

    [Theory]
    [MemberData(nameof(Formats))]
    public void DamagedFilesFailCleanly(string kind)
    {
        var image = TestImages.Gradient(24, 16, kind == "jpeg" ? 3 : 4);
        image.Text[ImageCodec.ParametersKey] = "a prompt\nSteps: 20, Sampler: Euler, Seed: 1";
        var options = kind switch
        {
            "png" => new ImageEncodeOptions { Format = ImageFormat.Png },
            "jpeg" => new ImageEncodeOptions { Format = ImageFormat.Jpeg },
            "webp" => new ImageEncodeOptions { Format = ImageFormat.WebP },
            _ => new ImageEncodeOptions { Format = ImageFormat.WebP, Lossless = true },
        };
        byte[] original = ImageCodec.Encode(image, options);
        var random = new Random(kind.Length);
        int failures = 0;
        for (int round = 0; round < 300; round++)
        {
            byte[] damaged = (byte[])original.Clone();
            // Keep the magic bytes so the damage reaches the codec rather than format detection.
            int keep = 12;
            for (int n = random.Next(1, 6); n > 0; n--)
            {
                damaged[random.Next(keep, damaged.Length)] = (byte)random.Next(256);
            }
            if (round % 3 == 0)
            {
                damaged = damaged[..random.Next(keep, damaged.Length)];
            }
            try
            {
                var decoded = ImageCodec.Decode(damaged);
                Assert.True(decoded.Width > 0 && decoded.Height > 0);
                _ = ImageCodec.Identify(damaged);
            }
            catch (ImageFormatException)
            {
                failures++;
            }
        }
        // Truncation alone hits a third of the rounds, so many of them must have been refused.
        Assert.True(failures >= 50, $"only {failures} of 300 damaged files were refused");
    }
}
