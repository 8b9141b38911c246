using System.Runtime.InteropServices;

namespace SdAppliance.Torch.Tests;

public partial class ThreadPolicyTests
{
    // SD 1.5's UNet at 256x256, [uncond, cond]: 320 channels over a 32x32 latent.
    private static readonly ThreadDemand Sd15 = ThreadDemand.ForActivation(2, 320, 32, 32);

    // The tiny fixture model at 64x64: 32 channels over an 8x8 latent.
    private static readonly ThreadDemand Tiny = ThreadDemand.ForActivation(2, 32, 8, 8);

    [Fact]
    public void TheDemandIsTheWidestActivation() => Assert.Equal(2L * 320 * 32 * 32, Sd15.ActivationElements);

    [Theory]
    [InlineData(2, 0.0)]
    [InlineData(64, 0.0)]
    [InlineData(2, 30.0)]
    public void SmallWorkRunsOnOneThreadWhateverTheMachine(int cores, double load) =>
        Assert.Equal(1, ThreadPolicy.ChooseThreads(Tiny, new MachineLoad(cores, load)));

    [Theory]
    [InlineData(2, 0.0, 2)]
    [InlineData(2, 0.4, 2)]
    [InlineData(2, 0.5, 1)]
    [InlineData(2, 1.7, 1)]
    // A machine busier than its cores still leaves this job one thread.
    [InlineData(2, 30.0, 1)]
    [InlineData(16, 0.0, 16)]
    [InlineData(16, 5.2, 11)]
    [InlineData(1, 0.0, 1)]
    public void LargeWorkTakesTheCoresOthersLeave(int cores, double load, int expected) =>
        Assert.Equal(expected, ThreadPolicy.ChooseThreads(Sd15, new MachineLoad(cores, load)));

    [Theory]
    [InlineData(8, 3, 2)]
    [InlineData(8, 8, 1)]
    [InlineData(2, 4, 1)]
    public void ConcurrentJobsShareTheFreeCores(int cores, int jobs, int expected) =>
        Assert.Equal(expected, ThreadPolicy.ChooseThreads(Sd15 with { ConcurrentJobs = jobs }, new MachineLoad(cores, 0)));

    [Fact]
    public void IdleWorkersSleepUnlessTheUserChoseHowTheyWait()
    {
        Assert.Equal(new Dictionary<string, string> { ["OMP_WAIT_POLICY"] = "PASSIVE" }, ThreadPolicy.WaitEnvironment(_ => null));
        Assert.Empty(ThreadPolicy.WaitEnvironment(name => name == "OMP_WAIT_POLICY" ? "ACTIVE" : null));
        Assert.Empty(ThreadPolicy.WaitEnvironment(name => name == "GOMP_SPINCOUNT" ? "10000" : null));
    }

    [Fact]
    public void AThreadCountInTheEnvironmentIsTheUsers()
    {
        Assert.False(ThreadPolicy.ThreadsChosenByUser(_ => null));
        Assert.True(ThreadPolicy.ThreadsChosenByUser(name => name == "OMP_NUM_THREADS" ? "3" : null));
        Assert.True(ThreadPolicy.ThreadsChosenByUser(name => name == "MKL_NUM_THREADS" ? "1" : null));
    }

    /// <summary>
    /// libgomp reads its environment once, when it loads with libtorch: the wait policy only works if the engine
    /// wrote it into the native environment before the first native call. libgomp's own report of its settings
    /// (omp_display_env, written to stderr) says what it read: a spin count of 0 is what PASSIVE gives, where
    /// its default spins 300,000 times.
    /// </summary>
    [Fact]
    public void LibgompStartsWithThePolicysWaitPolicy()
    {
        if (!OperatingSystem.IsLinux()) return;
        if (ThreadPolicy.WaitEnvironment(Environment.GetEnvironmentVariable).Count == 0) return; // the user's own choice
        _ = Engine.TorchVersion; // loads libtorch, and with it libgomp, if no test has yet
        var report = ReadStandardError(() => omp_display_env(1));
        Assert.Contains("OMP_WAIT_POLICY = 'PASSIVE'", report);
        Assert.Contains("GOMP_SPINCOUNT = '0'", report);
    }

    private static string ReadStandardError(Action write)
    {
        var path = Path.GetTempFileName();
        try
        {
            using (var file = new FileStream(path, FileMode.Create, FileAccess.Write))
            {
                var saved = dup(2);
                dup2((int)file.SafeFileHandle.DangerousGetHandle(), 2);
                try
                {
                    write();
                }
                finally
                {
                    dup2(saved, 2);
                    close(saved);
                }
            }
            return File.ReadAllText(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [LibraryImport("libgomp.so.1")]
    private static partial void omp_display_env(int verbose);

    [LibraryImport("libc")]
    private static partial int dup(int fd);

    [LibraryImport("libc")]
    private static partial int dup2(int fd, int fd2);

    [LibraryImport("libc")]
    private static partial int close(int fd);
}
