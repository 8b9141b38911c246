// bench-engine: figures for the engine binding, printed as `name: value unit` lines.
//   dotnet run -c Release --project tools/bench-engine [-- --device cuda] [--threads N] [--quick]
// What it measures: the fixed cost our binding adds to every operator (P/Invoke plus the boxed
// dispatcher call) next to libtorch's own kernels, and the throughput of the kernels Stable
// Diffusion spends its time in, at SD 1.5 shapes. Each comparison also times the same operation
// through libtorch's C++ API inside the shim (NativeTimer), alternating binding and C++ sample by
// sample so load on the machine hits both alike, and prints `NAME ratio: R` = binding rate ÷ C++ rate.
using System.Diagnostics;
using SdAppliance.Torch;
using SdAppliance.Torch.Native;
using F = SdAppliance.Torch.Functional;
using Native = SdAppliance.Torch.Native.NativeTimer.Operation;

var device = args.Contains("--device") ? Device.Parse(args[Array.IndexOf(args, "--device") + 1]) : Device.Cpu;
var quick = args.Contains("--quick");
Engine.EnsureLoaded();
if (args.Contains("--threads")) Engine.NumThreads = int.Parse(args[Array.IndexOf(args, "--threads") + 1]);
Console.WriteLine($"libtorch: {Engine.TorchVersion}");
Console.WriteLine($"device: {device}");
Console.WriteLine($"threads: {Engine.NumThreads}");

void Sync()
{
    if (device.IsCuda) Cuda.Synchronize(device.Index);
}

double Seconds(Action body)
{
    var sw = Stopwatch.StartNew();
    body();
    Sync();
    return sw.Elapsed.TotalSeconds;
}

double Median(List<double> samples)
{
    samples.Sort();
    return samples[samples.Count / 2];
}

// Median seconds of `body` over repeats, after a warm-up.
double Time(Action body, int repeats)
{
    body();
    var samples = new List<double>();
    for (var i = 0; i < repeats; i++) samples.Add(Seconds(body));
    return Median(samples);
}

// Median seconds of the binding and of C++ over repeats, taken in turn, after a warm-up of each.
// `best` takes the fastest sample instead: for short samples on a busy machine, the one no other
// process interrupted.
(double Binding, double Native) Compare(Action binding, Func<double> native, int repeats, bool best = false)
{
    binding();
    native();
    List<double> b = [], n = [];
    for (var i = 0; i < repeats; i++)
    {
        b.Add(Seconds(binding));
        Sync();
        n.Add(native());
    }
    return best ? (b.Min(), n.Min()) : (Median(b), Median(n));
}

void Report(string name, double value, string unit) => Console.WriteLine($"{name}: {value:G4} {unit}");

void ReportRate(string name, double flops, (double Binding, double Native) s)
{
    Report(name, s.Binding * 1e3, "ms");
    Report($"{name}_rate", flops / s.Binding / 1e9, "GFLOP/s");
    Report($"{name}_native_rate", flops / s.Native / 1e9, "GFLOP/s");
    Console.WriteLine($"{name} ratio: {s.Native / s.Binding:F3}");
}

var g = new Generator(0);
Tensor R(params long[] shape) => torch.Randn(shape, g).To(device).DetachFromDisposeScope();

