using System.Runtime.InteropServices;
using SdAppliance.Formats;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;

namespace SdAppliance.Models.Tests;

/// <summary>
/// Weights that would give a black image with exit code 0 (NaN or infinite values in a model, a LoRA or an
/// embedding) and LoRA alphas that are not one number: refused when the file is loaded, as a
/// <see cref="WeightsException"/> naming the file and the tensor.
/// </summary>
public sealed class HostileWeightsTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-weights-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private static byte[] Bytes(params float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private string Lora(float[] down, float[] up, SafetensorsTensor? alpha = null)
    {
        var path = Path.Combine(folder, $"{Guid.NewGuid():N}.safetensors");
        SafetensorsFile.Write(path,
        [
            new SafetensorsTensor("lora_unet_attn1_to_q.lora_down.weight", SafetensorsDType.F32, [2, 4], Bytes(down)),
            new SafetensorsTensor("lora_unet_attn1_to_q.lora_up.weight", SafetensorsDType.F32, [3, 2], Bytes(up)),
            alpha ?? new SafetensorsTensor("lora_unet_attn1_to_q.alpha", SafetensorsDType.F32, [], Bytes(1f)),
        ]);
        return path;
    }

    private static readonly float[] Down = [1, 0, 0, 0, 0, 1, 0, 0];
    private static readonly float[] Up = [1, 2, 3, 4, 5, 6];

    public static TheoryData<string, int, float> NonFiniteLoraValues() => new()
    {
        { "down", 0, float.NaN },
        { "down", 7, float.PositiveInfinity },
        { "up", 3, float.NegativeInfinity },
        { "up", 5, float.NaN },
    };

    [Theory]
    [MemberData(nameof(NonFiniteLoraValues))]
    public void LoraWithNonFiniteWeightsIsRefused(string part, int index, float value)
    {
        var (down, up) = ((float[])Down.Clone(), (float[])Up.Clone());
        (part == "down" ? down : up)[index] = value;
        var path = Lora(down, up);
        var e = Assert.Throws<WeightsException>(() => LoraFile.Load(path).Dispose());
        Assert.IsAssignableFrom<UserInputException>(e);
        Assert.Equal(path, e.Subject);
        Assert.Equal($"attn1_to_q lora_{part}", e.Tensor);
        Assert.Equal($"attn1_to_q lora_{part} holds 1 NaN or infinite values (of {(part == "down" ? 8 : 6)}); the file is damaged or was saved from a training run that diverged", e.Problem);
    }

    public static TheoryData<long[], float[], string> BadAlphas() => new()
    {
        { [2], [1f, 2f], "is [2], not a single number" },
        { [2, 2], [1f, 2f, 3f, 4f], "is [2, 2], not a single number" },
        { [0], [], "is [0], not a single number" },
        { [], [float.NaN], "is NaN, not a finite number" },
        { [], [float.PositiveInfinity], "is Infinity, not a finite number" },
    };

    [Theory]
    [MemberData(nameof(BadAlphas))]
    public void AlphaThatIsNotOneFiniteNumberIsRefused(long[] shape, float[] values, string problem)
    {
        var path = Lora(Down, Up, new SafetensorsTensor("lora_unet_attn1_to_q.alpha", SafetensorsDType.F32, shape, Bytes(values)));
        var e = Assert.Throws<WeightsException>(() => LoraFile.Load(path).Dispose());
        Assert.Equal(path, e.Subject);
        Assert.Equal("lora_unet_attn1_to_q.alpha", e.Tensor);
        Assert.Equal($"lora_unet_attn1_to_q.alpha {problem}", e.Problem);
    }

    [Fact]
    public void AlphaOfShapeOneIsOneNumber()
    {
        using var lora = LoraFile.Load(Lora(Down, Up, new SafetensorsTensor("lora_unet_attn1_to_q.alpha", SafetensorsDType.F32, [1], Bytes(2f))));
        Assert.Equal(1.0, Assert.Single(lora.Modules).Scale);
    }

    public static TheoryData<string, string> NonFiniteEmbeddings() => new()
    {
        { "emb_params", "the vectors" },
        { "clip_g", "the second encoder's vectors" },
    };

    [Theory]
    [MemberData(nameof(NonFiniteEmbeddings))]
    public void EmbeddingWithNonFiniteVectorsIsRefused(string broken, string named)
    {
        var path = Path.Combine(folder, "style.safetensors");
        float[] good = [0.5f, -0.25f, 1, 2];
        float[] bad = [0.5f, float.NaN, float.NaN, 2];
        SafetensorsTensor[] tensors = broken == "emb_params"
            ? [new("emb_params", SafetensorsDType.F32, [2, 2], Bytes(bad))]
            : [new("clip_l", SafetensorsDType.F32, [2, 2], Bytes(good)), new("clip_g", SafetensorsDType.F32, [2, 2], Bytes(bad))];
        SafetensorsFile.Write(path, tensors);
        var e = Assert.Throws<WeightsException>(() => TextualInversionEmbedding.Load(path).Dispose());
        Assert.Equal(path, e.Subject);
        Assert.Equal(named, e.Tensor);
        Assert.StartsWith($"{named} holds 2 NaN or infinite values (of 4)", e.Problem);
    }

    [Fact]
    public void ModelWithANaNWeightIsRefusedNamingTheTensor()
    {
        var source = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
        var model = Path.Combine(folder, "model");
        foreach (var file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(model, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        var weights = Path.Combine(model, "unet", "diffusion_pytorch_model.safetensors");
        List<SafetensorsTensor> tensors;
        using (var file = SafetensorsFile.Open(weights))
            tensors = [.. file.Tensors.Select(t => new SafetensorsTensor(t.Name, t.DType, [.. t.Shape], Poisoned(t.Name, t.DType, file.ReadBytes(t))))];
        SafetensorsFile.Write(weights, tensors);

        var e = Assert.Throws<WeightsException>(() => ModelLoader.Load(model).Dispose());
        Assert.Equal(model, e.Subject);
        Assert.Equal("unet conv_in.bias", e.Tensor);
        Assert.StartsWith("unet conv_in.bias holds 1 NaN or infinite values", e.Problem);

        static byte[] Poisoned(string name, SafetensorsDType dtype, byte[] bytes)
        {
            if (name == "conv_in.bias")
            {
                Assert.Equal(SafetensorsDType.F32, dtype);
                BitConverter.TryWriteBytes(bytes.AsSpan(0, 4), float.NaN);
            }
            return bytes;
        }
    }
}
