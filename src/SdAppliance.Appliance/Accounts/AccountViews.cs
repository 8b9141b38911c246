namespace SdAppliance.Appliance.Accounts;

/// <summary>The two roles: an admin manages users and sees every job; a user sees their own.</summary>
public static class Roles
{
    public const string Admin = "admin";
    public const string User = "user";
}

/// <summary>A user as lists and the API show them (never a password hash).</summary>
public sealed record AccountView(string Id, string Name, bool IsAdmin);

/// <summary>A token as its owner sees it later: its name and prefix, never its secret.</summary>
public sealed record TokenView(Guid Id, string Name, string Prefix, DateTime CreatedUtc, DateTime? LastUsedUtc, DateTime? RevokedUtc)
{
    internal static TokenView Of(ApiToken t) => new(t.Id, t.Name, t.Prefix, t.CreatedUtc, t.LastUsedUtc, t.RevokedUtc);
}

/// <summary>A token just made: <see cref="Secret"/> is the whole token, shown this once and kept nowhere.</summary>
public sealed record CreatedToken(TokenView Token, string Secret);
