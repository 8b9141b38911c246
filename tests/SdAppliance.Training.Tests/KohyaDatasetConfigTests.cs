using SdAppliance.Training.Data;
using SdAppliance.Training.Kohya;

namespace SdAppliance.Training.Tests;

/// <summary>kohya sd-scripts' dataset config TOML ([general], [[datasets]], [[datasets.subsets]]) read into the run's dataset and settings.</summary>
public sealed class KohyaDatasetConfigTests
{
    [Fact]
    public void TheTomlReadsIntoTheSameItemsAsTheEquivalentKohyaFolders()
    {
        using var folder = new DataTestFolder();
        // The TOML's folders: images of a dog (one captioned), a cat folder, regularization images.
        folder.Image("dog/a.png", 64, 64);
        folder.Image("dog/b.png", 96, 64, shift: 3);
        folder.Text("dog/b.txt", "sks dog on grass");
        folder.Image("cat/c.png", 64, 64, shift: 5);
        folder.Image("reg/r1.png", 64, 64, shift: 7);
        folder.Image("reg/r2.png", 64, 64, shift: 9);
        var toml = folder.Text("dataset.toml", """
            [general]
            shuffle_caption = true
            caption_extension = ".txt"
            keep_tokens = 1

            [[datasets]]
            resolution = 64
            batch_size = 2

              [[datasets.subsets]]
              image_dir = "dog"
              class_tokens = "sks dog"
              num_repeats = 10

              [[datasets.subsets]]
              image_dir = "cat"
              class_tokens = "cat"
              num_repeats = 2

              [[datasets.subsets]]
              image_dir = "reg"
              class_tokens = "dog"
              is_reg = true
            """);
        // The same dataset as kohya's folders: N_name sub-folders of the train folder, the class folder beside it.
        folder.Image("train/10_sks dog/a.png", 64, 64);
        folder.Image("train/10_sks dog/b.png", 96, 64, shift: 3);
        folder.Text("train/10_sks dog/b.txt", "sks dog on grass");
        folder.Image("train/2_cat/c.png", 64, 64, shift: 5);
        folder.Image("class/r1.png", 64, 64, shift: 7);
        folder.Image("class/r2.png", 64, 64, shift: 9);

        var fromToml = TrainingDataset.Scan(DatasetOptions.Of(KohyaDatasetConfig.Apply(new TrainingConfig { DatasetConfig = toml })));
        var fromFolders = TrainingDataset.Scan(DatasetOptions.Of(new TrainingConfig
        {
            Data = folder.PathOf("train"), ClassData = folder.PathOf("class"), ClassPrompt = "dog", Resolution = 64,
        }));

        static object Shape(ImageItem i) => (Path.GetFileName(i.Path), i.Caption, i.Repeats, i.Width, i.Height, i.IsPrior, i.HasCaptionFile);
        Assert.Equal(
            [("a.png", "sks dog", 10, 64, 64, false, false), ("b.png", "sks dog on grass", 10, 96, 64, false, true), ("c.png", "cat", 2, 64, 64, false, false)],
            fromToml.Items.Select(i => ((string, string, int, int, int, bool, bool))Shape(i)));
        Assert.Equal(fromFolders.Items.Select(Shape), fromToml.Items.Select(Shape));
        Assert.Equal(fromFolders.PriorItems.Select(Shape), fromToml.PriorItems.Select(Shape));
        Assert.Equal(["dog", "dog"], fromToml.PriorItems.Select(i => i.Caption));
        // 10 + 10 + 2 examples per epoch, as kohya counts repeats; the same images, so the same contents.
        Assert.Equal(22, fromToml.ExamplesPerEpoch);
        for (int i = 0; i < fromToml.Items.Count; i++)
            Assert.Equal(File.ReadAllBytes(fromFolders.Items[i].Path), File.ReadAllBytes(fromToml.Items[i].Path));
    }

