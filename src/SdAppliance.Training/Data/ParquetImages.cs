using System.Globalization;
using Parquet;
using Parquet.Schema;
using SdAppliance.Imaging;

namespace SdAppliance.Training.Data;

/// <summary>
/// The Parquet files of a dataset as the Hugging Face hub serves them and the diffusers scripts download them: an image
/// column of structs <c>{bytes, path}</c> (or of plain bytes) and a caption column of text. The rest of the pipeline reads
/// images from files (the latent cache keys on them, the LoRA metadata counts their folders), so each row's bytes are
/// written once, as they are, into a hidden folder beside the Parquet file, named by the file's size and time: a changed
/// file gets a fresh folder, the stale one is removed.
/// </summary>
internal static class ParquetImages
{
    /// <summary>The hidden folder beside a Parquet file that holds its images (hidden, so no folder scan looks at it).</summary>
    public const string FolderName = ".parquet-images";

    /// <summary>
    /// A dataset folder's Parquet files, in name order: those directly in it, else the hub's <c>data/train-*.parquet</c>
    /// (the train split; its other splits are not training data). None: the folder is not a Parquet dataset.
    /// </summary>
    public static IReadOnlyList<string> Files(string folder)
    {
        var direct = Directory.EnumerateFiles(folder, "*.parquet").Where(f => !Path.GetFileName(f).StartsWith('.')).Order(StringComparer.Ordinal).ToList();
        if (direct.Count > 0) return direct;
        var data = Path.Combine(folder, "data");
        return Directory.Exists(data)
            ? [.. Directory.EnumerateFiles(data, "train-*.parquet").Order(StringComparer.Ordinal)]
            : [];
    }

    /// <summary>One row: the image file written for it, its caption (null when the row has none) and the name the row gave the image.</summary>
    public sealed record Row(string ImagePath, string? Caption, string? OriginalName);

    /// <summary>
    /// The rows of <paramref name="parquetPath"/> with their images written out. A column the file does not have is a
    /// <see cref="DatasetException"/> naming the file, the field and the columns it has; a row without image bytes, or
    /// whose bytes are not PNG, JPEG or WebP, goes to <paramref name="skipped"/> with its number.
    /// </summary>
    public static IReadOnlyList<Row> Read(string parquetPath, string imageColumn, string captionColumn, List<SkippedFile> skipped, CancellationToken cancellationToken)
    {
        try
        {
            return ReadAsync(parquetPath, imageColumn, captionColumn, skipped, cancellationToken).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is not (DatasetException or OperationCanceledException))
        {
            // Parquet.Net reports a damaged or foreign file with its own exception types, and as an IOException.
            throw new DatasetException(nameof(DatasetOptions.DataDir), DatasetOptions.FieldName(nameof(DatasetOptions.DataDir)),
                $"'{parquetPath}' cannot be read as Parquet: {e.Message}");
        }
    }

