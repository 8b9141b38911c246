namespace SdAppliance.Web.Security;

/// <summary>
/// What the server-rendered account pages (<c>/setup</c>, <c>/login</c>, <c>/logout</c>: Razor components under
/// <c>Components/Pages/Account</c>) share with the rest of the host.
/// </summary>
internal static class AccountPages
{
    /// <summary>Only a path on this host: a return address must not send the user to another site after signing in.</summary>
    internal static bool IsLocal(string? url) =>
        url is { Length: > 0 } && url[0] == '/' && (url.Length == 1 || (url[1] != '/' && url[1] != '\\')) && !url.Contains('\n') && !url.Contains('\r');
}
