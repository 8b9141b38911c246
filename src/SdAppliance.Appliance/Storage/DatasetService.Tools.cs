using System.Globalization;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Formats;
using SdAppliance.Training.Data;

namespace SdAppliance.Appliance.Storage;

/// <summary>A folder of a dataset that holds images: its top (<see cref="Folder"/> "", drawn once) or a kohya <c>N_name</c> folder (drawn N times).</summary>
public sealed record ConceptFolder(string Folder, string Concept, int Repeats, int ImageCount);

/// <summary>An image as training sees it at one resolution: its bucket, the size it is resized to so it covers the bucket, and the crop window in that size.</summary>
public sealed record BucketPlacement(string Image, int Width, int Height, int BucketWidth, int BucketHeight, int ResizedWidth, int ResizedHeight, int CropLeft, int CropTop);

/// <summary>The bucket preview of a dataset: each usable image's placement, and the files training would skip with the reason.</summary>
public sealed record BucketPreview(IReadOnlyList<BucketPlacement> Images, IReadOnlyList<(int Width, int Height)> Buckets, IReadOnlyList<SkippedFile> Skipped);

public sealed partial class DatasetService
{
    /// <summary>The most repeats a concept folder may have; kohya has no limit, but more means one image is most of an epoch.</summary>
    public const int MaxRepeats = 1000;

    /// <summary>The kohya folder name for <paramref name="repeats"/> of <paramref name="concept"/> (<c>10_cat</c>), checked.</summary>
    public static string RepeatFolderName(int repeats, string concept)
    {
        if (repeats is < 1 or > MaxRepeats)
            throw new UserInputException("repeats", $"{repeats} is not between 1 and {MaxRepeats}", "give how often an epoch draws each image of the folder, such as 10");
        var name = (concept ?? "").Trim();
        if (name.Length == 0) throw new UserInputException("concept", "is empty", "name the concept, such as cat (kohya uses it as the caption of images without one)");
        var folder = PathGuard.Name($"{repeats.ToString(CultureInfo.InvariantCulture)}_{name}", "concept");
        if (!RepeatFolderPattern().IsMatch(folder) || folder.StartsWith('.'))
            throw new UserInputException("concept", $"'{name}' cannot name a folder", "use letters, digits, spaces, - and _");
        return folder;
    }

