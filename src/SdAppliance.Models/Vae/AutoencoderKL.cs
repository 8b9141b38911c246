using SdAppliance.Models.Blocks;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Models.Vae;


/// <summary>
/// The Stable Diffusion VAE, as diffusers' <c>AutoencoderKL</c> with its module names
/// (<c>encoder</c>, <c>decoder</c>, <c>quant_conv</c>, <c>post_quant_conv</c>): images in [−1, 1]
/// to a Gaussian over latents and latents back to images. Scaling by
/// <see cref="AutoencoderKLConfig.ScalingFactor"/> is the caller's (pipeline's) business, as in diffusers.
/// With <see cref="EnableTiling"/> large inputs are processed in overlapping tiles whose seams are
/// blended linearly, exactly as diffusers does, so memory stays bounded by the tile size.
/// </summary>
public sealed class AutoencoderKL : Module
{
    private readonly Encoder encoder;
    private readonly Decoder decoder;
    private readonly Conv2d? quantConv;
    private readonly Conv2d? postQuantConv;

    public AutoencoderKL(AutoencoderKLConfig config, ModuleOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var o = options ?? ModuleOptions.Default;
        encoder = RegisterModule("encoder", new Encoder(config.InChannels, config.LatentChannels, config.BlockOutChannels,
            config.LayersPerBlock, config.NormNumGroups, config.ActFn, doubleZ: true, config.MidBlockAddAttention, o));
        decoder = RegisterModule("decoder", new Decoder(config.LatentChannels, config.OutChannels, config.BlockOutChannels,
            config.LayersPerBlock, config.NormNumGroups, config.ActFn, config.MidBlockAddAttention, o));
        if (config.UseQuantConv)
            quantConv = RegisterModule("quant_conv", o.Conv2d(2 * config.LatentChannels, 2 * config.LatentChannels, 1));
        if (config.UsePostQuantConv)
            postQuantConv = RegisterModule("post_quant_conv", o.Conv2d(config.LatentChannels, config.LatentChannels, 1));

        TileSampleMinSize = config.SampleSize[0];
        TileLatentMinSize = config.SampleSize[0] / config.DownscaleFactor;
    }

    public AutoencoderKLConfig Config { get; }

    public Encoder Encoder => encoder;
    public Decoder Decoder => decoder;

    /// <summary>Whether inputs larger than a tile are encoded/decoded tile by tile.</summary>
    public bool UseTiling { get; private set; }

    /// <summary>Whether a batch is encoded/decoded one image at a time.</summary>
    public bool UseSlicing { get; private set; }

    /// <summary>Tile edge in pixels (diffusers: the config's sample_size).</summary>
    public int TileSampleMinSize { get; set; }

    /// <summary>Tile edge in latents (sample size / downscale factor).</summary>
    public int TileLatentMinSize { get; set; }

    /// <summary>Fraction of a tile that overlaps its neighbour and is blended.</summary>
    public double TileOverlapFactor { get; set; } = 0.25;

    public void EnableTiling(bool useTiling = true) => UseTiling = useTiling;
    public void DisableTiling() => UseTiling = false;
    public void EnableSlicing(bool useSlicing = true) => UseSlicing = useSlicing;
    public void DisableSlicing() => UseSlicing = false;

    public void EnableGradientCheckpointing(bool enable = true)
    {
        encoder.GradientCheckpointing = enable;
        decoder.GradientCheckpointing = enable;
    }

    /// <summary>Images [B, 3, H, W] in [−1, 1] → the latent distribution [B, latent, H/8, W/8].</summary>
    public DiagonalGaussianDistribution Encode(Tensor images)
    {
        using var moments = EncodeMoments(images);
        return new DiagonalGaussianDistribution(moments);
    }

    /// <summary>The raw moments (after quant_conv) [B, 2·latent, h, w]: mean then log-variance.</summary>
    public Tensor EncodeMoments(Tensor images) => Sliced(images, EncodeOne);

    /// <summary>Latents [B, latent, h, w] (already divided by the scaling factor) → images [B, 3, 8h, 8w], roughly in [−1, 1].</summary>
    public Tensor Decode(Tensor latents) => Sliced(latents, DecodeOne);

    private Tensor Sliced(Tensor batch, Func<Tensor, Tensor> run)
    {
        if (!UseSlicing || batch.Size(0) <= 1) return run(batch);
        using var scope = torch.NewDisposeScope();
        return scope.MoveToOuterScope(torch.Cat([.. batch.Split(1).Select(run)], 0));
    }

    private Tensor EncodeOne(Tensor images)
    {
        if (UseTiling && (images.Size(-1) > TileSampleMinSize || images.Size(-2) > TileSampleMinSize))
            return Tiled(images, TileSampleMinSize, TileLatentMinSize, EncodeTile);
        return EncodeTile(images);
    }

