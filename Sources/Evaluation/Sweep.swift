import Foundation
import Formats
import Models
import PreMoe
import Tokenization

/// One cell of the pruning sweep: a task evaluated on the model pruned by a recipe to a keep level.
public struct SweepRow: Codable, Sendable {
    public var task: String
    public var scorer: String
    /// The whole recipe: `<scorer>/<allocation>` (`tcess/uniform` is the paper), or `oracle` (the
    /// default recipe profiled on the evaluation text itself: a bound, not a method).
    public var method: String
    /// Whether this row belongs to the default recipe of `profile`, `prune`, `run` and `eval`.
    public var isDefault: Bool
    /// Fraction of routed experts kept per MoE layer (1 = the full model).
    public var keep: Double
    public var expertsKept: Int
    public var perplexity: Double?
    /// Multiple-choice accuracy (or GSM8K exact match); nil where the split has no labels.
    public var accuracy: Double?
    public var normalizedAccuracy: Double?
    /// Backbone plus kept experts, at their storage size.
    public var memoryBytes: Int
    /// The concrete recipe that made the pruned model (`reap/routing-mass`, …): for `selected`
    /// rows, the one the profile chose on held-out calibration items; nil for the full model.
    public var recipe: String?

    enum CodingKeys: String, CodingKey {
        case task, scorer, method, keep, perplexity, accuracy, recipe
        case isDefault = "default"
        case expertsKept = "experts_kept"
        case normalizedAccuracy = "accuracy_norm"
        case memoryBytes = "memory_bytes"
    }
}

/// Everything a sweep measured.
public struct SweepReport: Codable, Sendable {
    public var model: String
    public var rows: [SweepRow]
    public var retrieval: RetrievalEvaluation?
    /// How each task was calibrated and evaluated (splits, counts, tokens).
    public var notes: [String]
}

/// Settings of a sweep.
public struct SweepOptions: Sendable {
    public var tasks: [String]
    public var keeps: [Double]
    public var scorers: [String]
    public var dataDirectory: URL
    public var split: String
    public var calibrationSplit: String
    /// Evaluation items per task.
    public var maxExamples: Int
    /// Calibration tokens per task.
    public var calibrationTokens: Int
    /// Held-out queries per task for retrieval accuracy (each in every `QueryStyle`).
    public var retrievalPrompts: Int
    /// Calibration queries per task rendered into the patterns' retrieval samples.
    public var retrievalQueries: Int
    /// Layer allocations tried with every scorer but `random` (which stays uniform).
    public var allocations: [LayerAllocation]
    /// Tasks not in the store whose queries must fall back (missing ones are skipped with a note).
    public var outOfStore: [String]
    /// Add the oracle rows (the default recipe profiled on the evaluation text).
    public var oracle: Bool
    /// Experts per token in the pruned models (the paper's a/b); nil keeps the model's.
    public var topK: Int?
    /// The fewest experts a layer keeps under a routing-mass allocation (measured: 1 and 2 give
    /// the same plans on the demo model, top-k = 4 is much worse at 12.5%).
    public var minimumPerLayer = 1
    /// Choose each task's recipe per keep level on held-out calibration items at profile time
    /// (the `selected` rows).
    public var selectRecipe = true
    /// Also evaluate every recipe with the dropped experts merged into the kept ones
    /// (`ExpertMerging`; rows `<method>+merge`).
    public var merge = false
    public var threads: Int

    public init(tasks: [String], keeps: [Double], scorers: [String], dataDirectory: URL, split: String = "test",
                calibrationSplit: String = "train", maxExamples: Int = 100, calibrationTokens: Int = 20_000,
                retrievalPrompts: Int = 50, retrievalQueries: Int = TaskProfiling.Settings().retrievalQueries,
                allocations: [LayerAllocation] = [.uniform], outOfStore: [String] = [], oracle: Bool = false,
                topK: Int? = nil, threads: Int = 0) {
        self.tasks = tasks
        self.keeps = keeps
        self.scorers = scorers
        self.dataDirectory = dataDirectory
        self.split = split
        self.calibrationSplit = calibrationSplit
        self.maxExamples = maxExamples
        self.calibrationTokens = calibrationTokens
        self.retrievalPrompts = retrievalPrompts
        self.retrievalQueries = retrievalQueries
        self.allocations = allocations
        self.outOfStore = outOfStore
        self.oracle = oracle
        self.topK = topK
        self.threads = threads
    }
}

