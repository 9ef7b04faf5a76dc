import Foundation
import Models
import PreMoe
import SEAP
import Tokenization

/// One row of `premoe seap eval --json` (a contract used outside this repository: keep the
/// field names). `method` is the score name (`wifv` is SEAP; `wifv-generic` the generic mask when
/// asked for; a `+bc` / `-bc` suffix when bias compensation was forced on or off, `SEAPMethod`);
/// `sparsity` a fraction, 0 for the dense model (every method gets its dense row).
public struct SEAPEvalRow: Codable, Sendable {
    public var task: String
    public var method: String
    public var sparsity: Double
    public var accuracy: Double?
    public var normalizedAccuracy: Double?
    /// Of the task's own rendered evaluation text (context and gold answer).
    public var perplexity: Double?
    public var decodeTokensPerSecond: Double
    public var weightBytes: Int
    /// Not in the JSON rows (the contract lists the fields); in the markdown report.
    public var prefillTokensPerSecond: Double = 0
    /// The dense model's speeds timed in alternation with this pruned row's (`SEAPSpeed.interleaved`),
    /// which the markdown's ratios use; nil on dense rows. Not in the JSON rows either.
    public var denseDecodeTokensPerSecond: Double?
    public var densePrefillTokensPerSecond: Double?

    enum CodingKeys: String, CodingKey {
        case task, method, sparsity, accuracy, perplexity
        case normalizedAccuracy = "accuracy_norm"
        case decodeTokensPerSecond = "decode_tokens_per_second"
        case weightBytes = "weight_bytes"
    }

    /// Every field is written, `null` where there is no value (a missing key would break readers).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(task, forKey: .task)
        try c.encode(method, forKey: .method)
        try c.encode(sparsity, forKey: .sparsity)
        try c.encode(accuracy, forKey: .accuracy)
        try c.encode(normalizedAccuracy, forKey: .normalizedAccuracy)
        try c.encode(perplexity, forKey: .perplexity)
        try c.encode(decodeTokensPerSecond, forKey: .decodeTokensPerSecond)
        try c.encode(weightBytes, forKey: .weightBytes)
    }
}

/// A row's pruning method: a score with its default bias compensation (`wifv`; see
/// `ScoreMethod.compensatesBias`), or with FLAP's bias compensation (METHODS §6.4) forced on
/// (`wifv+bc`, `wanda+bc`) or off (`wifv-bc`: the paper's SEAP, no bias shifts).
public struct SEAPMethod: Hashable, Sendable, CustomStringConvertible {
    public var score: ScoreMethod
    /// nil: the score's default.
    public var biasCompensation: Bool?

    public init(_ score: ScoreMethod, biasCompensation: Bool? = nil) {
        self.score = score
        self.biasCompensation = biasCompensation
    }

    /// Parses `NAME`, `NAME+bc` or `NAME-bc`; nil for anything else.
    public init?(_ name: String) {
        for (suffix, forced) in [("+bc", true), ("-bc", false)] where name.hasSuffix(suffix) {
            guard let score = ScoreMethod(rawValue: String(name.dropLast(suffix.count))) else { return nil }
            self.init(score, biasCompensation: forced)
            return
        }
        guard let score = ScoreMethod(rawValue: name) else { return nil }
        self.init(score)
    }

    /// The row's `method`.
    public var description: String { score.rawValue + (biasCompensation.map { $0 ? "+bc" : "-bc" } ?? "") }
}

