using System.Diagnostics;
using SdAppliance.Torch.Distributed;
using SdAppliance.Torch.Nn;

namespace SdAppliance.Torch.Tests;

/// <summary>
/// c10d through the shim: several ranks in this one process, each on its own thread with its own Gloo process group on
/// a shared TCPStore on the loopback, exactly as separate processes would meet (the sockets are real).
/// </summary>
public class DistributedTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Runs <paramref name="body"/> as every rank of a <paramref name="world"/>-rank Gloo group and returns their results in rank order.</summary>
    private static T[] RunRanks<T>(int world, Func<ProcessGroup, T> body, TimeSpan? timeout = null)
    {
        using var host = TcpStore.Host("127.0.0.1", 0, world, timeout ?? Timeout);
        var ranks = Enumerable.Range(0, world).Select(rank => Task.Factory.StartNew(() =>
        {
            using var client = rank == 0 ? null : TcpStore.Connect("127.0.0.1", host.Port, world, timeout ?? Timeout);
            using var group = new ProcessGroup(client ?? host, rank, world, ProcessGroupBackend.Gloo, timeout ?? Timeout, "127.0.0.1");
            return body(group);
        }, TaskCreationOptions.LongRunning)).ToArray();
        Assert.True(Task.WaitAll(ranks, TimeSpan.FromMinutes(2)), "the ranks did not finish within two minutes");
        return [.. ranks.Select(r => r.Result)];
    }

    [Fact]
    public void AllReduceSumsAveragesAndTakesTheMaximumAcrossRanks()
    {
        var results = RunRanks(3, group =>
        {
            // Rank r holds [r + 1, 10 (r + 1)].
            var r = group.Rank + 1f;
            using var sum = torch.Tensor([r, 10 * r]);
            using var average = torch.Tensor([r, 10 * r]);
            using var max = torch.Tensor([r, -r]);
            group.AllReduce([sum], ReduceOp.Sum);
            group.AllReduce([average], ReduceOp.Average);
            group.AllReduce([max], ReduceOp.Max);
            return (sum: sum.ToArray<float>(), average: average.ToArray<float>(), max: max.ToArray<float>());
        });
        foreach (var (sum, average, max) in results)
        {
            Assert.Equal([6f, 60f], sum);       // 1 + 2 + 3
            Assert.Equal([2f, 20f], average);   // 6 / 3, exact in float32
            Assert.Equal([3f, -1f], max);
        }
    }

    [Fact]
    public void BroadcastCopiesTheRootsTensorsAndAllGatherCollectsEveryRanks()
    {
        var results = RunRanks(2, group =>
        {
            // Two dtypes and shapes, so that the coalescing into buckets is exercised.
            using var weights = torch.Tensor([group.Rank + 0.5f, group.Rank + 1.5f, group.Rank + 2.5f], 3);
            using var counts = torch.Tensor([(long)group.Rank * 100, group.Rank * 100 + 1]);
            group.Broadcast([weights, counts], root: 1);
            using var mine = torch.Tensor([group.Rank * 1f, group.Rank * 2f]);
            var gathered = group.AllGather(mine);
            group.Barrier();
            var all = gathered.Select(t => t.ToArray<float>()).ToArray();
            foreach (var t in gathered) t.Dispose();
            return (weights: weights.ToArray<float>(), counts: counts.ToArray<long>(), all);
        });
        foreach (var (weights, counts, all) in results)
        {
            Assert.Equal([1.5f, 2.5f, 3.5f], weights);
            Assert.Equal([100L, 101L], counts);
            Assert.Equal([0f, 0f], all[0]);
            Assert.Equal([1f, 2f], all[1]);
        }
    }

    /// <summary>A small model of three layers, the same weights on every rank (built from one seed); the third is never used.</summary>
    private sealed class Net : Module<Tensor, Tensor>
    {
        private readonly Linear first;
        private readonly Linear second;

        public Net()
        {
            using var generator = new Generator(7);
            first = RegisterModule("first", new Linear(3, 5, generator: generator));
            second = RegisterModule("second", new Linear(5, 2, generator: generator));
            RegisterModule("unused", new Linear(2, 2, generator: generator));
        }

        public override Tensor Forward(Tensor input)
        {
            using var scope = torch.NewDisposeScope();
            return scope.MoveToOuterScope(second.Forward(first.Forward(input).Tanh()))!;
        }
    }

    private static Tensor Input(int rank, int microStep) =>
        torch.Tensor([.. Enumerable.Range(0, 6).Select(i => (float)Math.Sin(1 + i + 10 * rank + 100 * microStep))], 2, 3);

    /// <summary>One rank's loss on its own micro-batch: the sum of squares of the output.</summary>
    private static void Backward(Net net, int rank, int microStep)
    {
        using var scope = torch.NewDisposeScope();
        var output = net.Forward(Input(rank, microStep));
        (output * output).Sum().Backward();
    }

    private static Dictionary<string, float[]?> Grads(Net net) =>
        net.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Grad is { } g ? g.ToArray<float>() : null);

    [Fact]
    public void GradientBucketsAverageEveryRanksGradientsOverAccumulatedMicroSteps()
    {
        // The reference, on this thread: each rank's gradients of two micro-steps, accumulated.
        var local = Enumerable.Range(0, 2).Select(rank =>
        {
            using var net = new Net();
            Backward(net, rank, 0);
            Backward(net, rank, 1);
            return Grads(net);
        }).ToArray();

        var results = RunRanks(2, group =>
        {
            using var net = new Net();
            // Buckets of at most 64 bytes (16 floats), filled from the last parameter: [unused.bias, unused.weight,
            // second.bias] (2 + 4 + 2 floats), [second.weight, first.bias] (10 + 5), [first.weight] (15).
            using var buckets = new GradientBuckets(group, [.. net.Parameters()], ReduceOp.Average, bucketBytes: 64, firstBucketBytes: 64);
            Backward(net, group.Rank, 0);   // accumulates locally, as under no_sync
            buckets.Prepare();
            Backward(net, group.Rank, 1);   // the buckets start their all-reduces from the hooks
            buckets.Finish();
            return (buckets.Count, grads: Grads(net));
        });

        foreach (var (count, grads) in results)
        {
            Assert.Equal(3, count);
            foreach (var (name, grad) in grads)
            {
                if (name.StartsWith("unused", StringComparison.Ordinal))
                {
                    Assert.Null(grad); // no rank produced one: the optimizer must skip it as in one process
                    continue;
                }
                // (a + b) / 2 of two float32 values is the same rounding on either side: equal to the bit.
                var expected = local[0][name]!.Zip(local[1][name]!, (a, b) => (a + b) / 2).ToArray();
                Assert.Equal(expected, grad);
            }
        }
    }

    [Fact]
    public void TheFirstBucketHasItsOwnSmallerLimit()
    {
        var counts = RunRanks(2, group =>
        {
            using var net = new Net();
            // From the last parameter: [unused.bias] (8 bytes; with unused.weight it would pass the first bucket's 16),
            // [unused.weight, second.bias, second.weight, first.bias] (16 + 8 + 40 + 20 bytes, within 128), [first.weight].
            // Had the first bucket the others' limit, it would hold all but first.weight: 2 buckets.
            using var buckets = new GradientBuckets(group, [.. net.Parameters()], ReduceOp.Sum, bucketBytes: 128, firstBucketBytes: 16);
            return buckets.Count;
        });
        Assert.Equal([3, 3], counts);
    }

    [Fact]
    public void ADisposedRankIsNamedByTheOthersCollective()
    {
        var results = RunRanks<(RankLostException Error, TimeSpan Elapsed)?>(3, group =>
        {
            using var t = torch.Tensor([1f]);
            group.AllReduce([t]);
            if (group.Rank == 2)
            {
                // Gone as a killed process is: its sockets close and its heartbeat stops.
                group.Dispose();
                return null;
            }
            var watch = Stopwatch.StartNew();
            var e = Assert.Throws<RankLostException>(() => group.AllReduce([t]));
            return (e, watch.Elapsed);
        });
        Assert.Null(results[2]);
        foreach (var (e, elapsed) in results[..2].Select(r => r!.Value))
        {
            Assert.Equal([2], e.LostRanks);
            Assert.Contains("rank 2 of 3 stopped answering during all_reduce", e.Message);
            Assert.True(elapsed < Timeout, $"took {elapsed}, beyond the {Timeout} timeout");
        }
    }

    [Fact]
    public void ARankThatIsAliveButSilentTimesOutWithoutBeingCalledLost()
    {
        var timeout = TimeSpan.FromSeconds(3);
        var results = RunRanks<Exception?>(2, group =>
        {
            using var t = torch.Tensor([1f]);
            if (group.Rank == 1)
            {
                // Alive (its heartbeat beats) but never joins the collective, until rank 0 has given up.
                Thread.Sleep(timeout * 3);
                return null;
            }
            return Record.Exception(() => group.AllReduce([t]));
        }, timeout);
        var e = Assert.IsType<TorchException>(results[0]);
        Assert.Contains("rank 0 of 2: all_reduce failed", e.Message);
        Assert.Contains("imed out", e.Message); // Gloo: "Timed out waiting ... for recv operation"
    }

    [Fact]
    public void ARendezvousThatARankNeverJoinsNamesIt()
    {
        var timeout = TimeSpan.FromSeconds(3);
        using var host = TcpStore.Host("127.0.0.1", 0, 2, timeout);
        var e = Assert.Throws<RankLostException>(() => new ProcessGroup(host, 0, 2, ProcessGroupBackend.Gloo, timeout, "127.0.0.1"));
        Assert.Equal([1], e.LostRanks);
        Assert.Contains("during the rendezvous", e.Message);
    }

    [Fact]
    public void TheStoreKeepsValuesAndCountersBetweenConnections()
    {
        using var host = TcpStore.Host("127.0.0.1", 0, 2, Timeout);
        using var client = TcpStore.Connect("127.0.0.1", host.Port, 2, Timeout);
        var big = Enumerable.Range(0, 5000).Select(i => (byte)i).ToArray();
        host.Set("state", big);
        Assert.Equal(big, client.Get("state")); // longer than the first buffer: read again at its length
        client.Set("name", "rank 1");
        Assert.Equal("rank 1", host.GetString("name"));
        Assert.Equal(3, host.Add("count", 3));
        Assert.Equal(5, client.Add("count", 2));
        Assert.True(client.Contains("count"));
        Assert.False(client.Contains("missing"));
    }
}
