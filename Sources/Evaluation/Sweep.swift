import Foundation
import Formats
import Models
import PreMoe
import Tokenization

/// One cell of the pruning sweep: a task evaluated on the model pruned by a scorer to a keep level.
public struct SweepRow: Codable, Sendable {
    public var task: String
    public var scorer: String
    /// Fraction of routed experts kept per MoE layer (1 = the full model).
    public var keep: Double
    public var expertsKept: Int
    public var perplexity: Double?
    /// Multiple-choice accuracy (or GSM8K exact match); nil where the split has no labels.
    public var accuracy: Double?
    public var normalizedAccuracy: Double?
    /// Backbone plus kept experts, at their storage size.
    public var memoryBytes: Int

    enum CodingKeys: String, CodingKey {
        case task, scorer, keep, perplexity, accuracy
        case expertsKept = "experts_kept"
        case normalizedAccuracy = "accuracy_norm"
        case memoryBytes = "memory_bytes"
    }
}

/// Retrieval accuracy over held-out prompts of every task.
public struct RetrievalReport: Codable, Sendable {
    public var tasks: [String]
    /// `confusion[i][j]`: prompts of task i assigned to task j.
    public var confusion: [[Int]]
    public var accuracy: Double
    public var perTask: [String: Double]

    enum CodingKeys: String, CodingKey {
        case tasks, confusion, accuracy
        case perTask = "per_task"
    }
}

/// Everything a sweep measured.
public struct SweepReport: Codable, Sendable {
    public var model: String
    public var rows: [SweepRow]
    public var retrieval: RetrievalReport?
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
    /// Prompts per task for retrieval accuracy.
    public var retrievalPrompts: Int
    /// Text the retrieval signatures are computed from: the calibration items' prompts only
    /// (`.context`, default: queries are prompts) or the same text as the scores (`.full`).
    public var signatureRendering: CalibrationData.Rendering
    public var threads: Int

    public init(tasks: [String], keeps: [Double], scorers: [String], dataDirectory: URL, split: String = "test",
                calibrationSplit: String = "train", maxExamples: Int = 100, calibrationTokens: Int = 20_000,
                retrievalPrompts: Int = 50, signatureRendering: CalibrationData.Rendering = .context, threads: Int = 0) {
        self.tasks = tasks
        self.keeps = keeps
        self.scorers = scorers
        self.dataDirectory = dataDirectory
        self.split = split
        self.calibrationSplit = calibrationSplit
        self.maxExamples = maxExamples
        self.calibrationTokens = calibrationTokens
        self.retrievalPrompts = retrievalPrompts
        self.signatureRendering = signatureRendering
        self.threads = threads
    }
}

