import Foundation
import Formats
import Models
import PreMoe
import Runtime
import Tokenization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Settings of `premoe demo`.
public struct DemoOptions: Sendable {
    public var tasks: [String]
    /// Task data laid out as `<task>/<split>.jsonl`.
    public var dataDirectory: URL
    /// Heatmaps, the pattern store (`patterns/`) and `summary.json` go here.
    public var outputDirectory: URL
    /// Calibration tokens per task (from its train split).
    public var calibrationTokens: Int
    /// Held-out prompts per task for retrieval.
    public var retrievalPrompts: Int
    /// Held-out items per task for perplexity.
    public var evaluationItems: Int
    /// Keep levels below 1 (the full model is always measured too).
    public var keeps: [Double]
    /// Tokens generated for the comparison prompt.
    public var generationTokens: Int
    /// The comparison prompt; nil takes the first held-out prompt of the first task.
    public var prompt: String?
    public var threads: Int

    public init(tasks: [String], dataDirectory: URL, outputDirectory: URL, calibrationTokens: Int = 8000,
                retrievalPrompts: Int = 2, evaluationItems: Int = 20, keeps: [Double] = [0.5, 0.25],
                generationTokens: Int = 32, prompt: String? = nil, threads: Int = 0) {
        self.tasks = tasks
        self.dataDirectory = dataDirectory
        self.outputDirectory = outputDirectory
        self.calibrationTokens = calibrationTokens
        self.retrievalPrompts = retrievalPrompts
        self.evaluationItems = evaluationItems
        self.keeps = keeps
        self.generationTokens = generationTokens
        self.prompt = prompt
        self.threads = threads
    }

    /// The sweep's view of the same settings, so the demo reads data exactly as `premoe eval` does.
    var sweepOptions: SweepOptions {
        SweepOptions(tasks: tasks, keeps: [1] + keeps, scorers: ["tcess"], dataDirectory: dataDirectory,
                     maxExamples: evaluationItems, calibrationTokens: calibrationTokens,
                     retrievalPrompts: retrievalPrompts, threads: threads)
    }
}

/// `premoe demo`, stage by stage, so a caller can show each result as soon as it is ready:
/// `profile` → `retrieve` → `measureQuality` → `compare`. Every stage needs the ones before it.
public final class DemoSession {
    public let modelDirectory: URL
    public let options: DemoOptions
    public private(set) var report: DemoReport

    private var loaded: LoadedModel?
    private let tokenizer: Tokenizer
    private let sizes: ModelSizes
    /// The model's context length (queries longer than it are cut for retrieval).
    private let maxPositions: Int
    private let store: PatternStore
    private var patterns: [TaskPattern] = []
    private var heatmaps: [ExpertHeatmap] = []
    private var evaluationTexts: [String: [String]] = [:]
    private var heldOutQueries: [String: [TaskQuery]] = [:]
    private var retriever: Retriever?
    private let started = Date()

    /// Loads the model (experts memory-mapped) and creates the output directory.
    /// - Throws: `ModelError`, `PreMoeError.unsupported` for a model without MoE layers or not
    ///   stored as safetensors, `EvaluationError` without a tokenizer.
    public init(modelDirectory: URL, options: DemoOptions) throws {
        self.modelDirectory = modelDirectory
        self.options = options
        try Self.checkData(options)
        let t0 = Date()
        let loaded = try ModelLoader.load(modelDirectory, options: LoadOptions(threads: options.threads))
        guard let tokenizer = loaded.tokenizer else {
            throw EvaluationError.noItems("\(modelDirectory.path) has no tokenizer.json")
        }
        let spec = loaded.model.spec
        guard let first = spec.moeLayers.first, let moe = spec.moe(first) else {
            throw PreMoeError.unsupported("the model has no MoE layer to prune")
        }
        self.loaded = loaded
        self.tokenizer = tokenizer
        sizes = ModelSizes.measure(loaded.checkpoint, spec: spec)
        maxPositions = spec.maxPositions
        store = PatternStore(directory: options.outputDirectory.appendingPathComponent("patterns", isDirectory: true))
        report = DemoReport(model: modelDirectory.path, fingerprint: try ModelFingerprint.compute(loaded),
                            moeLayers: spec.moeLayers, experts: moe.expertCount, topK: moe.topK,
                            calibrationTokens: options.calibrationTokens)
        try FileManager.default.createDirectory(at: options.outputDirectory, withIntermediateDirectories: true)
        report.seconds["load"] = Date().timeIntervalSince(t0)
    }

