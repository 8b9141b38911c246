namespace SdAppliance.Training.Runs;

/// <summary>
/// Requests to a running trainer from another thread (the UI's "sample now" and "save now"): the trainer takes them at
/// its next step boundary, after the step's own saves and samples. Neither changes what the run trains.
/// </summary>
public sealed class RunControl
{
    private int sample;
    private int save;

    /// <summary>Told what a request did ("sampled step 12", "saved step 12: ..."), on the trainer's thread.</summary>
    public Action<string>? Done { get; set; }

    /// <summary>Draws the sample images at the next step boundary.</summary>
    public void RequestSample() => Interlocked.Exchange(ref sample, 1);

    /// <summary>Saves a training state and the results so far (<c>NAME-step-NNNNNN</c>) at the next step boundary.</summary>
    public void RequestSave() => Interlocked.Exchange(ref save, 1);

    /// <summary>Whether a sample is asked for (and no longer).</summary>
    internal bool TakeSample() => Interlocked.Exchange(ref sample, 0) == 1;

    internal bool TakeSave() => Interlocked.Exchange(ref save, 0) == 1;

    internal void Report(string what) => Done?.Invoke(what);
}
