using MudBlazor;

namespace SdAppliance.Web.Components.Layout;

/// <summary>The appliance's colours and type, light and dark; system fonts, since the LAN may have no internet to fetch Roboto.</summary>
public static class Theme
{
    public static readonly MudTheme Appliance = new()
    {
        PaletteLight = new PaletteLight { Primary = "#3f51b5", Secondary = "#e91e63", AppbarBackground = "#283593" },
        PaletteDark = new PaletteDark { Primary = "#7986cb", Secondary = "#f48fb1" },
        Typography = new Typography
        {
            Default = new DefaultTypography { FontFamily = ["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"] },
        },
    };
}
