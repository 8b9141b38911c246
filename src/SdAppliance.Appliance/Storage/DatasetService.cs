using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Training.Data;

namespace SdAppliance.Appliance.Storage;

/// <summary>A dataset: a folder of <c>datasets/</c>.</summary>
/// <param name="Path">Relative to the data folder (<c>datasets/NAME</c>), as a training job's <c>data</c> names it; the server's own paths are not shown to clients.</param>
/// <param name="OwnerId">Who created it; null for a folder put there by hand (shared, changed by admins only).</param>
public sealed record DatasetView(string Name, string Path, string? OwnerId, bool IsPrivate, int ImageCount, DateTime ModifiedUtc);

/// <summary>One image of a dataset.</summary>
/// <param name="Path">Relative to the dataset: <c>a.png</c>, or <c>10_cat/a.png</c> in a kohya repeat folder.</param>
/// <param name="Caption">Its caption file's caption (first line); null without a caption file (kohya then uses the folder's name).</param>
/// <param name="Repeats">How often an epoch draws it: the N of its <c>N_name</c> folder, 1 at the top.</param>
public sealed record DatasetImage(string Path, string? Caption, int Repeats, long SizeBytes);

/// <summary>One uploaded file: an image (PNG, JPEG, WebP, told by its bytes) or a <c>.txt</c> caption for an image of the same name.</summary>
public sealed record DatasetUpload(string FileName, Stream Content);

/// <summary>
/// Datasets in kohya's layout (docs/training.md): a folder under <c>datasets/</c> with images at the top (drawn once per
/// epoch) or in <c>N_name</c> folders (drawn N times), each image's caption in the <c>.txt</c> file of the same name.
/// Uploaded images are taken by their content (a real decode, not the extension), named with their format's extension,
/// and the whole upload lands or none of it. A dataset has an owner and may be private; a shared one is seen by everyone
/// but changed only by its owner or an admin.
/// </summary>
public sealed partial class DatasetService(DataFolder data, PathGuard guard, Ownership ownership, ApplianceOptions options)
{
    private const string CaptionExtension = ".txt";

    /// <summary>Creates an empty dataset owned by the caller.</summary>
    public async Task<DatasetView> CreateAsync(Caller caller, string name, bool isPrivate, CancellationToken cancellationToken)
    {
        var checkedName = PathGuard.Name(name, "name");
        var folder = Path.Combine(data.Datasets, checkedName);
        // Made under a temporary name and renamed: a move onto a name that is taken fails, where creating would not.
        var temp = Path.Combine(data.Datasets, $".{checkedName}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        try
        {
            Directory.Move(temp, folder);
        }
        catch (IOException) when (Directory.Exists(folder) || File.Exists(folder))
        {
            Directory.Delete(temp);
            throw new UserInputException("name", $"a dataset named '{checkedName}' already exists", "choose another name, or add images to it");
        }
        var item = await ownership.RecordAsync(StorageArea.Datasets, checkedName, caller.UserId, isPrivate, cancellationToken);
        return View(folder, item);
    }

    /// <summary>The datasets the caller may see, by name.</summary>
    public async Task<IReadOnlyList<DatasetView>> ListAsync(Caller caller, CancellationToken cancellationToken)
    {
        var owned = await ownership.InAsync(StorageArea.Datasets, cancellationToken);
        if (!Directory.Exists(data.Datasets)) return [];
        return Directory.EnumerateDirectories(data.Datasets)
            .Where(d => !Path.GetFileName(d).StartsWith('.'))
            .Order(StringComparer.Ordinal)
            .Select(d => (Folder: d, Item: owned.GetValueOrDefault(Path.GetFileName(d))))
            .Where(d => Ownership.CanSee(caller, d.Item))
            .Select(d => View(d.Folder, d.Item))
            .ToList();
    }

    /// <summary>The dataset named <paramref name="name"/>, or null when there is none the caller may see.</summary>
    public async Task<DatasetView?> GetAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        var found = await FindAsync(caller, name, cancellationToken);
        return found is { } f ? View(f.Folder, f.Item) : null;
    }

