using System.Security.Claims;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Jobs;

namespace SdAppliance.Web.Security;

/// <summary>Who a request is for the appliance's services.</summary>
public static class Callers
{
    /// <summary>The signed-in user as a <see cref="Caller"/>: their Identity id, and whether they hold the admin role.</summary>
    /// <exception cref="InvalidOperationException">Nobody is signed in: only an endpoint that allows anonymous requests can see that, and it must not ask.</exception>
    public static Caller ToCaller(this ClaimsPrincipal user) =>
        user.FindFirstValue(ClaimTypes.NameIdentifier) is { } id
            ? new Caller(id, user.IsInRole(Roles.Admin))
            : throw new InvalidOperationException("the request has no signed-in user; an endpoint that allows anonymous requests has no caller");
}
