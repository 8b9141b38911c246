using System.Security.Cryptography;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Loading;
using SdAppliance.Training.Data;
using SdAppliance.Training.Exports;
using SdAppliance.Training.Networks;
using static SdAppliance.Training.Tests.LoraTestSupport;

namespace SdAppliance.Training.Tests;

/// <summary>kohya's minimum <c>ss_*</c> metadata (FORMATS §4.2).</summary>
public sealed class LoraMetadataTests
{
    [Theory]
    [InlineData(ModelFamily.V1, false, "False", "sd_v1")]
    [InlineData(ModelFamily.V2, false, "True", "sd_v2")]
    [InlineData(ModelFamily.V2, true, "True", "sd_v2_v")]
    [InlineData(ModelFamily.XlBase, false, "False", "sdxl_base_v1-0")]
    public void MinimumKeysAreKohyasStrings(ModelFamily family, bool v, string v2, string version)
    {
        var metadata = KohyaLoraExport.MinimumMetadata(family, v, new LoraNetworkOptions(NetworkDim: 16, NetworkAlpha: 8));
        Assert.Equal(v2, metadata["ss_v2"]);
        Assert.Equal(version, metadata["ss_base_model_version"]);
        Assert.Equal("networks.lora", metadata["ss_network_module"]);
        Assert.Equal("16", metadata["ss_network_dim"]);
        Assert.Equal("8.0", metadata["ss_network_alpha"]);  // argparse gives a float; str(8.0)
        // kohya writes ss_network_args only when --network_args were given.
        Assert.False(metadata.ContainsKey("ss_network_args"));
        Assert.False(metadata.ContainsKey("ss_network_dropout"));

        var locon = KohyaLoraExport.MinimumMetadata(family, v, new LoraNetworkOptions(NetworkAlpha: 0.5, Dropout: 0.1, ConvDim: 4));
        Assert.Equal("{\"conv_dim\": \"4\", \"conv_alpha\": \"1\"}", locon["ss_network_args"]);
        Assert.Equal("0.5", locon["ss_network_alpha"]);
        Assert.Equal("0.1", locon["ss_network_dropout"]);
    }

    [Fact]
    public void TrainingKeysCarryTheRunAndTheModelFileHashesAsKohyaWritesThem()
    {
        var file = Fixture("tiny-sd.ldm.safetensors");
        using var model = ModelLoader.Load(file, new ModelLoadOptions(ConfigDirectory: TinySd));
        var config = new TrainingConfig { Model = file, TrainBatchSize = 2, GradientAccumulationSteps = 3 };
        var session = new KohyaLoraExport.KohyaSession(123456789, DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_250));
        var m = KohyaLoraExport.Metadata(model, config, new LoraNetworkOptions(), "out", 10, session);

        Assert.Equal("123456789", m["ss_session_id"]);
        Assert.Equal("1700000000.25", m["ss_training_started_at"]);  // str(time.time())
        Assert.Equal("tiny-sd.ldm.safetensors", m["ss_sd_model_name"]);  // kohya: os.path.basename of a model file
        var bytes = File.ReadAllBytes(file);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(bytes)), m["ss_new_sd_model_hash"]);
        // train_util.model_hash: 64 KiB at 0x100000 (what of it the file has), 8 hex digits.
        var window = bytes.AsSpan(Math.Min(0x100000, bytes.Length), Math.Clamp(bytes.Length - 0x100000, 0, 0x10000));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(window))[..8], m["ss_sd_model_hash"]);
        Assert.Equal("6", m["ss_total_batch_size"]);  // batch × accumulation × processes (1)
        Assert.Equal("True", m["ss_cache_latents"]);
        Assert.Equal("None", m["ss_network_dropout"]);  // str(None): no --network_dropout
        Assert.Equal("None", m["ss_training_comment"]);
        Assert.Equal("10", m["ss_steps"]);
        // The loss options at kohya's defaults: str() of each argparse value.
        Assert.Equal(("None", "0.3", "False", "None"), (m["ss_multires_noise_iterations"], m["ss_multires_noise_discount"], m["ss_zero_terminal_snr"], m["ss_ip_noise_gamma"]));
        Assert.Equal(("l2", "snr", "1.0", "0.1"), (m["ss_loss_type"], m["ss_huber_schedule"], m["ss_huber_scale"], m["ss_huber_c"]));
        var huber = KohyaLoraExport.Metadata(model, config with { LossType = "huber", HuberC = 0.2, IpNoiseGamma = 0.1, MultiresNoiseIterations = 6, ZeroTerminalSnr = true },
            new LoraNetworkOptions(), "out", 10, session);
        Assert.Equal(("huber", "0.2", "0.1", "6", "True"), (huber["ss_loss_type"], huber["ss_huber_c"], huber["ss_ip_noise_gamma"], huber["ss_multires_noise_iterations"], huber["ss_zero_terminal_snr"]));
    }

    [Fact]
    public void DatasetKeysAreKohyasJsonKeyedByFolderName()
    {
        using var folder = new DataTestFolder();
        folder.Image("3_cube/a.png", 64, 64);
        folder.Text("3_cube/a.txt", "Red Cube, studio light");
        folder.Image("3_cube/b.png", 64, 64);
        folder.Text("3_cube/b.txt", "red cube");
        var dataset = TrainingDataset.Scan(new DatasetOptions { DataDir = folder.Root, Resolution = 64 });
        var config = new TrainingConfig { TrainBatchSize = 2, MaxTrainSteps = 10 };

        var m = KohyaLoraExport.DatasetMetadata(dataset, config, epoch: 2);
        Assert.Equal("6", m["ss_num_train_images"]);  // 2 images × 3 repeats
        Assert.Equal("0", m["ss_num_reg_images"]);
        Assert.Equal("3", m["ss_num_batches_per_epoch"]);
        Assert.Equal("4", m["ss_num_epochs"]);  // ceil(10 steps / 3 per epoch)
        Assert.Equal("2", m["ss_epoch"]);
        Assert.Equal("{\"3_cube\": {\"n_repeats\": 3, \"img_count\": 2}}", m["ss_dataset_dirs"]);
        Assert.Equal("{}", m["ss_reg_dataset_dirs"]);
        Assert.Equal("{\"3_cube\": {\"red cube\": 2, \"studio light\": 1}}", m["ss_tag_frequency"]);
        Assert.Equal("{\"buckets\": {\"0\": {\"resolution\": [64, 64], \"count\": 6}}}", m["ss_bucket_info"]);
    }
}