/// The paper-style table: profile each task on its calibration split, prune with each scorer to
/// each keep level, and evaluate on the evaluation split.
public enum PruningSweep {
    /// The recipe `profile`, `prune`, `run` and `eval` use unless told otherwise: per task and
    /// keep level, the recipe (score set and allocation) with the lowest loss on held-out
    /// calibration items at profile time; patterns without that choice use TCESS ranking inside
    /// each layer with per-layer counts balanced by routing mass (docs/RESULTS.md measures both
    /// against the paper's uniform TCESS and the other scorers).
    public static let defaultScorer = "tcess"
    public static let defaultAllocation = LayerAllocation.selected
    public static var defaultMethod: String { method(defaultScorer, defaultAllocation) }

    static func method(_ scorer: String, _ allocation: LayerAllocation, topK: Int? = nil) -> String {
        (allocation == .selected ? "selected" : "\(scorer)/\(allocation.rawValue)") + (topK.map { "/top\($0)" } ?? "")
    }

    /// The oracle rows' recipe (profiled on the evaluation text itself, so no selection).
    static let oracleScorer = "tcess"
    static let oracleAllocation = LayerAllocation.routingMass

    /// Runs the sweep.
    /// - Parameters:
    ///   - modelDirectory: a Hugging Face model directory.
    ///   - progress: status lines (stderr material).
    /// - Throws: `EvaluationError`, `PreMoeError`, `ModelError`.
    public static func run(modelDirectory: URL, options: SweepOptions, progress: (String) -> Void = { _ in }) throws -> SweepReport {
        let loaded = try ModelLoader.load(modelDirectory, options: LoadOptions(threads: options.threads))
        guard let tokenizer = loaded.tokenizer else {
            throw EvaluationError.noItems("\(modelDirectory.path) has no tokenizer.json")
        }
        let model = loaded.model
        let spec = model.spec
        guard let firstMoE = spec.moeLayers.first, let moe = spec.moe(firstMoE) else {
            throw PreMoeError.unsupported("the model has no MoE layer to prune")
        }
        let sizes = ModelSizes.measure(loaded.checkpoint, spec: spec)
        let fingerprint = try ModelFingerprint.compute(loaded)
        let scorers = try options.scorers.map { try Scorers.make($0, modelTopK: moe.topK) }
        let allExperts = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { ($0, Array(0..<(spec.moe($0)?.expertCount ?? 0))) })
        var settings = TaskProfiling.Settings(maxTokens: options.calibrationTokens, retrievalQueries: options.retrievalQueries)
        if options.selectRecipe {
            settings.selection = RecipeSelector.Settings(keeps: options.keeps.filter { $0 < 1 }, minimumPerLayer: options.minimumPerLayer)
        }
        let loss = { (texts: [String]) throws -> Double in
            log(try LogLikelihoodScorer(model: model, tokenizer: tokenizer).perplexity(texts).perplexity)
        }
        // Every (scorer, allocation) recipe; random pruning has nothing to balance.
        let recipes: [(scorer: Int, allocation: LayerAllocation)] = options.scorers.indices.flatMap { i in
            (options.scorers[i] == "random" ? [.uniform] : options.allocations.filter { $0 != .selected }).map { (i, $0) }
        }