/// Settings of a SEAP evaluation.
public struct SEAPEvalOptions: Sendable {
    public var tasks: [String]
    public var sparsities: [Double]
    /// The pruned rows' methods, in order (`wifv`, `wifv-bc`, `wanda+bc`, …).
    public var scores: [SEAPMethod]
    public var schedule: SparsitySchedule = .logistic
    public var dataDirectory: URL
    public var split = "test"
    public var calibrationSplit = "train"
    /// Evaluation items per task.
    public var maxExamples = 100
    /// Calibration records per task (METHODS: 200, seed 42).
    public var calibrationCount = SEAPData.defaultCount
    public var seed = SEAPData.defaultSeed
    /// Add `wifv-generic` rows (the generic mask, METHODS §6.5).
    public var generic = false
    /// How cut quantization blocks are stored.
    public var storage: PrunedStorage = .requantize
    /// Whether masks prune attention heads (`HeadPruning`; docs/SEAP.md, "Attention heads").
    public var heads: HeadPruning = .prune
    /// Held-out router prompts per task (0: no router evaluation).
    public var routerPrompts = 50
    /// Decode steps timed per row.
    public var decodeTokens = 32
    public var threads = 0

    public init(tasks: [String], sparsities: [Double], scores: [SEAPMethod], dataDirectory: URL) {
        self.tasks = tasks
        self.sparsities = sparsities
        self.scores = scores
        self.dataDirectory = dataDirectory
    }
}

/// Task router accuracy on held-out prompts, per rendering.
public struct SEAPRouterReport: Codable, Sendable {
    public var tasks: [String]
    /// rendering → accuracy.
    public var accuracy: [String: Double]
    public var prompts: Int
}

/// What `premoe seap eval` measured.
public struct SEAPEvalReport: Codable, Sendable {
    public var rows: [SEAPEvalRow]
    public var router: SEAPRouterReport?
    public var notes: [String]
}

/// Decode and prefill speed of a model: median of `repeats` timed runs (the machine may be
/// shared; compare rows measured in the same run).
public enum SEAPSpeed {
    /// - Returns: prefill tokens/s of a `promptTokens` prompt, decode tokens/s over `decodeTokens` steps.
    public static func measure(_ model: DecoderModel, promptTokens: Int = 128, decodeTokens: Int = 32, repeats: Int = 3)
        throws -> (prefill: Double, decode: Double)
    {
        var prefill: [Double] = [], decode: [Double] = []
        for _ in 0..<max(1, repeats) {
            let one = try once(model, promptTokens: promptTokens, decodeTokens: decodeTokens)
            prefill.append(one.prefill)
            decode.append(one.decode)
        }
        return (median(prefill), median(decode))
    }

    /// The pruned model and the dense one timed in alternation (dense, pruned, dense, …), so that
    /// both see the same machine: a ratio of two runs minutes apart on a shared machine is noise.
    /// - Returns: medians of each.
    public static func interleaved(dense: DecoderModel, pruned: DecoderModel, promptTokens: Int = 128,
                                   decodeTokens: Int = 32, repeats: Int = 3) throws
        -> (dense: (prefill: Double, decode: Double), pruned: (prefill: Double, decode: Double))
    {
        var d: [(prefill: Double, decode: Double)] = [], p: [(prefill: Double, decode: Double)] = []
        for _ in 0..<max(1, repeats) {
            d.append(try once(dense, promptTokens: promptTokens, decodeTokens: decodeTokens))
            p.append(try once(pruned, promptTokens: promptTokens, decodeTokens: decodeTokens))
        }
        return ((median(d.map(\.prefill)), median(d.map(\.decode))), (median(p.map(\.prefill)), median(p.map(\.decode))))
    }

    static func once(_ model: DecoderModel, promptTokens: Int, decodeTokens: Int) throws -> (prefill: Double, decode: Double) {
        let vocab = model.spec.vocabularySize
        let prompt = (0..<promptTokens).map { ($0 * 7919 + 13) % vocab }
        let cache = model.makeCache(capacity: promptTokens + decodeTokens)
        let t0 = Date()
        var logits = try model.forward(prompt, cache: cache, logits: .last)
        let t1 = Date()
        for _ in 0..<decodeTokens {
            let next = logits.indices.max { logits[$0] < logits[$1] } ?? 0
            logits = try model.forward([next], cache: cache, logits: .last)
        }
        let t2 = Date()
        return (Double(promptTokens) / t1.timeIntervalSince(t0), Double(decodeTokens) / t2.timeIntervalSince(t1))
    }

    static func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
}

