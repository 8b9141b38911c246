using System.CommandLine;
using SdAppliance.Cli;

using var interrupts = new Interrupts(Console.Error);
// ProcessTerminationTimeout = null: System.CommandLine leaves Ctrl+C to Interrupts, whose token the commands get.
return await SdappCommand.Create().Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }, interrupts.Token);