    /// <summary>The dataset's image folders: its top first when it holds images, then its <c>N_name</c> folders by name; null when there is no such dataset the caller may see.</summary>
    public async Task<IReadOnlyList<ConceptFolder>?> ListFoldersAsync(Caller caller, string name, CancellationToken cancellationToken)
    {
        if (await FindAsync(caller, name, cancellationToken) is not { } found) return null;
        var folders = new List<ConceptFolder>();
        var top = Images(found.Folder, recursive: false).Count();
        if (top > 0) folders.Add(new ConceptFolder("", "", 1, top));
        foreach (var sub in Directory.EnumerateDirectories(found.Folder).Order(StringComparer.Ordinal))
            if (RepeatFolderPattern().Match(Path.GetFileName(sub)) is { Success: true } m)
                folders.Add(new ConceptFolder(Path.GetFileName(sub), Path.GetFileName(sub)[(m.Groups[1].Length + 1)..],
                    int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), Images(sub, recursive: false).Count()));
        return folders;
    }

    /// <summary>
    /// Changes how often a concept folder is drawn by renaming <c>N_name</c> to <c>repeats_name</c>, its images and captions
    /// moving with it in one rename. A folder of that name already there refuses it (nothing is merged or overwritten).
    /// </summary>
    public async Task<ConceptFolder> SetRepeatsAsync(Caller caller, string name, string folder, int repeats, CancellationToken cancellationToken)
    {
        var dataset = await RequireChangeAsync(caller, name, cancellationToken);
        var checkedFolder = PathGuard.Name(folder, "folder");
        var match = RepeatFolderPattern().Match(checkedFolder);
        var source = guard.Resolve(checkedFolder, dataset, "folder");
        if (!match.Success || !Directory.Exists(source))
            throw new UserInputException("folder", $"'{folder}' is not a kohya repeat folder of dataset '{name}'", "pick one of the dataset's N_name folders");
        var concept = checkedFolder[(match.Groups[1].Length + 1)..];
        var newName = RepeatFolderName(repeats, concept);
        var target = Path.Combine(dataset, newName);
        if (newName != checkedFolder)
        {
            if (Directory.Exists(target) || File.Exists(target))
                throw new UserInputException("repeats", $"dataset '{name}' already has a folder '{newName}'", "move its images elsewhere first, or choose other repeats");
            try
            {
                Directory.Move(source, target);
            }
            catch (IOException) when (Directory.Exists(target))
            {
                throw new UserInputException("repeats", $"dataset '{name}' already has a folder '{newName}'", "choose other repeats");
            }
        }
        return new ConceptFolder(newName, concept, repeats, Images(target, recursive: false).Count());
    }

    /// <summary>
    /// Applies one bulk caption edit (<see cref="CaptionEdits"/>) to the images <paramref name="images"/> (all the dataset's when null);
    /// each changed caption is checked as training checks it and written to a temporary file that replaces the old one.
    /// Returns how many captions changed. The edit is checked before anything is written.
    /// </summary>
    public async Task<int> EditCaptionsAsync(Caller caller, string name, CaptionEdit edit, IReadOnlyCollection<string>? images, CancellationToken cancellationToken)
    {
        CaptionEdits.Check(edit);
        var dataset = await RequireChangeAsync(caller, name, cancellationToken);
        var paths = images is null ? Images(dataset).ToList() : images.Select(i => ImagePath(dataset, i)).Where(File.Exists).ToList();
        var changes = new List<(string File, string Text)>();
        foreach (var path in paths)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var before = ReadCaption(path);
            var after = CaptionEdits.Apply(edit, before);
            if (after is null || string.Equals(before, after, StringComparison.Ordinal)) continue;
            changes.Add((Captions.CaptionPath(path, CaptionExtension), CheckCaption(after, Path.GetRelativePath(dataset, path).Replace('\\', '/'))));
        }
        foreach (var (file, text) in changes) AtomicFile.WriteAllText(file, text);
        return changes.Count;
    }

    /// <summary>
    /// Where each image lands at <paramref name="resolution"/>, computed by the trainer's own code: the dataset is scanned as a run
    /// scans it (<see cref="TrainingDataset.Scan"/>, centre crop) and its first epoch planned; each image's first example gives
    /// the bucket and the crop. Null when there is no such dataset the caller may see; a bad resolution is refused naming it.
    /// </summary>
    public async Task<BucketPreview?> PreviewBucketsAsync(Caller caller, string name, int resolution, bool enableBucket, CancellationToken cancellationToken)
    {
        if (await FindAsync(caller, name, cancellationToken) is not { } found) return null;
        if (!Images(found.Folder).Any()) return new BucketPreview([], [], []);
        var options = new DatasetOptions { DataDir = found.Folder, Resolution = resolution, EnableBucket = enableBucket, CenterCrop = true };
        var dataset = await Task.Run(() => TrainingDataset.Scan(options, cancellationToken), cancellationToken);
        var firsts = new Dictionary<string, TrainingExample>(StringComparer.Ordinal);
        foreach (var batch in dataset.Batches(0, 1, 0))
            foreach (var example in batch)
                firsts.TryAdd(example.Item.Path, example);
        var placements = dataset.Items.Select(item =>
        {
            var e = firsts[item.Path];
            var (rw, rh) = AspectBuckets.CoverSize(item.Width, item.Height, e.BucketWidth, e.BucketHeight);
            return new BucketPlacement(Path.GetRelativePath(found.Folder, item.Path).Replace('\\', '/'), item.Width, item.Height,
                e.BucketWidth, e.BucketHeight, rw, rh, e.CropLeft, e.CropTop);
        }).ToList();
        var skipped = dataset.Skipped.Select(s => s with { Path = Path.GetRelativePath(found.Folder, s.Path).Replace('\\', '/') }).ToList();
        return new BucketPreview(placements, dataset.Buckets, skipped);
    }

    /// <summary>The images in the dataset's class folder <paramref name="classFolder"/> (prior preservation); 0 when it does not exist yet, null when there is no such dataset.</summary>
    public async Task<int?> CountClassImagesAsync(Caller caller, string name, string classFolder, CancellationToken cancellationToken)
    {
        if (await FindAsync(caller, name, cancellationToken) is not { } found) return null;
        return Images(ClassFolderPath(found.Folder, classFolder), recursive: false).Count();
    }

    /// <summary>The data-folder paths (<c>datasets/NAME</c>, <c>datasets/NAME/class</c>) of a dataset the caller may change and its class folder, for a class images job.</summary>
    internal async Task<(string Data, string ClassData)> ClassImagePathsAsync(Caller caller, string name, string classFolder, CancellationToken cancellationToken)
    {
        var dataset = await RequireChangeAsync(caller, name, cancellationToken);
        return (data.Relative(dataset), data.Relative(ClassFolderPath(dataset, classFolder)));
    }

    // A class folder is a plain sub-folder of the dataset: not N_name (training would take its images as instance images) and not hidden.
    private string ClassFolderPath(string dataset, string classFolder)
    {
        var checkedName = PathGuard.Name(classFolder, "class_folder");
        if (RepeatFolderPattern().IsMatch(checkedName) || checkedName.StartsWith('.'))
            throw new UserInputException("class_folder", $"'{classFolder}' would be taken for training images", "name it without a leading number and underscore, such as class");
        return guard.Resolve(checkedName, dataset, "class_folder");
    }
}
