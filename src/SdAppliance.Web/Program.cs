using SdAppliance.Web;

return await ApplianceHost.RunAsync(args);

/// <summary>The web host's entry point (WebApplicationFactory finds the host through it).</summary>
public partial class Program;
