using SdAppliance.Formats;
using SdAppliance.Models.Tokenization;

namespace SdAppliance.Models.Tests;

public sealed class TokenizationLocatorTests : IDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("sdapp-locator-");

    public void Dispose() => _root.Delete(recursive: true);

    private string MakeFolder(params string[] parts)
    {
        var folder = Path.Combine([_root.FullName, .. parts]);
        Directory.CreateDirectory(folder);
        return folder;
    }

    private static void PutTokenizer(string folder)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "vocab.json"), "{}");
        File.WriteAllText(Path.Combine(folder, "merges.txt"), "#version: 0.2\n");
    }

    [Fact]
    public void DiffusersFolderUsesItsOwnTokenizerFolders()
    {
        var model = MakeFolder("sdxl");
        PutTokenizer(Path.Combine(model, "tokenizer"));
        PutTokenizer(Path.Combine(model, "tokenizer_2"));
        var shared = MakeFolder("data");
        PutTokenizer(Path.Combine(shared, "models", "tokenizers", "clip-vit-large-patch14"));

        Assert.Equal(Path.Combine(model, "tokenizer"), TokenizerLocator.Find(model, "clip-vit-large-patch14", [shared]));
        Assert.Equal(Path.Combine(model, "tokenizer_2"),
            TokenizerLocator.Find(model, "openclip-vit-bigg-14", [shared], subfolder: "tokenizer_2"));
    }

    [Fact]
    public void SingleFileFallsBackToTheSharedTokenizersInRootOrder()
    {
        var checkpoints = MakeFolder("checkpoints");
        var file = Path.Combine(checkpoints, "model.safetensors");
        File.WriteAllText(file, "");
        var repo = MakeFolder("repo");
        var data = MakeFolder("data");
        PutTokenizer(Path.Combine(data, "models", "tokenizers", "clip-vit-large-patch14"));

        Assert.Equal(Path.Combine(data, "models", "tokenizers", "clip-vit-large-patch14"),
            TokenizerLocator.Find(file, "clip-vit-large-patch14", [repo, data]));

        PutTokenizer(Path.Combine(repo, "models", "tokenizers", "clip-vit-large-patch14"));
        Assert.Equal(Path.Combine(repo, "models", "tokenizers", "clip-vit-large-patch14"),
            TokenizerLocator.Find(file, "clip-vit-large-patch14", [repo, data]));

        // A tokenizer/ beside the checkpoint comes first.
        PutTokenizer(Path.Combine(checkpoints, "tokenizer"));
        Assert.Equal(Path.Combine(checkpoints, "tokenizer"), TokenizerLocator.Find(file, "clip-vit-large-patch14", [repo, data]));
    }

    [Fact]
    public void MissingTokenizerMessageSaysWhichFilesGoWhere()
    {
        var file = Path.Combine(MakeFolder("checkpoints"), "model.safetensors");
        File.WriteAllText(file, "");
        var data = MakeFolder("data");
        var partial = Path.Combine(data, "models", "tokenizers", "clip-vit-large-patch14");
        Directory.CreateDirectory(partial);
        File.WriteAllText(Path.Combine(partial, "vocab.json"), "{}");

        var ex = Assert.Throws<UserInputException>(() => TokenizerLocator.Find(file, "clip-vit-large-patch14", [data]));
        Assert.Contains("vocab.json and merges.txt", ex.Message);
        Assert.Contains(Path.Combine(Path.GetDirectoryName(file)!, "tokenizer") + Path.DirectorySeparatorChar, ex.Message);
        Assert.Contains(partial + Path.DirectorySeparatorChar + " (exists, missing merges.txt)", ex.Message);
    }
}
