namespace SdAppliance.Diffusion.Schedulers;

/// <summary>
/// Gauss–Legendre quadrature in double precision. An n-point rule integrates polynomials of
/// degree ≤ 2n − 1 exactly, so the LMS coefficients (integrals of Lagrange basis polynomials of
/// degree ≤ 3) come out exact to rounding, which is what scipy's adaptive <c>quad</c> reaches on them.
/// </summary>
public static class Quadrature
{
    private static readonly Dictionary<int, (double[] Nodes, double[] Weights)> Rules = [];
    private static readonly Lock RulesLock = new();

    /// <summary>The nodes (on [−1, 1]) and weights of the <paramref name="n"/>-point rule.</summary>
    public static (double[] Nodes, double[] Weights) GaussLegendreRule(int n)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        lock (RulesLock)
        {
            if (Rules.TryGetValue(n, out var rule)) return rule;
            var nodes = new double[n];
            var weights = new double[n];
            for (var i = 0; i < (n + 1) / 2; i++)
            {
                // Newton's method on P_n from Tricomi's initial guess for the i-th largest root.
                var x = Math.Cos(Math.PI * (i + 0.75) / (n + 0.5));
                double derivative = 0;
                for (var iteration = 0; iteration < 100; iteration++)
                {
                    // P_n(x) and P_n'(x) by the three-term recurrence.
                    double p0 = 1, p1 = x;
                    for (var k = 2; k <= n; k++)
                    {
                        var pk = ((2 * k - 1) * x * p1 - (k - 1) * p0) / k;
                        p0 = p1;
                        p1 = pk;
                    }
                    var pn = n == 1 ? x : p1;
                    var pnMinus1 = n == 1 ? 1 : p0;
                    derivative = n * (x * pn - pnMinus1) / (x * x - 1);
                    var dx = pn / derivative;
                    x -= dx;
                    if (Math.Abs(dx) < 1e-16) break;
                }
                nodes[i] = x;
                nodes[n - 1 - i] = -x;
                weights[i] = weights[n - 1 - i] = 2 / ((1 - x * x) * derivative * derivative);
            }
            rule = (nodes, weights);
            Rules[n] = rule;
            return rule;
        }
    }

    /// <summary>∫ f over [a, b] with the <paramref name="points"/>-point Gauss–Legendre rule (b &lt; a gives the negated integral).</summary>
    public static double GaussLegendre(Func<double, double> f, double a, double b, int points = 8)
    {
        var (nodes, weights) = GaussLegendreRule(points);
        var half = (b - a) / 2;
        var mid = (a + b) / 2;
        double sum = 0;
        for (var i = 0; i < nodes.Length; i++) sum += weights[i] * f(mid + half * nodes[i]);
        return sum * half;
    }
}
