using SdAppliance.Models.Vae;
using SdAppliance.Torch;
using SdAppliance.Torch.Nn;
using static SdAppliance.Models.Tests.UnetVaeFixtures;

namespace SdAppliance.Models.Tests;


/// <summary>
/// Tiled encode/decode. A tiled result cannot equal the untiled one everywhere: each tile's group
/// norms and mid-block attention see only the tile (with the random fixture weights the two differ
/// by as much as the signal). What diffusers promises, and what is tested here, is that every tile
/// IS an untiled decode (encode) of its piece of the input, that the tiles sit where diffusers puts
/// them, and that the overlaps are diffusers' linear blends of neighbouring tiles. The reference
/// below rebuilds the output from separately computed untiled tiles with the blending written out
/// in double precision.
/// </summary>
public sealed class VaeTilingTests : IDisposable
{
    /// <summary>
    /// Reference and tiled paths run the very same convolutions on the same tile inputs; they differ
    /// only in the blend arithmetic (float32 here, float64 in the reference): at most two blends of two
    /// products and a sum per value, on values below ~5, so a few float32 ulps (≈ 5·6e-7).
    /// </summary>
    private const double BlendTolerance = 5e-6;

    private readonly AutoencoderKL vae = LoadTinyVae();

    public void Dispose() => vae.Dispose();

    [Fact]
    public void TileSizesFollowTheConfig()
    {
        // Tiny VAE: sample_size 64 and 4 levels (factor 8), as diffusers derives them.
        Assert.Equal(64, vae.TileSampleMinSize);
        Assert.Equal(8, vae.TileLatentMinSize);
        Assert.Equal(0.25, vae.TileOverlapFactor);
        Assert.False(vae.UseTiling);
    }

    [Fact]
    public void TiledDecodeIsDiffusersBlendOfUntiledTiles()
    {
        using var inference = Autograd.InferenceMode();
        using var generator = new Generator(7);
        // 16 latents with tiles of 8 every 6 (8 · 0.75): tiles at 0, 6, 12 (the last only 4 wide), so
        // the output has full tiles, a short tile, and both kinds of seams.
        using var z = torch.Randn([1, 4, 16, 16], generator);

        vae.EnableTiling();
        using var tiled = vae.Decode(z);
        vae.DisableTiling();
        Assert.Equal([1L, 3, 128, 128], tiled.Shape);

        using var reference = Reference(z, inTile: 8, stride: 6, blend: 16, limit: 48, vae.Decode, out var firstTile);
        using var topLeft = firstTile;
        AssertClose(reference, tiled, BlendTolerance, 0, "tiled decode vs blended untiled tiles");

        // The first tile's unblended part is exactly the untiled decode of its 8×8 latents.
        using var region = Crop(tiled, 0, 0, 48, 48);
        using var untiledRegion = Crop(topLeft, 0, 0, 48, 48);
        Assert.Equal(Values(untiledRegion), Values(region));
    }

    [Fact]
    public void TiledEncodeIsDiffusersBlendOfUntiledTiles()
    {
        using var inference = Autograd.InferenceMode();
        using var generator = new Generator(8);
        using var raw = torch.Rand([1, 3, 112, 128], generator);
        using var images = raw * 2 - 1;

        vae.EnableTiling();
        using var tiled = vae.EncodeMoments(images);
        vae.DisableTiling();
        // Image tiles of 64 every 48 → latent tiles of 8 blended over 2 and cropped to 6: rows at 0, 48,
        // 96 (8, 8, 2 latents kept: 6 + 6 + 2), columns at 0, 48, 96 (6 + 6 + 4).
        Assert.Equal([1L, 8, 14, 16], tiled.Shape);

        using var reference = Reference(images, inTile: 64, stride: 48, blend: 2, limit: 6, vae.EncodeMoments, out var firstTile);
        firstTile.Dispose();
        AssertClose(reference, tiled, BlendTolerance, 0, "tiled encode vs blended untiled tiles");

        using var posterior = vae.Encode(images);
        Assert.Equal([1L, 4, 14, 16], posterior.Mean.Shape);
    }

    [Fact]
    public void InputsThatFitOneTileAreNotTiled()
    {
        using var inference = Autograd.InferenceMode();
        using var z = Golden("vae_golden.safetensors", "latents");
        using var plain = vae.Decode(z);
        vae.EnableTiling();
        using var tiled = vae.Decode(z);
        Assert.Equal(Values(plain), Values(tiled));
    }

