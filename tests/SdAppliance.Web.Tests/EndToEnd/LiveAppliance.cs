using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>The appliance on Kestrel at a free loopback port (a real socket a browser can reach), on a fresh data folder.</summary>
public sealed class LiveAppliance : ApplianceFactory
{
    public LiveAppliance()
    {
        UseKestrel(0);
        StartServer();
        var addresses = Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        Address = new Uri(addresses.First().Replace("[::]", "127.0.0.1", StringComparison.Ordinal));
    }

    public Uri Address { get; }
}
