using SdAppliance.Formats;

namespace SdAppliance.Appliance;

/// <summary>The caller may see the thing but not do this to it (another user's model, a dataset they do not own): HTTP 403.</summary>
public sealed class NotPermittedException(string subject, string problem)
    : UserInputException(subject, problem, "ask its owner or an admin");
