using System.Diagnostics;

namespace SdAppliance.Onnx.Tests;

/// <summary>
/// The ONNX project's own checker, run on a file we exported: <c>onnx.checker.check_model(path,
/// full_check=True)</c> (which runs strict shape inference too) and <c>infer_shapes_path</c> with
/// <c>strict_mode</c>. It is Debian's python3-onnx (1.12, opsets up to 17), which the bootstrap
/// installs; Debian's interpreter is named by path because another python3 may come first on PATH.
/// </summary>
public static class OnnxChecker
{
    private const string Python = "/usr/bin/python3";

    private const string Script = """
        import sys, onnx
        from onnx import checker, shape_inference
        path = sys.argv[1]
        checker.check_model(path, full_check=True)
        shape_inference.infer_shapes_path(path, path + ".inferred", check_type=True, strict_mode=True)
        print("ok")
        """;

    /// <summary>Fails with the checker's message when <paramref name="modelPath"/> is not a valid model.</summary>
    public static void AssertValid(string modelPath)
    {
        var start = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(Script);
        start.ArgumentList.Add(modelPath);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{Python} did not start (run scripts/bootstrap.sh: it installs python3-onnx)");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        try
        {
            Assert.True(process.ExitCode == 0, $"the ONNX checker refused {modelPath}:\n{stderr}");
            Assert.Equal("ok", stdout.Result.Trim());
        }
        finally
        {
            File.Delete(modelPath + ".inferred");
        }
    }
}
