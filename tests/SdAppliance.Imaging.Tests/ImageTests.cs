using System.Runtime.CompilerServices;
using SdAppliance.Formats;
using SdAppliance.Imaging.Native;

namespace SdAppliance.Imaging.Tests;

public class ImageTests
{
    [Fact]
    public void FlattenAlphaBlendsOntoTheBackground()
    {
        var image = new RgbImage(4, 1, 4, [
            200, 100, 50, 255, // opaque: unchanged
            200, 100, 50, 0,   // transparent: background
            200, 100, 50, 128, // half: (c*128 + bg*127) / 255, rounded
            0, 0, 0, 51,       // 20% black over white: 255*204/255 = 204
        ]);
        image.Text["k"] = "v";
        var white = image.FlattenAlpha();
        Assert.Equal(3, white.Channels);
        Assert.Equal([200, 100, 50, 255, 255, 255, 227, 177, 152, 204, 204, 204], white.Pixels);
        Assert.Equal("v", white.Text["k"]);
        var black = image.FlattenAlpha(new Rgb(0, 0, 0));
        Assert.Equal([200, 100, 50, 0, 0, 0, 100, 50, 25, 0, 0, 0], black.Pixels);
    }

    [Fact]
    public void DecodeChannelModes()
    {
        var rgba = TestImages.Gradient(9, 7, 4);
        byte[] png = ImageCodec.Encode(rgba);
        Assert.Equal(4, ImageCodec.Decode(png).Channels);
        var flattened = ImageCodec.Decode(png, new ImageDecodeOptions { Channels = ChannelMode.Rgb, Background = new Rgb(10, 20, 30) });
        Assert.Equal(rgba.FlattenAlpha(new Rgb(10, 20, 30)).Pixels, flattened.Pixels);

        var rgb = TestImages.Gradient(9, 7, 3);
        var widened = ImageCodec.Decode(ImageCodec.Encode(rgb), new ImageDecodeOptions { Channels = ChannelMode.Rgba });
        Assert.Equal(4, widened.Channels);
        Assert.Equal(rgb.Pixels, widened.FlattenAlpha().Pixels);
        Assert.All(Enumerable.Range(0, 63), i => Assert.Equal(255, widened.Pixels[(i * 4) + 3]));
    }

    [Fact]
    public void UnknownAndEmptyDataAreReportedWithTheFileName()
    {
        using var folder = new TempFolder();
        string text = folder.File("notes.png");
        File.WriteAllText(text, "GIF89a is not supported either");
        var error = Assert.Throws<ImageFormatException>(() => ImageCodec.Load(text));
        Assert.Equal(text, error.FilePath);
        Assert.Contains("not a PNG, JPEG or WebP image", error.Message);
        Assert.Contains(text, error.Message);

        string empty = folder.File("empty.jpg");
        File.WriteAllBytes(empty, []);
        Assert.Contains("empty", Assert.Throws<ImageFormatException>(() => ImageCodec.Load(empty)).Problem);
    }

    [Fact]
    public void SaveFollowsTheExtensionAndLeavesNoTemporaryFile()
    {
        using var folder = new TempFolder();
        var image = TestImages.Gradient(8, 8, 3);
        foreach (var (name, format) in new[] { ("a.png", ImageFormat.Png), ("b.JPG", ImageFormat.Jpeg), ("c.jpeg", ImageFormat.Jpeg), ("d.webp", ImageFormat.WebP) })
        {
            ImageCodec.Save(image, folder.File(name));
            Assert.Equal(format, ImageCodec.Identify(folder.File(name)).Format);
        }
        Assert.Equal(4, Directory.GetFiles(folder.Path).Length);
        Assert.Throws<UserInputException>(() => ImageCodec.Save(image, folder.File("e.bmp")));
    }

    [Fact]
    public void ConstructorChecksTheBufferSize()
    {
        Assert.Throws<ArgumentException>(() => new RgbImage(2, 2, 3, new byte[11]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RgbImage(2, 2, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RgbImage(0, 2, 3));
    }

    [Fact]
    public unsafe void PngImageStructMatchesTheCLayout()
    {
        // png.h: png_controlp opaque; 7 x png_uint_32; char message[64] -> 8 + 28 + 64, padded to 8.
        Assert.Equal(104, sizeof(LibPng.PngImage));
        var image = default(LibPng.PngImage);
        byte* start = (byte*)&image;
        Assert.Equal(8, (int)((byte*)&image.Version - start));
        Assert.Equal(32, (int)((byte*)&image.WarningOrError - start));
        Assert.Equal(36, (int)(image.Message - start));
    }
}
