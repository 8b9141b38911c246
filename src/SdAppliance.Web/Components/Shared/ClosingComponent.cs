using Microsoft.AspNetCore.Components;

namespace SdAppliance.Web.Components.Shared;

/// <summary>A component whose service calls stop when it goes away (the page is left or the circuit closes): pass <see cref="Closing"/>.</summary>
public abstract class ClosingComponent : ComponentBase, IDisposable
{
    private readonly CancellationTokenSource closing = new();

    protected CancellationToken Closing => closing.Token;

    public void Dispose()
    {
        closing.Cancel();
        closing.Dispose();
        GC.SuppressFinalize(this);
    }
}
