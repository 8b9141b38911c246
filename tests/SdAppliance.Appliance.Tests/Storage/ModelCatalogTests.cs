using SdAppliance.Appliance.Catalog;
using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using static SdAppliance.Appliance.Tests.Storage.StorageFixture;

namespace SdAppliance.Appliance.Tests.Storage;

public sealed class ModelCatalogTests : IDisposable
{
    private readonly StorageFixture storage = new(withApplicationRoot: true);
    private readonly CancellationToken none = CancellationToken.None;

    [Fact]
    public async Task The_demo_model_is_always_listed_first_as_an_SD1_diffusers_folder_without_a_hash()
    {
        var demo = Assert.Single(await storage.Catalog.ListAsync(Alice, ModelKind.Checkpoint, none));
        Assert.True(demo.IsDemo);
        Assert.Equal("demo", demo.Name);
        Assert.Equal("demo", demo.Title);
        Assert.Equal(DemoModel, demo.Path);
        Assert.Equal("SD 1.x", demo.Family);
        Assert.Equal("epsilon", demo.PredictionType);
        Assert.Null(demo.ShortHash);
        Assert.Null(demo.Problem);
    }

    [Fact]
    public async Task A_checkpoint_dropped_in_by_hand_appears_without_a_restart_with_its_A1111_title_and_hashes()
    {
        Assert.Single(await storage.Catalog.ListAsync(Alice, ModelKind.Checkpoint, none));
        Directory.CreateDirectory(Path.Combine(storage.Data.Models, "sub"));
        var file = Path.Combine(storage.Data.Models, "sub", "tiny.safetensors");
        File.Copy(Path.Combine(DemoModel, "demo.safetensors"), file);

        var entries = await storage.Catalog.ListAsync(Alice, ModelKind.Checkpoint, none);
        var tiny = Assert.Single(entries, e => !e.IsDemo);
        var sha = Sha256(file);
        Assert.Equal(sha, tiny.Sha256);
        Assert.Equal(sha[..10], tiny.ShortHash);
        Assert.Equal($"sub/tiny.safetensors [{sha[..10]}]", tiny.Title);
        Assert.Equal("sub_tiny", tiny.Name);
        Assert.Equal("SD 1.x", tiny.Family);
        Assert.Equal("epsilon", tiny.PredictionType);
        Assert.Null(tiny.OwnerId);

        // Found as A1111 finds checkpoints: by title, name, file name, hash; ignoring case as a last resort.
        foreach (var alias in (string[])[tiny.Title, "sub/tiny.safetensors", "sub_tiny", "tiny", sha[..10], $"tiny [{sha[..10]}]", sha, "TINY"])
            Assert.Equal(file, (await storage.Catalog.FindAsync(Alice, ModelKind.Checkpoint, alias, none))?.Path);
        Assert.Null(await storage.Catalog.FindAsync(Alice, ModelKind.Checkpoint, "nothing", none));
    }

    [Fact]
    public async Task Descriptions_and_hashes_are_kept_in_the_cache_folder_and_a_changed_file_is_read_again()
    {
        var file = Path.Combine(storage.Data.Models, "changing.safetensors");
        File.WriteAllText(file, "not a model");
        var broken = Assert.Single(await storage.Catalog.ListAsync(Alice, ModelKind.Checkpoint, none), e => !e.IsDemo);
        Assert.NotNull(broken.Problem);
        Assert.Null(broken.ShortHash);
        Assert.Contains(file, File.ReadAllText(Path.Combine(storage.Data.Cache, "models.json")));

        File.Copy(Path.Combine(DemoModel, "demo.safetensors"), file, overwrite: true);
        var fixedEntry = Assert.Single(await storage.Catalog.ListAsync(Alice, ModelKind.Checkpoint, none), e => !e.IsDemo);
        Assert.Null(fixedEntry.Problem);
        Assert.Equal("SD 1.x", fixedEntry.Family);
        Assert.Contains(Sha256(file), File.ReadAllText(storage.Data.HashCache));
    }

    [Fact]
    public async Task A_LoRA_shows_its_kohya_metadata_and_A1111s_short_hash()
    {
        var file = Path.Combine(storage.Data.Loras, "ink.safetensors");
        WriteLora(file);
        var lora = Assert.Single(await storage.Catalog.ListAsync(Alice, ModelKind.Lora, none));
        Assert.Equal("ink", lora.Name);
        Assert.Equal("ink", lora.Title);
        Assert.Equal("2", lora.Metadata["ss_network_dim"]);
        Assert.Equal("SD 1.x", lora.Family);
        Assert.Equal(TensorDataSha256(file)[..12], lora.ShortHash);
        Assert.Equal(Sha256(file), lora.Sha256);
    }

