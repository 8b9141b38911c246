using System.Net;
using System.Text.Json;
using Microsoft.EntityFrameworkCore;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Accounts;

/// <summary>
/// The admin's list of client addresses (IPs and CIDR ranges) that may use the A1111 routes without credentials, for
/// clients that have no credential setting; empty (off) by default. Such requests act as the built-in
/// <see cref="AccountService.LanClientsId"/> account. Kept in a <see cref="Setting"/> row, read once and cached.
/// </summary>
public sealed class AllowedClientAddresses(IDbContextFactory<ApplianceDb> databases)
{
    public const string SettingKey = "security.sdapi_allowed_addresses";

    private volatile IReadOnlyList<(string Entry, IPNetwork Network)>? cached;

    public async Task<IReadOnlyList<string>> GetAsync(CancellationToken cancellationToken) =>
        (await LoadAsync(cancellationToken)).Select(e => e.Entry).ToList();

    /// <summary>Replaces the list; every entry is checked first, so a bad one changes nothing.</summary>
    public async Task<IReadOnlyList<string>> SetAsync(IEnumerable<string> entries, CancellationToken cancellationToken)
    {
        var parsed = entries.Select(e => e.Trim()).Where(e => e.Length > 0).Distinct().Select(e => (e, Parse(e))).ToList();
        var json = JsonSerializer.Serialize(parsed.Select(e => e.Item1));
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var row = await db.Settings.FindAsync([SettingKey], cancellationToken);
        if (row is null) db.Settings.Add(new Setting { Key = SettingKey, ValueJson = json });
        else row.ValueJson = json;
        await db.SaveChangesAsync(cancellationToken);
        cached = parsed;
        return parsed.Select(e => e.Item1).ToList();
    }

    /// <summary>Whether a request from <paramref name="address"/> may go without credentials.</summary>
    public async Task<bool> AllowsAsync(IPAddress? address, CancellationToken cancellationToken)
    {
        if (address is null) return false;
        var list = await LoadAsync(cancellationToken);
        if (list.Count == 0) return false;
        // A server bound to [::] sees IPv4 clients as ::ffff:a.b.c.d; the admin writes a.b.c.d.
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        return list.Any(e => e.Network.Contains(address));
    }

    /// <summary>One entry: an address (<c>192.168.1.20</c>, <c>fd00::5</c>) or a range (<c>192.168.1.0/24</c>).</summary>
    public static IPNetwork Parse(string entry)
    {
        if (IPAddress.TryParse(entry, out var address) && !entry.Contains('/'))
            return new IPNetwork(address, address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
        if (IPNetwork.TryParse(entry, out var network)) return network;
        throw new UserInputException("addresses", $"'{entry}' is not an IP address or a CIDR range",
            "write an address such as 192.168.1.20 or a range such as 192.168.1.0/24");
    }

    private async Task<IReadOnlyList<(string Entry, IPNetwork Network)>> LoadAsync(CancellationToken cancellationToken)
    {
        if (cached is { } list) return list;
        await using var db = await databases.CreateDbContextAsync(cancellationToken);
        var row = await db.Settings.AsNoTracking().FirstOrDefaultAsync(s => s.Key == SettingKey, cancellationToken);
        var entries = row is null ? [] : JsonSerializer.Deserialize<string[]>(row.ValueJson) ?? [];
        return cached = entries.Select(e => (e, Parse(e))).ToList();
    }
}