        var rows: [SweepRow] = []
        var notes: [String] = []
        var storePatterns: [TaskPattern] = []
        var heldOutQueries: [String: [TaskQuery]] = [:]
        for task in options.tasks {
            // Profile and evaluate from the full model: the previous task left a pruned one.
            try loaded.loadExperts(kept: allExperts, copy: false)
            let split = try splitTexts(task: task, options: options)
            notes.append(split.note)
            heldOutQueries[task] = split.heldOutQueries
            progress("[\(task)] profiling \(options.calibrationTokens) tokens")
            let calibration = TaskCalibration(task: task, texts: split.calibration, queries: split.calibrationQueries)
            let patterns = try TaskProfiling.profile(model: model, tokenizer: tokenizer, fingerprint: fingerprint,
                                                     calibration: calibration, scorers: scorers, settings: settings,
                                                     validationLoss: loss).patterns
            for level in patterns[0].recipeSelection?.levels ?? [] {
                let ranked = level.losses.sorted { ($0.value, $0.key) < ($1.value, $1.key) }.prefix(3)
                progress("[\(task)] keep \(level.keep): chose \(level.chosen) (validation loss "
                    + ranked.map { String(format: "%@ %.4f", $0.key, $0.value) }.joined(separator: ", ") + ")")
            }
            storePatterns.append(patterns[0])
            var oracle: TaskPattern?
            if options.oracle {
                progress("[\(task)] oracle: profiling the evaluation text")
                let bound = TaskCalibration(task: task, texts: split.evaluation, queries: [])
                oracle = try TaskProfiling.profile(
                    model: model, tokenizer: tokenizer, fingerprint: fingerprint, calibration: bound,
                    scorers: [try Scorers.make(oracleScorer, modelTopK: moe.topK)],
                    settings: TaskProfiling.Settings(maxTokens: options.calibrationTokens, retrievalQueries: 0)).patterns[0]
            }
            let items = try evaluationItems(task: task, options: options)

            // The full model once: every recipe's 100% row is the same model.
            let full = try evaluate(model: model, tokenizer: tokenizer, task: task, texts: split.evaluation, items: items)
            var runs: [(method: String, scorer: String, pattern: TaskPattern, allocation: LayerAllocation, merge: Bool)] = recipes.map {
                (method(options.scorers[$0.scorer], $0.allocation, topK: options.topK), options.scorers[$0.scorer],
                 patterns[$0.scorer], $0.allocation, false)
            }
            if patterns[0].recipeSelection != nil {
                runs.append((method(defaultScorer, .selected, topK: options.topK), options.scorers[0], patterns[0], .selected, false))
            }
            if options.merge {
                runs += runs.map { ($0.method + "+merge", $0.scorer, $0.pattern, $0.allocation, true) }
            }
            if let oracle { runs.append(("oracle", oracleScorer, oracle, oracleAllocation, false)) }
            // Recipes that keep the same experts make the same model: evaluate it once.
            var measured: [[Int: [Int]]: (perplexity: Double?, accuracy: Double?, normalizedAccuracy: Double?)] = [:]
            var measuredMerged = measured
            for keep in options.keeps {
                for run in runs {
                    var row = SweepRow(task: task, scorer: run.scorer, method: run.method,
                                       isDefault: run.method == defaultMethod && options.topK == nil, keep: keep, expertsKept: moe.expertCount,
                                       perplexity: full.perplexity, accuracy: full.accuracy,
                                       normalizedAccuracy: full.normalizedAccuracy,
                                       memoryBytes: sizes.bytes(keeping: allExperts))
                    if keep < 1 {
                        let plan = try PruningPlan.make(patterns: [run.pattern], budget: .fraction(keep), sizes: sizes,
                                                        allocation: run.allocation,
                                                        minimumPerLayer: options.minimumPerLayer)
                        let result: (perplexity: Double?, accuracy: Double?, normalizedAccuracy: Double?)
                        if let known = (run.merge ? measuredMerged : measured)[plan.keptExperts] {
                            result = known
                        } else if run.merge {
                            // Merge weights are the recipe's task pattern's (the same task for every scorer).
                            try loaded.loadExperts(kept: allExperts, copy: false)
                            try model.pruneMerging(plan.keptExperts, weights: patterns[0].mergeWeightsByLayer)
                            if let k = options.topK { try model.overrideRoutedTopK(k) }
                            result = try evaluate(model: model, tokenizer: tokenizer, task: task, texts: split.evaluation, items: items)
                            measuredMerged[plan.keptExperts] = result
                        } else {
                            try loaded.loadExperts(kept: plan.keptExperts, copy: false)
                            if let k = options.topK { try model.overrideRoutedTopK(k) }
                            result = try evaluate(model: model, tokenizer: tokenizer, task: task, texts: split.evaluation, items: items)
                            measured[plan.keptExperts] = result
                        }
                        row.recipe = plan.recipe
                        row.expertsKept = plan.expertsPerLayer
                        row.perplexity = result.perplexity
                        row.accuracy = result.accuracy
                        row.normalizedAccuracy = result.normalizedAccuracy
                        row.memoryBytes = sizes.bytes(keeping: plan.keptExperts)
                    }
                    progress(String(format: "[%@] %@ keep %.1f%%: ppl %.3f%@", task, run.method, keep * 100,
                                    row.perplexity ?? .nan, row.accuracy.map { String(format: ", acc %.3f", $0) } ?? ""))
                    rows.append(row)
                }
            }
        }
        try loaded.loadExperts(kept: allExperts, copy: false)
        var retrieval: RetrievalEvaluation?
        if storePatterns.count > 1 && options.retrievalPrompts > 0 {
            var outOfStore: [String: [TaskQuery]] = [:]
            for task in options.outOfStore where !options.tasks.contains(task) {
                let url = options.dataDirectory.appendingPathComponent("\(task)/\(options.split).jsonl")
                guard FileManager.default.fileExists(atPath: url.path) else {
                    notes.append("out-of-store \(task): no \(url.path), skipped")
                    continue
                }
                // Prose files hold headings and fragments: queries are paragraphs of 50+ characters.
                outOfStore[task] = Array(try TaskQueries.read(url).filter { $0.question.count >= 50 }.prefix(options.retrievalPrompts))
            }
            retrieval = try RetrievalBenchmark.run(model: model, tokenizer: tokenizer, patterns: storePatterns,
                                                   queries: heldOutQueries, outOfStore: outOfStore, progress: progress)
        }
        return SweepReport(model: modelDirectory.path, rows: rows, retrieval: retrieval, notes: notes)
    }

    /// A task's calibration and evaluation material.
    struct Split {
        var calibration: [String]
        var calibrationQueries: [TaskQuery]
        var evaluation: [String]
        var heldOutQueries: [TaskQuery]
        var note: String
    }

    /// Calibration and evaluation material of a task. A task without the calibration split
    /// (WikiText-2 ships only `test`) is calibrated on the first half of its evaluation split and
    /// evaluated on the second half, so the two never overlap. Held-out retrieval queries come
    /// from the evaluation side.
    static func splitTexts(task: String, options: SweepOptions) throws -> Split {
        let dir = options.dataDirectory.appendingPathComponent(task)
        let calibrationURL = dir.appendingPathComponent("\(options.calibrationSplit).jsonl")
        let evaluationURL = dir.appendingPathComponent("\(options.split).jsonl")
        guard FileManager.default.fileExists(atPath: evaluationURL.path) else {
            throw EvaluationError.noItems("\(evaluationURL.path) does not exist")
        }
        let queryCount = options.retrievalPrompts
        if task != "wikitext2" && FileManager.default.fileExists(atPath: calibrationURL.path) {
            let evaluation = try CalibrationData.read(evaluationURL, limit: options.maxExamples)
            return Split(calibration: try CalibrationData.read(calibrationURL),
                         calibrationQueries: try TaskQueries.read(calibrationURL, limit: options.retrievalQueries),
                         evaluation: evaluation, heldOutQueries: try TaskQueries.read(evaluationURL, limit: queryCount),
                         note: "\(task): calibrated on \(options.calibrationSplit), evaluated on \(evaluation.count) items of \(options.split)")
        }
        // Lines of prose are fragments of articles: evaluate on whole paragraphs.
        let all = try CalibrationData.read(evaluationURL)
        let queries = try TaskQueries.read(evaluationURL)
        let half = all.count / 2, queryHalf = queries.count / 2
        let evaluation = Array(all[half...].prefix(options.maxExamples))
        return Split(calibration: Array(all[..<half]), calibrationQueries: Array(queries[..<queryHalf]),
                     evaluation: evaluation, heldOutQueries: Array(queries[queryHalf...].prefix(queryCount)),
                     note: "\(task): no \(options.calibrationSplit) split (or prose); calibrated on the first half of "
                        + "\(options.split), evaluated on \(evaluation.count) items of the second half")
    }

    enum Items {
        case multipleChoice([MultipleChoiceItem])
        case generative([GenerativeItem])
        case none
    }

    static func evaluationItems(task: String, options: SweepOptions) throws -> Items {
        let url = options.dataDirectory.appendingPathComponent("\(task)/\(options.split).jsonl")
        if TaskItems.multipleChoiceTasks.contains(task) {
            let rows = try TaskItems.readJSONL(url, limit: options.maxExamples)
            let items = try rows.enumerated().map { try TaskItems.multipleChoice(task: task, row: $1, file: url.path, line: $0 + 1) }
            return items.contains { $0.gold != nil } ? .multipleChoice(items) : .none
        }
        if TaskItems.generativeTasks.contains(task) {
            let rows = try TaskItems.readJSONL(url, limit: min(options.maxExamples, 50))
            return .generative(try rows.enumerated().map { try TaskItems.generative(row: $1, file: url.path, line: $0 + 1) })
        }
        return .none
    }

    static func evaluate(model: DecoderModel, tokenizer: Tokenizer, task: String, texts: [String], items: Items) throws
        -> (perplexity: Double?, accuracy: Double?, normalizedAccuracy: Double?)
    {
        let scorer = LogLikelihoodScorer(model: model, tokenizer: tokenizer)
        let perplexity = texts.isEmpty ? nil : try scorer.perplexity(texts).perplexity
        switch items {
        case .multipleChoice(let items):
            let result = try scorer.evaluate(items)
            return (perplexity, result.accuracy, result.normalizedAccuracy)
        case .generative(let items):
            return (perplexity, try scorer.exactMatch(items, maxTokens: 96), nil)
        case .none:
            return (perplexity, nil, nil)
        }
    }
}

