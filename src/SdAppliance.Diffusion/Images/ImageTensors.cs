using SdAppliance.Imaging;
using SdAppliance.Torch;
using F = SdAppliance.Torch.Functional;

namespace SdAppliance.Diffusion.Images;

/// <summary>
/// Images to and from the tensors the VAE works on ([B, 3, H, W] in [-1, 1]), and resizing through
/// the engine's antialiased interpolation, the way diffusers' image processor does it.
/// </summary>
public static class ImageTensors
{
    /// <summary>An RGB image (alpha flattened onto white) as a [1, 3, H, W] float32 tensor in [-1, 1].</summary>
    public static Tensor ToTensor(RgbImage image, Device? device = null)
    {
        var rgb = image.HasAlpha ? image.FlattenAlpha() : image;
        using var scope = torch.NewDisposeScope();
        var hwc = torch.FromArray<byte>(rgb.Pixels, [rgb.Height, rgb.Width, 3], DType.UInt8);
        var chw = hwc.Permute(2, 0, 1).Unsqueeze(0).To(DType.Float32).Div(127.5).Sub(1.0);
        return chw.To(device ?? Device.Cpu).MoveToOuterScope();
    }

    /// <summary>
    /// [B, 3, H, W] in [-1, 1] to images: <c>round(clamp(x / 2 + 0.5, 0, 1) · 255)</c> with ties to even,
    /// the same uint8 values diffusers' <c>numpy_to_pil</c> produces.
    /// </summary>
    public static RgbImage[] ToImages(Tensor images)
    {
        if (images.Dim != 4 || images.Size(1) != 3)
            throw new ArgumentException($"expected images of shape [B, 3, H, W], got [{string.Join(", ", images.Shape)}]", nameof(images));
        using var scope = torch.NewDisposeScope();
        var bytes = images.To(Device.Cpu, DType.Float32).Div(2).Add(0.5).Clamp(0, 1).Mul(255).Round().To(DType.UInt8).Permute(0, 2, 3, 1).Contiguous();
        var (batch, height, width) = ((int)images.Size(0), (int)images.Size(2), (int)images.Size(3));
        var all = bytes.ToArray<byte>();
        var frame = height * width * 3;
        return Enumerable.Range(0, batch).Select(i => new RgbImage(width, height, 3, all.AsSpan(i * frame, frame).ToArray())).ToArray();
    }

    /// <summary>Resizes to exactly <paramref name="width"/>×<paramref name="height"/> with antialiased bicubic filtering.</summary>
    public static RgbImage Resize(RgbImage image, int width, int height)
    {
        if (image.Width == width && image.Height == height) return image;
        using var scope = torch.NewDisposeScope();
        var x = ToTensor(image);
        var resized = F.Interpolate(x, [height, width], mode: "bicubic", alignCorners: false, antialias: true);
        return ToImages(resized)[0];
    }

    /// <summary>
    /// Scales so the image covers <paramref name="width"/>×<paramref name="height"/>, then cuts the
    /// overflow evenly from both sides (A1111's "Crop and resize").
    /// </summary>
    public static RgbImage ResizeAndCenterCrop(RgbImage image, int width, int height)
    {
        var scale = Math.Max((double)width / image.Width, (double)height / image.Height);
        var scaledW = Math.Max(width, (int)Math.Round(image.Width * scale));
        var scaledH = Math.Max(height, (int)Math.Round(image.Height * scale));
        return Crop(Resize(image, scaledW, scaledH), (scaledW - width) / 2, (scaledH - height) / 2, width, height);
    }

    /// <summary>The <paramref name="width"/>×<paramref name="height"/> window at (<paramref name="left"/>, <paramref name="top"/>).</summary>
    public static RgbImage Crop(RgbImage image, int left, int top, int width, int height)
    {
        if (left < 0 || top < 0 || left + width > image.Width || top + height > image.Height)
            throw new ArgumentOutOfRangeException(nameof(image), $"crop {width}x{height} at ({left}, {top}) leaves the {image.Width}x{image.Height} image");
        if (left == 0 && top == 0 && width == image.Width && height == image.Height) return image;
        var c = image.Channels;
        var pixels = new byte[width * height * c];
        for (var y = 0; y < height; y++)
            image.Pixels.AsSpan(((top + y) * image.Width + left) * c, width * c).CopyTo(pixels.AsSpan(y * width * c));
        return new RgbImage(width, height, c, pixels);
    }
}
