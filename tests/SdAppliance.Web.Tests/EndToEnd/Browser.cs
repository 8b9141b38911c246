using Microsoft.Playwright;

namespace SdAppliance.Web.Tests.EndToEnd;

/// <summary>
/// Debian's Chromium (<c>/usr/bin/chromium</c>, headless) driven by Playwright; never a downloaded browser. Each page
/// records the browser's console errors and uncaught script errors: <see cref="BrowserPage.AssertNoErrorsAsync"/> fails on any.
/// </summary>
public sealed class Browser : IAsyncDisposable
{
    public const string ChromiumPath = "/usr/bin/chromium";

    private readonly IPlaywright playwright;
    private readonly IBrowser browser;

    private Browser(IPlaywright playwright, IBrowser browser)
    {
        this.playwright = playwright;
        this.browser = browser;
    }

    public static async Task<Browser> LaunchAsync()
    {
        if (!File.Exists(ChromiumPath))
            throw new InvalidOperationException($"{ChromiumPath} is missing: scripts/bootstrap.sh installs Debian's chromium package");
        var playwright = await Playwright.CreateAsync();
        var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            // Root in a container: no sandbox. The rest keep Chromium off the network this machine does not have.
            Args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
        });
        return new Browser(playwright, browser);
    }

    /// <summary>A new page (its own cookies) at 1366x768, the smallest screen the UI is made for, or at <paramref name="width"/> x <paramref name="height"/>.</summary>
    public async Task<BrowserPage> NewPageAsync(Uri baseAddress, int width = 1366, int height = 768)
    {
        var context = await browser.NewContextAsync(new BrowserNewContextOptions
        {
            BaseURL = baseAddress.ToString(),
            ViewportSize = new ViewportSize { Width = width, Height = height },
            AcceptDownloads = true,
        });
        // On two cores the suite's test assemblies run side by side (the demo's acceptance trains and draws meanwhile), and a
        // page's answer has waited over 30 s behind them: the wait is for something that does come, so it may be long.
        context.SetDefaultTimeout(90_000);
        return new BrowserPage(context, await context.NewPageAsync());
    }

    public async ValueTask DisposeAsync()
    {
        await browser.DisposeAsync();
        playwright.Dispose();
    }
}

/// <summary>A Playwright page with the errors its scripts reported and helpers for Blazor's circuit.</summary>
public sealed class BrowserPage : IAsyncDisposable
{
    private readonly IBrowserContext context;
    private readonly List<string> errors = [];

    internal BrowserPage(IBrowserContext context, IPage page)
    {
        this.context = context;
        Page = page;
        page.Console += (_, message) =>
        {
            if (message.Type == "error") Record($"console error at {message.Location}: {message.Text}");
        };
        page.PageError += (_, error) => Record("uncaught script error: " + error);
    }

    public IPage Page { get; }

    /// <summary>Goes to <paramref name="path"/> and waits until the page is interactive (the circuit is up and the layout has rendered over it).</summary>
    public async Task GoToAsync(string path)
    {
        await Page.GotoAsync(path);
        await WaitForCircuitAsync();
    }

    /// <summary>
    /// A form field by its <c>data-testid</c>: MudBlazor puts it on the input (or textarea) itself, or on the field around it.
    /// </summary>
    public static ILocator Field(IPage page, string id) =>
        page.Locator($"input[data-testid='{id}'], textarea[data-testid='{id}'], [data-testid='{id}'] input, [data-testid='{id}'] textarea").First;

    /// <summary>Signs in on the login page as a person does, then waits for the circuit of the page it lands on.</summary>
    public async Task SignInAsync(string name, string password)
    {
        await Page.GotoAsync("/login");
        await Page.GetByLabel("Name").FillAsync(name);
        await Page.GetByLabel("Password", new() { Exact = true }).FillAsync(password);
        await Page.GetByRole(AriaRole.Button, new() { Name = "Sign in" }).ClickAsync();
        await WaitForCircuitAsync();
    }

    /// <inheritdoc cref="SignInAsync(string, string)"/>
    public Task SignInAsync(TestUser user) => SignInAsync(user.Name, user.Password);

    /// <summary>Waits for the layout's marker that only an interactive render sets: before it, clicks reach no handler.</summary>
    public Task WaitForCircuitAsync() => Page.Locator("[data-interactive='true']").WaitForAsync(new LocatorWaitForOptions { State = WaitForSelectorState.Attached });

    /// <summary>Saves a screenshot of the whole page as <c>NAME.png</c> among the test results (<see cref="Screenshots.Folder"/>).</summary>
    public async Task<string> ScreenshotAsync(string name)
    {
        var path = Path.Combine(Screenshots.Folder, name + ".png");
        await Page.ScreenshotAsync(new PageScreenshotOptions { Path = path, FullPage = true });
        return path;
    }

    public Task AssertNoErrorsAsync()
    {
        lock (errors) Assert.True(errors.Count == 0, "the browser reported errors:\n" + string.Join("\n", errors));
        return Task.CompletedTask;
    }

    /// <summary>The console error Chromium logs for a request a test drops on purpose (a route aborted with <c>connectionreset</c>).</summary>
    public static bool DroppedRequest(string error) => error.Contains("net::ERR_CONNECTION_RESET", StringComparison.Ordinal);

    /// <summary>As <see cref="AssertNoErrorsAsync()"/>, but errors <paramref name="expected"/> accepts (what the test itself caused) are allowed.</summary>
    public Task AssertNoErrorsAsync(Func<string, bool> expected)
    {
        lock (errors)
        {
            var unexpected = errors.Where(e => !expected(e)).ToList();
            Assert.True(unexpected.Count == 0, "the browser reported errors:\n" + string.Join("\n", unexpected));
        }
        return Task.CompletedTask;
    }

    private void Record(string error)
    {
        lock (errors) errors.Add(error);
    }

    public async ValueTask DisposeAsync() => await context.DisposeAsync();
}

/// <summary>Where the end-to-end tests keep their screenshots: <c>TestResults/screenshots</c> of this test project (or <c>SDAPP_SCREENSHOTS</c>).</summary>
public static class Screenshots
{
    public static string Folder { get; } = Directory.CreateDirectory(
        Environment.GetEnvironmentVariable("SDAPP_SCREENSHOTS") is { Length: > 0 } folder ? folder : Path.Combine(ProjectFolder(), "TestResults", "screenshots")).FullName;

    private static string ProjectFolder()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SdAppliance.Web.Tests.csproj"))) return dir.FullName;
        return AppContext.BaseDirectory;
    }
}