    private Tensor DecodeOne(Tensor latents)
    {
        if (UseTiling && (latents.Size(-1) > TileLatentMinSize || latents.Size(-2) > TileLatentMinSize))
            return Tiled(latents, TileLatentMinSize, TileSampleMinSize, DecodeTile);
        return DecodeTile(latents);
    }

    private Tensor EncodeTile(Tensor images)
    {
        using var scope = torch.NewDisposeScope();
        var moments = encoder.Forward(images);
        if (quantConv is not null) moments = quantConv.Forward(moments);
        return scope.MoveToOuterScope(moments);
    }

    private Tensor DecodeTile(Tensor latents)
    {
        using var scope = torch.NewDisposeScope();
        if (postQuantConv is not null) latents = postQuantConv.Forward(latents);
        return scope.MoveToOuterScope(decoder.Forward(latents));
    }

    /// <summary>
    /// diffusers' tiled encode/decode: tiles of <paramref name="inTile"/> taken every
    /// inTile·(1 − overlap), each processed alone; each output tile is blended with the one above
    /// and the one to the left over outTile·overlap rows/columns (linear ramp), then cropped to
    /// outTile·(1 − overlap) and the crops concatenated. Only two rows of tiles are kept.
    /// </summary>
    private Tensor Tiled(Tensor input, int inTile, int outTile, Func<Tensor, Tensor> process)
    {
        var stride = (int)(inTile * (1 - TileOverlapFactor));
        var blendExtent = (int)(outTile * TileOverlapFactor);
        var rowLimit = outTile - blendExtent;
        var (height, width) = (input.Size(2), input.Size(3));
        if (stride <= 0) throw new InvalidOperationException($"tile size {inTile} with overlap {TileOverlapFactor} gives no progress");

        using var scope = torch.NewDisposeScope();
        List<Tensor> above = [];
        var strips = new List<Tensor>();
        for (long i = 0; i < height; i += stride)
        {
            List<Tensor> row = [];
            // Each row in its own scope, so the views and blends of a row are gone before the next.
            using (var rowScope = torch.NewDisposeScope())
            {
                for (long j = 0; j < width; j += stride)
                {
                    var tile = process(input.Narrow(2, i, Math.Min(inTile, height - i)).Narrow(3, j, Math.Min(inTile, width - j)));
                    if (above.Count > 0) BlendInto(above[row.Count], tile, blendExtent, 2);
                    if (row.Count > 0) BlendInto(row[^1], tile, blendExtent, 3);
                    row.Add(tile);
                }
                strips.Add(rowScope.MoveToOuterScope(CropAndJoin(row, rowLimit)));
                row = rowScope.MoveToOuterScope(row);
            }
            // The row above is no longer needed: freeing it now is what bounds tiling's memory.
            foreach (var tile in above) tile.Dispose();
            above = row;
        }
        return scope.MoveToOuterScope(torch.Cat(strips, 2));
    }

    /// <summary>
    /// Overwrites the first e rows (dim 2) or columns (dim 3) of <paramref name="b"/> with
    /// a_end·(1 − k/e) + b·(k/e), k = 0..e−1, where a_end are the last e of <paramref name="a"/>:
    /// diffusers' blend_v/blend_h, with the weights rounded to the tensor's precision as its
    /// Python-float scalars are. Its temporaries belong to the caller's dispose scope.
    /// </summary>
    private static void BlendInto(Tensor a, Tensor b, int blendExtent, int dim)
    {
        var e = (int)Math.Min(Math.Min(a.Size(dim), b.Size(dim)), blendExtent);
        if (e == 0) return;
        var keep = new double[e];
        var take = new double[e];
        for (var k = 0; k < e; k++)
        {
            take[k] = (double)k / e;
            keep[k] = 1 - (double)k / e;
        }
        long[] shape = dim == 2 ? [1, 1, e, 1] : [1, 1, 1, e];
        var keepWeights = torch.Tensor(keep, shape).To(b.Device, b.DType);
        var takeWeights = torch.Tensor(take, shape).To(b.Device, b.DType);
        var bStart = b.Narrow(dim, 0, e);
        var blended = a.Narrow(dim, a.Size(dim) - e, e) * keepWeights + bStart * takeWeights;
        // In place, as diffusers: the blended tile is what the next tiles blend against.
        bStart.Copy_(blended);
    }

    /// <summary>The tiles of a row cropped to <paramref name="limit"/> and joined left to right; temporaries as <see cref="BlendInto"/>.</summary>
    private static Tensor CropAndJoin(List<Tensor> row, int limit) =>
        torch.Cat([.. row.Select(tile => tile.Narrow(2, 0, Math.Min(limit, tile.Size(2))).Narrow(3, 0, Math.Min(limit, tile.Size(3))))], 3);
}
