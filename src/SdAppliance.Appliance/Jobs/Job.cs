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

    /// <summary>Its folder relative to the data folder (<c>runs/ID</c> for training, <c>jobs/ID</c> otherwise): events, results.</summary>
    public required string Folder { get; set; }

    /// <summary>The device it runs (or last ran) on.</summary>
    public string? Device { get; set; }

    /// <summary>How often it was started: more than once after a restart or a resume.</summary>
    public int Attempts { get; set; }

    /// <summary>It ran before: the next start continues from what it saved (a restart, a resume).</summary>
    public bool Resuming { get; set; }

    /// <summary>Progress as its last step event reported it.</summary>
    public long Step { get; set; }

    public long TotalSteps { get; set; }
}