    private static async Task<IReadOnlyList<Row>> ReadAsync(string parquetPath, string imageColumn, string captionColumn, List<SkippedFile> skipped,
        CancellationToken cancellationToken)
    {
        await using var reader = await ParquetReader.CreateAsync(parquetPath, cancellationToken: cancellationToken).ConfigureAwait(false);
        var schema = reader.Schema;
        var columns = string.Join(", ", schema.Fields.Select(f => f.Name));
        // The hub's image feature is a struct of the encoded bytes and the original path; some files hold the bytes alone.
        var imageField = schema.Fields.FirstOrDefault(f => f.Name == imageColumn)
            ?? throw Refuse(nameof(DatasetOptions.ImageColumn), $"'{imageColumn}' is not a column of '{parquetPath}'; its columns are {columns}");
        var (bytesField, nameField) = imageField switch
        {
            StructField s => (s.Fields.OfType<DataField>().FirstOrDefault(f => f.Name == "bytes"), s.Fields.OfType<DataField>().FirstOrDefault(f => f.Name == "path")),
            DataField d => (d, null),
            _ => (null, null),
        };
        if (bytesField is null || !IsBinary(bytesField))
            throw Refuse(nameof(DatasetOptions.ImageColumn),
                $"'{imageColumn}' in '{parquetPath}' holds no image bytes ({Describe(imageField)}; expected a struct of bytes and path, as the Hugging Face image feature, or a binary column)");
        var captionField = schema.Fields.FirstOrDefault(f => f.Name == captionColumn) as DataField
            ?? throw Refuse(nameof(DatasetOptions.CaptionColumn), $"'{captionColumn}' is not a text column of '{parquetPath}'; its columns are {columns}");
        if (!IsText(captionField))
            throw Refuse(nameof(DatasetOptions.CaptionColumn), $"'{captionColumn}' in '{parquetPath}' is not text ({Describe(captionField)}); its columns are {columns}");

        var folder = ImagesFolder(parquetPath);
        var rows = new List<Row>();
        long rowNumber = 0;
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            using var group = reader.OpenRowGroupReader(g);
            var count = checked((int)group.RowCount);
            var images = new byte[]?[count];
            var captions = new string?[count];
            var names = new string?[count];
            await group.ReadAsync(bytesField, images.AsMemory(), null, cancellationToken).ConfigureAwait(false);
            await group.ReadAsync(captionField, captions.AsMemory(), null, cancellationToken).ConfigureAwait(false);
            if (nameField is not null && IsText(nameField))
                await group.ReadAsync(nameField, names.AsMemory(), null, cancellationToken).ConfigureAwait(false);
            for (int r = 0; r < count; r++, rowNumber++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var where = $"{parquetPath}#{rowNumber.ToString(CultureInfo.InvariantCulture)}";
                if (images[r] is not { Length: > 0 } bytes)
                {
                    skipped.Add(new SkippedFile(where, $"row {rowNumber} has no image bytes in '{imageColumn}'"));
                    continue;
                }
                if (ImageCodec.DetectFormat(bytes) is not { } format)
                {
                    skipped.Add(new SkippedFile(where, $"row {rowNumber}'s image is not PNG, JPEG or WebP (convert the dataset's images)"));
                    continue;
                }
                var path = Path.Combine(folder, rowNumber.ToString("D6", CultureInfo.InvariantCulture) + Extension(format));
                if (!File.Exists(path) || new FileInfo(path).Length != bytes.Length)
                {
                    try
                    {
                        Directory.CreateDirectory(folder);
                        Formats.AtomicFile.WriteAllBytes(path, bytes);
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                    {
                        throw Refuse(nameof(DatasetOptions.DataDir), $"the images of '{parquetPath}' cannot be written into '{folder}' (the dataset folder must be writable): {e.Message}");
                    }
                }
                rows.Add(new Row(path, captions[r], names[r] is { Length: > 0 } name ? Path.GetFileNameWithoutExtension(name) : null));
            }
        }
        return rows;
    }

    /// <summary>
    /// The name of the dataset folder an image stands for: the Parquet file's name (<c>train</c>) for an image written out of
    /// one, else its own folder's name (as kohya's metadata names dataset folders).
    /// </summary>
    public static string DatasetFolderName(string imagePath)
    {
        var folder = Path.GetDirectoryName(imagePath) ?? "";
        var name = Path.GetFileName(folder);
        if (Path.GetFileName(Path.GetDirectoryName(folder)) == FolderName && name.Length > 17 && name[^17] == '.')
            return name[..^17];
        return name;
    }

    /// <summary>Where a Parquet file's images go: <c>.parquet-images/NAME.HASH</c> beside it, the hash of its size and time, older folders of it removed.</summary>
    private static string ImagesFolder(string parquetPath)
    {
        var info = new FileInfo(parquetPath);
        var stem = Path.GetFileNameWithoutExtension(parquetPath);
        var root = Path.Combine(info.DirectoryName!, FolderName);
        var stamp = DataRandom.Hash($"{info.Length}|{info.LastWriteTimeUtc.Ticks}").ToString("x16", CultureInfo.InvariantCulture);
        var folder = Path.Combine(root, $"{stem}.{stamp}");
        if (Directory.Exists(root))
            foreach (var stale in Directory.EnumerateDirectories(root, stem + ".*"))
                if (stale != folder && Path.GetFileName(stale).Length == stem.Length + 17) Directory.Delete(stale, recursive: true);
        return folder;
    }

    private static string Describe(Field field) => field switch
    {
        StructField s => $"a struct of {string.Join(", ", s.Fields.Select(Describe))}",
        DataField d => $"{d.Name}: {TypeName(d.ClrType)}",
        _ => $"{field.Name}: {field.SchemaType}",
    };

    private static string TypeName(Type type) => type.IsGenericType
        ? $"{type.Name[..type.Name.IndexOf('`', StringComparison.Ordinal)]}<{string.Join(", ", type.GetGenericArguments().Select(TypeName))}>"
        : type.Name;

    // Parquet.Net names binary and text columns by the memory it reads them into, or by the array and string types.
    private static bool IsBinary(DataField field) => field.ClrType == typeof(byte[]) || field.ClrType == typeof(ReadOnlyMemory<byte>);

    private static bool IsText(DataField field) => field.ClrType == typeof(string) || field.ClrType == typeof(ReadOnlyMemory<char>);

    private static string Extension(ImageFormat format) => format switch
    {
        ImageFormat.Png => ".png",
        ImageFormat.Jpeg => ".jpg",
        ImageFormat.WebP => ".webp",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };

    private static DatasetException Refuse(string property, string problem) => new(property, DatasetOptions.FieldName(property), problem);
}
