using SdAppliance.Appliance.Runs;

namespace SdAppliance.Appliance.Tests.Runs;

public sealed class MetricSeriesTests
{
    private static (long, double)[] Of(MetricSeries series, bool log10 = false) => [.. series.Points(log10).Select(p => (p.Step, p.Value))];

    [Fact]
    public void Below_the_limit_every_step_is_its_own_point()
    {
        var series = new MetricSeries(maxPoints: 4);
        for (var step = 1; step <= 4; step++) series.Add(step, step * 10);
        Assert.Equal([(1L, 10.0), (2L, 20.0), (3L, 30.0), (4L, 40.0)], Of(series));
        Assert.Equal(1, series.BucketSteps);
    }

    [Fact]
    public void Past_the_limit_buckets_double_and_each_point_is_its_buckets_mean_at_its_last_step()
    {
        var series = new MetricSeries(maxPoints: 4);
        series.Add(1, 1);
        series.Add(2, 2);
        series.Add(3, 3);
        series.Add(4, 4);
        series.Add(5, 5);
        // Width 2, aligned on even steps: {1}, {2,3}, {4,5}.
        Assert.Equal([(1L, 1.0), (3L, 2.5), (5L, 4.5)], Of(series));
        for (var step = 6; step <= 10; step++) series.Add(step, step);
        // Width 4: {1,2,3}, {4..7}, {8,9,10}.
        Assert.Equal([(3L, 2.0), (7L, 5.5), (10L, 9.0)], Of(series));
        Assert.Equal(4, series.BucketSteps);
    }

    [Fact]
    public void A_long_run_never_has_more_than_the_limit()
    {
        var series = new MetricSeries(maxPoints: 200);
        for (var step = 1; step <= 100_000; step++)
        {
            series.Add(step, 1.0 / step);
            Assert.True(series.Count <= 200);
        }
        Assert.Equal(512, series.BucketSteps);
        var points = series.Points();
        Assert.Equal(100_000, points[^1].Step);
        Assert.InRange(points.Count, 100, 200);
        Assert.All(points.Zip(points.Skip(1)), pair => Assert.True(pair.First.Step < pair.Second.Step));
    }

    [Fact]
    public void A_window_keeps_only_the_buckets_of_the_last_steps()
    {
        // 10 steps in at most 6 points: buckets of 2 steps.
        var series = new MetricSeries(maxPoints: 6, window: 10);
        Assert.Equal(2, series.BucketSteps);
        for (var step = 1; step <= 20; step++) series.Add(step, step);
        // The window is steps 11..20; the bucket {10,11} still reaches into it.
        Assert.Equal([(11L, 10.5), (13L, 12.5), (15L, 14.5), (17L, 16.5), (19L, 18.5), (20L, 20.0)], Of(series));
    }

    [Fact]
    public void Values_that_are_not_finite_are_left_out_and_the_log_view_leaves_out_what_is_not_positive()
    {
        var series = new MetricSeries(maxPoints: 10);
        series.Add(1, 100);
        series.Add(2, double.NaN);
        series.Add(3, double.PositiveInfinity);
        series.Add(4, 0);
        series.Add(5, 0.01);
        Assert.Equal([(1L, 100.0), (4L, 0.0), (5L, 0.01)], Of(series));
        Assert.Equal([(1L, 2.0), (5L, -2.0)], Of(series, log10: true));
    }

    [Fact]
    public void A_resumed_run_replaces_the_steps_it_repeats()
    {
        var series = new MetricSeries(maxPoints: 10);
        for (var step = 1; step <= 6; step++) series.Add(step, 1);
        // Killed after step 6, resumed from the state saved at step 4: steps 5 and 6 come again.
        series.Add(5, 2);
        series.Add(6, 2);
        Assert.Equal([(1L, 1.0), (2L, 1.0), (3L, 1.0), (4L, 1.0), (5L, 2.0), (6L, 2.0)], Of(series));
    }

    [Fact]
    public void The_smoothing_is_tensorboards_debiased_exponential_average()
    {
        var ema = new ExponentialSmoothing(0.5);
        Assert.Equal(4.0, ema.Add(4));
        // (0.25·4 + 0.5·1) / (1 − 0.25) = 2
        Assert.Equal(2.0, ema.Add(1), 12);
        Assert.Equal(2.0, ema.Add(double.NaN), 12);
        // (0.5·1.5 + 0.5·7) / (1 − 0.125): accumulated 0.5·(0.25·4+0.5·1)=0.75, +3.5 = 4.25; 4.25 / 0.875
        Assert.Equal(4.25 / 0.875, ema.Add(7), 12);
        Assert.Equal(9.0, new ExponentialSmoothing(0).Add(9));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ExponentialSmoothing(1));
    }
}

public sealed class ChartScaleTests
{
    [Fact]
    public void Small_values_fill_the_chart_and_map_back_for_the_axis()
    {
        var scale = ChartScale.Of([0.01, 0.03, double.NaN, 0.02]);
        Assert.Equal(0.009, scale.Min, 12);
        Assert.Equal(0.031, scale.Max, 12);
        Assert.Equal(50.0, scale.ToChart(0.02), 9);
        Assert.Equal(0.0, scale.ToChart(0.009), 9);
        Assert.Equal(0.031, scale.FromChart(100), 12);
    }

    [Fact]
    public void A_flat_series_or_none_still_has_a_range()
    {
        var flat = ChartScale.Of([1e-4, 1e-4]);
        Assert.Equal(9e-5, flat.Min, 15);
        Assert.Equal(1.1e-4, flat.Max, 15);
        Assert.Equal(new ChartScale(-1, 1), ChartScale.Of([0.0]));
        Assert.Equal(new ChartScale(0, 1), ChartScale.Of([]));
    }
}
