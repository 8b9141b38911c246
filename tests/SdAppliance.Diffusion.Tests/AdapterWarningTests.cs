using System.Buffers.Binary;
using System.Security.Cryptography;
using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Formats.Adapters;
using SdAppliance.Imaging;
using SdAppliance.Models.Adapters;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// What generation reports about its adapters: the skipped and unmatched ones as warnings, hypernetworks
/// applied from the prompt, and PNG info that A1111's parser reads back into the same generation.
/// </summary>
public sealed class AdapterWarningTests : IClassFixture<PipelineTests.TinyModel>, IDisposable
{
    private const string Module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    private readonly StableDiffusionModel model;
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-adapter-warnings-").FullName;

    public AdapterWarningTests(PipelineTests.TinyModel tiny) => model = tiny.Model;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private GenerationResult Generate(string prompt, AdapterFolders? folders = null, IReadOnlyList<(string, double)>? loras = null,
        string sampler = "Euler", string negative = "") =>
        new StableDiffusionPipeline(model, folders).Generate(new GenerationRequest
        {
            Prompt = prompt, NegativePrompt = negative, Seed = 11, Steps = 4, Sampler = sampler, Loras = loras ?? [],
        });

    private string Lora(string name, params string[] modules)
    {
        var dir = Directory.CreateDirectory(Path.Combine(folder, "lora")).FullName;
        var down = Enumerable.Range(0, 2 * 32).Select(i => (float)Math.Sin(i)).ToArray();
        var up = Enumerable.Range(0, 32 * 2).Select(i => (float)Math.Cos(i)).ToArray();
        var file = Path.Combine(dir, name + ".safetensors");
        SafetensorsFile.Write(file, modules.SelectMany(m => new[]
        {
            new SafetensorsTensor(m + ".lora_down.weight", SafetensorsDType.F32, [2, 32], Bytes(down)),
            new SafetensorsTensor(m + ".lora_up.weight", SafetensorsDType.F32, [32, 2], Bytes(up)),
        }));
        return file;
    }

    private string Embedding(string name, int width)
    {
        var dir = Directory.CreateDirectory(Path.Combine(folder, "embeddings")).FullName;
        var file = Path.Combine(dir, name + ".safetensors");
        SafetensorsFile.Write(file, [new SafetensorsTensor("emb_params", SafetensorsDType.F32, [1, width], Bytes(new float[width]))]);
        return file;
    }

    [Fact]
    public void PngInfoOfALoraFileGenerationReadsBackWithTheLoraTheA1111SamplerAndTheHashes()
    {
        var lora = Lora("shapes", Module);
        var embedding = Embedding("zwx", 32);
        var folders = new AdapterFolders([], [Path.GetDirectoryName(embedding)!]);
        var result = Generate("a zwx circle", folders, loras: [(lora, 0.8)], sampler: "EulerDiscreteScheduler");

        var parsed = A1111Parameters.Parse(result[0].Parameters);
        Assert.Equal("a zwx circle <lora:shapes:0.8>", parsed.Prompt);
        Assert.Equal("Euler", parsed["Sampler"]);
        // A1111's LoRA short hash: the addnet hash (SHA-256 of the bytes after the header), 12 hex digits.
        var bytes = File.ReadAllBytes(lora);
        var payload = bytes.AsSpan(8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes));
        Assert.Equal($"shapes: {Convert.ToHexStringLower(SHA256.HashData(payload))[..12]}", parsed["Lora hashes"]);
        // A1111's embedding short hash: SHA-256 of the whole file, 12 hex digits.
        Assert.Equal($"zwx: {Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(embedding)))[..12]}", parsed["TI hashes"]);
        Assert.Empty(result.Warnings);

        // Pasted back: the prompt's tag is the same LoRA at the same weight, so the same image.
        var pasted = Generate(parsed.Prompt, folders with { LoraFolders = [Path.GetDirectoryName(lora)!] });
        Assert.Equal(result[0].Image.Pixels, pasted[0].Image.Pixels);
    }

    [Fact]
    public void WhatCannotBeAppliedIsReturnedAndWrittenIntoThePngInfo()
    {
        var partly = Lora("partly", Module, "lora_unet_no_such_layer");
        var elsewhere = Lora("elsewhere", "lora_unet_no_such_layer");
        Embedding("wide", 768);
        File.WriteAllText(Path.Combine(folder, "embeddings", "broken.safetensors"), "not a safetensors file");
        var folders = new AdapterFolders([], [Path.Combine(folder, "embeddings")]);
        var result = Generate("a wide circle <foo:bar>", folders, loras: [(partly, 1), (elsewhere, 1)], negative: "<lora:blur:1> ugly");

        var byName = result.Warnings.ToDictionary(w => w.Name);
        Assert.Equal(["bar", "blur", "broken", "elsewhere", "partly", "wide"], byName.Keys.Order(StringComparer.Ordinal));
        Assert.Contains("cannot be read and was skipped", byName["broken"].Problem);
        Assert.Contains("1 of its 2 modules match no layer", byName["partly"].Problem);
        Assert.Contains("none of its 1 modules matches", byName["elsewhere"].Problem);
        Assert.Equal("embedding", byName["wide"].Kind);
        Assert.Contains("another model family", byName["wide"].Problem);
        Assert.Contains("negative prompt", byName["blur"].Problem);
        Assert.Equal("foo", byName["bar"].Kind);
        Assert.Equal(string.Join("; ", result.Warnings), A1111Parameters.Parse(result[0].Parameters)["Adapter warnings"]);

        // An embedding of another family the prompt does not use is no warning; an unreadable file always is.
        Assert.Equal(["broken"], Generate("a circle", folders).Warnings.Select(w => w.Name));
    }

    [Fact]
    public void AHypernetworkTagAppliesTheNetworkAtItsStrengthAndIsRemovedAfterwards()
    {
        var dir = Directory.CreateDirectory(Path.Combine(folder, "hypernetworks")).FullName;
        var file = Path.Combine(dir, "ink.pt");
        using (var created = Hypernetwork.Create(model.Unet, new HypernetworkOptions([1, 2, 1], "relu", WeightInitialization: "XavierNormal"), "ink", new Generator(3)))
            created.SavePt(file, 10, null, null);
        var folders = new AdapterFolders([], [], [dir]);

        var plain = Generate("a circle")[0].Image.Pixels;
        var tagged = Generate("a circle <hypernet:ink:0.5>", folders);
        Assert.NotEqual(plain, tagged[0].Image.Pixels);
        Assert.Empty(tagged.Warnings);
        Assert.Equal(plain, Generate("a circle")[0].Image.Pixels);
        // Strength 0 is the model itself: x + mlp(x) · 0.
        Assert.Equal(plain, Generate("a circle <hypernet:ink:0>", folders)[0].Image.Pixels);

        // The tag is the network attached by hand at that multiplier.
        byte[] attached;
        using (var network = Hypernetwork.LoadPt(file, model.Unet))
        {
            network.Multiplier = 0.5;
            attached = Generate("a circle")[0].Image.Pixels;
        }
        Assert.Equal(attached, tagged[0].Image.Pixels);
    }

    private static byte[] Bytes(float[] values) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