/// The paper-style table: profile each task on its calibration split, prune with each scorer to
/// each keep level, and evaluate on the evaluation split.
public enum PruningSweep {
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
        let union = unionOptions(scorers)
        let allExperts = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { ($0, Array(0..<(spec.moe($0)?.expertCount ?? 0))) })

        var rows: [SweepRow] = []
        var notes: [String] = []
        var signaturePatterns: [TaskPattern] = []
        for task in options.tasks {
            // Profile and evaluate from the full model: the previous task left a pruned one.
            try loaded.loadExperts(kept: allExperts, copy: false)
            let (calibration, evaluation, note) = try splitTexts(task: task, options: options)
            notes.append(note)
            progress("[\(task)] profiling \(options.calibrationTokens) tokens")
            let sequences = calibration.map { tokenizer.encode($0) }
            let profile = try Profiler.run(model: model, sequences: sequences, options: union, maxTokens: options.calibrationTokens)
            var signatureStats: RouterStats?
            if options.signatureRendering == .context {
                let prompts = try calibrationPrompts(task: task, options: options)
                signatureStats = try Profiler.run(
                    model: model, sequences: prompts.map { tokenizer.encode($0) }, options: union,
                    maxTokens: options.calibrationTokens, untilFirstRouter: true).stats
            }
            let patterns = try scorers.map {
                try Profiler.makePattern(stats: profile.stats, scorer: $0, spec: spec, fingerprint: fingerprint, task: task,
                                         signatureStats: signatureStats)
            }
            if let tcess = patterns.first(where: { $0.scorer.name == "tcess" }) ?? patterns.first {
                signaturePatterns.append(tcess)
            }
            let items = try evaluationItems(task: task, options: options)

            // The full model once: every scorer's 100% row is the same model.
            let full = try evaluate(model: model, tokenizer: tokenizer, task: task, texts: evaluation, items: items)
            for keep in options.keeps {
                for (scorer, pattern) in zip(options.scorers, patterns) {
                    var row = SweepRow(task: task, scorer: scorer, keep: keep, expertsKept: moe.expertCount,
                                       perplexity: full.perplexity, accuracy: full.accuracy,
                                       normalizedAccuracy: full.normalizedAccuracy,
                                       memoryBytes: sizes.bytes(keeping: allExperts))
                    if keep < 1 {
                        let plan = try PruningPlan.make(patterns: [pattern], budget: .fraction(keep), sizes: sizes)
                        try loaded.loadExperts(kept: plan.keptExperts, copy: false)
                        let result = try evaluate(model: model, tokenizer: tokenizer, task: task, texts: evaluation, items: items)
                        row.expertsKept = plan.expertsPerLayer
                        row.perplexity = result.perplexity
                        row.accuracy = result.accuracy
                        row.normalizedAccuracy = result.normalizedAccuracy
                        row.memoryBytes = sizes.bytes(keeping: plan.keptExperts)
                    }
                    progress(String(format: "[%@] %@ keep %.1f%%: ppl %.3f%@", task, scorer, keep * 100, row.perplexity ?? .nan,
                                    row.accuracy.map { String(format: ", acc %.3f", $0) } ?? ""))
                    rows.append(row)
                }
            }
        }
        try loaded.loadExperts(kept: allExperts, copy: false)
        let retrieval = signaturePatterns.count > 1
            ? try retrievalAccuracy(model: model, tokenizer: tokenizer, patterns: signaturePatterns, options: options, progress: progress)
            : nil
        return SweepReport(model: modelDirectory.path, rows: rows, retrieval: retrieval, notes: notes)
    }

    /// One pass of `RouterStats` that serves every requested scorer.
    static func unionOptions(_ scorers: [ExpertScorer]) -> StatsOptions {
        var options = StatsOptions()
        for scorer in scorers {
            let o = scorer.statsOptions
            switch scorer.descriptor.name {
            case "tcess":
                options.markerTopK = o.markerTopK
                options.markerThreshold = o.markerThreshold
            case "tcess-prob":
                options.probabilityTopK = o.probabilityTopK
                options.probabilityThreshold = o.probabilityThreshold
            default:
                break
            }
            options.expertOutputs = options.expertOutputs || o.expertOutputs
        }
        return options
    }

    /// Calibration and evaluation texts of a task. A task without the calibration split
    /// (WikiText-2 ships only `test`) is calibrated on the first half of its evaluation texts and
    /// evaluated on the second half, so the two never overlap.
    static func splitTexts(task: String, options: SweepOptions) throws -> (calibration: [String], evaluation: [String], note: String) {
        let dir = options.dataDirectory.appendingPathComponent(task)
        let calibrationURL = dir.appendingPathComponent("\(options.calibrationSplit).jsonl")
        let evaluationURL = dir.appendingPathComponent("\(options.split).jsonl")
        guard FileManager.default.fileExists(atPath: evaluationURL.path) else {
            throw EvaluationError.noItems("\(evaluationURL.path) does not exist")
        }
        if task == "wikitext2" {
            // Lines are fragments of articles: evaluate on whole paragraphs.
            let lines = try CalibrationData.read(evaluationURL)
            let half = lines.count / 2
            let evaluation = Array(lines[half...].prefix(options.maxExamples))
            return (Array(lines[..<half]), evaluation,
                    "\(task): calibrated on the first half of \(options.split), evaluated on \(evaluation.count) lines of the second half")
        }
        if FileManager.default.fileExists(atPath: calibrationURL.path) {
            let calibration = try CalibrationData.read(calibrationURL)
            let evaluation = try CalibrationData.read(evaluationURL, limit: options.maxExamples)
            return (calibration, evaluation,
                    "\(task): calibrated on \(options.calibrationSplit), evaluated on \(evaluation.count) items of \(options.split)")
        }
        let all = try CalibrationData.read(evaluationURL)
        let half = all.count / 2
        let evaluation = Array(all[half...].prefix(options.maxExamples))
        return (Array(all[..<half]), evaluation,
                "\(task): no \(options.calibrationSplit) split; calibrated on the first half of \(options.split), evaluated on \(evaluation.count) of the second half")
    }

    /// The calibration items' prompts (answers dropped), from the same source as `splitTexts`'
    /// calibration texts.
    static func calibrationPrompts(task: String, options: SweepOptions) throws -> [String] {
        let dir = options.dataDirectory.appendingPathComponent(task)
        let calibrationURL = dir.appendingPathComponent("\(options.calibrationSplit).jsonl")
        if task != "wikitext2" && FileManager.default.fileExists(atPath: calibrationURL.path) {
            return try CalibrationData.read(calibrationURL, rendering: .context)
        }
        // Calibrated on the first half of the evaluation split (see `splitTexts`).
        let all = try CalibrationData.read(dir.appendingPathComponent("\(options.split).jsonl"), rendering: .context)
        return Array(all[..<(all.count / 2)])
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

    /// Held-out prompts of each task (questions without answers) → retrieval → confusion matrix.
    static func retrievalAccuracy(model: DecoderModel, tokenizer: Tokenizer, patterns: [TaskPattern], options: SweepOptions,
                                  progress: (String) -> Void) throws -> RetrievalReport {
        let tasks = patterns.map(\.task)
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: tasks.count), count: tasks.count)
        for (i, task) in tasks.enumerated() {
            progress("[retrieval] \(task)")
            for prompt in try retrievalPrompts(task: task, options: options) {
                let ids = tokenizer.encode(prompt)
                guard !ids.isEmpty else { continue }
                let result = try Retriever.retrieve(model: model, tokens: ids, patterns: patterns)
                if let chosen = result.task, let j = tasks.firstIndex(of: chosen) { confusion[i][j] += 1 }
            }
        }
        let total = confusion.joined().reduce(0, +)
        let correct = tasks.indices.reduce(0) { $0 + confusion[$1][$1] }
        var perTask: [String: Double] = [:]
        for (i, task) in tasks.enumerated() {
            let n = confusion[i].reduce(0, +)
            perTask[task] = n > 0 ? Double(confusion[i][i]) / Double(n) : 0
        }
        return RetrievalReport(tasks: tasks, confusion: confusion, accuracy: total > 0 ? Double(correct) / Double(total) : 0,
                               perTask: perTask)
    }

    /// Prompts as a user would send them: the evaluation context without the answer.
    static func retrievalPrompts(task: String, options: SweepOptions) throws -> [String] {
        let url = options.dataDirectory.appendingPathComponent("\(task)/\(options.split).jsonl")
        let n = options.retrievalPrompts
        if TaskItems.multipleChoiceTasks.contains(task) {
            let rows = try TaskItems.readJSONL(url, limit: n)
            return try rows.map { try TaskItems.multipleChoice(task: task, row: $0).contexts[0] }
        }
        if TaskItems.generativeTasks.contains(task) {
            return try TaskItems.readJSONL(url, limit: n).map { try TaskItems.generative(row: $0).prompt }
        }
        // Prose: held-out lines from the end of the file (calibration used the first half).
        let lines = try CalibrationData.read(url)
        return Array(lines.suffix(n))
    }
}

