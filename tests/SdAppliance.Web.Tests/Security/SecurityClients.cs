using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace SdAppliance.Web.Tests.Security;

/// <summary>What the security tests do over and over: credentials in headers, forms with their antiforgery token.</summary>
internal static partial class SecurityClients
{
    public static HttpClient Anonymous(this ApplianceFactory factory) =>
        factory.CreateClient(new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactoryClientOptions { AllowAutoRedirect = false });

    public static HttpClient WithBasic(this ApplianceFactory factory, string name, string password)
    {
        var client = factory.Anonymous();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{name}:{password}")));
        return client;
    }

    public static HttpClient WithBearer(this ApplianceFactory factory, string token)
    {
        var client = factory.Anonymous();
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    /// <summary>
    /// Posts a page's form the way a browser does: GET the page (its antiforgery cookie and hidden fields: the token,
    /// the form's handler name), then POST the fields with them.
    /// </summary>
    public static async Task<HttpResponseMessage> PostFormAsync(this HttpClient client, string page, IReadOnlyDictionary<string, string> fields)
    {
        var html = await client.GetStringAsync(page);
        var hidden = HiddenField().Matches(html).ToDictionary(m => WebUtility.HtmlDecode(m.Groups["name"].Value), m => WebUtility.HtmlDecode(m.Groups["value"].Value));
        Assert.True(hidden.Keys.Any(k => k.StartsWith("__RequestVerificationToken", StringComparison.Ordinal)), html);
        var form = new Dictionary<string, string>(hidden);
        foreach (var (name, value) in fields) form[name] = value;
        return await client.PostAsync(page, new FormUrlEncodedContent(form));
    }

    /// <summary>The A1111 error body's <c>detail</c>.</summary>
    public static async Task<string?> DetailAsync(this HttpResponseMessage response)
    {
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return json.RootElement.GetProperty("detail").GetString();
    }

    public static async Task<JsonElement> JsonAsync(this HttpResponseMessage response) =>
        await response.Content.ReadFromJsonAsync<JsonElement>();

    [GeneratedRegex("<input type=\"hidden\" name=\"(?<name>[^\"]+)\" value=\"(?<value>[^\"]*)\"")]
    private static partial Regex HiddenField();
}
