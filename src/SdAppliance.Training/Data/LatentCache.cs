using System.Security.Cryptography;
using System.Text;
using SdAppliance.Diffusion.Images;
using SdAppliance.Formats;
using SdAppliance.Imaging;
using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Serialization;

namespace SdAppliance.Training.Data;

/// <summary>
/// VAE latents of training examples, computed once per (image, bucket, crop, flip): kept in memory and, with
/// <c>onDisk</c>, in a <c>.latents</c> folder beside the images, one <c>.safetensors</c> file per draw whose
/// metadata holds a fingerprint (file size, modification time, bucket, crop, flip, VAE identity, sampling); a
/// stored latent whose fingerprint differs (the image was edited, another VAE) is computed again and replaced.
/// <para>
/// Which latent: kohya caches one <c>latent_dist.sample()</c> per image and trains on it for the whole run; with a
/// <c>generator</c> we do the same, drawing each image's noise from a CPU generator seeded by the generator's seed
/// and the draw's identity, so the cached latent does not depend on the order images are first met (a resumed
/// run gets the same latents as an uninterrupted one). Without a generator the posterior's mean is used.
/// Latents are multiplied by the VAE's scaling factor (after subtracting its shift factor, when it has one) and
/// kept as float32 on the CPU; <see cref="Get"/> returns a copy the caller disposes.
/// </para>
/// A random crop gives a new key at nearly every draw, so caching is for center-cropped datasets
/// (<see cref="TrainingDataset.LatentsCacheable"/>), as kohya refuses <c>cache_latents</c> with <c>random_crop</c>
/// (<see cref="ForRun"/>); there the entries are bounded by the images × their flips (× the buckets, for class images).
/// </summary>
public sealed class LatentCache : IDisposable
{
    /// <summary>The cache folder's name, created beside the images.</summary>
    public const string FolderName = ".latents";

    private const string TensorName = "latents";
    private const string FingerprintKey = "fingerprint";

    private readonly AutoencoderKL vae;
    private readonly string vaeIdentity;
    private readonly bool onDisk;
    private readonly ulong? sampleSeed;
    private readonly Dictionary<string, (string Fingerprint, Tensor Latents)> memory = new(StringComparer.Ordinal);
    private readonly Lock gate = new();
    private bool disposed;

    /// <param name="vaeIdentity">Names the VAE's weights (for example a hash of its file): latents stored by another VAE are not reused.</param>
    /// <param name="generator">When given, latents are samples of the posterior seeded from its seed (kohya); otherwise the posterior's mean.</param>
    public LatentCache(AutoencoderKL vae, string vaeIdentity, bool onDisk, Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(vae);
        ArgumentNullException.ThrowIfNull(vaeIdentity);
        this.vae = vae;
        this.vaeIdentity = vaeIdentity;
        this.onDisk = onDisk;
        sampleSeed = generator?.InitialSeed;
    }

    /// <summary>Draws answered from memory.</summary>
    public int MemoryHits { get; private set; }

    /// <summary>Draws answered from a <c>.latents</c> file with a matching fingerprint.</summary>
    public int DiskHits { get; private set; }

    /// <summary>Draws that ran the VAE.</summary>
    public int Computed { get; private set; }

