using System.Buffers.Binary;
using System.Text;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using SdAppliance.Appliance.Catalog;
using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Persistence;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Tests.Storage;

/// <summary>The appliance's storage services as the host composes them, on a data folder and SQLite file of its own.</summary>
public sealed class StorageFixture : IDisposable
{
    public static readonly Caller Alice = new("alice", IsAdmin: false);
    public static readonly Caller Bob = new("bob", IsAdmin: false);
    public static readonly Caller Admin = new("admin", IsAdmin: true);

    private readonly ServiceProvider services;

    public StorageFixture(bool withApplicationRoot = false, Func<ApplianceOptions, ApplianceOptions>? configure = null)
    {
        Root = Directory.CreateTempSubdirectory("sdapp-storage-").FullName;
        var options = new ApplianceOptions
        {
            DataFolder = Path.Combine(Root, "data"),
            ApplicationRoot = withApplicationRoot ? DataFolder.FindApplicationRoot() : null,
            ImportRoots = [Directory.CreateDirectory(Path.Combine(Root, "import")).FullName],
        };
        services = new ServiceCollection().AddAppliance(configure?.Invoke(options) ?? options).BuildServiceProvider();
        using var db = services.GetRequiredService<IDbContextFactory<ApplianceDb>>().CreateDbContext();
        db.Database.Migrate();
    }

    /// <summary>The temporary folder holding the data folder, the import root and anything outside both.</summary>
    public string Root { get; }

    public string ImportRoot => Path.Combine(Root, "import");

    public DataFolder Data => services.GetRequiredService<DataFolder>();

    public PathGuard Guard => services.GetRequiredService<PathGuard>();

    public ModelCatalog Catalog => services.GetRequiredService<ModelCatalog>();

    public DatasetService Datasets => services.GetRequiredService<DatasetService>();

    public OutputService Outputs => services.GetRequiredService<OutputService>();

    public JobService Jobs => services.GetRequiredService<JobService>();

    /// <summary>The application's demo model folder (tests that use it make the fixture with the application root).</summary>
    public static string DemoModel => Path.Combine(DataFolder.FindApplicationRoot() ?? throw new InvalidOperationException("no application root above the tests"), "models", "demo");

    /// <summary>A kohya LoRA of two modules (rank 2) with <c>ss_*</c> metadata, written by Formats' writer.</summary>
    public static void WriteLora(string path, IReadOnlyDictionary<string, string>? metadata = null, string module = "lora_unet_down_blocks_0_attentions_0_proj_in")
    {
        var down = new byte[2 * 4 * 4];
        var up = new byte[4 * 2 * 4];
        for (var i = 0; i < down.Length; i += 4) BinaryPrimitives.WriteSingleLittleEndian(down.AsSpan(i), i / 64f);
        SafetensorsFile.Write(path,
        [
            new SafetensorsTensor($"{module}.lora_down.weight", SafetensorsDType.F32, [2, 4], down),
            new SafetensorsTensor($"{module}.lora_up.weight", SafetensorsDType.F32, [4, 2], up),
            new SafetensorsTensor($"{module}.alpha", SafetensorsDType.F32, [], BitConverter.GetBytes(2f)),
            new SafetensorsTensor("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", SafetensorsDType.F32, [2, 4], down),
            new SafetensorsTensor("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", SafetensorsDType.F32, [4, 2], up),
        ], metadata ?? new Dictionary<string, string> { ["ss_network_dim"] = "2", ["ss_network_alpha"] = "2", ["ss_v2"] = "False" });
    }

    /// <summary>The SHA-256 of a safetensors file's bytes after its header (what A1111 names a LoRA by), computed here from the bytes.</summary>
    public static string TensorDataSha256(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var header = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes.AsSpan(8 + header)));
    }

    public static string Sha256(string path) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(path)));

    public static MemoryStream Text(string text) => new(Encoding.UTF8.GetBytes(text));

    public void Dispose()
    {
        services.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(Root, recursive: true);
    }
}
