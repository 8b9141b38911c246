using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;
using SdAppliance.Imaging;

namespace SdAppliance.Web.Tests.A1111;

/// <summary>
/// A1111's <c>sd_vae</c>: a VAE of the data folder's models/vae/ chosen through the options or per request
/// (<c>override_settings</c>), listed by <c>sd-vae</c>, named with its hash in the PNG info and the answer's info.
/// The VAE is the demo model's own with the decoder's last bias raised by 0.5, so each decoded value is 0.5 higher.
/// </summary>
public sealed class A1111VaeTests(A1111Appliance appliance) : IClassFixture<A1111Appliance>
{
    private const string VaeName = "brighter.safetensors";
    private const float BiasShift = 0.5f;

    /// <summary>The VAE file, written into models/vae/ once; its A1111 short hash (the first 10 hex of its SHA-256, lower case).</summary>
    private string PutVae()
    {
        var data = new DataFolder(appliance.Factory.DataFolder, DataFolder.FindApplicationRoot());
        var target = Path.Combine(data.Vaes, VaeName);
        if (!File.Exists(target))
        {
            using var own = TensorFile.Open(Path.Combine(data.DemoModel!, "vae", "diffusion_pytorch_model.safetensors"));
            var tensors = new List<SafetensorsTensor>();
            foreach (var (name, shape) in own.Shapes)
            {
                var bytes = own.ReadBytes(name);
                if (name == "decoder.conv_out.bias")
                {
                    var values = MemoryMarshal.Cast<byte, float>(bytes.AsSpan());
                    for (var i = 0; i < values.Length; i++) values[i] += BiasShift;
                }
                tensors.Add(new SafetensorsTensor(name, own.DTypeOf(name), shape, bytes));
            }
            Directory.CreateDirectory(data.Vaes);
            SafetensorsFile.Write(target, tensors);
        }
        return Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(target)))[..10];
    }

    [Fact]
    public async Task A_request_s_sd_vae_changes_the_picture_and_the_png_info_names_it()
    {
        var hash = PutVae();
        using var client = await appliance.ClientAsync();
        var listed = (await client.GetJsonAsync("/sdapi/v1/sd-vae")).AsArray();
        var entry = Assert.Single(listed, v => v!["model_name"]!.GetValue<string>() == VaeName)!;
        Assert.EndsWith(Path.Combine("models", "vae", VaeName), entry["filename"]!.GetValue<string>(), StringComparison.Ordinal);

        var plain = await client.GenerateAsync("/sdapi/v1/txt2img", A1111Calls.Small(42));
        var body = A1111Calls.Small(42);
        body["override_settings"] = new JsonObject { ["sd_vae"] = VaeName };
        var brighter = await client.GenerateAsync("/sdapi/v1/txt2img", body);

        // The decoded values are 0.5 higher, so each 8-bit level is 0.5 × 127.5 ≈ 64 higher where neither is clipped at
        // 255, and never lower (clipping and rounding are monotone); the blue background's red channel is near 0, so some
        // levels rise by 64 (63 or 64 after each image's rounding).
        var a = A1111Calls.Image(plain, 0).Pixels;
        var b = A1111Calls.Image(brighter, 0).Pixels;
        Assert.Equal(a.Length, b.Length);
        Assert.All(Enumerable.Range(0, a.Length), i => Assert.True(b[i] >= a[i], $"byte {i} darkened: {a[i]} -> {b[i]}"));
        Assert.InRange(Enumerable.Range(0, a.Length).Max(i => b[i] - a[i]), 63, 64);

        var text = A1111Calls.Image(brighter, 0).Text[ImageCodec.ParametersKey];
        Assert.Contains($", VAE hash: {hash}, VAE: {VaeName},", text, StringComparison.Ordinal);
        Assert.DoesNotContain("VAE", A1111Calls.Image(plain, 0).Text[ImageCodec.ParametersKey], StringComparison.Ordinal);
        var info = A1111Calls.Info(brighter);
        Assert.Equal(VaeName, info["sd_vae_name"]!.GetValue<string>());
        Assert.Equal(hash, info["sd_vae_hash"]!.GetValue<string>());
        Assert.Null(A1111Calls.Info(plain)["sd_vae_name"]);
    }

    [Fact]
    public async Task The_sd_vae_option_is_set_read_and_used_and_an_unknown_one_is_As_runtime_error()
    {
        var hash = PutVae();
        using var client = await appliance.ClientAsync();
        Assert.Equal("Automatic", (await client.GetJsonAsync("/sdapi/v1/options"))["sd_vae"]!.GetValue<string>());
        try
        {
            var (status, _) = await client.PostAsync("/sdapi/v1/options", new JsonObject { ["sd_vae"] = VaeName });
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal(VaeName, (await client.GetJsonAsync("/sdapi/v1/options"))["sd_vae"]!.GetValue<string>());
            var response = await client.GenerateAsync("/sdapi/v1/txt2img", A1111Calls.Small(7, steps: 2));
            Assert.Contains($"VAE hash: {hash}, VAE: {VaeName}", A1111Calls.Info(response)["infotexts"]![0]!.GetValue<string>(), StringComparison.Ordinal);

            // A request's own Automatic is the model's VAE whatever the option says.
            var own = A1111Calls.Small(7, steps: 2);
            own["override_settings"] = new JsonObject { ["sd_vae"] = "Automatic" };
            Assert.DoesNotContain("VAE", A1111Calls.Info(await client.GenerateAsync("/sdapi/v1/txt2img", own))["infotexts"]![0]!.GetValue<string>(), StringComparison.Ordinal);

            var (unknown, error) = await client.PostAsync("/sdapi/v1/options", new JsonObject { ["sd_vae"] = "nothing.pt" });
            Assert.Equal(HttpStatusCode.InternalServerError, unknown);
            Assert.Equal("RuntimeError", error!["error"]!.GetValue<string>());
            Assert.Contains("nothing.pt", error["errors"]!.GetValue<string>(), StringComparison.Ordinal);
            Assert.Equal(VaeName, (await client.GetJsonAsync("/sdapi/v1/options"))["sd_vae"]!.GetValue<string>());
        }
        finally
        {
            await client.PostAsync("/sdapi/v1/options", new JsonObject { ["sd_vae"] = "Automatic" });
        }
    }

    [Fact]
    public async Task A_request_naming_an_unknown_vae_is_refused_naming_the_field()
    {
        using var client = await appliance.ClientAsync();
        var body = A1111Calls.Small(7, steps: 2);
        body["override_settings"] = new JsonObject { ["sd_vae"] = "missing.safetensors" };
        var (status, answer) = await client.PostAsync("/sdapi/v1/txt2img", body);
        A1111Calls.AssertRefused(status, answer, "vae");
        Assert.Contains("missing.safetensors", answer!["errors"]!.GetValue<string>(), StringComparison.Ordinal);
    }
}
