using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;

namespace SdAppliance.Appliance.Storage;

/// <summary>Who owns which file of the data folder, and who may see or change it (<see cref="StoredItem"/>).</summary>
public sealed class Ownership(IDbContextFactory<ApplianceDb> databases)
{
    /// <summary>Every recorded item of <paramref name="area"/>, by its relative path.</summary>
    public async Task<IReadOnlyDictionary<string, StoredItem>> InAsync(StorageArea area, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        return await db.StoredItems.AsNoTracking().Where(i => i.Area == area).ToDictionaryAsync(i => i.Path, StringComparer.Ordinal, cancellationToken);
    }

    public async Task<StoredItem?> FindAsync(StorageArea area, string path, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        return await db.StoredItems.AsNoTracking().SingleOrDefaultAsync(i => i.Area == area && i.Path == path, cancellationToken);
    }

    /// <summary>Records <paramref name="ownerId"/> as the owner of a new item (replacing the row of an item that was there before).</summary>
    public async Task<StoredItem> RecordAsync(StorageArea area, string path, string ownerId, bool isPrivate, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var item = await db.StoredItems.SingleOrDefaultAsync(i => i.Area == area && i.Path == path, cancellationToken);
        if (item is null)
        {
            item = new StoredItem { Area = area, Path = path, OwnerId = ownerId };
            db.StoredItems.Add(item);
        }
        item.OwnerId = ownerId;
        item.IsPrivate = isPrivate;
        item.CreatedUtc = DateTime.UtcNow;
        await db.SaveChangesAsync(cancellationToken);
        return item;
    }

    /// <summary>Marks an item private or shared; its owner or an admin may. Returns false when there is no such item the caller can see.</summary>
    public async Task<bool> SetPrivateAsync(Caller caller, StorageArea area, string path, bool isPrivate, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var item = await db.StoredItems.SingleOrDefaultAsync(i => i.Area == area && i.Path == path, cancellationToken);
        if (item is null || !CanSee(caller, item)) return false;
        RequireChange(caller, item, path);
        item.IsPrivate = isPrivate;
        await db.SaveChangesAsync(cancellationToken);
        return true;
    }

    /// <summary>Forgets the item at <paramref name="path"/> and everything recorded under it (a dataset's images).</summary>
    public async Task ForgetAsync(StorageArea area, string path, CancellationToken cancellationToken)
    {
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var under = path + "/";
        await db.StoredItems.Where(i => i.Area == area && (i.Path == path || i.Path.StartsWith(under))).ExecuteDeleteAsync(cancellationToken);
    }

    /// <summary>A shared item (or one without an owner) is seen by everyone; a private one by its owner and admins.</summary>
    public static bool CanSee(Caller caller, StoredItem? item) =>
        item is null || !item.IsPrivate || caller.IsAdmin || item.OwnerId == caller.UserId;

    /// <summary>Its owner and admins may change or delete an item; an item without an owner (dropped in by hand), admins only.</summary>
    public static bool CanChange(Caller caller, StoredItem? item) => caller.IsAdmin || (item is not null && item.OwnerId == caller.UserId);

    /// <summary>Throws <see cref="NotPermittedException"/> unless <see cref="CanChange"/>.</summary>
    public static void RequireChange(Caller caller, StoredItem? item, string subject)
    {
        if (!CanChange(caller, item))
            throw new NotPermittedException(subject, item is null
                ? "was not imported by anyone (it was put in the data folder by hand): only an admin may change it"
                : "belongs to another user: only its owner or an admin may change it");
    }
}