    /// Fails early, before the model loads, when a task has no evaluation split.
    static func checkData(_ options: DemoOptions) throws {
        let fm = FileManager.default
        let split = options.sweepOptions.split
        let missing = options.tasks.filter {
            !fm.fileExists(atPath: options.dataDirectory.appendingPathComponent("\($0)/\(split).jsonl").path)
        }
        guard !missing.isEmpty else { return }
        let available = ((try? fm.contentsOfDirectory(atPath: options.dataDirectory.path)) ?? [])
            .filter { fm.fileExists(atPath: options.dataDirectory.appendingPathComponent("\($0)/\(split).jsonl").path) }
            .sorted()
        throw EvaluationError.noItems("no \(split) split for \(missing.joined(separator: ", ")) in \(options.dataDirectory.path)"
            + (available.isEmpty ? "" : "; tasks there: \(available.joined(separator: ", "))"))
    }

    /// The model with every expert (memory-mapped), loaded again after `compare` released it.
    private func fullModel() throws -> LoadedModel {
        if let loaded { return loaded }
        let model = try ModelLoader.load(modelDirectory, options: LoadOptions(threads: options.threads))
        loaded = model
        return model
    }

    private var allExperts: [Int: [Int]] {
        Dictionary(uniqueKeysWithValues: report.moeLayers.map { ($0, Array(0..<report.experts)) })
    }

    // MARK: stage 1

    /// Profiles every task on its calibration split (TCESS; the signature from the prompts alone,
    /// as `premoe profile` makes it), stores the patterns and writes one heatmap PNG per task and
    /// one with all tasks.
    /// - Throws: `EvaluationError` for missing data, model and I/O errors.
    public func profile(progress: (String) -> Void = { _ in }) throws -> [DemoProfile] {
        let t0 = Date()
        let loaded = try fullModel()
        let model = loaded.model
        let scorer = try Scorers.make("tcess", modelTopK: report.topK)
        let sweep = options.sweepOptions
        for task in options.tasks {
            let split = try PruningSweep.splitTexts(task: task, options: sweep)
            evaluationTexts[task] = split.evaluation
            heldOutQueries[task] = split.heldOutQueries
            guard !split.calibration.isEmpty else { throw EvaluationError.noItems("\(task): no calibration text") }
            progress("[\(task)] profiling \(options.calibrationTokens) tokens")
            let calibrationURL = options.dataDirectory.appendingPathComponent("\(task)/\(sweep.calibrationSplit).jsonl")
            let result = try TaskProfiling.profile(
                model: model, tokenizer: tokenizer, fingerprint: report.fingerprint,
                calibration: TaskCalibration(task: task, texts: split.calibration, queries: split.calibrationQueries,
                                             source: calibrationURL.path),
                scorers: [scorer], settings: TaskProfiling.Settings(maxTokens: options.calibrationTokens,
                                                                    retrievalQueries: sweep.retrievalQueries))
            let pattern = result.patterns[0]
            let patternFile = try store.save(pattern)
            patterns.append(pattern)

            let heatmap = ExpertHeatmap(title: task, subtitle: "\(result.tokens) tokens", scores: pattern.scores)
            heatmaps.append(heatmap)
            let png = options.outputDirectory.appendingPathComponent("heatmap-\(task).png")
            try PNG.write(ExpertHeatmap.image([heatmap], caption: Self.caption), to: png)
            report.files.append(contentsOf: [patternFile.path, png.path])
            report.profiles.append(DemoProfile(
                task: task, tokens: result.tokens, sequences: result.sequences, seconds: result.seconds,
                patternFile: patternFile.path, heatmapFile: png.path, layers: heatmap.layers, importance: heatmap.values))
        }
        if heatmaps.count > 1 {
            let png = options.outputDirectory.appendingPathComponent("heatmaps.png")
            try PNG.write(ExpertHeatmap.image(heatmaps, caption: Self.caption), to: png)
            report.files.append(png.path)
        }
        report.seconds["profile"] = Date().timeIntervalSince(t0)
        return report.profiles
    }

    static let caption = "expert importance (TCESS); each layer scaled to its own maximum"

    /// The heatmaps drawn so far, in task order.
    public var taskHeatmaps: [ExpertHeatmap] { heatmaps }

    // MARK: stage 2

    /// The classifier retriever over the stored patterns, made once (stages 2 and 4 share it).
    private func taskRetriever() throws -> Retriever {
        if let retriever { return retriever }
        let made = try Retriever(patterns: patterns, method: .classifier, classifier: try store.classifier(for: patterns),
                                 modelTopK: report.topK, storeName: store.directory.path)
        retriever = made
        return made
    }

