using System.Net;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.AspNetCore.StaticAssets;
using Microsoft.Extensions.DependencyInjection;

namespace SdAppliance.Web.Tests.Security;

/// <summary>
/// Every endpoint the host maps refuses a request without credentials, except the few that must not: a new endpoint
/// that forgets authorization fails here.
/// </summary>
public sealed class EveryEndpointTests
{
    /// <summary>What answers anonymous requests, on purpose: the health check, and what a person uses to get in.</summary>
    private static readonly HashSet<string> Anonymous = ["GET /health", "GET /setup", "POST /setup", "GET /login", "POST /login"];

    [Fact]
    public async Task Every_endpoint_refuses_an_anonymous_request_before_setup_and_after()
    {
        await using var factory = new ApplianceFactory();
        using var client = factory.Anonymous();
        var endpoints = Requests(factory).ToList();
        Assert.Contains(endpoints, e => e.Name.StartsWith("GET /api/v1/tokens", StringComparison.Ordinal));

        // Fresh install: APIs say to finish setup, pages go to /setup.
        foreach (var endpoint in endpoints.Where(e => !Anonymous.Contains(e.Name)))
            await AssertRefusedAsync(client, endpoint, fresh: true);

        await factory.CreateUserAsync(admin: true);
        foreach (var endpoint in endpoints.Where(e => !Anonymous.Contains(e.Name)))
            await AssertRefusedAsync(client, endpoint, fresh: false);
    }

    [Fact]
    public async Task The_allow_list_names_only_endpoints_that_exist_and_answer_anonymously()
    {
        await using var factory = new ApplianceFactory();
        using var client = factory.Anonymous();
        await factory.CreateUserAsync(admin: true);
        var endpoints = Requests(factory).ToDictionary(e => e.Name);

        foreach (var name in Anonymous)
        {
            Assert.True(endpoints.TryGetValue(name, out var endpoint), $"{name} is allowed anonymously but not mapped");
            using var response = await client.SendAsync(endpoint.Request());
            Assert.True(response.StatusCode is not (HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden), $"{name}: {response.StatusCode}");
        }
    }

    private static async Task AssertRefusedAsync(HttpClient client, EndpointRequest endpoint, bool fresh)
    {
        using var response = await client.SendAsync(endpoint.Request());
        var status = response.StatusCode;
        var location = response.Headers.Location?.OriginalString ?? "";
        var refused = status == HttpStatusCode.Unauthorized
            || (fresh && status == HttpStatusCode.ServiceUnavailable)
            || (status == HttpStatusCode.Redirect && location.StartsWith(fresh ? "/setup" : "/login", StringComparison.Ordinal));
        Assert.True(refused, $"{endpoint.Name} ({(fresh ? "fresh install" : "set up")}) answered an anonymous request {(int)status} {location}");
    }

    /// <summary>One request per route and method, route parameters filled with values their constraints accept.</summary>
    private static IEnumerable<EndpointRequest> Requests(ApplianceFactory factory)
    {
        var source = factory.Services.GetRequiredService<EndpointDataSource>();
        foreach (var endpoint in source.Endpoints.OfType<RouteEndpoint>())
        {
            // The UI's scripts, styles and icon: public files with nobody's data, which the sign-in page needs.
            if (endpoint.Metadata.GetMetadata<StaticAssetDescriptor>() is not null) continue;
            var path = SamplePath(endpoint.RoutePattern);
            var methods = endpoint.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods ?? [HttpMethods.Get];
            foreach (var method in methods)
                yield return new EndpointRequest(method, path, $"{method} {Route(endpoint.RoutePattern)}");
        }
    }

    private static string Route(RoutePattern pattern) =>
        pattern.RawText is { Length: > 1 } raw ? "/" + raw.Trim('/') : "/";

    private static string SamplePath(RoutePattern pattern) =>
        "/" + string.Join("/", pattern.PathSegments.Select(segment => string.Concat(segment.Parts.Select(part => part switch
        {
            RoutePatternLiteralPart literal => literal.Content,
            RoutePatternSeparatorPart separator => separator.Content,
            RoutePatternParameterPart parameter => SampleValue(parameter),
            _ => throw new InvalidOperationException($"unknown route part {part}"),
        }))));

    private static string SampleValue(RoutePatternParameterPart parameter)
    {
        var constraints = parameter.ParameterPolicies.Select(p => p.Content ?? "").ToList();
        if (constraints.Contains("guid")) return Guid.NewGuid().ToString();
        if (constraints.Any(c => c is "int" or "long" or "double" or "decimal" or "float")) return "1";
        if (constraints.Contains("bool")) return "true";
        return parameter.IsCatchAll ? "sample/file.png" : "sample";
    }

    private sealed record EndpointRequest(string Method, string Path, string Name)
    {
        public HttpRequestMessage Request() => new(new HttpMethod(Method), Path)
        {
            Content = Method is "POST" or "PUT" or "PATCH" ? new StringContent("{}", System.Text.Encoding.UTF8, "application/json") : null,
        };
    }
}
