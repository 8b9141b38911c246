using SdAppliance.Formats;

namespace SdAppliance.Torch.Distributed;

/// <summary>
/// One or more ranks of a data-parallel job stopped answering (killed, crashed, their machine gone): this rank stops
/// too. What was saved before stays valid, so the job resumes from its last saved state.
/// </summary>
public sealed class RankLostException(IReadOnlyList<int> lostRanks, int rank, int worldSize, string operation, string detail)
    : UserInputException(null,
        $"{Describe(lostRanks, worldSize)} stopped answering during {operation}, so rank {rank} stops too (libtorch: {detail})",
        "the last saved training state is intact: resume the run once every rank can run again")
{
    /// <summary>The ranks that are gone.</summary>
    public IReadOnlyList<int> LostRanks { get; } = lostRanks;

    private static string Describe(IReadOnlyList<int> lost, int worldSize) =>
        (lost.Count == 1 ? $"rank {lost[0]}" : $"ranks {string.Join(", ", lost)}") + $" of {worldSize}" + (lost.Contains(0) ? " (the main process)" : "");
}
