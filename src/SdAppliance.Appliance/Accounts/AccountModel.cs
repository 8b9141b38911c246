using Microsoft.AspNetCore.Identity;
using Microsoft.EntityFrameworkCore;

namespace SdAppliance.Appliance.Accounts;

/// <summary>The accounts' part of the database model: tokens, and the rows every install starts with (the roles, the LAN-client account).</summary>
internal static class AccountModel
{
    public static void Configure(ModelBuilder builder)
    {
        builder.Entity<ApiToken>(token =>
        {
            token.HasIndex(t => t.SecretHash).IsUnique();
            token.HasIndex(t => t.UserId);
            token.Property(t => t.Name).HasMaxLength(AccountService.MaxTokenNameLength);
            token.HasOne(t => t.User).WithMany().HasForeignKey(t => t.UserId).OnDelete(DeleteBehavior.Cascade);
        });

        // Seeded (constant values, so the model stays equal to the migration's): no code path has to create them first.
        builder.Entity<IdentityRole>().HasData(
            new IdentityRole { Id = Roles.Admin, Name = Roles.Admin, NormalizedName = "ADMIN", ConcurrencyStamp = Roles.Admin },
            new IdentityRole { Id = Roles.User, Name = Roles.User, NormalizedName = "USER", ConcurrencyStamp = Roles.User });

        // No password hash: nobody can sign in as it; requests from allowed addresses act as it.
        builder.Entity<ApplianceUser>().HasData(new ApplianceUser
        {
            Id = AccountService.LanClientsId,
            UserName = AccountService.LanClientsId,
            NormalizedUserName = AccountService.LanClientsId.ToUpperInvariant(),
            SecurityStamp = AccountService.LanClientsId,
            ConcurrencyStamp = AccountService.LanClientsId,
            LockoutEnabled = false,
        });
        builder.Entity<IdentityUserRole<string>>().HasData(new IdentityUserRole<string> { UserId = AccountService.LanClientsId, RoleId = Roles.User });
    }
}