    [Fact]
    public async Task An_embedding_shows_its_vectors_and_width()
    {
        var file = Path.Combine(storage.Data.Embeddings, "zwx.safetensors");
        SafetensorsFile.Write(file, [new SafetensorsTensor("emb_params", SafetensorsDType.F32, [3, 768], new byte[3 * 768 * 4])]);
        var embedding = Assert.Single(await storage.Catalog.ListAsync(Alice, ModelKind.Embedding, none));
        Assert.Equal((3, 768), (embedding.Vectors, embedding.Dimension));
        Assert.Equal("SD 1.x", embedding.Family);
        Assert.Equal(Sha256(file)[..12], embedding.ShortHash);
    }

    [Fact]
    public async Task A_hypernetwork_shows_its_settings_and_a_pickle_that_is_none_shows_its_problem()
    {
        static SafetensorsTensor Zeros(string name, params long[] shape) =>
            new(name, SafetensorsDType.F32, shape, new byte[shape.Aggregate(4L, (a, b) => a * b)]);
        static Dictionary<string, SafetensorsTensor> Mlp() => new()
        {
            ["linear.0.weight"] = Zeros("linear.0.weight", 8, 4), ["linear.0.bias"] = Zeros("linear.0.bias", 8),
            ["linear.1.weight"] = Zeros("linear.1.weight", 4, 8), ["linear.1.bias"] = Zeros("linear.1.bias", 4),
        };
        new HypernetworkFile("anime", 120, new HypernetworkOptions([1, 2, 1]), null, "demo").Write(
            Path.Combine(storage.Data.Hypernetworks, "anime.pt"), [new HypernetworkLayers<SafetensorsTensor>(4, Mlp(), Mlp())]);
        File.WriteAllText(Path.Combine(storage.Data.Hypernetworks, "broken.pt"), "not a pickle");

        var entries = await storage.Catalog.ListAsync(Alice, ModelKind.Hypernetwork, none);
        var anime = Assert.Single(entries, e => e.Name == "anime");
        Assert.Null(anime.Problem);
        Assert.Equal(("120", "1, 2, 1", "demo"), (anime.Metadata["step"], anime.Metadata["layer_structure"], anime.Metadata["sd_checkpoint_name"]));
        Assert.Equal(Sha256(anime.Path)[..10], anime.ShortHash);
        var broken = Assert.Single(entries, e => e.Name == "broken");
        Assert.Contains("pickle", broken.Problem);
        Assert.Null(broken.Sha256);
    }

    [Fact]
    public async Task An_uploaded_private_LoRA_is_seen_by_its_owner_and_admins_only_and_deleted_by_them_only()
    {
        var source = Path.Combine(storage.Root, "style.safetensors");
        WriteLora(source);
        await using (var upload = File.OpenRead(source))
        {
            var imported = await storage.Catalog.ImportAsync(Alice, ModelKind.Lora, "style.safetensors", upload, isPrivate: true, none);
            Assert.Equal(("alice", true), (imported.OwnerId, imported.IsPrivate));
        }
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(Path.Combine(storage.Data.Loras, "style.safetensors")));
        Assert.Single(await storage.Catalog.ListAsync(Alice, ModelKind.Lora, none));
        Assert.Single(await storage.Catalog.ListAsync(Admin, ModelKind.Lora, none));
        Assert.Empty(await storage.Catalog.ListAsync(Bob, ModelKind.Lora, none));
        Assert.Null(await storage.Catalog.FindAsync(Bob, ModelKind.Lora, "style", none));
        Assert.False(await storage.Catalog.DeleteAsync(Bob, ModelKind.Lora, "style.safetensors", none));

