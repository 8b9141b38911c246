namespace SdAppliance.Torch.Tests;

/// <summary>
/// Tests that seed or draw from the process-wide default generator (torch.ManualSeed, dropout,
/// modules built without a Generator). xunit runs this collection alone, after the parallel
/// ones, so no other test's draws interleave with these, nor these with others'.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class DefaultGeneratorCollection
{
    public const string Name = "DefaultGenerator";
}