/// SEAP's evaluation table: profile every task, build each method's mask at each sparsity,
/// prune for real, and score zero-shot log-likelihood (acc, acc_norm), perplexity and speed.
public enum SEAPEvaluation {
    /// Runs the evaluation on a model directory or GGUF file.
    /// - Parameter progress: status lines (stderr material).
    /// - Throws: `EvaluationError`, `SEAPError`, `ModelError`, `PreMoeError`.
    public static func run(model url: URL, options: SEAPEvalOptions, progress: (String) -> Void = { _ in }) throws -> SEAPEvalReport {
        let loaded = try ModelLoader.load(url, options: LoadOptions(threads: options.threads))
        guard let tokenizer = loaded.tokenizer else { throw EvaluationError.noItems("\(url.path) has no tokenizer") }
        let model = loaded.model
        var notes: [String] = []
        // Tasks profiled: the evaluated ones, plus generic text for the baselines and the generic mask.
        var profiled = options.tasks
        if (options.generic || options.scores.contains(where: \.score.isTaskAgnostic)) && !profiled.contains(SEAPData.genericTask) {
            profiled.append(SEAPData.genericTask)
        }
        var data: [String: SEAPTaskData] = [:]
        var profile = SEAPProfile(spec: model.spec)
        for task in profiled {
            let d = try SEAPData.load(task: task, directory: options.dataDirectory, split: options.split,
                                      calibrationSplit: options.calibrationSplit, maxEvaluation: options.maxExamples,
                                      count: options.calibrationCount, seed: options.seed)
            data[task] = d
            notes.append(d.note)
            let start = Date()
            let (stats, tokens) = try SEAPProfiler.collect(model: model, tokenizer: tokenizer, texts: d.calibration)
            profile.tasks[task] = stats
            profile.tokens[task] = tokens
            progress(String(format: "[%@] profiled %d texts, %d tokens in %.1f s", task, d.calibration.count, tokens,
                            Date().timeIntervalSince(start)))
        }
        let router = try evaluateRouter(model: model, tokenizer: tokenizer, data: data, tasks: options.tasks,
                                        prompts: options.routerPrompts, progress: progress)
        let norms = try WeightNorms(model)
        var rows: [SEAPEvalRow] = []
        let denseSpeed = try SEAPSpeed.measure(model, decodeTokens: options.decodeTokens)
        let denseBytes = bytes(model)
        var speeds: [String: (dense: (prefill: Double, decode: Double), pruned: (prefill: Double, decode: Double))] = [:]
        // Rows: each method by name, and the generic mask (SEAP's score, its default compensation).
        var methods = options.scores.map { (name: $0.description, method: $0, generic: false) }
        if options.generic { methods.append((name: "wifv-generic", method: SEAPMethod(.wifv), generic: true)) }
        for task in options.tasks {
            guard let d = data[task] else { continue }
            let material = try evaluationMaterial(task: task, data: d)
            let dense = try score(model, tokenizer: tokenizer, material: material)
            progress(String(format: "[%@] dense: ppl %.3f%@", task, dense.perplexity ?? .nan,
                            dense.accuracy.map { String(format: ", acc %.3f, acc_norm %.3f", $0, dense.normalizedAccuracy ?? .nan) } ?? ""))
            for (method, _, _) in methods {
                rows.append(SEAPEvalRow(task: task, method: method, sparsity: 0, accuracy: dense.accuracy,
                                        normalizedAccuracy: dense.normalizedAccuracy, perplexity: dense.perplexity,
                                        decodeTokensPerSecond: denseSpeed.decode, weightBytes: denseBytes,
                                        prefillTokensPerSecond: denseSpeed.prefill))
            }
            for sparsity in options.sparsities where sparsity > 0 {
                for (method, pruning, isGeneric) in methods {
                    let mask = try SEAPMasks.make(method: pruning.score, task: isGeneric ? SEAPMasks.genericName : task,
                                                  sparsity: sparsity, schedule: options.schedule, profile: profile, model: model,
                                                  norms: norms, seed: options.seed, biasCompensation: pruning.biasCompensation,
                                                  heads: options.heads)
                    let pruned = try StructuredPruning.prune(model, mask: mask, storage: options.storage)
                    let result = try score(pruned, tokenizer: tokenizer, material: material)
                    // Uniform and logistic schedules fix every layer's widths from the sparsity alone, so
                    // every task's mask of one method and sparsity has the same shapes: timed once.
                    let key = "\(method)|\(sparsity)"
                    let timed = try options.schedule != .adaptive && speeds[key] != nil
                        ? speeds[key]! : SEAPSpeed.interleaved(dense: model, pruned: pruned, decodeTokens: options.decodeTokens)
                    speeds[key] = timed
                    let speed = timed.pruned
                    rows.append(SEAPEvalRow(task: task, method: method, sparsity: sparsity, accuracy: result.accuracy,
                                            normalizedAccuracy: result.normalizedAccuracy, perplexity: result.perplexity,
                                            decodeTokensPerSecond: speed.decode, weightBytes: bytes(pruned),
                                            prefillTokensPerSecond: speed.prefill,
                                            denseDecodeTokensPerSecond: timed.dense.decode,
                                            densePrefillTokensPerSecond: timed.dense.prefill))
                    progress(String(format: "[%@] %@ %.0f%%: ppl %.3f%@, decode %.1f tok/s, prefill %.1f tok/s", task, method,
                                    sparsity * 100, result.perplexity ?? .nan,
                                    result.accuracy.map { String(format: ", acc %.3f, acc_norm %.3f", $0, result.normalizedAccuracy ?? .nan) } ?? "",
                                    speed.decode, speed.prefill))
                }
            }
        }
        return SEAPEvalReport(rows: rows, router: router, notes: notes)
    }

