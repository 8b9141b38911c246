using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using Onnx;
using SdAppliance.Onnx.Graphs;
using SdAppliance.Torch;

namespace SdAppliance.Onnx.Tests;

/// <summary>What the export tests share: save a built model, check it, run it on ONNX Runtime CPU, compare with libtorch.</summary>
internal static class ExportRuns
{
    /// <summary>Half precision's machine epsilon (2^-10): the spacing of fp16 numbers in [1, 2).</summary>
    public const double Float16Epsilon = 1.0 / 1024;

    /// <summary>The committed demo model (trained weights, so real activation scales): models/demo beside SdAppliance.sln.</summary>
    public static string DemoModel
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "SdAppliance.sln")))
                    return Path.Combine(dir.FullName, "models", "demo");
            throw new DirectoryNotFoundException($"no SdAppliance.sln above {AppContext.BaseDirectory}");
        }
    }

    /// <summary>Saves <paramref name="model"/> as <paramref name="folder"/>/<paramref name="name"/>/model.onnx and runs the ONNX checker on it.</summary>
    public static string SaveChecked(ModelProto model, string folder, string name)
    {
        var path = Path.Combine(folder, name, "model.onnx");
        OnnxFile.Save(model, path);
        OnnxChecker.AssertValid(path);
        return path;
    }

    /// <summary>An ORT input from a libtorch tensor, in the element type the graph declares (float, float16, int64, int32).</summary>
    public static OrtValue Input(Tensor t, TensorElementType type)
    {
        var shape = t.Shape.ToArray();
        using var cpu = t.Detach().To(Device.Cpu);
        switch (type)
        {
            case TensorElementType.Float:
                using (var f = cpu.To(DType.Float32).Contiguous()) return OrtValue.CreateTensorValueFromMemory(f.ToArray<float>(), shape);
            case TensorElementType.Float16:
                using (var f = cpu.To(DType.Float32).Contiguous()) return OrtValue.CreateTensorValueFromMemory(f.ToArray<float>().Select(v => (Float16)v).ToArray(), shape);
            case TensorElementType.Int64:
                using (var i = cpu.To(DType.Int64).Contiguous()) return OrtValue.CreateTensorValueFromMemory(i.ToArray<long>(), shape);
            case TensorElementType.Int32:
                using (var i = cpu.To(DType.Int32).Contiguous()) return OrtValue.CreateTensorValueFromMemory(i.ToArray<int>(), shape);
            default:
                throw new NotSupportedException(type.ToString());
        }
    }

    /// <summary>One output: its element type, shape and values (fp16 widened to float).</summary>
    public sealed record Output(TensorElementType Type, long[] Shape, float[] Values);

    /// <summary>Runs <paramref name="path"/> on the CPU provider; returns every output by name, in the graph's order.</summary>
    public static List<(string Name, Output Value)> Run(string path, params (string Name, Tensor Value)[] inputs) => RunRepeated(path, 1, inputs)[0];

    /// <summary>Runs <paramref name="path"/> <paramref name="times"/> times in one session (one result per run).</summary>
    public static List<List<(string Name, Output Value)>> RunRepeated(string path, int times, params (string Name, Tensor Value)[] inputs)
    {
        using var session = new InferenceSession(path);
        var values = inputs.Select(i => Input(i.Value, session.InputMetadata[i.Name].ElementDataType)).ToList();
        try
        {
            var names = session.OutputNames.ToList();
            var runs = new List<List<(string Name, Output Value)>>();
            for (var r = 0; r < times; r++)
            {
                using var results = session.Run(new RunOptions(), [.. inputs.Select(i => i.Name)], values, names);
                runs.Add([.. names.Select((name, k) => (name, Read(results[k])))]);
            }
            return runs;
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static Output Read(OrtValue value)
    {
        var info = value.GetTensorTypeAndShape();
        var values = info.ElementDataType switch
        {
            TensorElementType.Float => value.GetTensorDataAsSpan<float>().ToArray(),
            TensorElementType.Float16 => [.. value.GetTensorDataAsSpan<Float16>().ToArray().Select(h => h.ToFloat())],
            var other => throw new NotSupportedException($"output type {other}"),
        };
        return new Output(info.ElementDataType, info.Shape, values);
    }

    /// <summary>max |a − b| after checking that the shapes agree.</summary>
    public static double MaxDiff(Output actual, Tensor expected, string what)
    {
        Assert.True(expected.Shape.SequenceEqual(actual.Shape), $"{what}: ONNX shape [{string.Join(", ", actual.Shape)}], libtorch [{string.Join(", ", expected.Shape)}]");
        using var e = expected.Detach().To(Device.Cpu).To(DType.Float32).Contiguous();
        var wanted = e.ToArray<float>();
        return wanted.Zip(actual.Values, (a, b) => (double)Math.Abs(a - b)).DefaultIfEmpty(0).Max();
    }

    public static double MaxAbs(Tensor t)
    {
        using var e = t.Detach().To(Device.Cpu).To(DType.Float32).Contiguous();
        return e.ToArray<float>().Select(v => (double)Math.Abs(v)).DefaultIfEmpty(0).Max();
    }

    /// <summary>
    /// The tolerance of an fp16 graph against float32 libtorch: every stored weight and every op's result is rounded to
    /// fp16 (relative error ≤ ε/2 each); independent roundings along the graph's path add up like a random walk, so the
    /// error grows as √(nodes) · ε/2 of the values' scale. Taken over all the graph's nodes (an upper bound of the
    /// longest path) and twice that, against the output's largest magnitude.
    /// </summary>
    public static double Float16Tolerance(ModelProto model, double scale) => Math.Sqrt(model.Graph.Node.Count) * Float16Epsilon * Math.Max(scale, 1);
}
