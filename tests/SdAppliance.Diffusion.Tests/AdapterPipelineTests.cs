using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Tests;

/// <summary>Inference-time adapters named in the prompt, A1111-style, on the tiny fixture model.</summary>
public sealed class AdapterPipelineTests : IClassFixture<PipelineTests.TinyModel>, IDisposable
{
    private readonly StableDiffusionModel model;
    private readonly string folder = Directory.CreateTempSubdirectory("sdapp-adapters-").FullName;

    public AdapterPipelineTests(PipelineTests.TinyModel tiny) => model = tiny.Model;

    public void Dispose() => Directory.Delete(folder, recursive: true);

    private byte[] Generate(string prompt, AdapterFolders? folders = null, IReadOnlyList<(string, double)>? loras = null) =>
        new StableDiffusionPipeline(model, folders).Generate(new GenerationRequest
        {
            Prompt = prompt, Seed = 11, Steps = 4, Sampler = "Euler", Loras = loras ?? [],
        })[0].Image.Pixels;

    private byte[] TokenRow(string word)
    {
        var id = Assert.Single(model.Tokenizer.Encode(word));
        using var row = model.TextEncoder.TextModel.Embeddings.TokenEmbedding.Weight.Narrow(0, id, 1);
        return row.ToBytes();
    }

    [Theory]
    [InlineData("zwx.safetensors")]
    [InlineData("zwx.pt")]
    public void AnEmbeddingNamedInThePromptReplacesItsTokens(string fileName)
    {
        // An embedding whose one vector is the token vector of "red" must turn "a zwx circle" into "a red circle".
        var embeddings = Path.Combine(folder, "embeddings");
        Directory.CreateDirectory(embeddings);
        var tensor = new SafetensorsTensor("emb_params", SafetensorsDType.F32, [1, 32], TokenRow("red"));
        var file = Path.Combine(embeddings, fileName);
        if (fileName.EndsWith(".pt", StringComparison.Ordinal)) TorchCheckpointWriter.Write(file, [tensor], wrapInStateDict: false);
        else SafetensorsFile.Write(file, [tensor]);

        var withEmbedding = Generate("a zwx circle", new AdapterFolders([], [embeddings]));
        Assert.Equal(Generate("a red circle"), withEmbedding);
        Assert.NotEqual(Generate("a zwx circle"), withEmbedding);
    }

    [Fact]
    public void ALoraInThePromptChangesTheImageAndIsUndoneAfterwards()
    {
        var loras = Path.Combine(folder, "lora");
        Directory.CreateDirectory(loras);
        const string module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
        var down = Enumerable.Range(0, 2 * 32).Select(i => (float)Math.Sin(i)).ToArray();
        var up = Enumerable.Range(0, 32 * 2).Select(i => (float)Math.Cos(i)).ToArray();
        SafetensorsFile.Write(Path.Combine(loras, "shapes.safetensors"),
        [
            new SafetensorsTensor(module + ".lora_down.weight", SafetensorsDType.F32, [2, 32], Bytes(down)),
            new SafetensorsTensor(module + ".lora_up.weight", SafetensorsDType.F32, [32, 2], Bytes(up)),
        ]);
        var folders = new AdapterFolders([loras], []);

        var before = Generate("a circle");
        var patched = Generate("a circle <lora:shapes:1>", folders);
        var after = Generate("a circle");
        Assert.NotEqual(before, patched);
        Assert.Equal(before, after);
        // A weight of 0 leaves the model as it is; the tag itself is not part of the prompt.
        Assert.Equal(before, Generate("a circle <lora:shapes:0>", folders));
        // The same LoRA given as a file at the same weight is the same patch.
        Assert.Equal(patched, Generate("a circle", loras: [(Path.Combine(loras, "shapes.safetensors"), 1.0)]));
    }

    private static byte[] Bytes(float[] values) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}