        Assert.True(await storage.Catalog.SetPrivateAsync(Alice, ModelKind.Lora, "style.safetensors", false, none));
        Assert.Single(await storage.Catalog.ListAsync(Bob, ModelKind.Lora, none));
        await Assert.ThrowsAsync<NotPermittedException>(() => storage.Catalog.DeleteAsync(Bob, ModelKind.Lora, "style.safetensors", none));
        Assert.True(await storage.Catalog.DeleteAsync(Alice, ModelKind.Lora, "style.safetensors", none));
        Assert.Empty(await storage.Catalog.ListAsync(Admin, ModelKind.Lora, none));
    }

    [Fact]
    public async Task A_file_dropped_in_by_hand_is_deleted_by_an_admin_only()
    {
        WriteLora(Path.Combine(storage.Data.Loras, "hand.safetensors"));
        await Assert.ThrowsAsync<NotPermittedException>(() => storage.Catalog.DeleteAsync(Alice, ModelKind.Lora, "hand.safetensors", none));
        Assert.True(await storage.Catalog.DeleteAsync(Admin, ModelKind.Lora, "hand.safetensors", none));
        Assert.False(File.Exists(Path.Combine(storage.Data.Loras, "hand.safetensors")));
        Assert.False(await storage.Catalog.DeleteAsync(Admin, ModelKind.Checkpoint, "demo", none));
    }

    [Theory]
    [InlineData("fake.safetensors", "not a model at all, just text", "is not a safetensors file")]
    [InlineData("fake.ckpt", "not a model at all, just text", "neither a zip archive nor a pickle")]
    [InlineData("fake.bin", "text", "does not end in .safetensors, .ckpt")]
    [InlineData("../fake.safetensors", "text", "contains '/'")]
    public async Task An_upload_that_is_not_a_model_is_refused_naming_the_file_and_leaves_nothing(string name, string content, string problem)
    {
        var e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Catalog.ImportAsync(Alice, ModelKind.Checkpoint, name, Text(content), false, none));
        Assert.Contains(problem, e.Message);
        Assert.DoesNotContain(".tmp", e.Message);
        Assert.Empty(Directory.EnumerateFiles(storage.Data.Models));
        Assert.Equal(["embeddings", "hypernetworks", "lora"], Directory.EnumerateDirectories(storage.Data.Models).Select(Path.GetFileName).Order());
    }

    [Fact]
    public async Task A_LoRA_renamed_to_a_checkpoint_is_refused_by_its_content()
    {
        var lora = Path.Combine(storage.Root, "lora.safetensors");
        WriteLora(lora);
        await using var upload = File.OpenRead(lora);
        var e = await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Catalog.ImportAsync(Alice, ModelKind.Checkpoint, "model.safetensors", upload, false, none));
        Assert.Equal("model.safetensors", e.Subject);
        Assert.Contains("Stable Diffusion", e.Message);
        Assert.Empty(Directory.EnumerateFiles(storage.Data.Models));
    }

    [Fact]
    public async Task An_upload_over_the_size_limit_is_refused()
    {
        using var small = new StorageFixture(configure: o => new ApplianceOptions { DataFolder = o.DataFolder, Limits = new() { MaxModelBytes = 1000 } });
        var e = await Assert.ThrowsAnyAsync<UserInputException>(() => small.Catalog.ImportAsync(Alice, ModelKind.Lora, "big.safetensors", new MemoryStream(new byte[5000]), false, none));
        Assert.Contains("MaxModelBytes", e.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(small.Data.Loras));
    }

    [Fact]
    public async Task A_model_is_imported_from_an_import_root_by_copy_or_link_and_never_from_outside()
    {
        var demoCopy = Path.Combine(storage.ImportRoot, "copied.safetensors");
        File.Copy(Path.Combine(DemoModel, "demo.safetensors"), demoCopy);
        var copied = await storage.Catalog.ImportFromServerAsync(Alice, ModelKind.Checkpoint, demoCopy, link: false, isPrivate: false, none);
        Assert.Equal(Path.Combine(storage.Data.Models, "copied.safetensors"), copied.Path);
        Assert.Null(new FileInfo(copied.Path).LinkTarget);
        Assert.Equal(Sha256(demoCopy), copied.Sha256);

        GenerateFolder(Path.Combine(storage.ImportRoot, "folder-model"));
        var linked = await storage.Catalog.ImportFromServerAsync(Alice, ModelKind.Checkpoint, Path.Combine(storage.ImportRoot, "folder-model"), link: true, isPrivate: false, none);
        Assert.NotNull(new DirectoryInfo(linked.Path).LinkTarget);
        Assert.Equal("SD 1.x", linked.Family);
        Assert.Equal(3, (await storage.Catalog.ListAsync(Bob, ModelKind.Checkpoint, none)).Count);

        // Deleting a linked model removes the link, never what it points to.
        Assert.True(await storage.Catalog.DeleteAsync(Alice, ModelKind.Checkpoint, "folder-model", none));
        Assert.True(File.Exists(Path.Combine(storage.ImportRoot, "folder-model", "unet", "config.json")));

        var outside = Path.Combine(storage.Root, "outside.safetensors");
        File.Copy(Path.Combine(DemoModel, "demo.safetensors"), outside);
        await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Catalog.ImportFromServerAsync(Alice, ModelKind.Checkpoint, outside, false, false, none));
        await Assert.ThrowsAnyAsync<UserInputException>(() => storage.Catalog.ImportFromServerAsync(Alice, ModelKind.Checkpoint, DemoModel + "/demo.safetensors", false, false, none));
    }

    // The demo model's diffusers part, copied (a folder model to import).
    private static void GenerateFolder(string target)
    {
        foreach (var file in Directory.EnumerateFiles(DemoModel, "*", SearchOption.AllDirectories).Where(f => Path.GetFileName(f) != "demo.safetensors"))
        {
            var to = Path.Combine(target, Path.GetRelativePath(DemoModel, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
    }

    public void Dispose() => storage.Dispose();
}
