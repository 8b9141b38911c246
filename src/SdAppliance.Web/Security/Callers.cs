using System.Security.Claims;
using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Web.Security;

/// <summary>Who a request is for the appliance's services.</summary>
public static class Callers
{
    /// <summary>The signed-in user as a <see cref="Caller"/>: their Identity id, and whether they hold the admin role.</summary>
    public static Caller ToCaller(this ClaimsPrincipal user) =>
        user.FindFirstValue(ClaimTypes.NameIdentifier) is { } id
            ? new Caller(id, user.IsInRole("admin"))
            : new Caller("local", IsAdmin: true);  // until authentication is wired: the security part replaces this
}