// 1. Per-call overhead: a one-element add is almost all binding and dispatcher. C++ gives the floor:
// the typed call (what a C++ program pays) and the boxed call through the dispatcher (what the shim
// makes). Short batches, the fastest of many, so a busy machine's interruptions drop out.
{
    using var a = R(1);
    const int calls = 1_000;
    var batches = quick ? 30 : 100;
    double PerCall(double seconds) => seconds / calls * 1e6;
    var add = Compare(() =>
    {
        using var scope = torch.NewDisposeScope();
        for (var i = 0; i < calls; i++) _ = a + a;
    }, () => NativeTimer.Seconds(Native.Add, calls, a, a), batches, best: true);
    double Best(Func<double> seconds)
    {
        seconds();
        return Enumerable.Range(0, batches).Min(_ => seconds());
    }
    // Where the binding's time goes, layer by layer: the boxed dispatcher call, the shim's packed
    // call made from C++, one P/Invoke of a trivial entry point.
    var boxed = Best(() => NativeTimer.Seconds(Native.AddBoxed, calls, a, a));
    var shim = Best(() => NativeTimer.Seconds(Native.AddShim, calls, a, a));
    var pinvoke = Best(() => Seconds(() =>
    {
        for (var i = 0; i < calls; i++) _ = a.Dim;
    }));
    var mul = Best(() => Seconds(() =>
    {
        for (var i = 0; i < calls; i++) a.Mul_(1.0);
    }));
    Report("op_overhead_add_1elem", PerCall(add.Binding), "us/op");
    Report("op_overhead_add_1elem_native", PerCall(add.Native), "us/op");
    Report("op_overhead_add_1elem_native_boxed", PerCall(boxed), "us/op");
    Report("op_overhead_add_1elem_shim_from_cpp", PerCall(shim), "us/op");
    Report("pinvoke_tensor_dim", PerCall(pinvoke), "us/call");
    Report("op_overhead_inplace_mul_1elem", PerCall(mul), "us/op");
    Console.WriteLine($"op_add_1elem ratio: {add.Native / add.Binding:F3}");
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
    const double convFlops = 2.0 * 2 * 320 * 320 * 9 * 64 * 64;
    ReportRate("conv2d_320x64x64_3x3", convFlops,
        Compare(() => { using var _ = F.Conv2d(x, w, null, 1, 1); }, () => NativeTimer.Seconds(Native.Conv2d, 1, x, w), repeats));

    var gn = Time(() => { using var _ = F.GroupNorm(x, 32); }, repeats);
    Report("group_norm_320x64x64", gn * 1e3, "ms");

    // The first transformer's feed-forward input projection: 2 x 4096 tokens, 320 -> 1280.
    using var tokens = R(2, 4096, 320);
    using var proj = R(1280, 320);
    ReportRate("linear_8192x320x1280", 2.0 * 2 * 4096 * 320 * 1280,
        Compare(() => { using var _ = F.Linear(tokens, proj); }, () => NativeTimer.Seconds(Native.Linear, 1, tokens, proj), repeats));

    // The first transformer's attention, 8 heads of 40: self (4096 tokens) and cross (77 text tokens).
    using var q = R(2, 8, 4096, 40);
    using var text = R(2, 8, 77, 40);
    var attentionRepeats = quick ? 2 : 3;
    ReportRate("attention_4096x4096_8x40", 4.0 * 2 * 8 * 4096 * 4096 * 40,
        Compare(() => { using var _ = F.ScaledDotProductAttention(q, q, q); }, () => NativeTimer.Seconds(Native.Attention, 1, q, q, q), attentionRepeats));
    ReportRate("attention_4096x77_8x40", 4.0 * 2 * 8 * 4096 * 77 * 40,
        Compare(() => { using var _ = F.ScaledDotProductAttention(q, text, text); }, () => NativeTimer.Seconds(Native.Attention, 1, q, text, text), repeats));
    Report("attention_native_sdpa", Engine.HasNativeScaledDotProductAttention ? 1 : 0, "bool");
}

// 3. Conv2d forward and backward (input and weight gradients), as in training.
{
    using var x = R(2, 320, 64, 64).RequiresGrad_();
    using var w = R(320, 320, 3, 3).RequiresGrad_();
    ReportRate("conv2d_320x64x64_3x3_fwd_bwd", 3 * 2.0 * 2 * 320 * 320 * 9 * 64 * 64, Compare(() =>
    {
        using var scope = torch.NewDisposeScope();
        F.Conv2d(x, w, null, 1, 1).Sum().Backward();
        x.ZeroGrad();
        w.ZeroGrad();
    }, () => NativeTimer.Seconds(Native.Conv2dBackward, 1, x, w), quick ? 2 : 3));
}

// 4. A training step of a small MLP: forward, backward, AdamW-shaped in-place update.
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
