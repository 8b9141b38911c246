using Microsoft.Extensions.Hosting;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Storage;

/// <summary>
/// At the start of the server, removes what imports, uploads and saves killed mid-write left in the data folder (hidden
/// <c>.NAME.ID.tmp</c> files and folders, <c>.NAME.ID.old</c> folders of deleted datasets). Only the server writes in
/// these folders, and before it serves nothing is being written, so nothing in use is removed. Runs and jobs are not
/// touched: the trainer's own recovery owns them.
/// </summary>
internal sealed class LeftoverCleanup(DataFolder data) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var folder in Folders())
            AtomicFile.RemoveLeftovers(folder);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private IEnumerable<string> Folders()
    {
        string[] fixedFolders = [data.Models, data.Loras, data.Embeddings, data.Hypernetworks, data.Datasets, data.Outputs, data.Cache];
        foreach (var folder in fixedFolders) yield return folder;
        foreach (var parent in (string[])[data.Datasets, data.Outputs])
        {
            if (!Directory.Exists(parent)) continue;
            foreach (var child in Directory.EnumerateDirectories(parent).Where(d => !Path.GetFileName(d).StartsWith('.')))
            {
                yield return child;
                // A dataset's kohya repeat folders.
                if (parent == data.Datasets)
                    foreach (var grandchild in Directory.EnumerateDirectories(child).Where(d => !Path.GetFileName(d).StartsWith('.')))
                        yield return grandchild;
            }
        }
    }
}
