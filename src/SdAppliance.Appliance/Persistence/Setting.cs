namespace SdAppliance.Appliance.Persistence;

/// <summary>One appliance-wide setting (the current model, the A1111 options, the client addresses allowed without credentials...), its value as JSON.</summary>
public sealed class Setting
{
    public required string Key { get; set; }
    public required string ValueJson { get; set; }
}
