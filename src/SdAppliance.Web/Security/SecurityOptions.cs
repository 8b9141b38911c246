namespace SdAppliance.Web.Security;

/// <summary>The web host's security settings (configuration section <c>Security</c>).</summary>
public sealed class SecurityOptions
{
    public const string Section = "Security";

    /// <summary>Sign-in and setup form posts allowed per client address per minute; more are answered 429 (lockout stops guessing one account, this stops trying many).</summary>
    public int LoginAttemptsPerMinute { get; set; } = 10;
}
