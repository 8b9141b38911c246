namespace SdAppliance.Appliance.Storage;

/// <summary>The folders of the data folder whose files have owners.</summary>
public enum StorageArea
{
    Models,
    Loras,
    Embeddings,
    Hypernetworks,
    Datasets,
    Outputs,
}

/// <summary>
/// Who made a file or folder of the data folder (an imported model, a dataset, an output) and whether others may see it.
/// Files dropped in by hand have no row: they are shared, and only an admin may delete them; an output without a row
/// is seen by admins only.
/// </summary>
public sealed class StoredItem
{
    public long Id { get; set; }

    public StorageArea Area { get; set; }

    /// <summary>The path relative to the area's folder, with '/' between folders.</summary>
    public required string Path { get; set; }

    /// <summary>The Identity user id of the one who made it.</summary>
    public required string OwnerId { get; set; }

    /// <summary>Visible to its owner and admins only.</summary>
    public bool IsPrivate { get; set; }

    public DateTime CreatedUtc { get; set; }
}
