using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Tests.Storage;

public sealed class PathGuardTests : IDisposable
{
    private readonly StorageFixture storage = new();

    public static TheoryData<string> Traversals => new()
    {
        "..",
        "../appliance.db",
        "../../etc/passwd",
        "2026-12-02/../../appliance.db",
        "a/b/../../../x",
        "/etc/passwd",
        "//etc/passwd",
        "C:/Windows/win.ini",
        "..\\appliance.db",
        "2026-12-02\\..\\..\\appliance.db",
        "%2e%2e/appliance.db",
        "%2E%2E%2Fappliance.db",
        "..%2fappliance.db",
        "..%5cappliance.db",
        "%252e%252e%252fappliance.db",
        "%c0%ae%c0%ae/appliance.db",
        "a.png\0.txt",
        "..\0/x",
        "\u2025/appliance.db",           // two-dot leader
        "\uFF0E\uFF0E/appliance.db",     // fullwidth full stops
        "..\uFF0Fappliance.db",          // fullwidth solidus
        "..\u2215appliance.db",          // division slash
        "\uFE52\uFE52/appliance.db",     // small full stops
        ".. /appliance.db",
        ".hidden",
        "2026-12-02/.00001.png.0123.tmp",
        "",
        "   ",
        "a/\nb",
    };

    [Theory]
    [MemberData(nameof(Traversals))]
    public void A_path_that_could_leave_its_folder_is_refused_naming_the_field_and_the_value(string value)
    {
        var e = Assert.ThrowsAny<UserInputException>(() => storage.Guard.Resolve(value, storage.Data.Outputs, "path"));
        Assert.Equal("path", e.Subject);
        if (value.Trim().Length > 0) Assert.Contains("'", e.Message);
        Assert.NotNull(e.Fix);
    }

    [Theory]
    [InlineData("2026-12-02/00001-42.png")]
    [InlineData("a.png")]
    [InlineData("folder//file name with spaces.png")]
    [InlineData("ünïcödé/日本.png")]
    [InlineData("a..b.png")]
    public void A_plain_relative_path_resolves_inside_the_folder(string value)
    {
        var resolved = storage.Guard.Resolve(value, storage.Data.Outputs);
        Assert.StartsWith(storage.Data.Outputs + "/", resolved);
        Assert.Equal(Path.GetFullPath(Path.Combine(storage.Data.Outputs, value)), resolved);
    }

    [Fact]
    public void A_link_to_a_file_outside_is_refused_and_a_link_inside_is_followed()
    {
        var secret = Path.Combine(storage.Root, "secret.txt");
        File.WriteAllText(secret, "not for you");
        File.CreateSymbolicLink(Path.Combine(storage.Data.Outputs, "leak.png"), secret);
        var e = Assert.ThrowsAny<UserInputException>(() => storage.Guard.Resolve("leak.png", storage.Data.Outputs));
        Assert.Contains("through a link", e.Message);
        // The link itself (to delete it) is reachable when the caller says it will not read through it.
        Assert.Equal(Path.Combine(storage.Data.Outputs, "leak.png"), storage.Guard.Resolve("leak.png", storage.Data.Outputs, followLastLink: false));

        File.WriteAllText(Path.Combine(storage.Data.Outputs, "real.png"), "x");
        File.CreateSymbolicLink(Path.Combine(storage.Data.Outputs, "alias.png"), "real.png");
        Assert.Equal(Path.Combine(storage.Data.Outputs, "alias.png"), storage.Guard.Resolve("alias.png", storage.Data.Outputs));
    }

    [Fact]
    public void A_linked_folder_that_leaves_is_refused_even_for_files_that_do_not_exist_yet()
    {
        Directory.CreateSymbolicLink(Path.Combine(storage.Data.Outputs, "2026-12-02"), storage.Root);
        Assert.ThrowsAny<UserInputException>(() => storage.Guard.Resolve("2026-12-02/secret.txt", storage.Data.Outputs));
        Assert.ThrowsAny<UserInputException>(() => storage.Guard.Resolve("2026-12-02/new-file.png", storage.Data.Outputs));
        Assert.ThrowsAny<UserInputException>(() => storage.Guard.Resolve("2026-12-02/secret.txt", storage.Data.Outputs, followLastLink: false));
        // A chain of relative links that ends outside is followed to its end.
        Directory.CreateSymbolicLink(Path.Combine(storage.Data.Outputs, "hop"), "2026-12-02");
        Assert.ThrowsAny<UserInputException>(() => storage.Guard.Resolve("hop/data/appliance.db", storage.Data.Outputs));
    }

