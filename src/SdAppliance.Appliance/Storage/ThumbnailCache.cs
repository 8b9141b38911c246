using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Diffusion.Images;
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
        CheckSize(size);
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
        CheckSize(size);
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

    private static void CheckSize(int size)
    {
        if (!Sizes.Contains(size))
            throw new UserInputException("size", $"{size} is not a thumbnail size", $"use one of {string.Join(", ", Sizes)}");
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
        return ImageCodec.Encode(ImageTensors.Resize(image, width, height), new ImageEncodeOptions { Format = ImageFormat.Jpeg, Quality = 85, WriteText = false });
    }
}