extension SweepReport {
    /// Markdown: task × method rows with keep-level columns (perplexity, accuracy, ratio to the
    /// full model), the memory of each level, then the retrieval tables.
    public func markdown() -> String {
        let keeps = Array(Set(rows.map(\.keep))).sorted(by: >)
        var out = "| task | method | " + keeps.map { String(format: "%g%% kept", $0 * 100) }.joined(separator: " | ") + " |\n"
        out += "| --- | --- | " + keeps.map { _ in "---" }.joined(separator: " | ") + " |\n"
        var seen = Set<String>()
        for row in rows where seen.insert("\(row.task)|\(row.method)").inserted {
            let full = rows.first { $0.task == row.task && $0.keep == 1 }?.perplexity
            let cells = keeps.map { keep -> String in
                guard let r = rows.first(where: { $0.task == row.task && $0.method == row.method && $0.keep == keep }) else { return "" }
                var cell = r.perplexity.map { String(format: "ppl %.2f", $0) } ?? "—"
                if keep < 1, let p = r.perplexity, let full, full > 0 { cell += String(format: " (×%.2f)", p / full) }
                if r.method.hasPrefix("selected"), let recipe = r.recipe { cell += " `\(recipe)`" }
                return cell + (r.accuracy.map { String(format: ", acc %.1f%%", $0 * 100) } ?? "")
            }
            let name = row.isDefault ? "**\(row.method)** (default)" : row.method
            out += "| \(row.task) | \(name) | " + cells.joined(separator: " | ") + " |\n"
        }
        out += "\n| keep | experts kept per layer (mean) | memory |\n| --- | --- | --- |\n"
        for keep in keeps {
            if let r = rows.first(where: { $0.keep == keep }) {
                out += String(format: "| %g%% | %d | %.2f MiB |\n", keep * 100, r.expertsKept, Double(r.memoryBytes) / 1_048_576)
            }
        }
        if let retrieval { out += "\n" + retrieval.markdown() }
        return out
    }

