using SdAppliance.Training.Data;

namespace SdAppliance.Training.Tests;

public sealed class CaptionTests
{
    private const string Tags = "sks dog, red collar,grass ,  sunny day, bokeh, photo";

    [Fact]
    public void ShuffleKeepsTheFirstTagsAndPermutesTheRest()
    {
        var seen = new HashSet<string>();
        for (ulong seed = 0; seed < 200; seed++)
        {
            var shuffled = Captions.Process(Tags, shuffle: true, keepTokens: 2, dropoutRate: 0, new DataRandom(seed));
            var tags = shuffled.Split(", ");
            Assert.Equal(["sks dog", "red collar"], tags[..2]);
            Assert.Equal(["bokeh", "grass", "photo", "sunny day"], tags[2..].Order(StringComparer.Ordinal));
            seen.Add(shuffled);
        }
        // 4! = 24 orders; 200 draws missing more than a few would mean the shuffle is broken.
        Assert.True(seen.Count >= 20, $"only {seen.Count} orders seen");
    }

    [Fact]
    public void WithoutShuffleTheCaptionIsUntouched()
    {
        Assert.Equal(Tags, Captions.Process(Tags, shuffle: false, keepTokens: 2, dropoutRate: 0, new DataRandom(1)));
        // With keep_tokens covering every tag nothing moves, but the tags are re-joined as kohya does.
        Assert.Equal("sks dog, red collar, grass, sunny day, bokeh, photo", Captions.Process(Tags, true, 10, 0, new DataRandom(1)));
    }

    [Fact]
    public void DropoutEmptiesWholeCaptionsAtItsRate()
    {
        const int draws = 4000;
        int dropped = Enumerable.Range(0, draws).Count(i => Captions.Process(Tags, true, 1, 0.25, new DataRandom((ulong)i)) == "");
        // Binomial(4000, 0.25): sd = sqrt(4000·0.25·0.75) = 27.4; 5 sd either side.
        Assert.InRange(dropped, 1000 - 137, 1000 + 137);
        Assert.All(Enumerable.Range(0, 50), i => Assert.Equal("", Captions.Process(Tags, false, 0, 1.0, new DataRandom((ulong)i))));
        Assert.All(Enumerable.Range(0, 50), i => Assert.NotEqual("", Captions.Process(Tags, false, 0, 0.0, new DataRandom((ulong)i))));
    }

    [Fact]
    public void CaptionFilesGiveTheirFirstLineTrimmed()
    {
        using var folder = new DataTestFolder();
        Assert.Equal("tag one, tag two", Captions.Read(folder.Text("a.txt", "\uFEFF tag one, tag two \r\nmore")));
        Assert.Equal("", Captions.Read(folder.Text("b.txt", "")));
        Assert.Equal("x", Captions.Read(folder.Text("c.txt", "x")));
        Assert.Equal(folder.PathOf("img.caption"), Captions.CaptionPath(folder.PathOf("img.png"), ".caption"));
    }

    [Fact]
    public void DatasetAugmentsInstanceCaptionsButNotClassPrompts()
    {
        using var folder = new DataTestFolder();
        folder.Image("data/a.png", 64, 64);
        folder.Text("data/a.txt", Tags);
        folder.Image("class/c.png", 64, 64);
        var dataset = TrainingDataset.Scan(new DatasetOptions
        {
            DataDir = folder.PathOf("data"), ClassDataDir = folder.PathOf("class"), ClassPrompt = "a dog, outdoors, photo",
            ShuffleCaption = true, KeepTokens = 1, CaptionDropoutRate = 0.3,
        });
        var examples = Enumerable.Range(0, 100).SelectMany(epoch => dataset.Batches(epoch, 1, seed: 9).Single()).ToList();
        var instance = examples.Where(e => !e.Item.IsPrior).Select(e => e.Caption).ToList();
        Assert.Contains("", instance);
        Assert.All(instance.Where(c => c != ""), c => Assert.StartsWith("sks dog, ", c));
        Assert.True(instance.Distinct().Count() > 5);
        Assert.All(examples.Where(e => e.Item.IsPrior), e => Assert.Equal("a dog, outdoors, photo", e.Caption));
    }
}
