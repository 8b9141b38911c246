namespace SdAppliance.Appliance.Jobs;

/// <summary>What a job does.</summary>
public enum JobKind
{
    Training,
    Generation,
    ClassImages,
    Conversion,

    /// <summary>Captions a dataset's images with an ONNX image tagger (<see cref="CaptioningJobRunner"/>).</summary>
    Captioning,
}

/// <summary>queued → running → completed / failed / cancelled.</summary>
public enum JobState
{
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}
