namespace SdAppliance.Appliance.Accounts;

/// <summary>
/// A personal API token. Only the SHA-256 of its secret is kept (the secret is shown once, when it is made), so a copy
/// of the database gives no way in; <see cref="Prefix"/> lets its owner tell tokens apart.
/// </summary>
public sealed class ApiToken
{
    public Guid Id { get; set; }

    public required string UserId { get; set; }

    public ApplianceUser? User { get; set; }

    public required string Name { get; set; }

    /// <summary>Lower-case hex SHA-256 of the whole token text; unique, the token is found by it.</summary>
    public required string SecretHash { get; set; }

    /// <summary>The token's first characters, shown in lists (<c>sda_3f9K2</c>).</summary>
    public required string Prefix { get; set; }

    public DateTime CreatedUtc { get; set; }

    public DateTime? LastUsedUtc { get; set; }

    public DateTime? RevokedUtc { get; set; }
}
