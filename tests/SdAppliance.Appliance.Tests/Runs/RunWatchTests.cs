using SdAppliance.Appliance.Jobs;
using SdAppliance.Appliance.Runs;

namespace SdAppliance.Appliance.Tests.Runs;

public sealed class RunWatchTests
{
    private static JobEvent Step(long sequence, long step, double loss, double lr = 1e-3) =>
        new(sequence, new DateTime(2026, 1, 1, 12, 0, 0, DateTimeKind.Utc), JobEventTypes.Step)
        {
            Step = step, TotalSteps = 100, Loss = loss, LearningRate = lr, ItPerSecond = 2, EtaSeconds = 50, MemoryBytes = 1 << 20,
        };

    [Fact]
    public void Steps_feed_the_loss_the_smoothed_loss_and_the_learning_rate_of_every_range()
    {
        var watch = new RunWatch(maxPoints: 50, smoothingWeight: 0.5);
        Assert.True(watch.Apply(Step(1, 1, 4, lr: 0.1)));
        Assert.True(watch.Apply(Step(2, 2, 1, lr: 0.01)));
        var chart = watch.Loss(StepRange.All, log10: false);
        Assert.Equal([1L, 2L], chart.Steps);
        Assert.Equal([4.0, 1.0], chart.Loss);
        Assert.Equal(4.0, chart.Smoothed[0]);
        Assert.Equal(2.0, chart.Smoothed[1], 12);
        // The last 100 steps in at most 50 points: buckets of 3 steps, so steps 1 and 2 are one point.
        var last = watch.Loss(StepRange.Last100, log10: false);
        Assert.Equal([2L], last.Steps);
        Assert.Equal([2.5], last.Loss);
        Assert.Equal([-1.0, -2.0], watch.LearningRate(StepRange.All, log10: true).Select(p => Math.Round(p.Value, 12)));
        Assert.Equal(2, watch.LastStep!.Step);
        Assert.Equal(2, watch.LastSequence);
    }

    [Fact]
    public void An_event_seen_again_after_a_reconnect_changes_nothing()
    {
        var watch = new RunWatch();
        watch.Apply(Step(1, 1, 1));
        watch.Apply(Step(2, 2, 2));
        Assert.False(watch.Apply(Step(2, 2, 2)));
        Assert.False(watch.Apply(Step(1, 1, 1)));
        Assert.Equal(2, watch.StepEvents);
        Assert.Equal(2, watch.Loss(StepRange.All, false).Steps.Count);
    }

    [Fact]
    public void Samples_are_kept_by_step_and_prompt_and_state_and_log_lines_form_the_log_tail()
    {
        var time = new DateTime(2026, 1, 1, 12, 0, 5, DateTimeKind.Utc);
        var watch = new RunWatch(logLines: 2);
        watch.Apply(new JobEvent(1, time, JobEventTypes.State) { State = JobState.Running });
        watch.Apply(new JobEvent(2, time, JobEventTypes.Image) { Image = "runs/x/samples/step-000010-1.png" });
        watch.Apply(new JobEvent(3, time, JobEventTypes.Image) { Image = "runs/x/samples/step-000000-0.png" });
        watch.Apply(new JobEvent(4, time, JobEventTypes.Image) { Image = "runs/x/samples/step-000010-0.png" });
        watch.Apply(new JobEvent(5, time, JobEventTypes.Image) { Image = "runs/x/samples/notes.png" });
        watch.Apply(new JobEvent(6, time, JobEventTypes.Log) { Message = "training lora" });
        watch.Apply(new JobEvent(7, time, JobEventTypes.State) { State = JobState.Failed, Message = "out of memory" });

        Assert.Equal([(0L, 0), (10L, 0), (10L, 1)], watch.Samples.Select(s => (s.Step, s.Prompt)));
        Assert.Equal("runs/x/samples/step-000010-1.png", watch.Samples[2].Image);
        Assert.Equal("step-000010-1.png", watch.Samples[2].Name);
        Assert.Equal(["12:00:05  training lora", "12:00:05  failed: out of memory"], watch.Log);
        Assert.Equal(JobState.Failed, watch.State);
    }
}
