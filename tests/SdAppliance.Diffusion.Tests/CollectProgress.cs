using SdAppliance.Diffusion.Pipelines;

namespace SdAppliance.Diffusion.Tests;

/// <summary>
/// Hands every report to the test on the pipeline's thread, while the step's tensors are alive
/// (System.Progress would post it later, after the pipeline disposed them).
/// </summary>
internal sealed class CollectProgress(Action<GenerationProgress> report) : IProgress<GenerationProgress>
{
    public void Report(GenerationProgress value) => report(value);
}
