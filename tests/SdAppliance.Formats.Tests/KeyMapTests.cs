using System.Text.Json;
using SdAppliance.Formats.Checkpoints;

namespace SdAppliance.Formats.Tests;

/// <summary>
/// ldm &lt;-&gt; diffusers names and shapes against the key lists of the released SD 1.5, SD 2.1
/// and SDXL base models (Fixtures/architectures, made with the reference implementation's
/// converters), and the tensor operations on bytes.
/// </summary>
public sealed class KeyMapTests
{
    private sealed record Architecture(
        Dictionary<string, Dictionary<string, long[]>> Diffusers,
        Dictionary<string, long[]> Ldm,
        Dictionary<string, long[]> Extra);

    private static readonly Dictionary<string, Architecture> Cache = [];

    private static Architecture Load(string name)
    {
        lock (Cache)
        {
            if (Cache.TryGetValue(name, out var cached))
                return cached;
            using var json = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Fixtures", "architectures", $"{name}.json")));
            static Dictionary<string, long[]> Shapes(JsonElement e) =>
                e.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(d => d.GetInt64()).ToArray());
            var diffusers = json.RootElement.GetProperty("diffusers").EnumerateObject().ToDictionary(c => c.Name, c => Shapes(c.Value));
            var ldm = Shapes(json.RootElement.GetProperty("ldm"));
            var extra = new Dictionary<string, long[]>();
            // ssd1b.json and vega.json list a UNet only, as our generator writes them, without a reference run's extras.
            if (json.RootElement.TryGetProperty("known_extra_ldm_keys", out var extras))
                foreach (var entry in extras.EnumerateArray())
                {
                    foreach (var (key, shape) in Shapes(entry.GetProperty("keys")))
                        extra[key] = shape;
                }
            // The EMA copies are described by a pattern; one instance of it stands for all.
            if (name is "sd15" or "sd21v")
                extra["model_ema.diffusion_modelinput_blocks00weight"] = ldm["model.diffusion_model.input_blocks.0.0.weight"];
            return Cache[name] = new Architecture(diffusers, ldm, extra);
        }
    }

    public static TheoryData<string, ModelFamily> Families() => new()
    {
        { "sd15", ModelFamily.V1 },
        { "sd21v", ModelFamily.V2 },
        { "sdxl_base", ModelFamily.XlBase },
    };

    private static Dictionary<string, string> Render(IEnumerable<KeyValuePair<string, long[]>> shapes) =>
        shapes.ToDictionary(p => p.Key, p => string.Join("x", p.Value));

    [Theory]
    [MemberData(nameof(Families))]
    public void FamilyIsDetectedFromEitherLayout(string name, ModelFamily family)
    {
        var arch = Load(name);
        Assert.Equal(family, LdmKeyMap.DetectFamily(arch.Ldm));
        Assert.Equal(family, LdmKeyMap.DetectFamily(arch.Ldm.Concat(arch.Extra).ToDictionary()));
        var diffusers = arch.Diffusers.SelectMany(c => c.Value.Select(p => (new TensorKey(c.Key, p.Key), p.Value))).ToDictionary();
        Assert.Equal(family, LdmKeyMap.DetectFamily(diffusers));
        // A UNet-only file: the cross-attention width tells the family.
        Assert.Equal(family, LdmKeyMap.DetectFamily(arch.Ldm.Where(p => p.Key.StartsWith(LdmKeyMap.UnetPrefix, StringComparison.Ordinal)).ToDictionary()));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void LdmWithExtrasMapsToExactlyTheDiffusersLists(string name, ModelFamily family)
    {
        var arch = Load(name);
        var mapping = LdmKeyMap.ToDiffusers(arch.Ldm.Concat(arch.Extra).ToDictionary());
        Assert.Equal(family, mapping.Family);
        Assert.Empty(mapping.Unmapped);
        Assert.Equal(arch.Extra.Keys.Order(), mapping.Ignored.Select(k => k.Name).Order());
        Assert.Equal(arch.Diffusers.Keys.Order(), mapping.Components.Order());
        foreach (var (component, expected) in arch.Diffusers)
        {
            var actual = mapping.Component(component).Select(r => KeyValuePair.Create(r.Target.Name, r.Shape.ToArray()));
            Assert.Equal(Render(expected), Render(actual));
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void DiffusersMapsBackToExactlyTheLdmList(string name, ModelFamily family)
    {
        var arch = Load(name);
        var diffusers = arch.Diffusers.SelectMany(c => c.Value.Select(p => (new TensorKey(c.Key, p.Key), p.Value))).ToDictionary();
        var mapping = LdmKeyMap.FromDiffusers(diffusers);
        Assert.Equal(family, mapping.Family);
        Assert.Empty(mapping.Unmapped);
        Assert.Empty(mapping.Ignored);
        Assert.All(mapping.Tensors, r => Assert.Equal(ModelComponents.SingleFile, r.Target.Component));
        Assert.Equal(Render(arch.Ldm), Render(mapping.Tensors.Select(r => KeyValuePair.Create(r.Target.Name, r.Shape.ToArray()))));
    }

    [Theory]
    [InlineData("ssd1b")]
    [InlineData("vega")]
    public void DistilledSdxlUnetsMapBothWaysWithTheirFewerBlocksAndOneResnetMidBlock(string name)
    {
        var arch = Load(name);
        var toDiffusers = LdmKeyMap.ToDiffusers(arch.Ldm);
        Assert.Equal(ModelFamily.XlBase, toDiffusers.Family);
        Assert.Empty(toDiffusers.Unmapped);
        Assert.Equal(arch.Diffusers["unet"].Keys, toDiffusers.Component(ModelComponents.Unet).Select(r => r.Target.Name));
        Assert.Equal(Render(arch.Diffusers["unet"]), Render(toDiffusers.Component(ModelComponents.Unet).Select(r => KeyValuePair.Create(r.Target.Name, r.Shape.ToArray()))));

        var fromDiffusers = LdmKeyMap.FromDiffusers(arch.Diffusers["unet"].ToDictionary(p => new TensorKey(ModelComponents.Unet, p.Key), p => p.Value));
        Assert.Empty(fromDiffusers.Unmapped);
        Assert.Equal(arch.Ldm.Keys, fromDiffusers.Tensors.Select(r => r.Target.Name));
        Assert.Equal(Render(arch.Ldm), Render(fromDiffusers.Tensors.Select(r => KeyValuePair.Create(r.Target.Name, r.Shape.ToArray()))));
        Assert.DoesNotContain(arch.Ldm.Keys, k => k.StartsWith(LdmKeyMap.UnetPrefix + "middle_block.1.", StringComparison.Ordinal));
    }

    [Fact]
    public void OpenClipAttentionIsSplitAndJoinedInQkvOrder()
    {
        var arch = Load("sd21v");
        var toDiffusers = LdmKeyMap.ToDiffusers(arch.Ldm);
        const string inProj = "cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight";
        var parts = toDiffusers.Tensors.Where(r => r.Sources.Single().Name == inProj).ToList();
        Assert.Equal(
            ["text_model.encoder.layers.5.self_attn.q_proj.weight", "text_model.encoder.layers.5.self_attn.k_proj.weight", "text_model.encoder.layers.5.self_attn.v_proj.weight"],
            parts.Select(p => p.Target.Name));
        Assert.All(parts, p => Assert.Equal((TensorOp.Slice, 3), (p.Op, p.Parts)));
        Assert.Equal([0, 1, 2], parts.Select(p => p.Part));

        var diffusers = arch.Diffusers.SelectMany(c => c.Value.Select(p => (new TensorKey(c.Key, p.Key), p.Value))).ToDictionary();
        var join = LdmKeyMap.FromDiffusers(diffusers).Tensors.Single(r => r.Target.Name == inProj);
        Assert.Equal(TensorOp.Concat, join.Op);
        Assert.Equal(["q_proj", "k_proj", "v_proj"], join.Sources.Select(s => s.Name.Split('.')[^2]));
    }

    [Fact]
    public void SdxlProjectionIsTransposedAndVaeAttentionReshaped()
    {
        var arch = Load("sdxl_base");
        var mapping = LdmKeyMap.ToDiffusers(arch.Ldm);
        var projection = mapping.Tensors.Single(r => r.Target == new TensorKey(ModelComponents.TextEncoder2, "text_projection.weight"));
        Assert.Equal(TensorOp.Transpose, projection.Op);
        Assert.Equal("conditioner.embedders.1.model.text_projection", projection.Sources.Single().Name);
        var query = mapping.Tensors.Single(r => r.Target == new TensorKey(ModelComponents.Vae, "decoder.mid_block.attentions.0.to_q.weight"));
        Assert.Equal(TensorOp.Reshape, query.Op);
        Assert.Equal([512L, 512L, 1L, 1L], query.SourceShape);
        Assert.Equal([512L, 512L], query.Shape);
        var label = mapping.Tensors.Single(r => r.Target.Name == "add_embedding.linear_1.weight");
        Assert.Equal("model.diffusion_model.label_emb.0.0.weight", label.Sources.Single().Name);
    }

    [Fact]
    public void UnknownKeysAreReportedNotDropped()
    {
        var arch = Load("sd15");
        var ldm = new Dictionary<string, long[]>(arch.Ldm)
        {
            ["lora_unet_down_blocks_0.alpha"] = [],
            ["model.diffusion_model.input_blocks.1.7.weight"] = [4],
            ["first_stage_model.encoder.mid.attn_2.q.weight"] = [4],
        };
        var mapping = LdmKeyMap.ToDiffusers(ldm);
        Assert.Equal(["lora_unet_down_blocks_0.alpha", "model.diffusion_model.input_blocks.1.7.weight", "first_stage_model.encoder.mid.attn_2.q.weight"],
            mapping.Unmapped.Select(k => k.Name));
        var back = LdmKeyMap.FromDiffusers(new Dictionary<TensorKey, long[]> { [new("safety_checker", "x")] = [1], [new("unet", "down_blocks.0.foo.weight")] = [1] }, ModelFamily.V1);
        Assert.Equal(2, back.Unmapped.Count);
    }

    [Fact]
    public void RecipeOperationsOnBytes()
    {
        // A 2x3 int32 matrix [[1, 2, 3], [4, 5, 6]].
        var matrix = new[] { 1, 2, 3, 4, 5, 6 }.SelectMany(BitConverter.GetBytes).ToArray();
        static int[] Ints(byte[] b) => [.. Enumerable.Range(0, b.Length / 4).Select(i => BitConverter.ToInt32(b, i * 4))];
        var a = new TensorKey("", "a");
        var transpose = new TensorRecipe(new("x", "t"), [3, 2], TensorOp.Transpose, [a], [2, 3]);
        Assert.Equal([1, 4, 2, 5, 3, 6], Ints(transpose.Apply([matrix], 4)));
        var slice = new TensorRecipe(new("x", "s"), [1, 3], TensorOp.Slice, [a], [2, 3], Part: 1, Parts: 2);
        Assert.Equal([4, 5, 6], Ints(slice.Apply([matrix], 4)));
        var concat = new TensorRecipe(new("x", "c"), [4, 3], TensorOp.Concat, [a, new("", "b")], [2, 3]);
        Assert.Equal([1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6], Ints(concat.Apply([matrix, matrix], 4)));
        Assert.Throws<ArgumentException>(() => transpose.Apply([matrix[..20]], 4));
    }
}