    /// Matches held-out prompts (each task's evaluation split, no answers) against the patterns.
    /// - Throws: model errors; `PreMoeError.emptyStore` before `profile`.
    public func retrieve(progress: (String) -> Void = { _ in }) throws -> [DemoRetrieval] {
        let t0 = Date()
        let model = try fullModel().model
        var results: [DemoRetrieval] = []
        let retriever = try taskRetriever()
        for task in options.tasks {
            progress("[retrieval] \(task)")
            // Held-out questions as people send them: typed (even) or inside the chat template (odd).
            for (n, query) in (heldOutQueries[task] ?? []).prefix(options.retrievalPrompts).enumerated() {
                let style: QueryStyle = n % 2 == 0 ? .raw : .chat
                let prompt = TaskQueries.render(query, style: style, chatTemplate: tokenizer.chatTemplate)
                let text = TaskQueries.retrievalText(prompt, chatTemplate: tokenizer.chatTemplate)
                let ids = Array(tokenizer.encode(text).prefix(model.spec.maxPositions))
                guard !ids.isEmpty else { continue }
                let match = try retriever.retrieve(model: model, tokens: ids)
                results.append(DemoRetrieval(task: task, prompt: prompt, rendering: style.rawValue, retrieved: match.task,
                                             distance: match.distance, correct: match.task == task,
                                             candidates: match.candidates))
            }
        }
        report.retrieval = results
        report.retrievalAccuracy = results.isEmpty ? nil : Double(results.filter(\.correct).count) / Double(results.count)
        report.seconds["retrieval"] = Date().timeIntervalSince(t0)
        return results
    }

    // MARK: stage 3

    /// Held-out perplexity of every task on the full model and pruned with its own pattern to
    /// each keep level; at the smallest level also with every other task's pattern, which shows
    /// how much the choice of experts is task-specific.
    /// - Throws: model errors, `EvaluationError` when a task has no scorable text.
    public func measureQuality(progress: (String) -> Void = { _ in }) throws -> [DemoQuality] {
        let t0 = Date()
        let loaded = try fullModel()
        let scorer = LogLikelihoodScorer(model: loaded.model, tokenizer: tokenizer)
        var rows: [DemoQuality] = []
        try loaded.loadExperts(kept: allExperts, copy: false)
        for task in options.tasks {
            let texts = evaluationTexts[task] ?? []
            guard !texts.isEmpty else { continue }
            let full = try scorer.perplexity(texts)
            rows.append(DemoQuality(task: task, pattern: nil, keep: 1, expertsPerLayer: report.experts,
                                    perplexity: full.perplexity, items: texts.count, tokens: full.tokens))
            progress(String(format: "[%@] full model: perplexity %.2f", task, full.perplexity))
        }
        let smallest = options.keeps.min()
        for keep in options.keeps.sorted(by: >) {
            for pattern in patterns {
                let plan = try PruningPlan.make(patterns: [pattern], budget: .fraction(keep), sizes: sizes,
                                                allocation: PruningSweep.defaultAllocation)
                try loaded.loadExperts(kept: plan.keptExperts, copy: false)
                for task in options.tasks where task == pattern.task || keep == smallest {
                    let texts = evaluationTexts[task] ?? []
                    guard !texts.isEmpty else { continue }
                    let result = try scorer.perplexity(texts)
                    rows.append(DemoQuality(task: task, pattern: pattern.task, keep: keep, expertsPerLayer: plan.expertsPerLayer,
                                            perplexity: result.perplexity, items: texts.count, tokens: result.tokens))
                }
                progress(String(format: "[%@] %g%% of the experts: evaluated", pattern.task, keep * 100))
            }
        }
        try loaded.loadExperts(kept: allExperts, copy: false)
        report.quality = rows
        report.seconds["quality"] = Date().timeIntervalSince(t0)
        return rows
    }

    // MARK: stage 4

