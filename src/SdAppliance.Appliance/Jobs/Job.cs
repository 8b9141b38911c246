namespace SdAppliance.Appliance.Jobs;

/// <summary>A job as the database keeps it.</summary>
public sealed class Job
{
    public Guid Id { get; set; }
    public JobKind Kind { get; set; }
    public JobState State { get; set; }
    public int Priority { get; set; }

    /// <summary>The Identity user id of who submitted it.</summary>
    public required string OwnerId { get; set; }

    public DateTime CreatedUtc { get; set; }
    public DateTime? StartedUtc { get; set; }
    public DateTime? FinishedUtc { get; set; }

    /// <summary>The kind's request, as JSON.</summary>
    public required string RequestJson { get; set; }

    /// <summary>What it produced, as JSON, once completed.</summary>
    public string? ResultJson { get; set; }

    public string? Error { get; set; }
}
