using MudBlazor.Services;
using SdAppliance.Web.Components.Pages.Datasets;
using SdAppliance.Web.Components.Pages.Generate;
using SdAppliance.Web.Components.Pages.Models;

namespace SdAppliance.Web.Components;

/// <summary>The browser UI: Blazor with interactive server rendering and MudBlazor, over the appliance's services.</summary>
public static class BrowserUi
{
    public static WebApplicationBuilder AddBrowserUi(this WebApplicationBuilder builder)
    {
        // The static assets (MudBlazor's among them) are found through the build's manifest also outside Development,
        // as when sdapp runs the build output; a published app has them under wwwroot and no manifest.
        builder.WebHost.UseStaticWebAssets();
        builder.Services.AddRazorComponents().AddInteractiveServerComponents();
        builder.Services.AddCascadingAuthenticationState();
        builder.Services.AddMudServices();
        builder.Services.AddScoped<SignedInUser>();
        return builder;
    }

    public static WebApplication MapBrowserUi(this WebApplication app)
    {
        // The sign-in page needs its styles and scripts before anybody is signed in.
        app.MapStaticAssets().AllowAnonymous();
        app.MapRazorComponents<App>().AddInteractiveServerRenderMode();
        app.MapDatasetFiles();
        app.MapModelTransfers();
        app.MapOutputThumbnails();
        return app;
    }
}
