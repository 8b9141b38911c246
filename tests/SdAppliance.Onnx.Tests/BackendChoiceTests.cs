using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Formats;
using SdAppliance.Onnx.Runtime;

namespace SdAppliance.Onnx.Tests;

/// <summary>The rule that picks libtorch or ONNX Runtime for a generation, and what it tells of each model on disk.</summary>
public sealed class BackendChoiceTests : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("sdapp-backend-choice-").FullName;

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Theory]
    // asked, has export, has torch weights, runtime LoRA, ONNX faster here → engine
    [InlineData("auto", false, true, false, true, InferenceBackend.Libtorch)]
    [InlineData("auto", true, false, false, false, InferenceBackend.OnnxRuntime)]
    [InlineData("auto", true, false, true, true, InferenceBackend.OnnxRuntime)]  // the pipeline then refuses the LoRA, naming it
    [InlineData("auto", true, true, false, true, InferenceBackend.OnnxRuntime)]
    [InlineData("auto", true, true, true, true, InferenceBackend.Libtorch)]
    [InlineData("auto", true, true, false, false, InferenceBackend.Libtorch)]
    [InlineData("onnx", true, true, true, false, InferenceBackend.OnnxRuntime)]
    [InlineData("libtorch", true, true, false, true, InferenceBackend.Libtorch)]
    [InlineData("AUTO", true, false, false, false, InferenceBackend.OnnxRuntime)]
    public void TheRule(string asked, bool export, bool weights, bool lora, bool faster, InferenceBackend expected)
    {
        var decision = BackendChoice.Choose(asked, export, weights, lora, faster, "m");
        Assert.Equal(expected, decision.Backend);
        Assert.False(string.IsNullOrWhiteSpace(decision.Reason));
    }

    [Fact]
    public void AutoSaysWhy()
    {
        Assert.Contains("LoRA", BackendChoice.Choose("auto", true, true, true, true, "m").Reason);
        Assert.Contains("faster", BackendChoice.Choose("auto", true, true, false, true, "m").Reason);
        Assert.Contains("no ONNX export", BackendChoice.Choose("auto", false, true, false, true, "m").Reason);
    }

    [Fact]
    public void AnEngineTheModelCannotRunOnIsRefused()
    {
        var onnx = Assert.ThrowsAny<UserInputException>(() => BackendChoice.Choose("onnx", false, true, false, true, "sd15.safetensors"));
        Assert.Equal("backend", onnx.Subject);
        Assert.Contains("sd15.safetensors", onnx.Message);
        Assert.Contains("convert it to ONNX", onnx.Fix);
        var torch = Assert.ThrowsAny<UserInputException>(() => BackendChoice.Choose("libtorch", true, false, false, true, "export"));
        Assert.Contains("ONNX export only", torch.Message);
        Assert.ThrowsAny<UserInputException>(() => BackendChoice.Choose("tensorrt", true, true, false, true, "m"));
    }

    [Fact]
    public void LorasAndHypernetworksAreRuntimeAdapters()
    {
        Assert.False(BackendChoice.AsksForRuntimeAdapters(new GenerationRequest { Prompt = "a (red:1.2) circle <embedding>" }));
        Assert.True(BackendChoice.AsksForRuntimeAdapters(new GenerationRequest { Prompt = "a circle <lora:style:0.7>" }));
        Assert.True(BackendChoice.AsksForRuntimeAdapters(new GenerationRequest { Prompt = "a circle <hypernet:anime:1>" }));
        Assert.True(BackendChoice.AsksForRuntimeAdapters(new GenerationRequest { Prompt = "a circle", Loras = [("style.safetensors", 0.7)] }));
    }

    [Fact]
    public void WhatIsOnDiskDecides()
    {
        var export = ToyOnnxExport.Write(Path.Combine(root, "export"), ToyLayout.Optimum);
        Assert.True(BackendChoice.HasOnnxExport(export));
        Assert.False(BackendChoice.HasLibtorchWeights(export));
        Assert.Equal(InferenceBackend.OnnxRuntime, BackendChoice.Choose("auto", export, runtimeAdapters: false).Backend);

        var diffusers = ToyOnnxExport.TinySd;
        Assert.False(BackendChoice.HasOnnxExport(diffusers));
        Assert.True(BackendChoice.HasLibtorchWeights(diffusers));
        Assert.Equal(InferenceBackend.Libtorch, BackendChoice.Choose("auto", diffusers, runtimeAdapters: false).Backend);
        Assert.True(BackendChoice.HasLibtorchWeights(Path.Combine(ToyOnnxExport.Fixtures, "tiny-sd.ldm.safetensors")));
        // The default follows the measurements: until ONNX Runtime measures faster, a model with both runs on libtorch.
        Assert.Equal(BackendChoice.OnnxFasterByMeasurement ? InferenceBackend.OnnxRuntime : InferenceBackend.Libtorch,
            BackendChoice.Choose("auto", true, true, false, BackendChoice.OnnxFasterByMeasurement, "m").Backend);
    }
}
