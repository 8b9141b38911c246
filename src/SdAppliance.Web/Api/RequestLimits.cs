namespace SdAppliance.Web.Api;

/// <summary>
/// How much one request may carry (configuration section <c>Limits</c>, e.g. <c>--Limits:MaxRequestBytes 1000000</c>):
/// Kestrel and the multipart form reader refuse more before the endpoint sees it, so an upload cannot fill the disk or
/// the memory. What a file may be (its type by content) is the storage's check.
/// </summary>
public sealed class RequestLimits
{
    public const string Section = "Limits";

    /// <summary>The largest request body: a model upload is the largest thing sent (SDXL checkpoints are about 7 GB).</summary>
    public long MaxRequestBytes { get; set; } = 16L * 1024 * 1024 * 1024;

    /// <summary>The most files (and other form fields) in one multipart upload, e.g. a dataset's images.</summary>
    public int MaxFormParts { get; set; } = 2_000;
}
