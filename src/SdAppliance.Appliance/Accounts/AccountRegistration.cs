using Microsoft.AspNetCore.Identity;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using SdAppliance.Appliance.Persistence;

namespace SdAppliance.Appliance.Accounts;

/// <summary>After <see cref="MaxFailedAttempts"/> wrong passwords in a row an account refuses every password for <see cref="Minutes"/> (Identity's lockout).</summary>
public static class AccountLockout
{
    public const int MaxFailedAttempts = 5;
    public const int Minutes = 5;

    public static readonly string Message = $"Too many wrong passwords: the account is locked for {Minutes} minutes.";
}

internal static class AccountRegistration
{
    public static IServiceCollection AddAccounts(this IServiceCollection services)
    {
        services.AddLogging();
        services.TryAddSingleton(TimeProvider.System);
        services.AddIdentityCore<ApplianceUser>(identity =>
            {
                identity.Password.RequiredLength = 8;
                identity.Lockout.MaxFailedAccessAttempts = AccountLockout.MaxFailedAttempts;
                identity.Lockout.DefaultLockoutTimeSpan = TimeSpan.FromMinutes(AccountLockout.Minutes);
                identity.Lockout.AllowedForNewUsers = true;
                identity.User.RequireUniqueEmail = false;
            })
            .AddRoles<IdentityRole>()
            .AddEntityFrameworkStores<ApplianceDb>();
        services.AddScoped<AccountService>();
        services.AddSingleton<AllowedClientAddresses>();
        return services;
    }
}