    [Fact]
    public void ValuesInheritFromGeneralToDatasetToSubsetAndSetTheRunsSettings()
    {
        using var folder = new DataTestFolder();
        folder.Image("a/x.png", 64, 64);
        var toml = folder.Text("d.toml", """
            [general]
            flip_aug = true
            random_crop = true
            caption_dropout_rate = 0.1
            enable_bucket = true
            color_aug = false
            bucket_reso_steps = 64

            [[datasets]]
            resolution = [768, 768]
            batch_size = 4
            min_bucket_reso = 320
            max_bucket_reso = 1536
            keep_tokens = 2

              [[datasets.subsets]]
              image_dir = "a"
              caption_extension = ".caption"
              num_repeats = 3
            """);
        // The run's own values are overridden by the file, as kohya's command line by its dataset config.
        var config = KohyaDatasetConfig.Apply(new TrainingConfig { DatasetConfig = toml, Resolution = 512, TrainBatchSize = 1, KeepTokens = 0 });
        Assert.Equal(768, config.Resolution);
        Assert.Equal(4, config.TrainBatchSize);
        Assert.True(config.EnableBucket);
        Assert.Equal(320, config.MinBucketReso);
        Assert.Equal(1536, config.MaxBucketReso);
        Assert.True(config.FlipAug);
        Assert.False(config.CenterCrop);  // random_crop
        Assert.Equal(0.1, config.CaptionDropoutRate);
        Assert.Equal(2, config.KeepTokens);
        Assert.Equal(".caption", config.CaptionExtension);
        // Unset: the run's own.
        Assert.False(config.ShuffleCaption);

        var read = KohyaDatasetConfig.Read(toml);
        Assert.Equal([(folder.PathOf("a"), (string?)null, 3)], read.Concepts.Select(c => (c.InstanceDataDir, c.InstancePrompt, c.Repeats)));
        Assert.Equal(["general.color_aug = false", "general.bucket_reso_steps = 64"], read.Ignored);
        (config with { Output = "run" }).Validate();
    }

    [Fact]
    public void EveryKeyThisTrainerDoesNotApplyIsNamedInOneRefusal()
    {
        using var folder = new DataTestFolder();
        var toml = folder.Text("d.toml", """
            [general]
            color_aug = true
            caption_prefix = "photo of"

            [[datasets]]
            batch_size = 2
            resolution = [512, 768]
            mystery = 1

              [[datasets.subsets]]
              image_dir = "a"
              flip_aug = true
              keep_tokens = "two"

              [[datasets.subsets]]
              image_dir = "b"
              flip_aug = false
              batch_size = 3

              [[datasets.subsets]]
              metadata_file = "meta.json"
            """);
        var error = Assert.Throws<DatasetException>(() => KohyaDatasetConfig.Read(toml));
        Assert.Equal("dataset_config", error.Subject);
        var problems = error.Problem[(error.Problem.IndexOf(": ", StringComparison.Ordinal) + 2)..].Split("; ");
        Assert.Equal(
        [
            "general.color_aug = true: not applied by this trainer (color augmentation is not supported): remove it or set kohya's default false",
            "general.caption_prefix = \"photo of\": not applied by this trainer (caption prefixes are not supported (put the words in the captions)): remove it",
            "datasets[0].mystery: not a key of kohya's dataset config this trainer knows",
            "datasets[0].resolution = [512, 768]: training sizes are square here (resolution is one side, enable_bucket trains other aspect ratios at that area)",
            "datasets[0].subsets[0].keep_tokens: must be a whole number, got \"two\"",
            "datasets[0].subsets[1].batch_size: a dataset key, which kohya takes it in [general] or [[datasets]], not in a subset",
            "datasets[0].subsets[1].flip_aug: false differs from datasets[0].subsets[0].flip_aug's true: this trainer applies one value to every dataset and subset (make them agree, or train them in separate runs)",
            "datasets[0].subsets[2].metadata_file = \"meta.json\": not applied by this trainer (kohya's fine-tuning metadata is not supported: give an image folder with caption files, or a metadata.jsonl folder): remove it",
            "datasets[0].subsets[2].image_dir: missing (every subset names its image folder)",
        ], problems);
    }

    [Fact]
    public void ADatasetConfigBesideADataFolderIsRefused()
    {
        var config = new TrainingConfig { DatasetConfig = "d.toml", Data = "images", Output = "run" };
        var error = Assert.Throws<TrainingConfigException>(config.Validate);
        Assert.StartsWith("dataset_config: the dataset config names the image folders; leave data, concepts and class_data out", error.Message);
        (config with { Data = null }).Validate();
    }
}