    /// CSV with one line per row.
    public func csv() -> String {
        var out = "task,scorer,method,default,keep,experts_kept,perplexity,accuracy,accuracy_norm,memory_bytes,recipe\n"
        for r in rows {
            out += "\(r.task),\(r.scorer),\(r.method),\(r.isDefault),\(r.keep),\(r.expertsKept),"
                + "\(r.perplexity.map { "\($0)" } ?? ""),\(r.accuracy.map { "\($0)" } ?? ""),"
                + "\(r.normalizedAccuracy.map { "\($0)" } ?? ""),\(r.memoryBytes),\(r.recipe ?? "")\n"
        }
        return out
    }
}

extension RetrievalEvaluation {
    /// Markdown: accuracy per method and rendering, out-of-store fallback, the classifier's
    /// confusion matrix on raw queries, sizes and timings.
    public func markdown() -> String {
        var out = "| method | rendering | accuracy by task | by family | false fallbacks |\n| --- | --- | --- | --- | --- |\n"
        for r in reports {
            out += String(format: "| %@ | %@ | %.1f%% | %@ | %.1f%% |\n", r.method, r.rendering, r.accuracy * 100,
                          r.familyAccuracy.map { String(format: "%.1f%%", $0 * 100) } ?? "—", r.falseFallbackRate * 100)
        }
        if !outOfStore.isEmpty {
            out += "\n| method | out-of-store task | rendering | queries | fell back | assigned instead |\n"
            out += "| --- | --- | --- | --- | --- | --- |\n"
            for o in outOfStore {
                let assigned = o.assigned.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.key) \($0.value)" }
                out += String(format: "| %@ | %@ | %@ | %d | %.1f%% | %@ |\n", o.method, o.task, o.rendering, o.queries,
                              o.fallbackRate * 100, assigned.joined(separator: ", "))
            }
        }
        for r in reports where r.rendering == QueryStyle.raw.rawValue {
            out += "\n\(r.method), raw queries (rows: true task; last column: fell back):\n\n"
            out += "| true \\ retrieved | " + r.tasks.joined(separator: " | ") + " | fallback |\n"
            out += "| --- | " + (r.tasks + ["fallback"]).map { _ in "---" }.joined(separator: " | ") + " |\n"
            for (i, task) in r.tasks.enumerated() {
                out += "| \(task) | " + r.confusion[i].map(String.init).joined(separator: " | ") + " |\n"
            }
        }
        let bytes = patternBytes.keys.sorted().map { "\($0) \(patternBytes[$0]! / 1024) KiB (samples \((sampleBytes[$0] ?? 0) / 1024) KiB)" }
        out += "\nPattern files: " + bytes.joined(separator: ", ") + ".\n"
        out += String(format: "Decision after the backbone pass: %.1f µs with the stored tasks, %.1f µs with %d synthetic tasks.\n",
                      decisionSeconds * 1e6, syntheticDecisionSeconds * 1e6, syntheticTasks)
        if let minTypicality {
            out += String(format: "Fallback: typicality below %.2f (the query is farther from every stored task than %.0f%% of "
                + "their own calibration prompts, scored out of fold).\n", minTypicality, 100 * (1 - minTypicality))
        }
        return out
    }
}
