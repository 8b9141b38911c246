using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using SdAppliance.Formats;
using SdAppliance.Formats.Checkpoints;
using SdAppliance.Models.Conversion;

namespace SdAppliance.Models.Tests;

/// <summary>
/// What <c>sdapp convert</c> once accepted: an input with no tensors (it wrote a file of none), tensors whose
/// shapes contradict the model's configs (copied as they were), and a stride-0 checkpoint that claims
/// gigabytes. Each is refused naming the input, and nothing is written.
/// </summary>
public sealed class HostileConversionTests : IDisposable
{
    private static readonly string TinyFolder = Path.Combine(AppContext.BaseDirectory, "Fixtures", "tiny-sd");
    private readonly string temp = Directory.CreateTempSubdirectory("sdapp-convert-hostile-").FullName;

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Theory]
    [InlineData("out.safetensors")]
    [InlineData("out.ckpt")]
    public void InputWithoutTensorsIsRefused(string output)
    {
        var input = Path.Combine(temp, "empty.safetensors");
        SafetensorsFile.Write(input, []);
        var e = Assert.Throws<UserInputException>(() => ModelConverter.Convert(input, Path.Combine(temp, output)));
        Assert.Equal(input, e.Subject);
        Assert.Equal("holds no tensors, so there is nothing to convert", e.Problem);
        Assert.False(File.Exists(Path.Combine(temp, output)));
    }

    [Theory]
    [InlineData("out.safetensors")]
    [InlineData("out-folder")]
    public void FolderWithAWrongShapedTensorIsRefused(string output)
    {
        // The tiny model with its UNet conv_in.weight [32, 4, 3, 3] stored as [32, 36]: same bytes, another shape.
        var folder = CopyOfTinyModel();
        var weights = Path.Combine(folder, "unet", "diffusion_pytorch_model.safetensors");
        List<SafetensorsTensor> tensors;
        using (var file = SafetensorsFile.Open(weights))
            tensors = [.. file.Tensors.Select(t => new SafetensorsTensor(t.Name, t.DType, t.Name == "conv_in.weight" ? [32, 36] : [.. t.Shape], file.ReadBytes(t)))];
        SafetensorsFile.Write(weights, tensors);

        var e = Assert.Throws<UserInputException>(() => ModelConverter.Convert(folder, Path.Combine(temp, output)));
        Assert.Equal(folder, e.Subject);
        Assert.Equal($"1 tensor(s) do not fit the architecture of '{folder}': unet conv_in.weight is [32, 36] in the file, [32, 4, 3, 3] in the config", e.Problem);
        Assert.False(File.Exists(Path.Combine(temp, output)) || Directory.Exists(Path.Combine(temp, output)));
    }

    [Fact]
    public void TheTinyModelItselfFitsItsConfigs()
    {
        var result = ModelConverter.Convert(TinyFolder, Path.Combine(temp, "tiny.safetensors"));
        Assert.Equal(600, result.TensorCount);
    }

    [Fact]
    public void StrideZeroCheckpointIsRefusedBeforeItIsRead()
    {
        // {"state_dict": {"w": a 4-byte storage viewed as [1 << 30] with stride 0}}: 4 GB when read.
        var input = Path.Combine(temp, "expanded.ckpt");
        using (var zip = ZipFile.Open(input, ZipArchiveMode.Create))
        {
            using (var pickle = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open())
                pickle.Write(ExpandedTensorPickle());
            using (var storage = zip.CreateEntry("archive/data/0", CompressionLevel.NoCompression).Open())
                storage.Write(new byte[4]);
        }
        var e = Assert.Throws<CheckpointFormatException>(() => ModelConverter.Convert(input, Path.Combine(temp, "out.safetensors")));
        Assert.Equal(input, e.Subject);
        Assert.Contains("the view (size [1073741824], stride [0]) repeats elements", e.Problem);
        Assert.False(File.Exists(Path.Combine(temp, "out.safetensors")));
    }

    private static string CopyOfTinyModel()
    {
        var folder = Path.Combine(Directory.CreateTempSubdirectory("sdapp-tiny-copy-").FullName, "model");
        foreach (var file in Directory.GetFiles(TinyFolder, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(folder, Path.GetRelativePath(TinyFolder, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        return folder;
    }

    // Protocol 2: {"state_dict": {"w": _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 1), 0, (1 << 30,), (0,), False, {})}}
    private static byte[] ExpandedTensorPickle()
    {
        var bytes = new List<byte> { 0x80, 2, (byte)'}' };
        void Text(string s)
        {
            var utf8 = Encoding.UTF8.GetBytes(s);
            bytes.Add((byte)'X');
            bytes.AddRange(BitConverter.GetBytes(utf8.Length));
            bytes.AddRange(utf8);
        }
        void Int(int value)
        {
            bytes.Add((byte)'J');
            var b = new byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(b, value);
            bytes.AddRange(b);
        }
        void Op(string ops) => bytes.AddRange(Encoding.ASCII.GetBytes(ops));
        Text("state_dict");
        Op("}");
        Text("w");
        Op("ctorch._utils\n_rebuild_tensor_v2\n(");
        Op("(");
        Text("storage");
        Op("ctorch\nFloatStorage\n");
        Text("0");
        Text("cpu");
        Int(1);
        Op("tQ");
        Int(0);
        Op("(");
        Int(1 << 30);
        Op("t(");
        Int(0);
        Op("t");
        bytes.Add(0x89);
        Op("}tRss.");
        return [.. bytes];
    }
}
