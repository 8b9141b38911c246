
namespace SdAppliance.Web.Tests;

public sealed class HealthTests
{
    [Fact]
    public async Task The_health_check_answers_without_credentials()
    {
        await using var factory = new ApplianceFactory();
        using var client = factory.CreateClient();
        var response = await client.GetAsync("/health");
        Assert.True(response.IsSuccessStatusCode);
    }
}
