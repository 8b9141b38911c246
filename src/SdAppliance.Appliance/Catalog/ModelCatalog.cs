using System.Buffers.Binary;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Hashing;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Runtime;

namespace SdAppliance.Appliance.Catalog;

/// <summary>
/// The models of the data folder (and the application's demo model, always listed): base models in <c>models/</c>
/// (diffusers folders, <c>.safetensors</c>, <c>.ckpt</c>), LoRAs, embeddings and hypernetworks in its sub-folders. The
/// folders are scanned on every request, so files dropped in by hand appear at once; what is slow to compute (hashes,
/// families, headers) is computed once per file and kept in the cache folder, keyed by path, size and modification time.
/// Imported models have an owner and may be private (<see cref="Ownership"/>).
/// </summary>
public sealed class ModelCatalog
{
    private static readonly string[] CheckpointExtensions = [".safetensors", ".ckpt"];
    private static readonly string[] LoraExtensions = [".safetensors", ".pt", ".ckpt"];
    private static readonly string[] EmbeddingExtensions = [".safetensors", ".pt", ".bin"];
    private static readonly string[] HypernetworkExtensions = [".pt"];

    private readonly DataFolder data;
    private readonly PathGuard guard;
    private readonly Ownership ownership;
    private readonly ApplianceOptions options;
    private readonly FileHashes hashes;
    private readonly DescriptionCache descriptions;

    public ModelCatalog(DataFolder data, PathGuard guard, Ownership ownership, ApplianceOptions options)
    {
        this.data = data;
        this.guard = guard;
        this.ownership = ownership;
        this.options = options;
        hashes = new FileHashes(data.HashCache);
        descriptions = new DescriptionCache(Path.Combine(data.Cache, "models.json"));
    }

    /// <summary>The file hashes, with the data folder's cache (generation names its models and networks by them).</summary>
    public FileHashes Hashes => hashes;

    /// <summary>
    /// Every model of <paramref name="kind"/> the caller may see, the demo model first, then by relative path. A file that
    /// cannot be read is listed with its <see cref="ModelEntry.Problem"/>, so that it can be found and deleted.
    /// </summary>
    public async Task<IReadOnlyList<ModelEntry>> ListAsync(Caller caller, ModelKind kind, CancellationToken cancellationToken)
    {
        var owned = await ownership.InAsync(Area(kind), cancellationToken);
        var entries = new List<ModelEntry>();
        if (kind == ModelKind.Checkpoint && data.DemoModel is { } demo)
            entries.Add(Describe(kind, demo, Path.GetFileName(demo), null, isDemo: true));
        foreach (var folder in Folders(kind))
        {
            var inDataFolder = Path.GetFullPath(folder) == Path.GetFullPath(KindFolder(kind));
            foreach (var path in Scan(kind, folder).Order(StringComparer.Ordinal))
            {
                cancellationToken.ThrowIfCancellationRequested();
                var relative = Path.GetRelativePath(folder, path).Replace('\\', '/');
                var item = inDataFolder ? owned.GetValueOrDefault(relative) : null;
                if (!Ownership.CanSee(caller, item)) continue;
                entries.Add(Describe(kind, path, relative, item, isDemo: false));
            }
        }
        return entries;
    }

    /// <summary>
    /// The model A1111 would pick for <paramref name="name"/>: by title ("name.safetensors [hash]"), relative path, model
    /// name, file name without extension, short hash or SHA-256 (<see cref="ModelEntry.Aliases"/>), exactly, else ignoring
    /// case. Null when there is none the caller may see.
    /// </summary>
    public async Task<ModelEntry?> FindAsync(Caller caller, ModelKind kind, string name, CancellationToken cancellationToken)
    {
        var entries = await ListAsync(caller, kind, cancellationToken);
        return entries.FirstOrDefault(e => e.Aliases.Contains(name, StringComparer.Ordinal))
            ?? entries.FirstOrDefault(e => e.Aliases.Contains(name, StringComparer.OrdinalIgnoreCase));
    }

