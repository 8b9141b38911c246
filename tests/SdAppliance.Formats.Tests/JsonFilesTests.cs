using System.Text.Json;

namespace SdAppliance.Formats.Tests;

public sealed class JsonFilesTests : IDisposable
{
    private readonly TempFolder temp = new();

    public void Dispose() => temp.Dispose();

    private sealed record Config(int InChannels, string? Name);

    private string Write(string text)
    {
        var path = temp.File("config.json");
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void BrokenJsonIsRefusedNamingTheFileAndTheLine()
    {
        var path = Write("{\n  \"in_channels\": 4,\n  \"name\": \"x\"\n  \"extra\": 1\n}");

        var e = Assert.Throws<UserInputException>(() => JsonFiles.Read<Config>(path));
        Assert.Equal(path, e.Subject);
        Assert.StartsWith($"{path}: invalid JSON (", e.Message);
        Assert.Contains("line 4", e.Message);  // the missing comma is found where "extra" begins
        Assert.DoesNotContain("LineNumber", e.Message);
        Assert.IsType<JsonException>(e.InnerException, exactMatch: false);
    }

    [Fact]
    public void AValueOfTheWrongTypeNamesItsJsonPath()
    {
        var path = Write("{\n  \"in_channels\": \"four\"\n}");
        var options = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

        var e = Assert.Throws<UserInputException>(() => JsonFiles.Read<Config>(path, options));
        Assert.Contains("at $.in_channels, line 2", e.Message);
    }

    [Fact]
    public void AbsurdNestingIsRefusedNotAStackOverflow()
    {
        var path = Write(new string('[', 100_000) + new string(']', 100_000));

        var e = Assert.Throws<UserInputException>(() => JsonFiles.ReadObject(path));
        Assert.Equal(path, e.Subject);
        Assert.Contains("depth", e.Message);
    }

    [Fact]
    public void NullOrANonObjectIsRefused()
    {
        Assert.Contains("holds null", Assert.Throws<UserInputException>(() => JsonFiles.Read<Config>(Write("null"))).Message);
        Assert.Contains("one JSON object", Assert.Throws<UserInputException>(() => JsonFiles.ReadObject(Write("[1, 2]"))).Message);
    }
}
