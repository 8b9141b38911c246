using System.Diagnostics;
using System.Globalization;

namespace SdAppliance.Cli;

/// <summary>
/// A one-line progress bar (<c>label [#####.....] 5/10 steps  3.21 it/s  00:02</c>) redrawn in place with
/// a carriage return. Only for a terminal: redirected output gets no bar, the commands print a summary
/// line instead (<see cref="IsInteractive"/>).
/// </summary>
internal sealed class ProgressBar
{
    private const int Width = 30;

    // A redraw per update would flood a terminal when updates come faster than the eye (tensors of a conversion).
    private static readonly TimeSpan MinRedraw = TimeSpan.FromMilliseconds(100);

    private readonly TextWriter writer;
    private readonly string label;
    private readonly string unit;
    private readonly string rateUnit;
    private readonly Stopwatch clock = Stopwatch.StartNew();
    // Not TimeSpan.MinValue: "now - lastDraw" would overflow on the first update.
    private TimeSpan lastDraw = -MinRedraw;
    private bool drawn;

    /// <param name="unit">What is counted ("steps").</param>
    /// <param name="rateUnit">The rate's name ("it/s").</param>
    public ProgressBar(TextWriter writer, bool interactive, string label, string unit, string rateUnit)
    {
        this.writer = writer;
        IsInteractive = interactive;
        this.label = label;
        this.unit = unit;
        this.rateUnit = rateUnit;
    }

    /// <summary>Whether the bar is drawn: stderr is a terminal.</summary>
    public bool IsInteractive { get; }

    public TimeSpan Elapsed => clock.Elapsed;

    /// <summary>True when <paramref name="error"/> is the console's stderr and that is a terminal.</summary>
    public static bool IsTerminal(TextWriter error) => ReferenceEquals(error, Console.Error) && !Console.IsErrorRedirected;

    public void Update(int done, int total) => Draw(done, total, now => Render(done, total, now));

    /// <summary>
    /// Draws the bar with <paramref name="status"/> in place of the bar's own rate and clock, for a caller that
    /// knows better (the trainer's it/s and ETA hold across a resume, when the bar's count starts midway).
    /// </summary>
    public void Update(int done, int total, string status) => Draw(done, total, _ => Render(done, total, status));

    private void Draw(int done, int total, Func<TimeSpan, string> render)
    {
        if (!IsInteractive) return;
        var now = clock.Elapsed;
        if (done < total && now - lastDraw < MinRedraw) return;
        lastDraw = now;
        writer.Write("\r" + render(now));
        writer.Flush();
        drawn = true;
    }

    /// <summary>Ends the bar's line, so what follows starts on a fresh one.</summary>
    public void Finish()
    {
        if (!drawn) return;
        writer.WriteLine();
        drawn = false;
    }

    internal string Render(int done, int total, TimeSpan elapsed)
    {
        var rate = elapsed.TotalSeconds > 0 ? done / elapsed.TotalSeconds : 0;
        return string.Create(CultureInfo.InvariantCulture,
            $"{label} [{Bar(done, total)}] {done}/{total} {unit}  {rate:0.00} {rateUnit}  {Clock(elapsed)}");
    }

    internal string Render(int done, int total, string status) =>
        string.Create(CultureInfo.InvariantCulture, $"{label} [{Bar(done, total)}] {done}/{total} {unit}  {status}");

    private static string Bar(int done, int total)
    {
        var filled = total <= 0 ? 0 : (int)Math.Round((double)Math.Clamp(done, 0, total) / total * Width);
        return new string('#', filled) + new string('.', Width - filled);
    }

    internal static string Clock(TimeSpan t) => t.TotalHours >= 1
        ? t.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture)
        : t.ToString(@"mm\:ss", CultureInfo.InvariantCulture);
}

/// <summary>An <see cref="IProgress{T}"/> that reports on the caller's thread (<see cref="Progress{T}"/> posts to the thread pool, so lines would come late and out of order).</summary>
internal sealed class ProgressCallback<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
