using System.Net;

namespace SdAppliance.Web.Tests.A1111;

/// <summary>Many clients at once: every request is answered through the one queue, none lost.</summary>
public sealed class A1111LoadTests(A1111Appliance appliance) : IClassFixture<A1111Appliance>
{
    [Fact]
    public async Task Fifty_concurrent_txt2img_requests_are_all_answered_each_with_its_own_image()
    {
        using var client = await appliance.ClientAsync();
        var responses = await Task.WhenAll(Enumerable.Range(0, 50).Select(i => client.PostAsync("/sdapi/v1/txt2img", A1111Calls.Small(10_000 + i, steps: 1))));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.Status));
        var seeds = responses.Select(r =>
        {
            Assert.Single(r.Body!["images"]!.AsArray());
            return A1111Calls.Info(r.Body!)["seed"]!.GetValue<long>();
        }).ToList();
        Assert.Equal(Enumerable.Range(10_000, 50).Select(i => (long)i), seeds);
    }
}
