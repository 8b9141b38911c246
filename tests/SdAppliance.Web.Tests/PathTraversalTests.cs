using System.Net;
using System.Net.Http.Json;
using System.Text;
using Microsoft.AspNetCore.Hosting;

namespace SdAppliance.Web.Tests;

/// <summary>
/// Paths and names from requests, at the HTTP level: every way out of the data folder (or the import root) that a request
/// can spell is refused with 400 or 404, and nothing outside is read: a secret file next to the data folder never comes
/// back in an answer and never lands in the data folder.
/// </summary>
public sealed class PathTraversalTests : IDisposable
{
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-traversal-").FullName;
    private readonly string secret = "TOP-SECRET-" + Guid.NewGuid().ToString("N");
    private readonly TraversalFactory factory;

    public PathTraversalTests()
    {
        Directory.CreateDirectory(Path.Combine(temp, "outside"));
        Directory.CreateDirectory(Path.Combine(temp, "roots", "allowed"));
        foreach (var name in new[] { "secret.txt", "secret.png", "secret.safetensors" })
            File.WriteAllText(Path.Combine(temp, "outside", name), secret);
        factory = new TraversalFactory(Path.Combine(temp, "roots", "allowed"));
    }

    public void Dispose()
    {
        factory.Dispose();
        Directory.Delete(temp, recursive: true);
    }

    /// <summary>Relative escapes, encoded (once and twice), backslashes, absolute paths, look-alikes, NUL, hidden names.</summary>
    private static readonly string[] Escapes =
    [
        "..", "../", "../appliance.db", "../../outside/secret.txt", "./../appliance.db", "2026-01-01/../../appliance.db",
        "....//appliance.db", "..;/appliance.db", "%2e%2e/appliance.db", "%2e%2e%2fappliance.db", "..%2fappliance.db",
        "%252e%252e%252fappliance.db", "..\\appliance.db", "..%5cappliance.db", "/etc/passwd", "//etc/passwd",
        "C:\\Windows\\win.ini", "\uff0e\uff0e/appliance.db", "..\u2215appliance.db", "%c0%ae%c0%ae/appliance.db",
        "..\0/appliance.db", "~/.ssh/id_rsa", ".hidden", "leak/secret.png",
    ];

    [Fact]
    public async Task Output_downloads_refuse_every_escape()
    {
        using var client = factory.CreateSignedInClient(admin: true);  // an admin may see every output: only the guard stops them
        LinkOutOf(Path.Combine(factory.DataFolder, "outputs", "leak"));

        foreach (var path in InUrls(Escapes.Concat([Path.Combine(temp, "outside", "secret.png")])))
            await AssertRefusedAsync(await client.GetAsync("/api/v1/outputs/" + Encoded(path)), "output " + path);
        AssertNothingLeakedIn();
    }

    [Fact]
    public async Task Dataset_names_and_image_paths_refuse_every_escape()
    {
        using var client = factory.CreateSignedInClient(admin: true);
        Assert.Equal(HttpStatusCode.Created, (await client.PostAsJsonAsync("/api/v1/datasets", new { name = "cats" })).StatusCode);
        LinkOutOf(Path.Combine(factory.DataFolder, "datasets", "cats", "leak"));

        foreach (var name in Escapes)
            await AssertRefusedAsync(await client.PostAsJsonAsync("/api/v1/datasets", new { name }), "dataset create " + name);
        foreach (var name in InUrls(Escapes))
        {
            await AssertRefusedAsync(await client.GetAsync("/api/v1/datasets/" + Encoded(name) + "/images"), "dataset " + name);
            await AssertRefusedAsync(await client.GetAsync("/api/v1/datasets/cats/images/" + Encoded(name)), "dataset image " + name);
            await AssertRefusedAsync(await client.GetAsync("/api/v1/datasets/cats/captions/" + Encoded(name)), "caption " + name);
        }
        var names = (await client.GetFromJsonAsync<System.Text.Json.JsonElement[]>("/api/v1/datasets"))!.Select(d => d.GetProperty("name").GetString());
        Assert.Equal(["cats"], names);
        AssertNothingLeakedIn();
    }

    [Fact]
    public async Task Model_imports_by_server_path_refuse_everything_outside_the_import_root()
    {
        using var client = factory.CreateSignedInClient(admin: true);
        var allowed = Path.Combine(temp, "roots", "allowed");
        LinkOutOf(Path.Combine(allowed, "leak"));
        var before = await client.GetStringAsync("/api/v1/models");

        string[] outside =
        [
            .. Escapes, Path.Combine(temp, "outside", "secret.safetensors"), allowed + "/../../outside/secret.safetensors",
            allowed + "/leak/secret.safetensors", allowed + "/%2e%2e/%2e%2e/outside/secret.safetensors", allowed + "\\..\\..\\outside\\secret.safetensors",
            Path.Combine(factory.DataFolder, "appliance.db"),
        ];
        foreach (var path in outside)
            await AssertRefusedAsync(await client.PostAsJsonAsync("/api/v1/models/checkpoint/import", new { path }), "import " + path);
        Assert.Equal(before, await client.GetStringAsync("/api/v1/models"));
        AssertNothingLeakedIn();
    }

    /// <summary>
    /// The strings a URL can carry to a path parameter: a NUL is refused by the server's request parser before any endpoint
    /// (the test server throws at it), and a path of nothing but dot segments ("..") is resolved by the URL rules
    /// themselves (RFC 3986, in every client and in Kestrel) to the parent resource before routing; both are tried in
    /// bodies only.
    /// </summary>
    private static IEnumerable<string> InUrls(IEnumerable<string> paths) =>
        paths.Where(p => !p.Contains('\0', StringComparison.Ordinal) && !p.Split('/', StringSplitOptions.RemoveEmptyEntries).All(s => s is "." or ".."));

    /// <summary>Every byte percent-encoded, dots and slashes too, so that the client sends the string as it is instead of resolving its dot segments.</summary>
    private static string Encoded(string path) => string.Concat(Encoding.UTF8.GetBytes(path).Select(b => $"%{b:X2}"));

    /// <summary><paramref name="link"/>, a folder link to the folder that holds the secret: inside by name, outside in fact.</summary>
    private void LinkOutOf(string link)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(link)!);
        Directory.CreateSymbolicLink(link, Path.Combine(temp, "outside"));
    }

    private async Task AssertRefusedAsync(HttpResponseMessage response, string what)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode is HttpStatusCode.BadRequest or HttpStatusCode.NotFound, $"{what}: {(int)response.StatusCode} {body}");
        Assert.DoesNotContain(secret, body);
        Assert.DoesNotContain("SQLite format 3", body);
    }

    /// <summary>No file in the data folder holds the secret (links are not followed: they are the bait).</summary>
    private void AssertNothingLeakedIn()
    {
        var needle = Encoding.UTF8.GetBytes(secret);
        var files = new DirectoryInfo(factory.DataFolder).EnumerateFiles("*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint });
        foreach (var file in files)
            Assert.True(File.ReadAllBytes(file.FullName).AsSpan().IndexOf(needle) < 0, $"{file.FullName} holds the secret from outside");
    }

    private sealed class TraversalFactory(string importRoot) : ApplianceFactory
    {
        protected override void ConfigureWebHost(IWebHostBuilder builder)
        {
            base.ConfigureWebHost(builder);
            builder.UseSetting("import_roots:0", importRoot);
        }
    }
}
