// bench-engine: figures for the engine binding, printed as `name: value unit` lines.
//   dotnet run -c Release --project tools/bench-engine [-- --device cuda] [--threads N] [--quick]
// What it measures: the fixed cost our binding adds to every operator (P/Invoke plus the boxed
// dispatcher call) next to libtorch's own kernels, and the throughput of the kernels Stable
// Diffusion spends its time in, at SD 1.5 shapes.
using System.Diagnostics;
using SdAppliance.Torch;
using F = SdAppliance.Torch.Functional;

var device = args.Contains("--device") ? Device.Parse(args[Array.IndexOf(args, "--device") + 1]) : Device.Cpu;
var quick = args.Contains("--quick");
Engine.EnsureLoaded();
if (args.Contains("--threads")) Engine.NumThreads = int.Parse(args[Array.IndexOf(args, "--threads") + 1]);
Console.WriteLine($"libtorch: {Engine.TorchVersion}");
Console.WriteLine($"device: {device}");
Console.WriteLine($"threads: {Engine.NumThreads}");

// Median seconds of `body` over repeats, after warm-up; CUDA work is synchronised per repeat.
double Time(Action body, int repeats)
{
    body();
    var samples = new double[repeats];
    for (var i = 0; i < repeats; i++)
    {
        var sw = Stopwatch.StartNew();
        body();
        if (device.IsCuda) Cuda.Synchronize(device.Index);
        samples[i] = sw.Elapsed.TotalSeconds;
    }
    Array.Sort(samples);
    return samples[repeats / 2];
}

void Report(string name, double value, string unit) => Console.WriteLine($"{name}: {value:G4} {unit}");

var g = new Generator(0);
Tensor R(params long[] shape) => torch.Randn(shape, g).To(device).DetachFromDisposeScope();

// 1. Per-call overhead: a one-element add is almost all binding and dispatcher.
{
    using var a = R(1);
    const int calls = 20_000;
    var s = Time(() =>
    {
        using var scope = torch.NewDisposeScope();
        for (var i = 0; i < calls; i++) _ = a + a;
    }, quick ? 3 : 7);
    Report("op_overhead_add_1elem", s / calls * 1e6, "us/op");
    var mul = Time(() =>
    {
        for (var i = 0; i < calls; i++) a.Mul_(1.0);
    }, quick ? 3 : 7);
    Report("op_overhead_inplace_mul_1elem", mul / calls * 1e6, "us/op");
}

// 2. Kernels at SD 1.5 shapes (batch 2 for classifier-free guidance, 512x512 -> 64x64 latents).
using (Autograd.InferenceMode())
{
    var repeats = quick ? 3 : 5;
    using var a = R(2048, 2048);
    var mm = Time(() => { using var _ = a.Matmul(a); }, repeats);
    Report("matmul_2048_fp32", 2.0 * 2048 * 2048 * 2048 / mm / 1e9, "GFLOP/s");

    using var x = R(2, 320, 64, 64);
    using var w = R(320, 320, 3, 3);
    var conv = Time(() => { using var _ = F.Conv2d(x, w, null, 1, 1); }, repeats);
    Report("conv2d_320x64x64_3x3", conv * 1e3, "ms");
    Report("conv2d_320x64x64_3x3_rate", 2.0 * 2 * 320 * 320 * 9 * 64 * 64 / conv / 1e9, "GFLOP/s");

    var gn = Time(() => { using var _ = F.GroupNorm(x, 32); }, repeats);
    Report("group_norm_320x64x64", gn * 1e3, "ms");

    // Self-attention of the first SD 1.5 transformer: 4096 tokens, 8 heads of 40.
    using var q = R(2, 8, 4096, 40);
    var attn = Time(() => { using var _ = F.ScaledDotProductAttention(q, q, q); }, quick ? 2 : 3);
    Report("attention_4096x4096_8x40", attn * 1e3, "ms");
    Report("attention_native_sdpa", Engine.HasNativeScaledDotProductAttention ? 1 : 0, "bool");
}

// 3. A training step of a small MLP: forward, backward, AdamW-shaped in-place update.
{
    using var w1 = R(512, 512).RequiresGrad_();
    using var w2 = R(512, 512).RequiresGrad_();
    using var input = R(64, 512);
    var step = Time(() =>
    {
        using var scope = torch.NewDisposeScope();
        var loss = F.Linear(F.Silu(F.Linear(input, w1)), w2).Square().Mean();
        loss.Backward();
        using (Autograd.NoGrad())
            foreach (var p in new[] { w1, w2 })
            {
                p.Sub_(p.Grad!, 1e-4);
                p.ZeroGrad();
            }
    }, quick ? 5 : 20);
    Report("mlp_train_step_64x512", step * 1e3, "ms");
}
