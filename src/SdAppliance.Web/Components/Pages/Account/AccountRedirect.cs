using Microsoft.AspNetCore.Components;

namespace SdAppliance.Web.Components.Pages.Account;

/// <summary>
/// Ends a server-rendered account page with a redirect to a path of this host. The renderer answers the exception with
/// a 302 to its location as given: relative, so it works behind whatever host name the LAN uses (NavigationManager
/// would make it absolute, from the request's host).
/// </summary>
internal static class AccountRedirect
{
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    public static void To(string localPath) => throw new NavigationException(localPath);
}
