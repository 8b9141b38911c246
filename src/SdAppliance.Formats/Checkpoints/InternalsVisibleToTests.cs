using System.Runtime.CompilerServices;

// The checkpoint tests drive the Zip64 path of the writer with small files.
[assembly: InternalsVisibleTo("SdAppliance.Formats.Tests")]