    /// <summary>
    /// Slicing must not change what each image is: batch items never mix (group norm is per item), so a
    /// sliced decode differs from the batched one only where a kernel sums in another order for batch 1
    /// than for batch 2 (blocking, and how the work is split across libtorch's threads). In float32 that
    /// rounding is a random walk over the decoder's ~35 layers whose worst case bound
    /// (ε32 · terms · depth = 6e-8 · 8192 · 35 ≈ 2e-2) is far too loose to test anything, and whose
    /// observed size depends on the thread count (1.54e-5 on a 2-thread run, beyond the 1e-5 once used).
    /// So both decodes run in float64, where the same bound is tight: unit roundoff 1.1e-16 · 8192 terms
    /// (the largest sum: a group norm's mean and variance over 2 channels of 64×64) · 35 layers ≈ 3.2e-11
    /// relative per layer's output; on the decoder's values (below ~5) ≈ 1.6e-10, rounded up to the tolerance
    /// 2e-10 (measured: 1.7e-14). A mixed batch or a swapped item would differ by O(1).
    /// </summary>
    [Fact]
    public void SlicingDecodesTheBatchOneImageAtATime()
    {
        using var inference = Autograd.InferenceMode();
        using var vae64 = LoadTinyVae().To(DType.Float64);
        using var generator = new Generator(9);
        using var z32 = torch.Randn([2, 4, 8, 8], generator);
        using var z = z32.To(DType.Float64);
        using var batched = vae64.Decode(z);
        Assert.Equal(DType.Float64, batched.DType);
        vae64.EnableSlicing();
        using var sliced = vae64.Decode(z);
        Assert.True(Values(batched).Max(Math.Abs) < 5, "the bound above assumes decoded values below 5");
        AssertClose(batched, sliced, 2e-10, 0, "sliced decode (float64)");
    }

    private static Tensor Crop(Tensor t, long top, long left, long height, long width)
    {
        using var rows = t.Narrow(2, top, Math.Min(height, t.Size(2) - top));
        return rows.Narrow(3, left, Math.Min(width, t.Size(3) - left)).Contiguous();
    }

    /// <summary>
    /// diffusers' tiling written out: untiled <paramref name="run"/> on every tile (taken every
    /// <paramref name="stride"/>), blend_v with the tile above and blend_h with the tile to the left
    /// over <paramref name="blend"/> rows/columns, crop to <paramref name="limit"/>, concatenate.
    /// </summary>
    private static Tensor Reference(Tensor input, int inTile, int stride, int blend, int limit, Func<Tensor, Tensor> run, out Tensor firstTile)
    {
        var (height, width) = (input.Size(2), input.Size(3));
        var tiles = new List<List<Tile>>();
        firstTile = null!;
        for (long i = 0; i < height; i += stride)
        {
            var row = new List<Tile>();
            for (long j = 0; j < width; j += stride)
            {
                using var piece = Crop(input, i, j, inTile, inTile);
                var decoded = run(piece);
                if (i == 0 && j == 0) firstTile = decoded.Alias();
                row.Add(new Tile(decoded));
                decoded.Dispose();
            }
            tiles.Add(row);
        }

        for (var i = 0; i < tiles.Count; i++)
            for (var j = 0; j < tiles[i].Count; j++)
            {
                var t = tiles[i][j];
                if (i > 0)
                {
                    var a = tiles[i - 1][j];
                    var e = Math.Min(Math.Min(a.H, t.H), blend);
                    for (var c = 0; c < t.C; c++)
                        for (var y = 0; y < e; y++)
                            for (var x = 0; x < t.W; x++)
                                t[c, y, x] = a[c, a.H - e + y, x] * (1 - (double)y / e) + t[c, y, x] * ((double)y / e);
                }
                if (j > 0)
                {
                    var a = tiles[i][j - 1];
                    var e = Math.Min(Math.Min(a.W, t.W), blend);
                    for (var c = 0; c < t.C; c++)
                        for (var y = 0; y < t.H; y++)
                            for (var x = 0; x < e; x++)
                                t[c, y, x] = a[c, y, a.W - e + x] * (1 - (double)x / e) + t[c, y, x] * ((double)x / e);
                }
            }

        var outH = tiles.Sum(r => Math.Min(limit, r[0].H));
        var outW = tiles[0].Sum(t => Math.Min(limit, t.W));
        var channels = tiles[0][0].C;
        var result = new double[channels * outH * outW];
        var top = 0;
        foreach (var row in tiles)
        {
            var left = 0;
            foreach (var t in row)
            {
                for (var c = 0; c < channels; c++)
                    for (var y = 0; y < Math.Min(limit, t.H); y++)
                        for (var x = 0; x < Math.Min(limit, t.W); x++)
                            result[(c * outH + top + y) * outW + left + x] = t[c, y, x];
                left += Math.Min(limit, t.W);
            }
            top += Math.Min(limit, row[0].H);
        }
        using var doubles = torch.Tensor(result, 1, channels, outH, outW);
        return doubles.Float();
    }

    /// <summary>One batch item's [C, H, W] values in double.</summary>
    private sealed class Tile
    {
        private readonly double[] values;

        public Tile(Tensor t)
        {
            (C, H, W) = ((int)t.Size(1), (int)t.Size(2), (int)t.Size(3));
            values = Values(t);
        }

        public int C { get; }
        public int H { get; }
        public int W { get; }

        public double this[int c, int y, int x]
        {
            get => values[(c * H + y) * W + x];
            set => values[(c * H + y) * W + x] = value;
        }
    }
}
