using SdAppliance.Diffusion.Pipelines;
using SdAppliance.Imaging;
using SdAppliance.Models.Loading;
using SdAppliance.Torch;

namespace SdAppliance.Diffusion.Tests;

/// <summary>The preview a running generation shows: A1111's cheap approximation for large latents, the VAE for small ones.</summary>
public sealed class LatentPreviewTests : IClassFixture<PipelineTests.TinyModel>
{
    private readonly StableDiffusionModel model;

    public LatentPreviewTests(PipelineTests.TinyModel tiny) => model = tiny.Model;

    [Theory]
    [InlineData(false, 165, 154, 154)]
    [InlineData(true, 171, 181, 184)]
    public void The_cheap_approximation_maps_each_latent_pixel_through_a1111s_matrix(bool sdxl, byte r, byte g, byte b)
    {
        // Channel 0 at 1, the others 0: the matrix's first row, from [-1, 1] to bytes.
        var values = new float[2 * 4 * 3 * 5];
        for (var i = 0; i < 15; i++) values[i] = 1;
        using var latents = torch.Tensor(values, 2, 4, 3, 5);
        var image = LatentPreview.Approximate(latents, sdxl);
        Assert.Equal((5, 3), (image.Width, image.Height));
        Assert.Equal([r, g, b], image.Pixels[..3]);
        Assert.All(Enumerable.Range(0, 15), p => Assert.Equal([r, g, b], image.Pixels[(3 * p)..(3 * p + 3)]));
    }

    [Fact]
    public void A_generation_offers_a_preview_at_each_step_and_the_last_is_the_picture()
    {
        var previews = new List<RgbImage>();
        var progress = new CollectProgress(p => previews.Add(Assert.IsType<Func<RgbImage>>(p.Preview)()));
        var result = new StableDiffusionPipeline(model).Generate(new GenerationRequest { Prompt = "a red circle", Seed = 3, Steps = 4, Sampler = "Euler" }, progress);
        Assert.Equal(4, previews.Count);
        var image = Assert.Single(result).Image;
        // The tiny model's 8x8 latent goes through its VAE: at the last step that is the picture itself.
        Assert.Equal((image.Width, image.Height), (previews[^1].Width, previews[^1].Height));
        Assert.Equal(image.Pixels, previews[^1].Pixels);
        Assert.NotEqual(previews[0].Pixels, previews[^1].Pixels);
    }

    [Fact]
    public void Without_a_listener_nothing_is_drawn_and_the_picture_is_the_same()
    {
        var request = new GenerationRequest { Prompt = "a blue square", Seed = 9, Steps = 3, Sampler = "Euler" };
        var pipeline = new StableDiffusionPipeline(model);
        var plain = Assert.Single(pipeline.Generate(request)).Image;
        var watched = Assert.Single(pipeline.Generate(request, new CollectProgress(p => p.Preview!()))).Image;
        Assert.Equal(plain.Pixels, watched.Pixels);
    }
}
