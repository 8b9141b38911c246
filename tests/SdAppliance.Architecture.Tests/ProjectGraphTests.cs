using System.Xml.Linq;

namespace SdAppliance.Architecture.Tests;

/// <summary>
/// The project references agree with docs/architecture.md: every <c>ProjectReference</c> under src/, tests/ and tools/
/// is an edge the page's <c>from | to | why</c> tables draw (or a shortcut to what drawn edges already reach).
/// </summary>
public sealed class ProjectGraphTests
{
    private const string MapPage = "docs/architecture.md";

    private static readonly string[] EngineFree = ["SdAppliance.Formats", "SdAppliance.Imaging"];

    private const string Engine = "SdAppliance.Torch";

    private readonly Repository repo = Repository.Find();

    [Fact]
    public void EveryProjectReferenceIsOnTheMap()
    {
        var map = ArchitectureMap.Read(repo.PathOf(MapPage));
        var problems = new List<string>();
        foreach (var project in repo.Projects())
        {
            if (project.Area == "tools")
            {
                // Tools sit above every layer: any src/ project or another tool, never a test project.
                problems.AddRange(project.References.Where(r => repo.AreaOf(r) == "tests")
                    .Select(r => $"{project.Name} -> {r}: a tool must not reference a test project"));
                continue;
            }
            if (!map.Projects.Contains(project.Name))
            {
                problems.Add($"{project.Name} ({project.RelativePath}) is not on the map: add its rows (or a row to '—') to {MapPage}");
                continue;
            }
            foreach (var target in project.References)
                if (!map.Allows(project.Name, target))
                    problems.Add($"{project.Name} -> {target} ({project.RelativePath}) is not an edge of {MapPage}: "
                        + "remove the reference or draw the edge there with its reason");
        }
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    [Fact]
    public void TheMapHasNoCycleAndKeepsFormatsAndImagingFreeOfTheEngine()
    {
        // Held here, not only on the page: these are the design's rules, which no new row may break.
        var map = ArchitectureMap.Read(repo.PathOf(MapPage));
        foreach (var project in map.Projects)
            Assert.False(map.Reachable(project).Contains(project), $"{MapPage} draws a cycle through {project}: nothing may call up");
        foreach (var project in EngineFree)
            Assert.False(map.Reachable(project).Contains(Engine), $"{MapPage} lets {project} reach {Engine}: it must build and test without libtorch");
    }

    [Fact]
    public void EveryProjectIsInTheSolution()
    {
        // The README's test command runs the solution: a project left out of it would never be built or tested.
        var solution = File.ReadAllText(repo.PathOf("SdAppliance.sln")).Replace('\\', '/');
        var missing = repo.Projects().Where(p => !solution.Contains($"\"{p.RelativePath}\"", StringComparison.Ordinal)).Select(p => p.RelativePath).ToList();
        Assert.True(missing.Count == 0, "not in SdAppliance.sln (add with `dotnet sln add`): " + string.Join(", ", missing));
    }

    [Fact]
    public void TheCheckSeesTheRealGraph()
    {
        // Guards the test itself: if project files stopped being found or parsed, every check above would pass.
        var projects = repo.Projects().ToDictionary(p => p.Name);
        Assert.Contains("SdAppliance.Formats", projects[Engine].References);
        Assert.Contains("SdAppliance.Diffusion", projects["SdAppliance.Training"].References);
        var map = ArchitectureMap.Read(repo.PathOf(MapPage));
        Assert.True(map.Allows("SdAppliance.Cli", "SdAppliance.Models"), "a shortcut to a reachable layer");
        Assert.False(map.Allows("SdAppliance.Formats", Engine));
        Assert.False(map.Allows("SdAppliance.Models", "SdAppliance.Diffusion"));
    }
}

/// <summary>A project file: its name (the file name without .csproj), its area (src, tests, tools) and whom it references.</summary>
internal sealed record ProjectFile(string Name, string Area, string RelativePath, IReadOnlyList<string> References);

/// <summary>The repository the tests run from: the folder holding SdAppliance.sln above the test binaries.</summary>
internal sealed class Repository(string root)
{
    private static readonly string[] Areas = ["src", "tests", "tools"];

    public static Repository Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SdAppliance.sln")))
                return new Repository(dir.FullName);
        throw new DirectoryNotFoundException($"no SdAppliance.sln above {AppContext.BaseDirectory}");
    }

    public string PathOf(string relative) => Path.Combine(root, relative);

    /// <summary>Every AREA/NAME/NAME.csproj (one project per folder, as the repository is laid out).</summary>
    public IEnumerable<ProjectFile> Projects()
    {
        foreach (var area in Areas)
            foreach (var file in Directory.EnumerateFiles(PathOf(area), "*.csproj", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                var relative = Path.GetRelativePath(root, file).Replace('\\', '/');
                if (relative.Split('/').Length != 3) continue;  // bin/obj copies and nested test data are not projects
                var references = XDocument.Load(file).Descendants("ProjectReference")
                    .Select(r => Path.GetFileNameWithoutExtension(r.Attribute("Include")!.Value.Replace('\\', '/')))
                    .ToList();
                yield return new ProjectFile(Path.GetFileNameWithoutExtension(file), area, relative, references);
            }
    }

    public string? AreaOf(string projectName) => Projects().FirstOrDefault(p => p.Name == projectName)?.Area;
}

/// <summary>The edges drawn in the page's tables whose header is <c>| from | to | why |</c>; "—" in "to" means none.</summary>
internal sealed class ArchitectureMap
{
    private readonly Dictionary<string, HashSet<string>> edges = new(StringComparer.Ordinal);

    public IReadOnlyCollection<string> Projects => edges.Keys;

    public static ArchitectureMap Read(string path)
    {
        var map = new ArchitectureMap();
        var inEdgeTable = false;
        foreach (var line in File.ReadLines(path))
        {
            if (!line.StartsWith('|'))
            {
                inEdgeTable = false;
                continue;
            }
            var cells = line.Trim().Trim('|').Split('|').Select(c => c.Trim()).ToArray();
            if (cells is ["from", "to", "why"])
            {
                inEdgeTable = true;
                continue;
            }
            if (!inEdgeTable || cells.Length < 3 || cells[0].StartsWith("---", StringComparison.Ordinal)) continue;
            var from = Name(cells[0], path, line);
            var targets = map.edges.TryGetValue(from, out var set) ? set : map.edges[from] = new HashSet<string>(StringComparer.Ordinal);
            if (cells[1] != "—") targets.Add(Name(cells[1], path, line));
        }
        if (map.edges.Count == 0) throw new InvalidDataException($"{path} has no '| from | to | why |' table");
        return map;
    }

    private static string Name(string cell, string path, string line) =>
        cell.Length > 2 && cell[0] == '`' && cell[^1] == '`' ? cell[1..^1]
            : throw new InvalidDataException($"{path}: a project name in backticks expected, got '{cell}' in: {line}");

    /// <summary>Drawn, or a shortcut: the target is reachable through drawn edges anyway.</summary>
    public bool Allows(string from, string to) => Reachable(from).Contains(to);

    /// <summary>Every project reachable from <paramref name="from"/> through one or more drawn edges.</summary>
    public HashSet<string> Reachable(string from)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var stack = new Stack<string>([from]);
        while (stack.Count > 0)
            foreach (var next in edges.GetValueOrDefault(stack.Pop()) ?? [])
                if (seen.Add(next)) stack.Push(next);
        return seen;
    }
}
