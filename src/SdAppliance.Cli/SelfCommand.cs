namespace SdAppliance.Cli;

/// <summary>How to start this sdapp again: what data-parallel training launches its ranks with.</summary>
internal static class SelfCommand
{
    /// <summary>The program that runs this sdapp: its own executable, or the dotnet muxer and sdapp.dll.</summary>
    public static string[] Program()
    {
        var host = Environment.ProcessPath ?? throw new InvalidOperationException("the path of this process is unknown, so it cannot start itself again");
        // Under the muxer the first argument is sdapp.dll.
        return Path.GetFileNameWithoutExtension(host) == "dotnet" ? [host, Environment.GetCommandLineArgs()[0]] : [host];
    }

    /// <summary>This process's command line again.</summary>
    public static string[] CommandLine() => [.. Program(), .. Environment.GetCommandLineArgs()[1..]];
}
