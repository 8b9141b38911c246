using System.CommandLine;
using SdAppliance.Cli.Commands;

namespace SdAppliance.Cli;

/// <summary>The root of <c>sdapp</c>: every command lives in its own file under Commands/ and is added here.</summary>
public static class SdappCommand
{
    public static RootCommand Create()
    {
        var root = new RootCommand("SdAppliance: prepare datasets, fine-tune and run Stable Diffusion models on one box.")
        {
            DoctorCommand.Create(),
            GenerateCommand.Create(),
            ConvertCommand.Create(),
            CaptionCommand.Create(),
            TrainCommand.Create(),
            ServeCommand.Create(),
            UserCommand.Create(),
            TokenCommand.Create(),
        };
        return root;
    }
}
