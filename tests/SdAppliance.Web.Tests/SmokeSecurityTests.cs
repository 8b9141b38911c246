namespace SdAppliance.Web.Tests;

public sealed class SmokeSecurityTests
{
    [Fact]
    public async Task A_signed_in_client_gets_past_the_fallback_policy()
    {
        await using var factory = new ApplianceFactory();
        using var client = await factory.CreateSignedInClientAsync();
        var response = await client.GetAsync("/api/v1/tokens");
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
    }
}
