using Microsoft.AspNetCore.Components.Authorization;
using SdAppliance.Appliance.Accounts;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Web.Security;

namespace SdAppliance.Web.Components;

/// <summary>Who the circuit's user is for the appliance's services; pages pass <see cref="CallerAsync"/> to every service call.</summary>
public sealed class SignedInUser(AuthenticationStateProvider authentication)
{
    public async Task<Caller> CallerAsync() => (await authentication.GetAuthenticationStateAsync()).User.ToCaller();

    public async Task<string> NameAsync() => (await authentication.GetAuthenticationStateAsync()).User.Identity?.Name ?? "";

    public async Task<bool> IsAdminAsync() => (await authentication.GetAuthenticationStateAsync()).User.IsInRole(Roles.Admin);
}
