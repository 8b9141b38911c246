using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Models.Adapters;
using SdAppliance.Torch.Nn;
using SdAppliance.Torch.Serialization;
using SdAppliance.Torch;

namespace SdAppliance.Models.Tests;

public sealed class LoraTests : IDisposable
{
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-lora-").FullName;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    /// <summary>A miniature of diffusers' naming: attn1.to_q (Linear) and proj_in (1x1 conv).</summary>
    private sealed class Block : Module
    {
        public Block(Generator g)
        {
            var attn = RegisterModule("attn1", new Attn(g));
            RegisterModule("proj_in", new Conv2d(4, 3, 1, generator: g));
            _ = attn;
        }

        public sealed class Attn : Module
        {
            public Attn(Generator g) => RegisterModule("to_q", new Linear(4, 3, generator: g));
        }
    }

    private static float[] Expected(Tensor w, float[] up, float[] down, int outF, int rank, int inF, double scale)
    {
        var result = w.Flatten().ToArray<float>();
        for (var o = 0; o < outF; o++)
            for (var i = 0; i < inF; i++)
            {
                double sum = 0;
                for (var r = 0; r < rank; r++) sum += up[o * rank + r] * down[r * inF + i];
                result[o * inF + i] += (float)(scale * sum);
            }
        return result;
    }

    [Fact]
    public void KohyaLoraMergesWithAlphaScaleAndRestoresExactly()
    {
        using var model = new Block(new Generator(0));
        var q = ((Linear)model.GetSubmodule("attn1.to_q")).Weight;
        var conv = ((Conv2d)model.GetSubmodule("proj_in")).Weight;
        var before = q.ToArray<float>();
        var beforeConv = conv.ToArray<float>();

        float[] down = [1, 0, 0, 0, 0, 1, 0, 0], up = [1, 2, 3, 4, 5, 6];  // rank 2
        var path = Path.Combine(folder, "style.safetensors");
        SafetensorsFile.Write(path,
        [
            new SafetensorsTensor("lora_unet_attn1_to_q.lora_down.weight", SafetensorsDType.F32, [2, 4], Bytes(down)),
            new SafetensorsTensor("lora_unet_attn1_to_q.lora_up.weight", SafetensorsDType.F32, [3, 2], Bytes(up)),
            new SafetensorsTensor("lora_unet_attn1_to_q.alpha", SafetensorsDType.F32, [], Bytes([1f])),
            new SafetensorsTensor("lora_unet_proj_in.lora_down.weight", SafetensorsDType.F32, [2, 4, 1, 1], Bytes(down)),
            new SafetensorsTensor("lora_unet_proj_in.lora_up.weight", SafetensorsDType.F32, [3, 2, 1, 1], Bytes(up)),
            new SafetensorsTensor("lora_unet_missing_module.lora_down.weight", SafetensorsDType.F32, [2, 4], Bytes(down)),
            new SafetensorsTensor("lora_unet_missing_module.lora_up.weight", SafetensorsDType.F32, [3, 2], Bytes(up)),
        ], new Dictionary<string, string> { ["ss_network_dim"] = "2" });

        using var file = LoraFile.Load(path);
        Assert.Equal("style", file.Name);
        using (var patch = LoraPatch.Apply([new LoraApplication(file, 0.8)], new Dictionary<LoraTarget, Module> { [LoraTarget.Unet] = model }))
        {
            Assert.Equal(2, patch.PatchedCount);
            Assert.Equal(["style: Unet missing_module"], patch.Unmatched);
            // alpha 1 / rank 2 = 0.5 for to_q; no alpha means alpha = rank (scale 1) for proj_in.
            using var original = torch.FromArray<float>(before, [3, 4], DType.Float32);
            AssertClose(Expected(original, up, down, 3, 2, 4, 0.8 * 0.5), q.ToArray<float>());
            using var originalConv = torch.FromArray<float>(beforeConv, [3, 4], DType.Float32);
            AssertClose(Expected(originalConv, up, down, 3, 2, 4, 0.8), conv.ToArray<float>());
        }
        Assert.Equal(before, q.ToArray<float>());
        Assert.Equal(beforeConv, conv.ToArray<float>());
    }

    [Theory]
    [InlineData("unet.attn1.to_q.lora.down.weight", "unet.attn1.to_q.lora.up.weight")]
    [InlineData("unet.attn1.processor.to_q_lora.down.weight", "unet.attn1.processor.to_q_lora.up.weight")]
    [InlineData("unet.attn1.to_q.lora_A.weight", "unet.attn1.to_q.lora_B.weight")]
    [InlineData("attn1.to_q.lora_linear_layer.down.weight", "attn1.to_q.lora_linear_layer.up.weight")]
    public void DiffusersAndPeftLayoutsReachTheSameModule(string downKey, string upKey)
    {
        using var model = new Block(new Generator(0));
        var q = ((Linear)model.GetSubmodule("attn1.to_q")).Weight;
        var before = q.ToArray<float>();
        var path = Path.Combine(folder, "d.safetensors");
        SafetensorsFile.Write(path,
        [
            new SafetensorsTensor(downKey, SafetensorsDType.F32, [1, 4], Bytes([1f, 1f, 1f, 1f])),
            new SafetensorsTensor(upKey, SafetensorsDType.F32, [3, 1], Bytes([1f, 1f, 1f])),
        ]);
        using var file = LoraFile.Load(path);
        using var patch = LoraPatch.Apply([new LoraApplication(file, 1.0)], new Dictionary<LoraTarget, Module> { [LoraTarget.Unet] = model });
        Assert.Empty(patch.Unmatched);
        AssertClose(before.Select(v => v + 1f).ToArray(), q.ToArray<float>());
    }

    [Fact]
    public void ALoraForAnotherModelIsRefusedByName()
    {
        using var model = new Block(new Generator(0));
        var path = Path.Combine(folder, "big.safetensors");
        SafetensorsFile.Write(path,
        [
            new SafetensorsTensor("lora_unet_attn1_to_q.lora_down.weight", SafetensorsDType.F32, [1, 8], new byte[32]),
            new SafetensorsTensor("lora_unet_attn1_to_q.lora_up.weight", SafetensorsDType.F32, [3, 1], new byte[12]),
        ]);
        using var file = LoraFile.Load(path);
        var e = Assert.Throws<UserInputException>(() => LoraPatch.Apply([new LoraApplication(file, 1.0)], new Dictionary<LoraTarget, Module> { [LoraTarget.Unet] = model }));
        Assert.Contains("attn1_to_q", e.Message);
        Assert.Contains("another model", e.Message);
    }

    [Fact]
    public void AFileWithoutLoraKeysIsRefused()
    {
        var path = Path.Combine(folder, "not-lora.safetensors");
        SafetensorsFile.Write(path, [new SafetensorsTensor("model.weight", SafetensorsDType.F32, [1], new byte[4])]);
        var e = Assert.Throws<UserInputException>(() => LoraFile.Load(path));
        Assert.Contains("no LoRA weights", e.Message);
    }

    private static byte[] Bytes(float[] values) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private static void AssertClose(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        // float32 weights plus a float32 product of O(10) magnitude: a few ulps.
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5 * Math.Max(1, Math.Abs(expected[i])), $"element {i}: {actual[i]} vs {expected[i]}");
    }
}
