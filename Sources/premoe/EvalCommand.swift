import ArgumentParser
import Evaluation
import Foundation
import PreMoe

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Profile tasks, prune with each scorer to each keep level, and evaluate (the paper's table).")
    @OptionGroup var options: ModelOptions
    @Option(help: "Comma-separated tasks to profile, prune and store (folders of --data-dir).")
    var tasks = "ai2_arc,boolq,gsm8k,obqa,piqa,winogrande"
    @Option(help: "Comma-separated keep levels, e.g. 100%,50%,25%,12.5%.") var keep = "100%,50%,25%,12.5%"
    @Option(help: "Comma-separated scorers: tcess, tcess-prob, frequency, reap, random.") var scorers = "tcess,frequency,random"
    @Option(name: .customLong("data-dir"), help: "Task data laid out as <task>/<split>.jsonl.") var dataDir: String?
    @Option(help: "Evaluation split.") var split = "test"
    @Option(name: .customLong("calibration-split"), help: "Calibration split.") var calibrationSplit = "train"
    @Option(name: .customLong("max-examples"), help: "Evaluation items per task.") var maxExamples = 100
    @Option(name: .customLong("calibration-tokens"), help: "Calibration tokens per task.") var calibrationTokens = 20_000
    @Option(name: .customLong("retrieval-prompts"), help: "Held-out prompts per task for retrieval accuracy (0: skip retrieval).")
    var retrievalPrompts = 50
    @Option(name: .customLong("retrieval-queries"), help: "Calibration prompts per task rendered into retrieval samples.")
    var retrievalQueries = TaskProfiling.Settings().retrievalQueries
    @Option(help: "Comma-separated layer allocations tried with each scorer: uniform, routing-mass.")
    var allocations = "uniform,routing-mass"
    @Option(name: .customLong("out-of-store"), help: "Comma-separated tasks that are not stored; their prompts should fall back.")
    var outOfStore = "wikitext2,python_code,german_manpages"
    @Flag(inversion: .prefixedNo, help: "Oracle rows: the default recipe profiled on the evaluation text itself.")
    var oracle = true
    @Option(name: .customLong("top-k"), help: "Experts per token in the pruned models (the paper's a/b, e.g. 4 for 4/64).")
    var topK: Int?
    @Option(name: .customLong("min-experts-per-layer"), help: "Fewest experts a layer keeps under routing-mass allocations.")
    var minExpertsPerLayer = 1
    @Flag(name: .customLong("select-recipe"), inversion: .prefixedNo,
          help: "Choose each task's recipe per keep level on held-out calibration items (the 'selected' rows, the default recipe).")
    var selectRecipe = true
    @Flag(name: .customLong("merge"),
          help: "Also evaluate every recipe with each dropped expert merged into its most similar kept expert (rows '<method>+merge').")
    var merge = false
    @Option(help: "Directory for report.md, report.json and report.csv.") var out = "eval-results"
    @Flag(help: "Print JSON: {\"rows\": […], \"retrieval\": …}.") var json = false

    func validate() throws {
        if maxExamples < 1 { throw ValidationError("--max-examples must be ≥ 1") }
        if calibrationTokens < 1 { throw ValidationError("--calibration-tokens must be ≥ 1") }
        if retrievalPrompts < 0 || retrievalQueries < 0 { throw ValidationError("--retrieval-prompts and --retrieval-queries must be ≥ 0") }
        _ = try parseAllocations()
        if let topK, topK < 1 { throw ValidationError("--top-k must be ≥ 1") }
        if minExpertsPerLayer < 1 { throw ValidationError("--min-experts-per-layer must be ≥ 1") }
        _ = try parseKeeps()
    }

    func parseKeeps() throws -> [Double] {
        try keep.split(separator: ",").map { part in
            let text = part.trimmingCharacters(in: .whitespaces)
            let value = text.hasSuffix("%") ? Double(text.dropLast()).map { $0 / 100 } : Double(text)
            guard let value, value > 0, value <= 1 else {
                throw ValidationError("--keep: '\(text)' is not a fraction in (0, 1] or a percentage in (0%, 100%]")
            }
            return value
        }
    }

    func parseAllocations() throws -> [LayerAllocation] {
        try allocations.split(separator: ",").map { part in
            let text = part.trimmingCharacters(in: .whitespaces)
            guard let value = LayerAllocation(rawValue: text), value != .selected else {
                throw ValidationError("--allocations: '\(text)' is not one of "
                    + LayerAllocation.allCases.filter { $0 != .selected }.map(\.rawValue).joined(separator: ", ")
                    + " (the selected recipe is its own row; --no-select-recipe leaves it out)")
            }
            return value
        }
    }

    /// The repository's copy of the task data: `../shared/data/tasks` beside the checkout, else `data/tasks`.
    static func defaultDataDirectory() -> URL {
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        for candidate in ["data/tasks", "../shared/data/tasks"] {
            let url = cwd.appendingPathComponent(candidate)
            if FileManager.default.fileExists(atPath: url.path) { return url.standardizedFileURL }
        }
        return cwd.appendingPathComponent("data/tasks")
    }

    func run() throws {
        var sweepOptions = SweepOptions(
            tasks: tasks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
            keeps: try parseKeeps(),
            scorers: scorers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
            dataDirectory: dataDir.map { URL(fileURLWithPath: $0) } ?? Self.defaultDataDirectory(),
            split: split, calibrationSplit: calibrationSplit, maxExamples: maxExamples,
            calibrationTokens: calibrationTokens, retrievalPrompts: retrievalPrompts, retrievalQueries: retrievalQueries,
            allocations: try parseAllocations(),
            outOfStore: outOfStore.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
            oracle: oracle, topK: topK, threads: options.threads)
        sweepOptions.minimumPerLayer = minExpertsPerLayer
        sweepOptions.selectRecipe = selectRecipe
        sweepOptions.merge = merge
        let report = try PruningSweep.run(modelDirectory: options.url, options: sweepOptions) { printError($0) }
        let outURL = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: outURL, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try encoder.encode(report).write(to: outURL.appendingPathComponent("report.json"))
        try Data(report.markdown().utf8).write(to: outURL.appendingPathComponent("report.md"))
        try Data(report.csv().utf8).write(to: outURL.appendingPathComponent("report.csv"))
        if json { return try printJSON(report) }
        print(report.markdown())
        for note in report.notes { print("- \(note)") }
        print("written to \(outURL.path)/report.{md,json,csv}")
    }
}
