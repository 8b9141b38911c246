using System.Buffers.Binary;
using System.Runtime.InteropServices;
using SdAppliance.Diffusion.Prompts;
using SdAppliance.Imaging;
using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

/// <summary>
/// Files in a dataset folder that hung, exhausted or stopped a run in the hostile campaign: FIFOs and devices
/// named like images or captions, huge captions, captions that do not parse, weights that overflow, captions of
/// thousands of BREAKs, decompression bombs. Each is skipped at scan time with its reason, and the good image
/// beside it is still trained on.
/// </summary>
public sealed class HostileDatasetTests : IDisposable
{
    private readonly DataTestFolder folder = new();

    public void Dispose() => folder.Dispose();

    [DllImport("libc", EntryPoint = "mkfifo", SetLastError = true)]
    private static extern int MkFifo(string path, uint mode);

    private string Fifo(string relative)
    {
        var path = folder.PathOf(relative);
        Assert.Equal(0, MkFifo(path, Convert.ToUInt32("644", 8)));
        return path;
    }

    // The good image next to the hostile file: the scan must keep it.
    private TrainingDataset Scan()
    {
        folder.Image("good.png", 64, 64);
        folder.Text("good.txt", "a good caption");
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "fallback" });
        Assert.Equal([folder.PathOf("good.png")], dataset.Items.Select(i => i.Path));
        return dataset;
    }

    private void AssertSkipped(string image, string reason)
    {
        var skipped = Assert.Single(Scan().Skipped);
        Assert.Equal(folder.PathOf(image), skipped.Path);
        Assert.Equal(reason, skipped.Reason);
    }

    [Fact]
    public void FifoNamedLikeAnImageIsSkippedWithoutOpeningIt()
    {
        Fifo("pipe.png");
        AssertSkipped("pipe.png", "is a FIFO (named pipe), not a regular file");
    }

    [Fact]
    public void FifoNamedLikeACaptionIsSkippedWithoutOpeningIt()
    {
        folder.Image("a.png", 64, 64);
        Fifo("a.txt");
        AssertSkipped("a.png", "its caption file 'a.txt' is a FIFO (named pipe), not a regular file");
    }

    [Fact]
    public void LinkToDevZeroAsACaptionIsSkipped()
    {
        folder.Image("a.png", 64, 64);
        File.CreateSymbolicLink(folder.PathOf("a.txt"), "/dev/zero");
        AssertSkipped("a.png", "its caption file 'a.txt' is a character device (such as /dev/zero), not a regular file");
    }

    [Fact]
    public void LinkToDevZeroAsAnImageIsSkipped()
    {
        File.CreateSymbolicLink(folder.PathOf("zero.jpg"), "/dev/zero");
        AssertSkipped("zero.jpg", "is a character device (such as /dev/zero), not a regular file");
    }

    [Fact]
    public void LinkToARegularCaptionIsRead()
    {
        folder.Image("a.png", 64, 64);
        var target = folder.Text("captions/real.txt", "linked caption");
        File.CreateSymbolicLink(folder.PathOf("a.txt"), target);
        folder.Image("good.png", 64, 64);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "fallback" });
        Assert.Equal("linked caption", dataset.Items.Single(i => i.Path == folder.PathOf("a.png")).Caption);
    }

    [Fact]
    public void CaptionOverTheCapIsSkippedWithoutReadingIt()
    {
        folder.Image("a.png", 64, 64);
        folder.Text("a.txt", new string('x', CaptionCheck.MaxCaptionBytes + 1));
        AssertSkipped("a.png", "its caption file 'a.txt' is 65,537 bytes, over the 65,536 a caption may have");
    }

    [Fact]
    public void CaptionOfBreaksOverTheCapIsSkipped()
    {
        // The campaign's 160 KB caption of BREAKs: refused by its size before it is read.
        folder.Image("a.png", 64, 64);
        folder.Text("a.txt", string.Concat(Enumerable.Repeat("BREAK ", 160_000 / 6)));
        AssertSkipped("a.png", "its caption file 'a.txt' is 159,996 bytes, over the 65,536 a caption may have");
    }

    public static TheoryData<string, string> BadCaptions() => new()
    {
        { "(red:1.2.3)", "its caption does not parse: The prompt weight ':1.2.3)' is not a number, in: (red:1.2.3)" },
        { "a cat, (blue:..), sitting", "its caption does not parse: The prompt weight ':..)' is not a number, in: a cat, (blue:..), sitting" },
        // 1.1^7500 overflows a double.
        { new string('(', 7500) + "red", "its caption's weights multiply to infinity for 'red' (brackets nested too deep, or a weight too large)" },
        { "(red:" + new string('9', 400) + ")", "its caption's weights multiply to infinity for 'red' (brackets nested too deep, or a weight too large)" },
        { "((red:" + new string('9', 200) + "):" + new string('9', 200) + ")", "its caption's weights multiply to infinity for 'red' (brackets nested too deep, or a weight too large)" },
        { string.Join(" BREAK ", Enumerable.Repeat("a", 40)), "its caption may need 40 chunks of 75 tokens (counting each BREAK as a new chunk), more than the 32 a prompt may have" },
        // 1,800 words of 9 letters: 16,200 bytes of text, at least 295 chunks of 55 tokens.
        { string.Join(" ", Enumerable.Repeat("abcdefghi", 1800)), "its caption may need 295 chunks of 75 tokens (counting each BREAK as a new chunk), more than the 32 a prompt may have" },
    };

    [Theory]
    [MemberData(nameof(BadCaptions))]
    public void CaptionThatWouldStopTheRunIsSkipped(string caption, string reason)
    {
        folder.Image("a.png", 64, 64);
        folder.Text("a.txt", caption);
        AssertSkipped("a.png", reason);
    }

    [Fact]
    public void BadFallbackPromptIsSkippedToo()
    {
        // No caption file: the kohya folder name is the caption, and it does not parse.
        folder.Image("2_(red:1.2.3)/a.png", 64, 64);
        var skipped = Assert.Single(Scan().Skipped);
        Assert.Equal(folder.PathOf("2_(red:1.2.3)/a.png"), skipped.Path);
        Assert.StartsWith("its caption does not parse:", skipped.Reason);
    }

    [Fact]
    public void LongCaptionsWithinTheCapAreKept()
    {
        // 31 BREAKs make 32 chunks, the most a prompt may have; a 1,500-byte tag list is about 6 chunks.
        folder.Image("a.png", 64, 64);
        folder.Text("a.txt", string.Join(" BREAK ", Enumerable.Repeat("a", PromptChunker.MaxChunks)));
        folder.Image("b.png", 64, 64);
        folder.Text("b.txt", string.Join(", ", Enumerable.Repeat("long hair", 150)));
        folder.Image("good.png", 64, 64);
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, InstancePrompt = "fallback" });
        Assert.Equal(3, dataset.Items.Count);
        Assert.Empty(dataset.Skipped);
    }

    [Fact]
    public void DecompressionBombIsSkippedFromItsHeader()
    {
        // An 8x8 PNG whose IHDR claims 100,000 x 100,000 pixels (every codec's header bombs: Imaging's HostileImageTests).
        var png = ImageCodec.Encode(DataTestFolder.Pattern(8, 8));
        BinaryPrimitives.WriteInt32BigEndian(png.AsSpan(16), 100_000);
        BinaryPrimitives.WriteInt32BigEndian(png.AsSpan(20), 100_000);
        folder.Bytes("bomb.png", png);
        var before = GC.GetAllocatedBytesForCurrentThread();
        var skipped = Assert.Single(Scan().Skipped);
        // Two 64x64 test images are encoded and read here; the bomb's pixels would need 30 GB.
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 32 << 20, "the bomb was decoded");
        Assert.Equal(folder.PathOf("bomb.png"), skipped.Path);
        Assert.Equal("100000x100000 is over the decoder's limit of 67,108,864 pixels", skipped.Reason);
    }
}