    /// Bytes of every weight the model holds.
    static func bytes(_ model: DecoderModel) -> Int {
        let b = model.weightBytes
        return b.backbone + b.experts
    }

    /// A task's held-out items and rendered text.
    struct Material {
        var items: [MultipleChoiceItem]
        var texts: [String]
    }

    /// The evaluation rows of `data` as scored items (multiple-choice tasks) and text (every
    /// task: context and gold answer; WikiText-2: the lines joined into one document).
    static func evaluationMaterial(task: String, data: SEAPTaskData) throws -> Material {
        let url = data.evaluationFile
        if task == SEAPData.genericTask {
            // Lines of prose are fragments: one document of the held-out lines, indexed as
            // `SEAPData.load` indexes them (non-empty lines), so none was calibrated on.
            let all = try CalibrationData.read(url)
            return Material(items: [], texts: [all[data.evaluationRows.clamped(to: 0..<all.count)].joined()])
        }
        let rows = try TaskItems.readJSONL(url, limit: data.evaluationRows.upperBound)
        let range = data.evaluationRows.clamped(to: 0..<rows.count)
        var items: [MultipleChoiceItem] = []
        if TaskItems.multipleChoiceTasks.contains(task) {
            for i in range { items.append(try TaskItems.multipleChoice(task: task, row: rows[i], file: url.path, line: i + 1)) }
        }
        let texts = try CalibrationData.read(url, limit: data.evaluationRows.upperBound)
        return Material(items: items, texts: texts.count > range.lowerBound ? Array(texts[range.clamped(to: 0..<texts.count)]) : [])
    }

    static func score(_ model: DecoderModel, tokenizer: Tokenizer, material: Material) throws
        -> (accuracy: Double?, normalizedAccuracy: Double?, perplexity: Double?)
    {
        let scorer = LogLikelihoodScorer(model: model, tokenizer: tokenizer)
        let perplexity = material.texts.isEmpty ? nil : try scorer.perplexity(material.texts).perplexity
        guard material.items.contains(where: { $0.gold != nil }) else { return (nil, nil, perplexity) }
        let r = try scorer.evaluate(material.items)
        return (r.accuracy, r.normalizedAccuracy, perplexity)
    }