    /// <summary>
    /// Imports an uploaded file as <paramref name="fileName"/>: streamed to a hidden temporary name in its kind's folder,
    /// checked to be what it claims by its content (a safetensors header or a torch zip/pickle that holds a model, a
    /// LoRA, an embedding or a hypernetwork of the kind), then renamed into place. An existing file is never replaced.
    /// </summary>
    public async Task<ModelEntry> ImportAsync(Caller caller, ModelKind kind, string fileName, Stream content, bool isPrivate, CancellationToken cancellationToken)
    {
        var name = CheckNewName(kind, fileName, "file_name");
        var target = Path.Combine(KindFolder(kind), name);
        var staging = Staging(kind, name);
        try
        {
            var temp = Path.Combine(staging, name);
            await using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true))
            {
                await CopyLimitedAsync(content, file, name, cancellationToken);
                file.Flush(flushToDisk: true);
            }
            Check(kind, temp, fileName);
            MoveIntoPlace(temp, target, fileName);
        }
        finally
        {
            Directory.Delete(staging, recursive: true);
        }
        return await RecordAsync(caller, kind, name, target, isPrivate, cancellationToken);
    }

    /// <summary>
    /// Refuses a name an import of <paramref name="kind"/> cannot take (not a plain file name, the wrong extension, already in
    /// the catalog), naming <paramref name="field"/>; returns the name. A resumable upload checks it before its first byte.
    /// </summary>
    public string CheckImportName(ModelKind kind, string fileName, string field) => CheckNewName(kind, fileName, field);

    /// <summary>
    /// A new hidden staging folder for an upload of <paramref name="name"/> in its kind's folder (one file system with the
    /// target, so the import is a rename; LeftoverCleanup removes it after a crash), and the file to write in it.
    /// </summary>
    public (string Folder, string File) StageUpload(ModelKind kind, string name)
    {
        var staging = Staging(kind, name);
        return (staging, Path.Combine(staging, name));
    }

    /// <summary>
    /// Imports a file already written in full by an upload (<paramref name="staged"/>, from <see cref="StageUpload"/>):
    /// checked by its content as <see cref="ImportAsync"/> checks a stream, then renamed into place. Errors name
    /// <paramref name="fileName"/>; the staged file is left for the caller to remove.
    /// </summary>
    public async Task<ModelEntry> ImportStagedAsync(Caller caller, ModelKind kind, string fileName, string staged, bool isPrivate, CancellationToken cancellationToken)
    {
        var name = CheckNewName(kind, fileName, "file_name");
        var target = Path.Combine(KindFolder(kind), name);
        await Task.Run(() => Check(kind, staged, fileName), cancellationToken);
        MoveIntoPlace(staged, target, fileName);
        return await RecordAsync(caller, kind, name, target, isPrivate, cancellationToken);
    }

    /// <summary>
    /// Imports a server file or diffusers folder inside one of <see cref="ApplianceOptions.ImportRoots"/> (after following
    /// links; anything else is refused): checked like an upload, then copied (written under a temporary name, then renamed)
    /// or, with <paramref name="link"/>, linked, so a large model is not stored twice.
    /// </summary>
    public async Task<ModelEntry> ImportFromServerAsync(Caller caller, ModelKind kind, string serverPath, bool link, bool isPrivate, CancellationToken cancellationToken)
    {
        var source = guard.ResolveImport(serverPath, "path");
        var isFolder = Directory.Exists(source);
        if (isFolder && kind != ModelKind.Checkpoint)
            throw new UserInputException("path", $"'{serverPath}' is a folder; a {KindName(kind)} is one file", "give the file's path");
        var name = isFolder ? PathGuard.Name(Path.GetFileName(source), "path") : CheckNewName(kind, Path.GetFileName(source), "path");
        var target = Path.Combine(KindFolder(kind), name);
        if (Exists(target))
            throw new UserInputException("path", $"a {KindName(kind)} named '{name}' is already in the catalog", "delete it first, or import under another name");
        Check(kind, source, serverPath);
        if (link)
        {
            if (isFolder) Directory.CreateSymbolicLink(target, source);
            else File.CreateSymbolicLink(target, source);
        }
        else if (isFolder)
        {
            await Task.Run(() => AtomicFile.WriteFolder(target, temp => CopyFolder(source, temp, cancellationToken)), cancellationToken);
        }
        else
        {
            var staging = Staging(kind, name);
            try
            {
                var temp = Path.Combine(staging, name);
                await using (var from = new FileStream(source, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, useAsync: true))
                await using (var to = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true))
                {
                    await from.CopyToAsync(to, cancellationToken);
                    to.Flush(flushToDisk: true);
                }
                MoveIntoPlace(temp, target, serverPath);
            }
            finally
            {
                Directory.Delete(staging, recursive: true);
            }
        }
        return await RecordAsync(caller, kind, name, target, isPrivate, cancellationToken);
    }

    /// <summary>
    /// Deletes the model at <paramref name="relativePath"/> of its kind's folder (a link: the link, never its target).
    /// False when there is none the caller may see; <see cref="NotPermittedException"/> when it is not theirs to delete.
    /// </summary>
    public async Task<bool> DeleteAsync(Caller caller, ModelKind kind, string relativePath, CancellationToken cancellationToken)
    {
        var path = guard.Resolve(relativePath, KindFolder(kind), "name", followLastLink: false);
        if (!Exists(path) || !Scan(kind, KindFolder(kind)).Contains(path)) return false;
        var relative = Path.GetRelativePath(KindFolder(kind), path).Replace('\\', '/');
        var item = await ownership.FindAsync(Area(kind), relative, cancellationToken);
        if (!Ownership.CanSee(caller, item)) return false;
        Ownership.RequireChange(caller, item, relativePath);
        if (new FileInfo(path).LinkTarget is not null || File.Exists(path)) File.Delete(path);
        else Directory.Delete(path, recursive: true);
        await ownership.ForgetAsync(Area(kind), relative, cancellationToken);
        return true;
    }

    /// <summary>Marks an imported model private (its owner and admins see it) or shared. False when there is none the caller may see.</summary>
    public Task<bool> SetPrivateAsync(Caller caller, ModelKind kind, string relativePath, bool isPrivate, CancellationToken cancellationToken) =>
        ownership.SetPrivateAsync(caller, Area(kind), relativePath, isPrivate, cancellationToken);

    /// <summary>The folder imports of <paramref name="kind"/> go to, in the data folder.</summary>
    public string KindFolder(ModelKind kind) => kind switch
    {
        ModelKind.Checkpoint => data.Models,
        ModelKind.Lora => data.Loras,
        ModelKind.Embedding => data.Embeddings,
        _ => data.Hypernetworks,
    };

    private static StorageArea Area(ModelKind kind) => kind switch
    {
        ModelKind.Checkpoint => StorageArea.Models,
        ModelKind.Lora => StorageArea.Loras,
        ModelKind.Embedding => StorageArea.Embeddings,
        _ => StorageArea.Hypernetworks,
    };

    private static string KindName(ModelKind kind) => kind switch
    {
        ModelKind.Checkpoint => "model",
        ModelKind.Lora => "LoRA",
        ModelKind.Embedding => "embedding",
        _ => "hypernetwork",
    };

    private static string[] Extensions(ModelKind kind) => kind switch
    {
        ModelKind.Checkpoint => CheckpointExtensions,
        ModelKind.Lora => LoraExtensions,
        ModelKind.Embedding => EmbeddingExtensions,
        _ => HypernetworkExtensions,
    };

    // The application's folders (shared by every user, read-only here), then the data folder's.
    private IReadOnlyList<string> Folders(ModelKind kind) => kind switch
    {
        ModelKind.Checkpoint => [data.Models],
        ModelKind.Lora => data.LoraFolders,
        ModelKind.Embedding => data.EmbeddingFolders,
        _ => data.HypernetworkFolders,
    };

    private IEnumerable<string> Scan(ModelKind kind, string folder)
    {
        if (!Directory.Exists(folder)) yield break;
        var pending = new Stack<string>([folder]);
        while (pending.TryPop(out var current))
        {
            IEnumerable<FileSystemInfo> children;
            try
            {
                children = new DirectoryInfo(current).EnumerateFileSystemInfos().ToList();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            foreach (var child in children)
            {
                if (child.Name.StartsWith('.')) continue;  // temporary files of imports, caches
                if (IsFolder(child))
                {
                    // The networks' folders are models/'s sub-folders, not base models.
                    if (kind == ModelKind.Checkpoint && current == folder && child.FullName is var f && (f == data.Loras || f == data.Embeddings || f == data.Hypernetworks || f == data.Taggers || f == data.Vaes))
                        continue;
                    if (kind == ModelKind.Checkpoint && IsDiffusersFolder(child.FullName)) yield return child.FullName;
                    else pending.Push(child.FullName);
                }
                else if (Extensions(kind).Contains(Path.GetExtension(child.Name).ToLowerInvariant()))
                {
                    yield return child.FullName;
                }
            }
        }
    }

    private static bool IsFolder(FileSystemInfo info) =>
        info is DirectoryInfo || (info.LinkTarget is not null && Directory.Exists(info.FullName));

    // An ONNX export has model_index.json too: it is listed as a model, of format onnx.
    private static bool IsDiffusersFolder(string folder) =>
        File.Exists(Path.Combine(folder, "model_index.json")) || File.Exists(Path.Combine(folder, "unet", "config.json"));

    private static bool Exists(string path) => File.Exists(path) || Directory.Exists(path) || new FileInfo(path).LinkTarget is not null;

    private ModelEntry Describe(ModelKind kind, string path, string relative, StoredItem? item, bool isDemo)
    {
        var isFolder = Directory.Exists(path);
        var info = isFolder ? (FileSystemInfo)new DirectoryInfo(path) : new FileInfo(path);
        var size = isFolder ? FolderSize(path) : ((FileInfo)info).Length;
        var bare = Path.GetFileNameWithoutExtension(relative);
        var description = isFolder ? Read(kind, path) : descriptions.Get(path, () => Read(kind, path));
        string? sha256 = null, shortHash = null, problem = description.Problem;
        if (!isFolder && problem is null)
        {
            try
            {
                sha256 = hashes.Sha256(path);
                shortHash = kind switch
                {
                    ModelKind.Checkpoint or ModelKind.Hypernetwork => sha256[..10],
                    ModelKind.Lora => hashes.LoraShortHash(path, description.Metadata),
                    _ => hashes.EmbeddingShortHash(path),
                };
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or UserInputException)
            {
                problem = e.Message;
            }
        }
        var name = kind == ModelKind.Checkpoint && !isFolder ? Path.ChangeExtension(relative, null).Replace('/', '_') : kind == ModelKind.Checkpoint ? relative.Replace('/', '_') : bare;
        var title = kind == ModelKind.Checkpoint && shortHash is not null ? $"{relative} [{shortHash}]" : kind == ModelKind.Checkpoint ? relative : bare;
        return new ModelEntry(kind, name, title, relative, path, size, info.LastWriteTimeUtc, description.Family, description.PredictionType,
            shortHash, sha256, description.Metadata, description.Vectors, description.Dimension, item?.OwnerId, item?.IsPrivate ?? false, isDemo)
        {
            Problem = problem,
            Format = kind == ModelKind.Checkpoint ? FormatOf(path, isFolder) : null,
            Backends = kind == ModelKind.Checkpoint ? BackendsOf(path) : [],
        };
    }

    // Reads what the kind's header says; a file that is not what it should be gets its problem instead.
    private FileDescription Read(ModelKind kind, string path)
    {
        try
        {
            return kind switch
            {
                ModelKind.Checkpoint => ReadCheckpoint(path),
                ModelKind.Lora => ReadLora(path),
                ModelKind.Embedding => ReadEmbedding(path),
                _ => ReadHypernetwork(path),
            };
        }
        catch (Exception e) when (e is UserInputException or InvalidDataException or NotSupportedException)
        {
            return new FileDescription(null, null, [], null, null, e.Message);
        }
    }

    private static string FormatOf(string path, bool isFolder) =>
        isFolder ? (BackendChoice.IsExportOnly(path) ? "onnx" : "diffusers")
            : Path.GetExtension(path).TrimStart('.').ToLowerInvariant();

    private static IReadOnlyList<string> BackendsOf(string path) =>
        [.. new[] { InferenceBackend.Libtorch, InferenceBackend.OnnxRuntime }
            .Where(b => b == InferenceBackend.Libtorch ? BackendChoice.HasLibtorchWeights(path) : BackendChoice.HasOnnxExport(path))
            .Select(BackendChoice.NameOf)];

    private FileDescription ReadCheckpoint(string path)
    {
        // An export alone: its configs and graphs tell the family (optimum writes a unet/config.json, but no weights).
        var description = BackendChoice.IsExportOnly(path)
            ? OnnxDiffusionModel.Describe(path)
            : ModelLoader.Describe(path, new ModelLoadOptions(SearchRoots: data.SearchRoots));
        var metadata = File.Exists(path) && TensorFile.IsSafetensors(path) ? SafetensorsMetadata(path) : [];
        return new FileDescription(FamilyName(description.Family), description.PredictionType, metadata, null, null, null);
    }

    private static FileDescription ReadLora(string path)
    {
        using var file = TensorFile.Open(path);
        var modules = LoraKeys.Modules(path, file.Names);
        var metadata = new Dictionary<string, string>(file.Metadata, StringComparer.Ordinal);
        // Only SDXL has a second text encoder; kohya writes ss_v2 for SD 2.x and ss_base_model_version.
        string? family = modules.Any(m => m.Target == LoraTarget.TextEncoder2)
            || (metadata.TryGetValue("ss_base_model_version", out var version) && version.StartsWith("sdxl", StringComparison.OrdinalIgnoreCase))
            ? SdxlFamily
            : metadata.TryGetValue("ss_v2", out var v2) ? (string.Equals(v2, "true", StringComparison.OrdinalIgnoreCase) ? "SD 2.x" : "SD 1.x")
            : null;
        return new FileDescription(family, null, metadata, null, null, null);
    }

    private static FileDescription ReadEmbedding(string path)
    {
        using var file = TensorFile.OpenNested(path);
        var (vectors, second) = TextualInversionFile.FindVectors(file);
        var shape = file.Shapes[vectors];
        var (count, width) = shape.Length == 1 ? (1, shape[0]) : (shape[0], shape[^1]);
        var family = second is not null ? SdxlFamily : width switch { 768 => "SD 1.x", 1024 => "SD 2.x", _ => null };
        return new FileDescription(family, null, new Dictionary<string, string>(file.Metadata, StringComparer.Ordinal), (int)count, (int)width, null);
    }

    private static FileDescription ReadHypernetwork(string path)
    {
        using var checkpoint = TorchCheckpoint.Open(path);
        var (file, _) = HypernetworkFile.Read(checkpoint);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["name"] = file.Name,
            ["step"] = file.Step.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["layer_structure"] = string.Join(", ", file.Options.LayerStructure.Select(x => x.ToString(System.Globalization.CultureInfo.InvariantCulture))),
            ["activation_func"] = file.Options.ActivationFunc,
        };
        if (file.SdCheckpointName is { } checkpointName) metadata["sd_checkpoint_name"] = checkpointName;
        return new FileDescription(null, null, metadata, null, null, null);
    }

    private static Dictionary<string, string> SafetensorsMetadata(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return new Dictionary<string, string>(file.Metadata, StringComparer.Ordinal);
    }

    /// <summary>The catalog's names of SDXL's base and refiner families (a refiner finishes a base's images).</summary>
    public const string SdxlFamily = "SDXL", SdxlRefinerFamily = "SDXL refiner";

    private static string? FamilyName(ModelFamily family) => family switch
    {
        ModelFamily.V1 => "SD 1.x",
        ModelFamily.V2 => "SD 2.x",
        ModelFamily.XlBase => SdxlFamily,
        ModelFamily.XlRefiner => SdxlRefinerFamily,
        _ => null,
    };

    private static long FolderSize(string folder) =>
        new DirectoryInfo(folder).EnumerateFiles("*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true }).Sum(f => f.Length);

    private string CheckNewName(ModelKind kind, string fileName, string field)
    {
        var name = PathGuard.Name(fileName, field);
        var extension = Path.GetExtension(name).ToLowerInvariant();
        if (!Extensions(kind).Contains(extension))
            throw new UserInputException(field, $"'{name}' does not end in {string.Join(", ", Extensions(kind))}, the files a {KindName(kind)} is read from",
                $"name the file for its format, such as {Path.ChangeExtension(name, Extensions(kind)[0])}");
        if (Exists(Path.Combine(KindFolder(kind), name)))
            throw new UserInputException(field, $"a {KindName(kind)} named '{name}' is already in the catalog", "delete it first, or import under another name");
        return name;
    }

    // A hidden folder in the target's own folder (one file system, so the final move is a rename); its name ends in
    // .tmp, so AtomicFile.RemoveLeftovers clears it after a crash.
    private string Staging(ModelKind kind, string name)
    {
        var staging = Path.Combine(KindFolder(kind), $".{name}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(staging);
        return staging;
    }

    private async Task CopyLimitedAsync(Stream content, Stream file, string name, CancellationToken cancellationToken)
    {
        var limit = options.Limits.MaxModelBytes;
        var buffer = new byte[1 << 20];
        long total = 0;
        int read;
        while ((read = await content.ReadAsync(buffer, cancellationToken)) > 0)
        {
            total += read;
            if (total > limit)
                throw new UserInputException(name, $"is over {limit:N0} bytes, the most a model file may have (StorageLimits.MaxModelBytes)", "ask the administrator to raise the limit");
            await file.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
        }
    }

    // The content decides, not the name: a .safetensors must hold a safetensors header, a .ckpt/.pt/.bin a torch zip or
    // pickle; then it must hold a model of the kind. Errors name what the user gave, not the temporary file.
    private void Check(ModelKind kind, string path, string given)
    {
        if (File.Exists(path))
        {
            var claimsSafetensors = TensorFile.IsSafetensors(path);
            if (claimsSafetensors != StartsLikeSafetensors(path))
                throw new UserInputException(given, claimsSafetensors
                    ? "is not a safetensors file (it does not start with a header length and a JSON header)"
                    : "is a safetensors file but its name says it is a torch pickle", "give the file the extension of its format");
        }
        // The readers name the file they read, here perhaps a temporary one: the user knows it by what they gave.
        if (Read(kind, path) is { Problem: { } problem })
            throw new UserInputException(given, problem.Replace($"{path}: ", "", StringComparison.Ordinal).Replace(path, given, StringComparison.Ordinal));
    }

    private static bool StartsLikeSafetensors(string path)
    {
        using var stream = File.OpenRead(path);
        Span<byte> head = stackalloc byte[9];
        if (stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false) < head.Length) return false;
        var length = BinaryPrimitives.ReadUInt64LittleEndian(head);
        return length >= 2 && length <= (ulong)Math.Min(SafetensorsFile.MaxHeaderLength, stream.Length - 8) && head[8] == (byte)'{';
    }

    private static void MoveIntoPlace(string temp, string target, string given)
    {
        try
        {
            File.Move(temp, target, overwrite: false);
        }
        catch (IOException) when (File.Exists(target))
        {
            throw new UserInputException(given, $"'{Path.GetFileName(target)}' was imported by someone else meanwhile", "import under another name");
        }
    }

    private static void CopyFolder(string source, string target, CancellationToken cancellationToken)
    {
        foreach (var directory in Directory.EnumerateDirectories(source, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(target, Path.GetRelativePath(source, directory)));
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            cancellationToken.ThrowIfCancellationRequested();
            File.Copy(file, Path.Combine(target, Path.GetRelativePath(source, file)));
        }
    }

    private async Task<ModelEntry> RecordAsync(Caller caller, ModelKind kind, string name, string target, bool isPrivate, CancellationToken cancellationToken)
    {
        var item = await ownership.RecordAsync(Area(kind), name, caller.UserId, isPrivate, cancellationToken);
        return Describe(kind, target, name, item, isDemo: false);
    }
}
