using SdAppliance.Cli;

return await SdappCommand.Create().Parse(args).InvokeAsync();
