namespace SdAppliance.Formats.Tests;

/// <summary>
/// The tensors of Fixtures/*_golden.safetensors as the fixture set's manifest.json lists them
/// (its "unet" and "vae" entries), transcribed so the test does not depend on the manifest's location.
/// </summary>
internal static class FixtureManifest
{
    public static Dictionary<string, Dictionary<string, (SafetensorsDType DType, long[] Shape)>> Tensors { get; } = new()
    {
        ["unet"] = new()
        {
            ["latents"] = (SafetensorsDType.F32, [2, 4, 8, 8]),
            ["timesteps"] = (SafetensorsDType.I64, [2]),
            ["encoder_hidden_states_random"] = (SafetensorsDType.F32, [2, 77, 32]),
            ["noise_pred_random"] = (SafetensorsDType.F32, [2, 4, 8, 8]),
            ["input_ids"] = (SafetensorsDType.I64, [2, 77]),
            ["encoder_hidden_states_text"] = (SafetensorsDType.F32, [2, 77, 32]),
            ["noise_pred_text"] = (SafetensorsDType.F32, [2, 4, 8, 8]),
            ["noise_pred_text_t500"] = (SafetensorsDType.F32, [2, 4, 8, 8]),
        },
        ["vae"] = new()
        {
            ["image"] = (SafetensorsDType.F32, [1, 3, 64, 64]),
            ["moments"] = (SafetensorsDType.F32, [1, 8, 8, 8]),
            ["mean"] = (SafetensorsDType.F32, [1, 4, 8, 8]),
            ["logvar"] = (SafetensorsDType.F32, [1, 4, 8, 8]),
            ["std"] = (SafetensorsDType.F32, [1, 4, 8, 8]),
            ["latent_sample"] = (SafetensorsDType.F32, [1, 4, 8, 8]),
            ["latents"] = (SafetensorsDType.F32, [1, 4, 8, 8]),
            ["decoded"] = (SafetensorsDType.F32, [1, 3, 64, 64]),
            ["decoded_from_scaled"] = (SafetensorsDType.F32, [1, 3, 64, 64]),
        },
    };
}
