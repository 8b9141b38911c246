using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Claims;
using System.Text.Json;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Formats;
using SdAppliance.Web.Tests.Security;

namespace SdAppliance.Web.Tests.Models;

/// <summary>The Models page's upload endpoint over HTTP, as its script uses it: the sign-in cookie, the antiforgery header, chunks with Content-Range.</summary>
public sealed class ModelUploadEndpointTests
{
    [Fact]
    public async Task A_model_uploaded_in_chunks_with_a_gap_and_a_repeat_is_imported_and_the_header_token_is_required()
    {
        await using var factory = new ApplianceFactory();
        var (client, token) = await SignInAsync(factory);
        var lora = LoraBytes();

        // Without the antiforgery header the cookie alone does not start an upload.
        using (var bare = await client.PostAsJsonAsync("/ui/uploads", new { kind = "lora", file_name = "ink.safetensors", size = lora.Length }))
            Assert.Equal(HttpStatusCode.BadRequest, bare.StatusCode);

        client.DefaultRequestHeaders.Add("X-CSRF-TOKEN", token);
        using var started = await client.PostAsJsonAsync("/ui/uploads", new { kind = "lora", file_name = "ink.safetensors", size = lora.Length });
        Assert.Equal(HttpStatusCode.Created, started.StatusCode);
        var id = (await started.JsonAsync()).GetProperty("id").GetString()!;

        Assert.Equal(HttpStatusCode.OK, (await PutAsync(client, id, lora, 0, 100)).StatusCode);
        // A chunk after a gap: 409 with the offset to continue from.
        using (var gap = await PutAsync(client, id, lora, 200, lora.Length))
        {
            Assert.Equal(HttpStatusCode.Conflict, gap.StatusCode);
            Assert.Equal(100, (await gap.JsonAsync()).GetProperty("received_bytes").GetInt64());
        }
        Assert.Equal(100, (await client.GetFromJsonAsync<JsonElement>($"/ui/uploads/{id}")).GetProperty("received_bytes").GetInt64());
        using var done = await PutAsync(client, id, lora, 50, lora.Length);
        Assert.Equal(HttpStatusCode.OK, done.StatusCode);
        var answer = await done.JsonAsync();
        Assert.True(answer.GetProperty("complete").GetBoolean());
        Assert.Equal("ink", answer.GetProperty("model").GetString());
        Assert.Equal(lora, await File.ReadAllBytesAsync(Path.Combine(factory.DataFolder, "models", "lora", "ink.safetensors")));

        // Too big for the storage limit: refused before any byte, naming the file and the limit.
        using var big = await client.PostAsJsonAsync("/ui/uploads", new { kind = "checkpoint", file_name = "huge.safetensors", size = 1L << 50 });
        Assert.Equal(HttpStatusCode.BadRequest, big.StatusCode);
        var problem = await big.JsonAsync();
        Assert.Equal("huge.safetensors", problem.GetProperty("field").GetString());
        Assert.Contains("MaxModelBytes", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);

        // Someone else's upload is not there for them.
        using var other = await factory.CreateSignedInClientAsync();
        Assert.Equal(HttpStatusCode.NotFound, (await other.GetAsync($"/ui/uploads/{id}")).StatusCode);
    }

    private static Task<HttpResponseMessage> PutAsync(HttpClient client, string id, byte[] file, int from, int to)
    {
        var content = new ByteArrayContent(file[from..to]);
        content.Headers.ContentRange = new ContentRangeHeaderValue(from, to - 1, file.Length);
        return client.PutAsync($"/ui/uploads/{id}", content);
    }

    /// <summary>
    /// A client signed in with the cookie (the login form), and the antiforgery request token the page would give its
    /// script: made by the server's own antiforgery service for the user and the client's antiforgery cookie.
    /// </summary>
    private static async Task<(HttpClient Client, string Token)> SignInAsync(ApplianceFactory factory)
    {
        await factory.CreateUserAsync(admin: true);
        var user = await factory.CreateUserAsync();
        var client = factory.Anonymous();
        using var loginPage = await client.GetAsync("/login");
        var cookie = loginPage.Headers.GetValues("Set-Cookie").Select(c => c.Split(';')[0]).Single(c => c.StartsWith("sdapp.antiforgery=", StringComparison.Ordinal));
        using var login = await client.PostFormAsync("/login", new Dictionary<string, string> { ["name"] = user.Name, ["password"] = user.Password });
        Assert.Equal(HttpStatusCode.Redirect, login.StatusCode);

        var http = new DefaultHttpContext { RequestServices = factory.Services };
        http.Request.Headers.Cookie = cookie;
        http.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, user.Id)], "Identity.Application"));
        var tokens = factory.Services.GetRequiredService<IAntiforgery>().GetTokens(http);
        return (client, tokens.RequestToken!);
    }

    private static byte[] LoraBytes()
    {
        var path = Path.Combine(Path.GetTempPath(), $"lora-{Guid.NewGuid():N}.safetensors");
        try
        {
            var down = new byte[2 * 4 * 4];
            var up = new byte[4 * 2 * 4];
            SafetensorsFile.Write(path,
            [
                new SafetensorsTensor("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", SafetensorsDType.F32, [2, 4], down),
                new SafetensorsTensor("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", SafetensorsDType.F32, [4, 2], up),
                new SafetensorsTensor("lora_unet_down_blocks_0_attentions_0_proj_in.alpha", SafetensorsDType.F32, [], BitConverter.GetBytes(2f)),
            ], new Dictionary<string, string> { ["ss_network_dim"] = "2", ["ss_network_alpha"] = "2" });
            return File.ReadAllBytes(path);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
