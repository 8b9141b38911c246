using System.IO.Compression;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Formats.Pickle;
using static SdAppliance.Formats.Tests.PickleBytes;

namespace SdAppliance.Formats.Tests;

/// <summary>
/// Pickles that would run code under Python's pickle are refused, naming the global, and nothing
/// they ask for happens: every command here would create a file, and none may exist afterwards.
/// </summary>
public sealed class PickleHostileTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    // REDUCE(global, ("touch <marker>",)): what pickle.dumps of an object whose __reduce__ returns (os.system, (cmd,)) looks like.
    private static byte[] CallWithCommand(string module, string name, string marker) =>
        Protocol2("}", Unicode("state_dict"), Global(module, name), Unicode($"touch '{marker}'"), 0x85, "R", "s");

    [Fact]
    public void HostileFixtureIsRefusedNamingPosixSystem()
    {
        // The fixture's command is "echo pwned > sdappliance-hostile-pickle-ran", relative to the working folder.
        const string marker = "sdappliance-hostile-pickle-ran";
        File.Delete(marker);
        var path = Path.Combine(AppContext.BaseDirectory, "Fixtures", "pickle", "hostile.ckpt");

        var e = Assert.Throws<UnsafePickleException>(() => TorchCheckpoint.Open(path).Dispose());

        Assert.Equal("posix.system", e.Global);
        Assert.Equal(path, e.FilePath);
        Assert.Contains("'posix.system'", e.Message);
        Assert.Contains(path, e.Message);
        Assert.False(File.Exists(marker));
    }

    public static TheoryData<string, string> DangerousGlobals() => new()
    {
        { "posix", "system" },
        { "os", "system" },
        { "nt", "system" },
        { "builtins", "eval" },
        { "__builtin__", "exec" },
        { "builtins", "getattr" },
        { "subprocess", "Popen" },
        { "subprocess", "check_output" },
        { "torch", "load" },
        { "torch.serialization", "load" },
        { "torch._utils", "_rebuild_device_tensor_from_numpy" },
        { "numpy", "load" },
        { "collections", "defaultdict" },
        { "pytorch_lightning.callbacks.model_checkpoint", "os" },
        { "webbrowser", "open" },
    };

    [Theory]
    [MemberData(nameof(DangerousGlobals))]
    public void GlobalOutsideTheAllowListIsRefusedBeforeItCouldRun(string module, string name)
    {
        var marker = _temp.File("ran");
        var e = Assert.Throws<UnsafePickleException>(() => Unpickler.Load(CallWithCommand(module, name, marker)));
        Assert.Equal($"{module}.{name}", e.Global);
        Assert.Contains($"'{module}.{name}'", e.Message);
        Assert.False(File.Exists(marker));
        Assert.False(PickleGlobals.IsAllowed(module, name));
    }

    [Fact]
    public void StackGlobalAndInstAreCheckedToo()
    {
        var marker = _temp.File("ran");
        var stackGlobal = Of(0x80, 4, ShortUnicode("posix"), ShortUnicode("system"), 0x93, ShortUnicode($"touch '{marker}'"), 0x85, "R.");
        Assert.Equal("posix.system", Assert.Throws<UnsafePickleException>(() => Unpickler.Load(stackGlobal)).Global);
        var inst = Of("(", $"S'touch {marker}'\n", "ios\nsystem\n", ".");
        Assert.Equal("os.system", Assert.Throws<UnsafePickleException>(() => Unpickler.Load(inst)).Global);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void GlobalIsRefusedEvenWhenNeverCalled()
    {
        var e = Assert.Throws<UnsafePickleException>(() => Unpickler.Load(Protocol2(Global("subprocess", "Popen"), "0", "N")));
        Assert.Equal("subprocess.Popen", e.Global);
    }

    [Fact]
    public void HostileZipCheckpointNamesTheFileAndTheGlobal()
    {
        var marker = _temp.File("ran");
        var path = _temp.File("model.ckpt");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            using (var data = zip.CreateEntry("archive/data.pkl").Open())
                data.Write(CallWithCommand("posix", "system", marker));
            using (var version = zip.CreateEntry("archive/version").Open())
                version.Write("3\n"u8);
        }
        var e = Assert.Throws<UnsafePickleException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Equal("posix.system", e.Global);
        Assert.Equal(path, e.FilePath);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void HostileLegacyCheckpointIsRefused()
    {
        // Magic number, protocol version and system info are fine; the main pickle is not.
        var marker = _temp.File("ran");
        var path = _temp.File("model.pt");
        File.WriteAllBytes(path, Of(
            Protocol2(0x8a, 10, new byte[] { 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19 }),
            Protocol2("M", 0xe9, 0x03),
            Protocol2("}"),
            CallWithCommand("builtins", "exec", marker)));
        var e = Assert.Throws<UnsafePickleException>(() => TorchCheckpoint.Open(path).Dispose());
        Assert.Equal("builtins.exec", e.Global);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void AllowListHasOnlyCheckpointGlobals()
    {
        Assert.True(PickleGlobals.IsAllowed("collections", "OrderedDict"));
        Assert.True(PickleGlobals.IsAllowed("torch._utils", "_rebuild_tensor_v2"));
        Assert.True(PickleGlobals.IsAllowed("torch", "HalfStorage"));
        Assert.True(PickleGlobals.IsAllowed("numpy.core.multiarray", "scalar"));
        Assert.True(PickleGlobals.IsAllowed("__builtin__", "set"));
        // Nothing from a module that can reach the operating system or evaluate code.
        string[] forbidden = ["os.", "posix.", "nt.", "subprocess.", "sys.", "builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__", "importlib.", "pickle."];
        Assert.DoesNotContain(PickleGlobals.Allowed, g => forbidden.Any(f => g.StartsWith(f, StringComparison.Ordinal)));
    }
}
