using Microsoft.AspNetCore.Identity;

namespace SdAppliance.Appliance.Accounts;

/// <summary>A person who uses the appliance (ASP.NET Core Identity user in the appliance database).</summary>
public sealed class ApplianceUser : IdentityUser
{
}
