using SdAppliance.Formats.Checkpoints;

namespace SdAppliance.Formats.Tests;

/// <summary>
/// The tiny fixture model exists in both layouts (tiny-sd.ldm.safetensors was made from tiny-sd/
/// by diffusers' conversion script): mapping either one must give the other, tensor for tensor,
/// byte for byte.
/// </summary>
public sealed class KeyMapTinySdTests : IDisposable
{
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "Fixtures");

    private readonly SafetensorsFile _ldm = SafetensorsFile.Open(Path.Combine(Root, "tiny-sd.ldm.safetensors"));
    private readonly Dictionary<string, SafetensorsFile> _components = new()
    {
        [ModelComponents.Unet] = SafetensorsFile.Open(Path.Combine(Root, "tiny-sd", "unet", "diffusion_pytorch_model.safetensors")),
        [ModelComponents.Vae] = SafetensorsFile.Open(Path.Combine(Root, "tiny-sd", "vae", "diffusion_pytorch_model.safetensors")),
        [ModelComponents.TextEncoder] = SafetensorsFile.Open(Path.Combine(Root, "tiny-sd", "text_encoder", "model.safetensors")),
    };

    public void Dispose()
    {
        _ldm.Dispose();
        foreach (var file in _components.Values)
            file.Dispose();
    }

    private (SafetensorsDType, byte[]) Fetch(TensorKey key)
    {
        var file = key.Component == ModelComponents.SingleFile ? _ldm : _components[key.Component];
        var entry = file[key.Name];
        return (entry.DType, file.ReadBytes(entry));
    }

    [Fact]
    public void LdmFileMapsToTheDiffusersFilesByteForByte()
    {
        var mapping = LdmKeyMap.ToDiffusers(_ldm.Tensors.ToDictionary(e => e.Name, e => e.Shape.ToArray()));
        Assert.Equal(ModelFamily.V1, mapping.Family);
        Assert.Empty(mapping.Unmapped);
        Assert.Empty(mapping.Ignored);
        foreach (var (component, file) in _components)
        {
            var recipes = mapping.Component(component).ToList();
            Assert.Equal(file.Names.Order(), recipes.Select(r => r.Target.Name).Order());
            foreach (var recipe in recipes)
            {
                var expected = file[recipe.Target.Name];
                Assert.Equal(expected.Shape, recipe.Shape);
                var (dtype, bytes) = KeyMapping.Materialize(recipe, Fetch);
                Assert.Equal(expected.DType, dtype);
                Assert.True(file.GetSpan(expected).SequenceEqual(bytes), $"{recipe.Target} differs");
            }
        }
        // The VAE attention weights really went through the reshape.
        Assert.Equal(8, mapping.Tensors.Count(r => r.Op == TensorOp.Reshape));
    }

    [Fact]
    public void DiffusersFilesMapToTheLdmFileByteForByte()
    {
        var shapes = _components.SelectMany(c => c.Value.Tensors.Select(e => (new TensorKey(c.Key, e.Name), e.Shape.ToArray()))).ToDictionary();
        var mapping = LdmKeyMap.FromDiffusers(shapes);
        Assert.Equal(ModelFamily.V1, mapping.Family);
        Assert.Empty(mapping.Unmapped);
        Assert.Equal(_ldm.Names.Order(), mapping.Tensors.Select(r => r.Target.Name).Order());
        foreach (var recipe in mapping.Tensors)
        {
            var expected = _ldm[recipe.Target.Name];
            Assert.Equal(expected.Shape, recipe.Shape);
            var (dtype, bytes) = KeyMapping.Materialize(recipe, Fetch);
            Assert.Equal(expected.DType, dtype);
            Assert.True(_ldm.GetSpan(expected).SequenceEqual(bytes), $"{recipe.Target} differs");
        }
    }

    [Fact]
    public void LdmCheckpointWrittenAsCkptReadsBackAsTheSameTensors()
    {
        // The conversion path sdapp convert --to ckpt takes: safetensors tensors into a .ckpt, then back.
        using var temp = new TempFolder();
        var path = temp.File("tiny.ckpt");
        TorchCheckpointWriter.Write(path, _ldm.Tensors.Select(e => new SafetensorsTensor(e.Name, e.DType, e.Shape, _ldm.ReadBytes(e))));
        using var ckpt = TorchCheckpoint.Open(path);
        var state = ckpt.StateDict();
        Assert.Equal(_ldm.Names, state.Keys);
        foreach (var entry in _ldm.Tensors)
            Assert.True(_ldm.GetSpan(entry).SequenceEqual(state[entry.Name].ReadBytes()), entry.Name);
        Assert.Equal(ModelFamily.V1, LdmKeyMap.DetectFamily(state.ToDictionary(p => p.Key, p => p.Value.Shape.ToArray())));
    }
}