    /// <summary>
    /// The cache a run trains from, or null when it does not cache (<see cref="TrainingConfig.CachesLatents"/>: then every draw
    /// runs the VAE, <see cref="Encode"/>). On disk the VAE is known by a hash of its weights (<see cref="ContentHash"/>), so
    /// two models of the same name do not share latents, and one VAE in two models does.
    /// </summary>
    public static LatentCache? ForRun(TrainingConfig config, AutoencoderKL vae)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!config.CachesLatents()) return null;
        // In memory the cache lives and dies with its one VAE: no identity to compute.
        return new LatentCache(vae, config.CacheLatentsToDisk ? ContentHash(vae) : "this-run", config.CacheLatentsToDisk);
    }

    /// <summary>
    /// A SHA-256 (its first 16 bytes, in hex) of the VAE's state: every tensor's name, dtype, shape and bytes, in name order.
    /// Read once per run; about a second for SD's 84M-parameter VAE.
    /// </summary>
    public static string ContentHash(AutoencoderKL vae)
    {
        ArgumentNullException.ThrowIfNull(vae);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var state = vae.StateDict();
        foreach (var (name, tensor) in state.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            hash.AppendData(Encoding.UTF8.GetBytes($"{name}|{tensor.DType}|{string.Join(',', tensor.Shape)}|"));
            using var cpu = tensor.To(Device.Cpu);
            hash.AppendData(cpu.ToBytes());
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset().AsSpan(0, 16));
    }

    /// <summary>Latents in memory.</summary>
    public int Count
    {
        get
        {
            lock (gate) return memory.Count;
        }
    }

    /// <summary>The bytes of the latents in memory.</summary>
    public long Bytes
    {
        get
        {
            lock (gate) return memory.Values.Sum(e => e.Latents.NumEl * e.Latents.ElementSize);
        }
    }

    /// <summary>The latents [1, 4, H/8, W/8] of <paramref name="example"/>'s image, bucket, crop and flip (float32, CPU; the caller disposes).</summary>
    /// <param name="cancellationToken">Checked before the VAE runs.</param>
    public Tensor Get(TrainingExample example, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(example);
        ObjectDisposedException.ThrowIf(disposed, this);
        var key = Key(example);
        var fingerprint = Fingerprint(example, key);
        lock (gate)
        {
            if (memory.TryGetValue(key, out var entry) && entry.Fingerprint == fingerprint)
            {
                MemoryHits++;
                return entry.Latents.Clone();
            }
        }

        var file = onDisk ? CachePath(example, key) : null;
        var latents = file is not null ? TryLoad(file, fingerprint) : null;
        if (latents is not null)
        {
            lock (gate) DiskHits++;
        }
        else
        {
            cancellationToken.ThrowIfCancellationRequested();
            latents = Encode(vae, example, sampleSeed);
            lock (gate) Computed++;
            if (file is not null)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(file)!);
                TensorFiles.Save(file, [new(TensorName, latents)], new Dictionary<string, string> { [FingerprintKey] = fingerprint });
            }
        }
        // Kept across steps: out of whatever dispose scope the caller runs in.
        latents.DetachFromDisposeScope();
        lock (gate)
        {
            if (memory.Remove(key, out var stale)) stale.Latents.Dispose();
            memory[key] = (fingerprint, latents);
            return latents.Clone();
        }
    }

    /// <summary>The example's pixels [1, 3, H, W] in [−1, 1]: the image (alpha over white) resized to cover the bucket, cropped at the example's window, mirrored when asked.</summary>
    public static Tensor LoadPixels(TrainingExample example)
    {
        ArgumentNullException.ThrowIfNull(example);
        var image = ImageCodec.Load(example.Item.Path, new ImageDecodeOptions { Channels = ChannelMode.Rgb });
        int bucketWidth = example.BucketWidth, bucketHeight = example.BucketHeight;
        // The size comes from the decoded image, not the scan: an image edited since is still cut to the bucket.
        var (width, height) = AspectBuckets.CoverSize(image.Width, image.Height, bucketWidth, bucketHeight);
        var resized = ImageTensors.Resize(image, width, height);
        int left = Math.Clamp(example.CropLeft, 0, width - bucketWidth);
        int top = Math.Clamp(example.CropTop, 0, height - bucketHeight);
        var cropped = ImageTensors.Crop(resized, left, top, bucketWidth, bucketHeight);
        if (example.Flip) cropped = Mirror(cropped);
        return ImageTensors.ToTensor(cropped);
    }

    /// <summary>Where the latents of <paramref name="example"/> are stored: <c>.latents/NAME.HASH.safetensors</c> beside the image.</summary>
    public string CachePath(TrainingExample example) => CachePath(example, Key(example));

    private string CachePath(TrainingExample example, string key)
    {
        var path = example.Item.Path;
        var name = $"{Path.GetFileName(path)}.{DataRandom.Hash($"{key}|{vaeIdentity}|{SamplingName}"):x16}.safetensors";
        return Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, FolderName, name);
    }

    private string SamplingName => sampleSeed is { } seed ? $"sample:{seed}" : "mean";

    private static string Key(TrainingExample e) =>
        $"{Path.GetFullPath(e.Item.Path)}|{e.BucketWidth}x{e.BucketHeight}|{e.CropLeft},{e.CropTop}|{(e.Flip ? "flip" : "noflip")}";

    private string Fingerprint(TrainingExample example, string key)
    {
        var info = new FileInfo(example.Item.Path);
        if (!info.Exists) throw new FileNotFoundException($"training image '{example.Item.Path}' is gone", example.Item.Path);
        // The key's path is left out so a moved dataset keeps its cache; the file name is in the cache file's name.
        var drawn = key[(key.IndexOf('|') + 1)..];
        return $"v1|size={info.Length}|mtime={info.LastWriteTimeUtc.Ticks}|{drawn}|vae={vaeIdentity}|{SamplingName}|scale={vae.Config.ScalingFactor:R}|shift={vae.Config.ShiftFactor:R}";
    }

    private static Tensor? TryLoad(string file, string fingerprint)
    {
        if (!File.Exists(file)) return null;
        try
        {
            using var cached = TensorFile.Open(file);
            if (!cached.Metadata.TryGetValue(FingerprintKey, out var stored) || stored != fingerprint || !cached.Contains(TensorName)) return null;
            using var mapped = cached.ReadTensor(TensorName);
            // A private copy: the file may be replaced while the run holds the tensor.
            return mapped.Clone();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SafetensorsFormatException)
        {
            return null;  // a damaged cache file is only a miss
        }
    }

    /// <summary>
    /// Runs the VAE on <paramref name="example"/>: its posterior's mean, or with <paramref name="sampleSeed"/> a sample whose
    /// noise is seeded by the seed and the draw; scaled (and shifted) as the UNet sees latents; float32 on the CPU.
    /// </summary>
    public static Tensor Encode(AutoencoderKL vae, TrainingExample example, ulong? sampleSeed = null)
    {
        ArgumentNullException.ThrowIfNull(vae);
        ArgumentNullException.ThrowIfNull(example);
        var key = Key(example);
        var parameter = vae.Parameters().First();
        using var scope = torch.NewDisposeScope();
        using var noGrad = Autograd.NoGrad();
        var pixels = LoadPixels(example).To(parameter.Device, parameter.DType);
        using var posterior = vae.Encode(pixels);
        Tensor latents;
        if (sampleSeed is { } seed)
        {
            using var generator = new Generator(DataRandom.Seed(seed, DataRandom.Hash(key[(key.IndexOf('|') + 1)..]), DataRandom.Hash(Path.GetFileName(example.Item.Path))));
            var noise = torch.Randn(posterior.Mean.Shape, generator, DType.Float32, Device.Cpu).To(posterior.Mean.Device, posterior.Mean.DType);
            latents = posterior.Sample(noise);
        }
        else
        {
            latents = posterior.Mode();
        }
        if (vae.Config.ShiftFactor is { } shift) latents = latents.Sub(shift);
        return latents.Mul(vae.Config.ScalingFactor).To(Device.Cpu, DType.Float32).Contiguous().MoveToOuterScope();
    }

    private static RgbImage Mirror(RgbImage image)
    {
        int c = image.Channels, w = image.Width;
        var pixels = new byte[image.Pixels.Length];
        for (int y = 0; y < image.Height; y++)
            for (int x = 0; x < w; x++)
                image.Pixels.AsSpan(((y * w) + x) * c, c).CopyTo(pixels.AsSpan(((y * w) + (w - 1 - x)) * c));
        return new RgbImage(w, image.Height, c, pixels);
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        lock (gate)
        {
            foreach (var (_, latents) in memory.Values) latents.Dispose();
            memory.Clear();
        }
    }
}