    /// Fits the router on the tasks' calibration queries and measures it on held-out prompts in
    /// every rendering (`raw`: as typed). Nil for fewer than two tasks or `prompts == 0`.
    static func evaluateRouter(model: DecoderModel, tokenizer: Tokenizer, data: [String: SEAPTaskData], tasks: [String],
                               prompts: Int, progress: (String) -> Void) throws -> SEAPRouterReport? {
        guard tasks.count >= 2, prompts > 0 else { return nil }
        var train: [String: [TaskQuery]] = [:], heldOut: [String: [TaskQuery]] = [:]
        for task in tasks {
            guard let d = data[task] else { continue }
            train[task] = d.calibrationQueries
            let queries = try TaskQueries.read(d.evaluationFile, limit: d.evaluationRows.upperBound)
            var held = Array(queries.dropFirst(d.evaluationRows.lowerBound))
            // Prose lines are often headings or fragments: route paragraphs of 50+ characters.
            if task == SEAPData.genericTask { held = held.filter { $0.question.count >= 50 } }
            heldOut[task] = Array(held.prefix(prompts))
        }
        let router = try SEAPRouter.fit(model: model, tokenizer: tokenizer, queries: train)
        var accuracy: [String: Double] = [:]
        var count = 0
        for style in QueryStyle.allCases {
            let r = try router.accuracy(heldOut, style: style, model: model, tokenizer: tokenizer)
            accuracy[style.rawValue] = r.accuracy
            count = r.count
        }
        progress("router: " + accuracy.keys.sorted().map { String(format: "%@ %.1f%%", $0, accuracy[$0]! * 100) }.joined(separator: ", "))
        return SEAPRouterReport(tasks: router.tasks, accuracy: accuracy, prompts: count)
    }
}

extension SEAPEvalReport {
    /// Markdown: per task, dense and every method × sparsity (acc, acc_norm, ppl, ratio to dense,
    /// decode and prefill tokens/s with their ratio to the dense model timed in alternation with
    /// the row, weight bytes), then the router.
    public func markdown() -> String {
        var out = "| task | method | sparsity | acc | acc_norm | ppl (× dense) | decode tok/s (× dense) | prefill tok/s (× dense) | weights |\n"
        out += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        func pct(_ v: Double?) -> String { v.map { String(format: "%.1f%%", $0 * 100) } ?? "—" }
        var seenDense = Set<String>()
        for r in rows {
            if r.sparsity == 0 && !seenDense.insert(r.task).inserted { continue }
            let dense = rows.first { $0.task == r.task && $0.sparsity == 0 }
            let ppl = r.perplexity.map { p in
                String(format: "%.2f", p) + (r.sparsity > 0 ? dense?.perplexity.map { String(format: " (×%.2f)", p / $0) } ?? "" : "")
            } ?? "—"
            func ratio(_ v: Double, _ d: Double?) -> String {
                String(format: "%.1f", v) + (r.sparsity > 0 ? d.map { String(format: " (×%.2f)", v / $0) } ?? "" : "")
            }
            out += "| \(r.task) | \(r.sparsity == 0 ? "dense" : r.method) | \(String(format: "%g%%", r.sparsity * 100)) | "
                + "\(pct(r.accuracy)) | \(pct(r.normalizedAccuracy)) | \(ppl) | "
                + "\(ratio(r.decodeTokensPerSecond, r.denseDecodeTokensPerSecond ?? dense?.decodeTokensPerSecond)) | "
                + "\(ratio(r.prefillTokensPerSecond, r.densePrefillTokensPerSecond ?? dense?.prefillTokensPerSecond)) | "
                + String(format: "%.1f MiB", Double(r.weightBytes) / 1_048_576) + " |\n"
        }
        if let router {
            out += "\nTask router (mean input embedding → logistic regression), \(router.prompts) held-out prompts over "
                + "\(router.tasks.joined(separator: ", ")):\n\n| rendering | accuracy |\n| --- | --- |\n"
            for k in router.accuracy.keys.sorted() { out += "| \(k) | \(pct(router.accuracy[k])) |\n" }
        }
        return out
    }
}
