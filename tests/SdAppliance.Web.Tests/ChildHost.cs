using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;

namespace SdAppliance.Web.Tests;

/// <summary>
/// The appliance host in a child process (<c>dotnet SdAppliance.Web.dll --data DIR --urls URL</c>, the build these tests
/// run with), on a free loopback port, for what only a real process shows: a kill -9 and a restart.
/// </summary>
internal sealed class ChildHost : IDisposable
{
    // A bound so that a host that never comes up fails the test instead of hanging the suite; not a speed check.
    private static readonly TimeSpan StartBound = TimeSpan.FromMinutes(2);

    private readonly Process process;
    private readonly StringBuilder output = new();

    private ChildHost(Process process, Uri address)
    {
        this.process = process;
        Address = address;
        process.OutputDataReceived += (_, e) => Collect(e.Data);
        process.ErrorDataReceived += (_, e) => Collect(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public Uri Address { get; }

    /// <summary>What the host wrote so far (for failure messages).</summary>
    public string Output
    {
        get
        {
            lock (output) return output.ToString();
        }
    }

    /// <summary>Starts the host on <paramref name="dataFolder"/> and returns once <c>/health</c> answers.</summary>
    public static async Task<ChildHost> StartAsync(string dataFolder, CancellationToken cancellationToken)
    {
        var address = new Uri($"http://127.0.0.1:{FreePort()}");
        // dotnet test sets DOTNET_HOST_PATH to the muxer that runs it; the same one runs the host.
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = dataFolder,
        };
        foreach (var arg in new[] { Path.Combine(AppContext.BaseDirectory, "SdAppliance.Web.dll"), "--data", dataFolder, "--urls", address.ToString() })
            start.ArgumentList.Add(arg);
        // One libtorch thread: float sums then add up in the same order in every process, whatever the machine's load.
        start.Environment["OMP_NUM_THREADS"] = "1";
        var host = new ChildHost(Process.Start(start)!, address);
        try
        {
            await host.WaitUntilHealthyAsync(cancellationToken);
            return host;
        }
        catch
        {
            host.Dispose();
            throw;
        }
    }

    public HttpClient CreateClient(string token)
    {
        var client = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromMinutes(1) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return client;
    }

    /// <summary>kill -9: the process ends at once, with no chance to save or clean up.</summary>
    public void KillHard()
    {
        process.Kill(entireProcessTree: true);  // SIGKILL on Unix
        process.WaitForExit();
    }

    public void Dispose()
    {
        if (!process.HasExited) KillHard();
        process.Dispose();
    }

    private async Task WaitUntilHealthyAsync(CancellationToken cancellationToken)
    {
        using var client = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(10) };
        var giveUp = DateTime.UtcNow + StartBound;
        while (true)
        {
            if (process.HasExited) throw new InvalidOperationException($"the host ended (exit {process.ExitCode}) before it answered: {Output}");
            if (DateTime.UtcNow > giveUp) throw new TimeoutException($"the host did not answer /health within {StartBound}: {Output}");
            try
            {
                using var response = await client.GetAsync("/health", cancellationToken);
                if (response.StatusCode == HttpStatusCode.OK) return;
            }
            catch (HttpRequestException)
            {
                // not listening yet
            }
            await Task.Delay(50, cancellationToken);  // a poll interval, not a synchronisation
        }
    }

    private void Collect(string? line)
    {
        if (line is null) return;
        lock (output) output.AppendLine(line);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
