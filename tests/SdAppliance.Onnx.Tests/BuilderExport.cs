using System.Text.Json.Nodes;
using SdAppliance.Models.Loading;
using SdAppliance.Onnx.Export;
using SdAppliance.Onnx.Graphs;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// A diffusers folder exported network by network with the builders, in the folder layout ONNX SD apps load, each
/// network's config beside its graph as optimum writes them (the pipeline exporter's job, done here by hand so the
/// backend's tests do not wait for it).
/// </summary>
public static class BuilderExport
{
    public static string Export(StableDiffusionModel model, string source, OnnxExportOptions options, string folder)
    {
        OnnxFile.Save(ClipTextEncoderOnnx.Build(model.TextEncoder, options), Path.Combine(folder, "text_encoder", "model.onnx"));
        OnnxFile.Save(UNetOnnx.Build(model.Unet, options), Path.Combine(folder, "unet", "model.onnx"));
        OnnxFile.Save(VaeOnnx.BuildDecoder(model.Vae, options), Path.Combine(folder, "vae_decoder", "model.onnx"));
        OnnxFile.Save(VaeOnnx.BuildEncoder(model.Vae, options), Path.Combine(folder, "vae_encoder", "model.onnx"));
        if (model.TextEncoder2 is { } second)
            OnnxFile.Save(ClipTextEncoderOnnx.Build(second, options), Path.Combine(folder, "text_encoder_2", "model.onnx"));
        string[] textEncoders = model.IsSdxl ? ["text_encoder", "text_encoder_2"] : ["text_encoder"];
        foreach (var (from, to) in textEncoders.Select(t => (t, t)).Concat([("unet", "unet"), ("vae", "vae_decoder"), ("vae", "vae_encoder")]))
            File.Copy(Path.Combine(source, from, "config.json"), Path.Combine(folder, to, "config.json"));
        foreach (var sub in model.IsSdxl ? ["tokenizer", "tokenizer_2", "scheduler"] : new[] { "tokenizer", "scheduler" })
        {
            Directory.CreateDirectory(Path.Combine(folder, sub));
            foreach (var file in Directory.EnumerateFiles(Path.Combine(source, sub))) File.Copy(file, Path.Combine(folder, sub, Path.GetFileName(file)));
        }
        File.WriteAllText(Path.Combine(folder, "model_index.json"), new JsonObject { ["_class_name"] = model.IsSdxl ? "ORTStableDiffusionXLPipeline" : "ORTStableDiffusionPipeline" }.ToJsonString());
        return folder;
    }
}
