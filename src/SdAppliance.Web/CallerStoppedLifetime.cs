namespace SdAppliance.Web;

/// <summary>
/// The host's lifetime when its caller owns the process's signals: unlike the default console lifetime it registers no
/// Ctrl+C / SIGTERM handler (a second one would race the caller's, which also quits at a second Ctrl+C); the host stops
/// when the caller cancels the token it runs on.
/// </summary>
internal sealed class CallerStoppedLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