    /// <summary>The dataset's images with their captions, by path; null when there is no such dataset the caller may see.</summary>
    public async Task<IReadOnlyList<DatasetImage>?> ListImagesAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        if (await FindAsync(caller, name, cancellationToken) is not { } found) return null;
        return Images(found.Folder).Select(image => Describe(found.Folder, image)).ToList();
    }

    /// <summary>
    /// Adds images (and <c>.txt</c> captions for them) to the dataset, at its top or in the kohya repeat folder
    /// <paramref name="folder"/> (<c>10_cat</c>; created when missing). Each image must decode as PNG, JPEG or WebP within
    /// the <see cref="StorageLimits"/>; it keeps its name with its format's extension, numbered (<c>a-2.png</c>) when the
    /// name is taken. All is staged under a temporary name first: a refused file refuses the whole upload, which leaves
    /// the dataset as it was.
    /// </summary>
    public async Task<IReadOnlyList<DatasetImage>> AddImagesAsync(Caller caller, string name, string? folder, IAsyncEnumerable<DatasetUpload> uploads,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(uploads);
        var dataset = await RequireChangeAsync(caller, name, cancellationToken);
        var target = dataset;
        if (folder is not null)
        {
            var checkedFolder = PathGuard.Name(folder, "folder");
            if (!RepeatFolderPattern().IsMatch(checkedFolder))
                throw new UserInputException("folder", $"'{folder}' is not a kohya repeat folder", "name it N_name, such as 10_cat (its images are drawn 10 times per epoch)");
            target = guard.Resolve(checkedFolder, dataset, "folder");
        }
        var limits = options.Limits;
        var staging = Path.Combine(dataset, $".upload.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(staging);
        try
        {
            var images = new List<(string Staged, string Name)>();
            var captions = new List<(string Text, string ForName, string Given)>();
            var taken = Directory.Exists(target) ? Images(target, recursive: false).Select(Path.GetFileNameWithoutExtension).OfType<string>().ToHashSet(StringComparer.Ordinal) : [];
            var renamed = new Dictionary<string, string>(StringComparer.Ordinal);
            await foreach (var upload in uploads.WithCancellation(cancellationToken))
            {
                var given = PathGuard.Name(upload.FileName, "file_name");
                var bytes = await ReadLimitedAsync(upload.Content, given, Path.GetExtension(given).Equals(CaptionExtension, StringComparison.OrdinalIgnoreCase) ? CaptionCheck.MaxCaptionBytes : limits.MaxImageBytes,
                    cancellationToken);
                if (Path.GetExtension(given).Equals(CaptionExtension, StringComparison.OrdinalIgnoreCase))
                {
                    captions.Add((CheckCaption(DecodeCaption(bytes, given), given), Path.GetFileNameWithoutExtension(given), given));
                    continue;
                }
                if (images.Count == limits.MaxImagesPerUpload)
                    throw new UserInputException("files", $"more than {limits.MaxImagesPerUpload} images in one upload (StorageLimits.MaxImagesPerUpload)", "upload them in parts");
                var format = CheckImage(bytes, given, limits);
                var stem = Path.GetFileNameWithoutExtension(given);
                var unique = stem;
                for (var n = 2; !taken.Add(unique); n++) unique = $"{stem}-{n.ToString(CultureInfo.InvariantCulture)}";
                renamed.TryAdd(stem, unique);
                var finalName = unique + Extension(format);
                var staged = Path.Combine(staging, finalName);
                await File.WriteAllBytesAsync(staged, bytes, cancellationToken);
                images.Add((staged, finalName));
            }
            var existing = Images(dataset).Count();
            if (existing + images.Count > limits.MaxImagesPerDataset)
                throw new UserInputException("files", $"the dataset would hold {existing + images.Count} images, more than {limits.MaxImagesPerDataset} (StorageLimits.MaxImagesPerDataset)", "split it into several datasets");
            var captionFiles = new List<(string Text, string Path)>();
            foreach (var (text, forName, given) in captions)
            {
                var stem = renamed.GetValueOrDefault(forName)
                    ?? (taken.Contains(forName) ? forName : throw new UserInputException(given, "is a caption without an image of the same name in the upload or the folder", "upload it with its image, such as a.png with a.txt"));
                captionFiles.Add((text, Path.Combine(target, stem + CaptionExtension)));
            }

            Directory.CreateDirectory(target);
            foreach (var (staged, finalName) in images)
                File.Move(staged, Path.Combine(target, finalName), overwrite: false);
            foreach (var (text, path) in captionFiles)
                AtomicFile.WriteAllText(path, text);
            return images.Select(i => Describe(dataset, Path.Combine(target, i.Name))).ToList();
        }
        finally
        {
            Directory.Delete(staging, recursive: true);
        }
    }

    /// <summary>The caption of an image (null without a caption file); null also when there is no such image the caller may see.</summary>
    public async Task<(bool Found, string? Caption)> GetCaptionAsync(Caller caller, string name, string image, CancellationToken cancellationToken)
    {
        if (await FindAsync(caller, name, cancellationToken) is not { } found) return (false, null);
        var path = ImagePath(found.Folder, image);
        if (!File.Exists(path)) return (false, null);
        return (true, ReadCaption(path));
    }

    /// <summary>
    /// Sets an image's caption (checked as training would check it), or removes its caption file when <paramref name="caption"/>
    /// is null. False when there is no such image; <see cref="DatasetNotFoundException"/> when there is no such dataset.
    /// </summary>
    public async Task<bool> SetCaptionAsync(Caller caller, string name, string image, string? caption, CancellationToken cancellationToken)
    {
        var dataset = await RequireChangeAsync(caller, name, cancellationToken);
        var path = ImagePath(dataset, image);
        if (!File.Exists(path)) return false;
        var captionFile = Captions.CaptionPath(path, CaptionExtension);
        if (caption is null)
        {
            File.Delete(captionFile);
            return true;
        }
        if (Encoding.UTF8.GetByteCount(caption) > CaptionCheck.MaxCaptionBytes)
            throw new UserInputException("caption", $"is over {CaptionCheck.MaxCaptionBytes:N0} bytes, the most a caption may have", "shorten it");
        AtomicFile.WriteAllText(captionFile, CheckCaption(caption, "caption"));
        return true;
    }

    /// <summary>Deletes an image and its caption. False when there is no such image; <see cref="DatasetNotFoundException"/> when there is no such dataset.</summary>
    public async Task<bool> DeleteImageAsync(Caller caller, string name, string image, CancellationToken cancellationToken)
    {
        var dataset = await RequireChangeAsync(caller, name, cancellationToken);
        var path = ImagePath(dataset, image);
        if (!File.Exists(path)) return false;
        File.Delete(Captions.CaptionPath(path, CaptionExtension));
        File.Delete(path);
        return true;
    }

    /// <summary>An image of the dataset for download (a thumbnail, a check); null when there is none the caller may see.</summary>
    public async Task<FileDownload?> OpenImageAsync(Caller caller, string name, string image, CancellationToken cancellationToken)
    {
        if (await FindAsync(caller, name, cancellationToken) is not { } found) return null;
        var path = ImagePath(found.Folder, image);
        return File.Exists(path) && FileKind.NotRegular(path) is null ? FileDownload.Of(path) : null;
    }

    /// <summary>Deletes the dataset with everything in it. False when there is none the caller may see.</summary>
    public async Task<bool> DeleteAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        if (await FindAsync(caller, name, cancellationToken) is null) return false;
        var dataset = await RequireChangeAsync(caller, name, cancellationToken);
        // Renamed away first, so nobody sees half a dataset.
        var doomed = Path.Combine(data.Datasets, $".{Path.GetFileName(dataset)}.{Guid.NewGuid():N}.old");
        Directory.Move(dataset, doomed);
        Directory.Delete(doomed, recursive: true);
        await ownership.ForgetAsync(StorageArea.Datasets, Path.GetFileName(dataset), cancellationToken);
        return true;
    }

    /// <summary>Marks a dataset private or shared; its owner or an admin may. False when there is none the caller may see.</summary>
    public Task<bool> SetPrivateAsync(Caller caller, string name, bool isPrivate, CancellationToken cancellationToken) =>
        ownership.SetPrivateAsync(caller, StorageArea.Datasets, PathGuard.Name(name, "name"), isPrivate, cancellationToken);

    private async Task<(string Folder, StoredItem? Item)?> FindAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        var checkedName = PathGuard.Name(name, "name");
        var folder = guard.Resolve(checkedName, data.Datasets, "name");
        if (!Directory.Exists(folder)) return null;
        var item = await ownership.FindAsync(StorageArea.Datasets, checkedName, cancellationToken);
        return Ownership.CanSee(caller, item) ? (folder, item) : null;
    }

    private async Task<string> RequireChangeAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        var found = await FindAsync(caller, name, cancellationToken)
            ?? throw new DatasetNotFoundException(name);
        Ownership.RequireChange(caller, found.Item, name);
        return found.Folder;
    }

    // An image path relative to the dataset: at its top or one repeat folder down, with an image extension.
    private string ImagePath(string dataset, string image)
    {
        var path = guard.Resolve(image, dataset, "image");
        var relative = Path.GetRelativePath(dataset, path).Split('/');
        if (relative.Length > 2 || !DatasetScannerExtensions.Contains(Path.GetExtension(path)))
            throw new UserInputException("image", $"'{image}' is not an image of a dataset", "give a path such as a.png or 10_cat/a.png, as the image list shows it");
        return path;
    }

    private static readonly HashSet<string> DatasetScannerExtensions = new(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".webp" };

    private static IEnumerable<string> Images(string folder, bool recursive = true)
    {
        if (!Directory.Exists(folder)) yield break;
        foreach (var file in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal))
            if (!Path.GetFileName(file).StartsWith('.') && DatasetScannerExtensions.Contains(Path.GetExtension(file)))
                yield return file;
        if (!recursive) yield break;
        foreach (var sub in Directory.EnumerateDirectories(folder).Order(StringComparer.Ordinal))
            if (RepeatFolderPattern().IsMatch(Path.GetFileName(sub)))
                foreach (var file in Images(sub, recursive: false))
                    yield return file;
    }

    private static DatasetImage Describe(string dataset, string image)
    {
        var relative = Path.GetRelativePath(dataset, image).Replace('\\', '/');
        var folder = Path.GetFileName(Path.GetDirectoryName(image)!);
        var repeats = relative.Contains('/') && RepeatFolderPattern().Match(folder) is { Success: true } m
            ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 1;
        return new DatasetImage(relative, ReadCaption(image), repeats, new FileInfo(image).Length);
    }

    private static string? ReadCaption(string image)
    {
        var captionFile = Captions.CaptionPath(image, CaptionExtension);
        if (!File.Exists(captionFile)) return null;
        try
        {
            return CaptionCheck.Read(captionFile);
        }
        catch (Exception e) when (e is UserInputException or DecoderFallbackException or IOException)
        {
            return null;
        }
    }

    private DatasetView View(string folder, StoredItem? item) =>
        new(Path.GetFileName(folder), data.Relative(folder), item?.OwnerId, item?.IsPrivate ?? false, Images(folder).Count(), Directory.GetLastWriteTimeUtc(folder));

    private static ImageFormat CheckImage(byte[] bytes, string given, StorageLimits limits)
    {
        if (ImageCodec.DetectFormat(bytes) is null)
            throw new UserInputException(given, $"is not a PNG, JPEG or WebP image (it starts with bytes {Convert.ToHexString(bytes.AsSpan(0, Math.Min(8, bytes.Length)))})",
                "upload PNG, JPEG or WebP images");
        try
        {
            ImageCodec.Decode(bytes, new ImageDecodeOptions { MaxPixels = limits.MaxImagePixels }, given);
            return ImageCodec.DetectFormat(bytes)!.Value;
        }
        catch (ImageFormatException e)
        {
            throw new UserInputException(given, $"cannot be decoded: {e.Problem}", "upload an image that opens in an image viewer", e);
        }
    }

    private static string Extension(ImageFormat format) => format switch
    {
        ImageFormat.Png => ".png",
        ImageFormat.Jpeg => ".jpg",
        _ => ".webp",
    };

    private static string DecodeCaption(byte[] bytes, string given)
    {
        try
        {
            var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            return (text.Length > 0 && text[0] == '\uFEFF' ? text[1..] : text).Trim();
        }
        catch (DecoderFallbackException)
        {
            throw new UserInputException(given, "is not UTF-8 text", "save the caption as UTF-8");
        }
    }

    private static string CheckCaption(string caption, string subject) =>
        CaptionCheck.Problem(caption) is { } problem
            ? throw new UserInputException(subject, problem.StartsWith("its caption", StringComparison.Ordinal) ? "the caption" + problem["its caption".Length..] : problem)
            : caption;

    private static async Task<byte[]> ReadLimitedAsync(Stream content, string given, long limit, CancellationToken cancellationToken)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[1 << 16];
        int read;
        while ((read = await content.ReadAsync(chunk, cancellationToken)) > 0)
        {
            if (buffer.Length + read > limit)
                throw new UserInputException(given, $"is over {limit:N0} bytes, the most such a file may have (StorageLimits)", "upload a smaller file");
            buffer.Write(chunk, 0, read);
        }
        if (buffer.Length == 0) throw new UserInputException(given, "is empty");
        return buffer.ToArray();
    }

    [GeneratedRegex(@"^(\d+)_.+$")]
    private static partial Regex RepeatFolderPattern();
}

/// <summary>There is no dataset of that name the caller may see: HTTP 404.</summary>
public sealed class DatasetNotFoundException(string name)
    : UserInputException("name", $"there is no dataset '{name}'", "list the datasets to see their names");