    /// Retrieves the comparison prompt's task, then for the full model and each keep level loads
    /// the model from disk with only that level's experts (read into memory), generates greedily,
    /// and measures load time, prefill and decode speed, memory and held-out perplexity.
    /// The session's own model is released first so that resident memory reflects each level.
    /// - Throws: model errors, `EvaluationError` when there is no prompt.
    public func compare(progress: (String) -> Void = { _ in }) throws -> DemoComparison {
        let t0 = Date()
        let prompt: String
        var promptTask: String?
        if let given = options.prompt {
            prompt = given
        } else if let first = report.retrieval.first {
            prompt = first.prompt
            promptTask = first.task
        } else {
            throw EvaluationError.noItems("no prompt for the comparison (run retrieve first, or give one)")
        }
        let ids = tokenizer.encode(prompt)
        guard !ids.isEmpty else { throw EvaluationError.noItems("the comparison prompt has no tokens") }
        let retriever = try taskRetriever()
        let query = tokenizer.encode(TaskQueries.retrievalText(prompt, chatTemplate: tokenizer.chatTemplate))
        let match = try retriever.retrieve(model: try fullModel().model, tokens: Array(query.prefix(maxPositions)))
        let chosen = match.task.flatMap { task in patterns.first { $0.task == task } }
        let evaluationTask = match.task ?? promptTask ?? options.tasks[0]
        let texts = evaluationTexts[evaluationTask] ?? []
        loaded = nil  // from here on, only the level being measured is resident

        var levels: [DemoLevel] = []
        for keep in [1] + options.keeps.sorted(by: >) {
            progress(String(format: "[compare] %g%% of the experts: load, generate, evaluate", keep * 100))
            var plan: PruningPlan?
            if keep < 1 {
                guard let chosen else { continue }  // no task matched: only the full model
                plan = try PruningPlan.make(patterns: [chosen], budget: .fraction(keep), sizes: sizes,
                                           allocation: PruningSweep.defaultAllocation)
            }
            ProcessMemory.returnFreedMemory()  // the previous level's experts
            let perLevel = ProcessMemory.resetPeakResident()
            let loadStart = Date()
            let level = try Reconstruction.loadBackbone(modelDirectory, threads: options.threads)
            let before = level.checkpoint.bytesRead
            if let plan {
                try Reconstruction.equip(level, plan: plan)
            } else {
                try level.loadExperts(kept: [:], copy: true)
            }
            let loadSeconds = Date().timeIntervalSince(loadStart)
            let expertBytes = level.checkpoint.bytesRead - before
            // Greedy, so every repeat writes the same text; the fastest of five runs is the
            // speed (the first also warms caches and scratch buffers, and the machine may be shared).
            let generator = Generator(model: level.model, tokenizer: tokenizer)
            let parameters = GenerationParameters(maxTokens: options.generationTokens)
            var result = try generator.generate(promptIDs: ids, parameters: parameters)
            for _ in 1..<Self.timingRepeats {
                let again = try generator.generate(promptIDs: ids, parameters: parameters)
                result.prefillSeconds = min(result.prefillSeconds, again.prefillSeconds)
                result.decodeSeconds = min(result.decodeSeconds, again.decodeSeconds)
            }
            let perplexity = texts.isEmpty ? nil
                : try LogLikelihoodScorer(model: level.model, tokenizer: tokenizer).perplexity(texts).perplexity
            let weights = level.model.weightBytes
            levels.append(DemoLevel(
                keep: keep, expertsPerLayer: plan?.expertsPerLayer ?? report.experts, expertBytesLoaded: expertBytes,
                modelBytes: weights.backbone + weights.experts, backboneBytes: weights.backbone,
                peakResidentBytes: ProcessMemory.peakResidentBytes, peakIsPerLevel: perLevel, loadSeconds: loadSeconds,
                promptTokens: result.promptTokens, prefillSeconds: result.prefillSeconds,
                prefillTokensPerSecond: Self.rate(result.promptTokens, result.prefillSeconds),
                generatedTokens: result.tokens.count, decodeSeconds: result.decodeSeconds,
                // The first generated token comes from the prefill's logits.
                decodeTokensPerSecond: Self.rate(max(0, result.tokens.count - 1), result.decodeSeconds),
                text: result.text, perplexity: perplexity))
        }
        let comparison = DemoComparison(prompt: prompt, task: promptTask, retrievedTask: match.task, distance: match.distance,
                                        evaluationTask: evaluationTask, evaluationItems: texts.count, levels: levels)
        report.comparison = comparison
        report.seconds["comparison"] = Date().timeIntervalSince(t0)
        return comparison
    }

    /// Writes `summary.json` into the output directory and stamps the total time.
    /// - Throws: encoding and file-system errors.
    @discardableResult
    public func finish() throws -> DemoReport {
        report.seconds["total"] = Date().timeIntervalSince(started)
        let url = options.outputDirectory.appendingPathComponent("summary.json")
        if !report.files.contains(url.path) { report.files.append(url.path) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try encoder.encode(report).write(to: url, options: .atomic)
        return report
    }

    // MARK: helpers

    /// Generations per level; the fastest one's prefill and decode times are reported.
    static let timingRepeats = 5

    static func rate(_ count: Int, _ seconds: Double) -> Double { seconds > 0 ? Double(count) / seconds : 0 }
}

/// Runs every stage of the demo.
public enum PreMoeDemo {
    /// Profiles, draws, retrieves, measures quality, compares, and writes `summary.json`.
    /// - Parameters:
    ///   - modelDirectory: a Hugging Face MoE model directory.
    ///   - progress: status lines (stderr material).
    /// - Throws: the stages' errors.
    public static func run(modelDirectory: URL, options: DemoOptions, progress: (String) -> Void = { _ in }) throws -> DemoReport {
        let session = try DemoSession(modelDirectory: modelDirectory, options: options)
        _ = try session.profile(progress: progress)
        _ = try session.retrieve(progress: progress)
        _ = try session.measureQuality(progress: progress)
        _ = try session.compare(progress: progress)
        return try session.finish()
    }
}
