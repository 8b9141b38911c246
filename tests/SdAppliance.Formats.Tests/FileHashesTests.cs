using SdAppliance.Formats.Hashing;

namespace SdAppliance.Formats.Tests;

/// <summary>
/// The expected values were computed once with coreutils on the fixture files (Fixtures/ = tests/fixtures/):
/// <c>sha256sum tiny-sd.ldm.safetensors</c>; the old hash with
/// <c>dd if=tiny-sd.ldm.safetensors bs=65536 skip=16 count=1 | sha256sum</c> (64 KiB at 1 MiB); the tensor-data hash with
/// <c>od -An -tu8 -N8</c> (header length 75000) and <c>tail -c +75009 tiny-sd.ldm.safetensors | sha256sum</c>.
/// </summary>
public sealed class FileHashesTests : IDisposable
{
    private const string Model = "Fixtures/tiny-sd.ldm.safetensors";
    private const string ModelSha256 = "9815128058dd68e6d8cc004808604d251fa7d8e69ce888cc48b7ff39d9985eeb";
    private const string ModelTensorDataSha256 = "2988d3d07d40793ec61e08508712b92f33485755d9b87fc779a0e6315bc3d142";
    private readonly TempFolder temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void HashesMatchCoreutilsOnTheFixtureModel()
    {
        var hashes = FileHashes.Uncached;

        Assert.Equal(ModelSha256, hashes.Sha256(Model));
        Assert.Equal(ModelTensorDataSha256, hashes.AddNetSha256(Model));
        Assert.Equal("40f7abfe", FileHashes.LegacyModelHash(Model));
        Assert.Equal("9815128058", hashes.ModelShortHash(Model));
        Assert.Equal("2988d3d07d40", hashes.LoraShortHash(Model));
        Assert.Equal("9815128058dd", hashes.EmbeddingShortHash(Model));
        using var stream = File.OpenRead(Model);
        Assert.Equal(ModelTensorDataSha256, FileHashes.AddNetSha256(stream, Model));
        Assert.Equal("40f7abfe", FileHashes.LegacyModelHash(stream));
    }

    [Fact]
    public void OldHashOfAFileUnderOneMebibyteIsTheHashOfNothing()
    {
        // 235,408 bytes: A1111 seeks past the end and hashes the empty read; `printf '' | sha256sum` is e3b0c442...
        Assert.Equal("e3b0c442", FileHashes.LegacyModelHash("Fixtures/tiny-sd/text_encoder/model.safetensors"));
    }

    [Fact]
    public void LoraHashOfAFileThatIsNotSafetensorsIsItsWholeFileHash()
    {
        var pt = temp.File("style.pt");
        File.Copy(Model, pt);

        Assert.Equal(ModelSha256[..12], FileHashes.Uncached.LoraShortHash(pt));
    }

    [Fact]
    public void CacheAnswersForAnUnchangedFileAndRehashesAChangedOne()
    {
        var file = temp.File("model.safetensors");
        File.Copy(Model, file);
        var cache = temp.File("cache/hashes.json");
        Assert.Equal(ModelSha256, new FileHashes(cache).Sha256(file));
        Assert.True(File.Exists(cache));

        // Same size and modification time, other bytes: a new instance reads the cache file, not the model.
        var modified = File.GetLastWriteTimeUtc(file);
        using (var stream = File.OpenWrite(file))
        {
            stream.Position = 1000;
            stream.WriteByte(0xFF);
        }
        File.SetLastWriteTimeUtc(file, modified);
        Assert.Equal(ModelSha256, new FileHashes(cache).Sha256(file));

        File.SetLastWriteTimeUtc(file, modified.AddSeconds(1));
        var rehashed = new FileHashes(cache).Sha256(file);
        Assert.NotEqual(ModelSha256, rehashed);
        Assert.Equal(FileHashes.Uncached.Sha256(file), rehashed);
    }

    [Fact]
    public void CorruptOrUnwritableCacheNeverFailsHashing()
    {
        var corrupt = temp.File("corrupt.json");
        File.WriteAllText(corrupt, "{ not json");
        Assert.Equal(ModelSha256, new FileHashes(corrupt).Sha256(Model));

        // The cache's "folder" is a file, so it cannot be created: the hash is still returned.
        var blocker = temp.File("blocker");
        File.WriteAllText(blocker, "");
        Assert.Equal(ModelSha256, new FileHashes(Path.Combine(blocker, "hashes.json")).Sha256(Model));
    }

    [Fact]
    public void TensorDataHashRefusesAHeaderLongerThanTheFile()
    {
        var file = temp.File("truncated.safetensors");
        File.WriteAllBytes(file, File.ReadAllBytes(Model).AsSpan(0, 1000).ToArray());

        var e = Assert.Throws<SafetensorsFormatException>(() => FileHashes.Uncached.AddNetSha256(file));
        Assert.Equal(file, e.FilePath);
        Assert.Contains("75000", e.Message);
    }

    [Fact]
    public void MissingFileIsARefusalNamingIt()
    {
        var missing = temp.File("nothing.safetensors");

        var e = Assert.Throws<UserInputException>(() => FileHashes.Uncached.Sha256(missing));
        Assert.Equal(missing, e.Subject);
    }
}