extension SweepReport {
    /// A Markdown table: task × scorer rows, keep-level columns (perplexity, accuracy).
    public func markdown() -> String {
        let keeps = Array(Set(rows.map(\.keep))).sorted(by: >)
        var out = "| task | scorer | " + keeps.map { String(format: "%g%% kept", $0 * 100) }.joined(separator: " | ") + " |\n"
        out += "| --- | --- | " + keeps.map { _ in "---" }.joined(separator: " | ") + " |\n"
        var seen = Set<String>()
        for row in rows where seen.insert("\(row.task)|\(row.scorer)").inserted {
            let cells = keeps.map { keep -> String in
                guard let r = rows.first(where: { $0.task == row.task && $0.scorer == row.scorer && $0.keep == keep }) else { return "" }
                let ppl = r.perplexity.map { String(format: "ppl %.2f", $0) } ?? "—"
                let acc = r.accuracy.map { String(format: ", acc %.1f%%", $0 * 100) } ?? ""
                return ppl + acc
            }
            out += "| \(row.task) | \(row.scorer) | " + cells.joined(separator: " | ") + " |\n"
        }
        out += "\n| keep | experts kept per layer | memory |\n| --- | --- | --- |\n"
        for keep in keeps {
            if let r = rows.first(where: { $0.keep == keep }) {
                out += String(format: "| %g%% | %d | %.2f MiB |\n", keep * 100, r.expertsKept, Double(r.memoryBytes) / 1_048_576)
            }
        }
        if let retrieval {
            out += String(format: "\nRetrieval accuracy: %.1f%%\n\n", retrieval.accuracy * 100)
            out += "| true \\ retrieved | " + retrieval.tasks.joined(separator: " | ") + " |\n"
            out += "| --- | " + retrieval.tasks.map { _ in "---" }.joined(separator: " | ") + " |\n"
            for (i, task) in retrieval.tasks.enumerated() {
                out += "| \(task) | " + retrieval.confusion[i].map(String.init).joined(separator: " | ") + " |\n"
            }
        }
        return out
    }

    /// CSV with one line per row.
    public func csv() -> String {
        var out = "task,scorer,keep,experts_kept,perplexity,accuracy,accuracy_norm,memory_bytes\n"
        for r in rows {
            out += "\(r.task),\(r.scorer),\(r.keep),\(r.expertsKept),\(r.perplexity.map { "\($0)" } ?? ""),"
                + "\(r.accuracy.map { "\($0)" } ?? ""),\(r.normalizedAccuracy.map { "\($0)" } ?? ""),\(r.memoryBytes)\n"
        }
        return out
    }
}
