using System.Globalization;

namespace SdAppliance.Training.Distributed;

/// <summary>
/// Which rank of a data-parallel run this process is, as torchrun and accelerate launch tell their processes: the
/// environment's <c>RANK</c>, <c>LOCAL_RANK</c> and <c>WORLD_SIZE</c> (the launcher sets them; the run's settings give
/// the rendezvous address, the machines and the devices).
/// </summary>
public sealed record DataParallelRank(int Rank, int LocalRank, int WorldSize)
{
    public const string RankVariable = "RANK";
    public const string LocalRankVariable = "LOCAL_RANK";
    public const string WorldSizeVariable = "WORLD_SIZE";

    public bool IsMain => Rank == 0;

    /// <summary>This process's rank from the environment; null when it was not started as one.</summary>
    public static DataParallelRank? FromEnvironment()
    {
        var world = Environment.GetEnvironmentVariable(WorldSizeVariable);
        if (string.IsNullOrEmpty(world)) return null;
        int Read(string name, string? text) =>
            int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value)
                ? value
                : throw new TrainingConfigException($"{name}: the environment's '{text}' is not a rank number (the launcher sets {RankVariable}, {LocalRankVariable} and {WorldSizeVariable})");
        var rank = Read(RankVariable, Environment.GetEnvironmentVariable(RankVariable));
        var local = Environment.GetEnvironmentVariable(LocalRankVariable) is { Length: > 0 } l ? Read(LocalRankVariable, l) : rank;
        var size = Read(WorldSizeVariable, world);
        if (rank >= size || local > rank)
            throw new TrainingConfigException($"{RankVariable}: rank {rank} (local {local}) does not fit a world of {size}");
        return new DataParallelRank(rank, local, size);
    }

    /// <summary>The environment a launcher gives this rank.</summary>
    public IReadOnlyDictionary<string, string> ToEnvironment() => new Dictionary<string, string>
    {
        [RankVariable] = Rank.ToString(CultureInfo.InvariantCulture),
        [LocalRankVariable] = LocalRank.ToString(CultureInfo.InvariantCulture),
        [WorldSizeVariable] = WorldSize.ToString(CultureInfo.InvariantCulture),
    };
}
