using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Imaging;

namespace SdAppliance.Appliance.Storage;

/// <summary>
/// Small JPEG thumbnails of dataset images, made once and kept under <c>cache/thumbnails</c>: a thumbnail is named by a hash of
/// the image's full path, its size in bytes, its modification time and the thumbnail size, so an image that changes gets a
/// new one and an unchanged image never costs a decode again. Each is written to a temporary name and renamed, so a
/// half-written thumbnail is never served. Only what <see cref="DatasetService.OpenImageAsync"/> lets the caller see is made.
/// </summary>
public sealed class ThumbnailCache(DatasetService datasets, DataFolder data)
{
    /// <summary>The sizes (the longest side, in pixels) thumbnails come in.</summary>
    public static readonly IReadOnlyList<int> Sizes = [128, 256, 512];

    public string Folder => Path.Combine(data.Cache, "thumbnails");

    /// <summary>The thumbnail of a dataset image, at most <paramref name="size"/> pixels on its longest side (never enlarged); null when there is no such image the caller may see.</summary>
    public async Task<FileDownload?> GetAsync(Caller caller, string dataset, string image, int size, CancellationToken cancellationToken)
    {
        if (!Sizes.Contains(size))
            throw new UserInputException("size", $"{size} is not a thumbnail size", $"use one of {string.Join(", ", Sizes)}");
        if (await datasets.OpenImageAsync(caller, dataset, image, cancellationToken) is not { } original) return null;
        return await OfAsync(original, size, cancellationToken);
    }

    /// <summary>
    /// The thumbnail of a file a service opened for the caller (an output, <see cref="OutputService.OpenAsync"/>), at most
    /// <paramref name="size"/> pixels on its longest side: the service has checked that the caller may see it.
    /// </summary>
    public async Task<FileDownload> OfAsync(FileDownload original, int size, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(original);
        if (!Sizes.Contains(size))
            throw new UserInputException("size", $"{size} is not a thumbnail size", $"use one of {string.Join(", ", Sizes)}");
        var info = new FileInfo(original.FullPath);
        var path = PathOf(info, size);
        if (!File.Exists(path))
        {
            var bytes = await Task.Run(() => Make(info.FullName, size), cancellationToken);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            AtomicFile.WriteAllBytes(path, bytes);
        }
        return new FileDownload(path, Path.GetFileNameWithoutExtension(original.FileName) + ".jpg", "image/jpeg", new FileInfo(path).Length);
    }

    /// <summary>Where the thumbnail of <paramref name="image"/> at <paramref name="size"/> is kept.</summary>
    public string PathOf(FileInfo image, int size)
    {
        ArgumentNullException.ThrowIfNull(image);
        var key = string.Create(CultureInfo.InvariantCulture, $"{image.FullName}|{image.Length}|{image.LastWriteTimeUtc.Ticks}|{size}");
        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));
        return Path.Combine(Folder, hash[..2], hash + ".jpg");
    }

    private static byte[] Make(string path, int size)
    {
        var image = ImageCodec.Load(path).FlattenAlpha();
        var scale = Math.Min(1.0, (double)size / Math.Max(image.Width, image.Height));
        var width = Math.Max(1, (int)Math.Round(image.Width * scale));
        var height = Math.Max(1, (int)Math.Round(image.Height * scale));
        return ImageCodec.Encode(Shrink(image, width, height), new ImageEncodeOptions { Format = ImageFormat.Jpeg, Quality = 85, WriteText = false });
    }

    /// <summary>Area-average downscale: each output pixel is the mean of the source pixels it covers (sharp enough for a thumbnail, no aliasing).</summary>
    private static RgbImage Shrink(RgbImage source, int width, int height)
    {
        if (width == source.Width && height == source.Height) return source;
        var channels = source.Channels;
        var result = new RgbImage(width, height, channels);
        var sums = new double[channels];
        for (var y = 0; y < height; y++)
        {
            var y0 = y * source.Height / height;
            var y1 = Math.Max(y0 + 1, (y + 1) * source.Height / height);
            for (var x = 0; x < width; x++)
            {
                var x0 = x * source.Width / width;
                var x1 = Math.Max(x0 + 1, (x + 1) * source.Width / width);
                Array.Clear(sums);
                for (var sy = y0; sy < y1; sy++)
                {
                    var row = sy * source.Width * channels;
                    for (var sx = x0; sx < x1; sx++)
                        for (var c = 0; c < channels; c++)
                            sums[c] += source.Pixels[row + (sx * channels) + c];
                }
                var count = (y1 - y0) * (x1 - x0);
                var at = ((y * width) + x) * channels;
                for (var c = 0; c < channels; c++) result.Pixels[at + c] = (byte)Math.Round(sums[c] / count);
            }
        }
        return result;
    }
}
