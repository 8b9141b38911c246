using System.Diagnostics;
using SdAppliance.Torch;

namespace SdAppliance.Appliance.Jobs;

/// <summary>One device the scheduler runs jobs on, as the app bar and the dashboard show it.</summary>
/// <param name="Name">The scheduler's name of it: <c>cpu</c>, <c>cuda:0</c>.</param>
/// <param name="Label">What a person reads: the GPU's model, or the CPU and its threads.</param>
/// <param name="MemoryUsedBytes">On a GPU the bytes libtorch's allocator holds; on the CPU the server process's resident memory.</param>
/// <param name="MemoryTotalBytes">The GPU's memory, or the memory this process may use.</param>
public sealed record DeviceStatus(string Name, string Label, long MemoryUsedBytes, long MemoryTotalBytes);

/// <summary>The devices of <see cref="JobScheduler"/> with their memory now.</summary>
public sealed class DeviceMonitor(JobScheduler scheduler)
{
    public IReadOnlyList<DeviceStatus> Read() => [.. scheduler.Devices.Select(Read)];

    private static DeviceStatus Read(string device)
    {
        if (device.StartsWith("cuda", StringComparison.Ordinal) && Cuda.IsAvailable && Cuda.HasMemoryStats)
        {
            var index = device.Length > 5 && int.TryParse(device.AsSpan(5), out var i) ? i : 0;
            var info = Cuda.GetDeviceInfo(index);
            return new DeviceStatus(device, info.Name, Cuda.GetMemoryStats(index).ReservedBytes, info.TotalBytes);
        }
        using var process = Process.GetCurrentProcess();
        return new DeviceStatus(device, device == "cpu" ? $"CPU, {Environment.ProcessorCount} threads" : device,
            process.WorkingSet64, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
    }
}