    [Fact]
    public void A_link_loop_is_refused_instead_of_hanging()
    {
        File.CreateSymbolicLink(Path.Combine(storage.Data.Outputs, "a"), "b");
        File.CreateSymbolicLink(Path.Combine(storage.Data.Outputs, "b"), "a");
        var e = Assert.ThrowsAny<UserInputException>(() => storage.Guard.Resolve("a/x.png", storage.Data.Outputs));
        Assert.Contains("links", e.Message);
    }

    [Fact]
    public void A_data_folder_that_is_itself_a_link_still_resolves_inside()
    {
        var linked = Path.Combine(storage.Root, "linked-data");
        Directory.CreateSymbolicLink(linked, storage.Data.FullPath);
        var guard = new PathGuard(new DataFolder(linked), new ApplianceOptions { DataFolder = linked });
        Assert.Equal(Path.Combine(linked, "outputs", "a.png"), guard.Resolve("a.png", Path.Combine(linked, "outputs")));
    }

    [Fact]
    public void An_import_path_must_be_a_full_path_inside_an_import_root()
    {
        var model = Path.Combine(storage.ImportRoot, "model.safetensors");
        File.WriteAllText(model, "x");
        Assert.Equal(model, storage.Guard.ResolveImport(model));

        File.WriteAllText(Path.Combine(storage.Root, "outside.safetensors"), "x");
        Assert.Contains("leads outside", Assert.ThrowsAny<UserInputException>(() => storage.Guard.ResolveImport(Path.Combine(storage.Root, "outside.safetensors"))).Message);
        Assert.Contains("'..'", Assert.ThrowsAny<UserInputException>(() => storage.Guard.ResolveImport(storage.ImportRoot + "/../outside.safetensors")).Message);
        Assert.Contains("full path", Assert.ThrowsAny<UserInputException>(() => storage.Guard.ResolveImport("model.safetensors")).Message);
        Assert.Contains("does not exist", Assert.ThrowsAny<UserInputException>(() => storage.Guard.ResolveImport(storage.ImportRoot + "/missing.safetensors")).Message);
        File.CreateSymbolicLink(Path.Combine(storage.ImportRoot, "escape.safetensors"), Path.Combine(storage.Root, "outside.safetensors"));
        Assert.Contains("through a link", Assert.ThrowsAny<UserInputException>(() => storage.Guard.ResolveImport(storage.ImportRoot + "/escape.safetensors")).Message);
    }

    [Fact]
    public void A_job_request_path_is_relative_to_the_data_folder_or_a_full_path_inside_it_or_an_import_root()
    {
        Assert.Equal(Path.Combine(storage.Data.Datasets, "cats"), storage.Guard.ResolveRequestPath("datasets/cats", "data"));
        Assert.Equal(Path.Combine(storage.Data.Datasets, "cats"), storage.Guard.ResolveRequestPath(Path.Combine(storage.Data.Datasets, "cats"), "data"));
        Assert.Equal(Path.Combine(storage.ImportRoot, "m.safetensors"), storage.Guard.ResolveRequestPath(Path.Combine(storage.ImportRoot, "m.safetensors"), "model"));
        foreach (var bad in (string[])["../x", "/etc/passwd", storage.Data.FullPath + "/../x", "datasets/%2e%2e/x", "datasets\\cats"])
            Assert.Equal("data", Assert.ThrowsAny<UserInputException>(() => storage.Guard.ResolveRequestPath(bad, "data")).Subject);
    }

    [Fact]
    public void Without_import_roots_nothing_is_imported_by_path()
    {
        var guard = new PathGuard(storage.Data, new ApplianceOptions { DataFolder = storage.Data.FullPath });
        var e = Assert.ThrowsAny<UserInputException>(() => guard.ResolveImport("/etc/passwd"));
        Assert.Contains("no import roots", e.Message);
    }

    [Theory]
    [InlineData("a/b")]
    [InlineData("..")]
    [InlineData(".")]
    [InlineData(".latents")]
    [InlineData("x\\y")]
    public void A_name_is_one_plain_name(string value) =>
        Assert.ThrowsAny<UserInputException>(() => PathGuard.Name(value, "name"));

    [Fact]
    public void A_path_outside_the_data_folder_is_a_programming_error_not_a_request_error() =>
        Assert.Throws<ArgumentException>(() => storage.Guard.Resolve("a.png", storage.Root));

    public void Dispose() => storage.Dispose();
}
