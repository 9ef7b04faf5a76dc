import ArgumentParser
import Evaluation
import Foundation
import Models
import PreMoe
import Runtime
import SEAP

extension ScoreMethod: ExpressibleByArgument {}
extension SparsitySchedule: ExpressibleByArgument {}
extension PrunedStorage: ExpressibleByArgument {}
extension HeadPruning: ExpressibleByArgument {}

/// `premoe seap …`: SEAP's task-aware channel and head pruning for dense models.
struct SEAPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seap",
        abstract: "SEAP: prune a dense model's FFN channels and attention heads per task (METHODS §6).",
        subcommands: [SEAPProfileCommand.self, SEAPPruneCommand.self, SEAPRunCommand.self, SEAPEvalCommand.self,
                      SEAPTraceCommand.self])
}

/// `20%` or `0.2` → 0.2, refusing values outside [0, 1).
func parseSparsity(_ text: String, option: String) throws -> Double {
    let t = text.trimmingCharacters(in: .whitespaces)
    let value = t.hasSuffix("%") ? Double(t.dropLast()).map { $0 / 100 } : Double(t)
    guard let value, value >= 0, value < 1 else {
        throw ValidationError("\(option): '\(t)' is not a fraction in [0, 1) or a percentage in [0%, 100%)")
    }
    return value
}

func parseList(_ text: String) -> [String] {
    text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

/// The mask options shared by `prune` and `run`.
struct SEAPMaskOptions: ParsableArguments {
    @Option(help: "Profile written by `premoe seap profile`.") var profile: String
    @Option(help: "Target sparsity, e.g. 20% or 0.5.") var sparsity = "20%"
    @Option(help: "Layer schedule: logistic (SEAP), uniform, adaptive.") var schedule: SparsitySchedule = .logistic
    @Option(help: "Importance score: wifv (SEAP), wifn, wanda, flap, random.") var score: ScoreMethod = .wifv
    @Option(help: "Seed of the random score.") var seed: UInt64 = SEAPData.defaultSeed
    @Flag(name: .customLong("bias-compensation"), inversion: .prefixedNo,
          help: "FLAP's bias compensation: shift the output projections' biases by the pruned channels' mean contribution (default: on for wifv, wifn and flap, off for wanda and random).")
    var biasCompensation: Bool?
    @Option(help: "Down projections whose quantization blocks are cut: requantize (default), q8_0, float16, float32.")
    var storage: PrunedStorage = .requantize
    @Option(help: "Attention heads: prune (default: query heads at the layer's ratio under the GQA rule, like channels) or keep (FFN channels only, the sparsity is theirs; the official code on GQA models).")
    var heads: HeadPruning = .prune

    func validate() throws { _ = try parseSparsity(sparsity, option: "--sparsity") }

    /// The mask of `task` (or `generic`).
    func mask(task: String, model: DecoderModel) throws -> SEAPMask {
        let p = try SEAPProfile.read(URL(fileURLWithPath: profile), spec: model.spec)
        return try SEAPMasks.make(method: score, task: task, sparsity: try parseSparsity(sparsity, option: "--sparsity"),
                                  schedule: schedule, profile: p, model: model, norms: try WeightNorms(model), seed: seed,
                                  biasCompensation: biasCompensation, heads: heads)
    }
}

struct SEAPProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Collect per-task activation statistics (o_proj and down_proj inputs) and fit the task router.")
    @OptionGroup var options: ModelOptions
    @Option(help: "Comma-separated tasks (folders of --data-dir).") var tasks = "ai2_arc,obqa,piqa,winogrande,boolq,wikitext2"
    @Option(name: .customLong("data-dir"), help: "Task data laid out as <task>/<split>.jsonl.") var dataDir: String?
    @Option(name: .customLong("calibration-split"), help: "Calibration split.") var calibrationSplit = "train"
    @Option(help: "Evaluation split (kept out of calibration when it has no labels).") var split = "test"
    @Option(help: "Calibration records per task.") var count = SEAPData.defaultCount
    @Option(help: "Seed of the calibration draw.") var seed: UInt64 = SEAPData.defaultSeed
    @Option(help: "Output profile (JSON).") var out: String
    @Flag(help: "Print a JSON summary.") var json = false

    struct Summary: Encodable { let out: String; let tokens: [String: Int]; let routerTasks: [String] }

    func run() throws {
        let loaded = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads))
        let tokenizer = try loaded.requireTokenizer()
        let model = loaded.model
        var profile = SEAPProfile(spec: model.spec)
        var queries: [String: [TaskQuery]] = [:]
        let dir = dataDir.map { URL(fileURLWithPath: $0) } ?? Eval.defaultDataDirectory()
        for task in parseList(tasks) {
            let d = try SEAPData.load(task: task, directory: dir, split: split, calibrationSplit: calibrationSplit,
                                      maxEvaluation: 0, count: count, seed: seed)
            let (stats, n) = try SEAPProfiler.collect(model: model, tokenizer: tokenizer, texts: d.calibration)
            profile.tasks[task] = stats
            profile.tokens[task] = n
            queries[task] = d.calibrationQueries
            printError("[\(task)] \(d.calibration.count) texts, \(n) tokens")
        }
        if queries.count >= 2 { profile.router = try SEAPRouter.fit(model: model, tokenizer: tokenizer, queries: queries) }
        try profile.write(to: URL(fileURLWithPath: out))
        if json { return try printJSON(Summary(out: out, tokens: profile.tokens, routerTasks: profile.router?.tasks ?? [])) }
        print("wrote \(out): \(profile.tasks.count) tasks, router over \(profile.router?.tasks.count ?? 0)")
    }
}

struct SEAPPruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Make a task's (or the generic) mask, remove the pruned heads and channels, and export.")
    @OptionGroup var options: ModelOptions
    @OptionGroup var mask: SEAPMaskOptions
    @Option(help: "Task name, or generic.") var task = "generic"
    @Option(name: .customLong("mask-out"), help: "Write the mask (JSON).") var maskOut: String?
    @Option(name: .customLong("gguf-out"), help: "Write the pruned model as GGUF (GGUF input only).") var ggufOut: String?
    @Flag(help: "Print JSON.") var json = false

    struct Summary: Encodable {
        let task: String, score: String, schedule: String, sparsity: Double
        let prunedHeads: Double, prunedChannels: Double, denseBytes: Int, prunedBytes: Int
    }

    func run() throws {
        let loaded = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads))
        let model = loaded.model
        let m = try mask.mask(task: task, model: model)
        if let maskOut { try m.write(to: URL(fileURLWithPath: maskOut)) }
        let pruned = try StructuredPruning.prune(model, mask: m, storage: mask.storage)
        if let ggufOut {
            guard ModelLoader.isGGUF(options.url) else { throw CLIError(description: "--gguf-out needs a GGUF input") }
            try SEAPExport.writeGGUF(source: options.url, pruned: pruned, mask: m, to: URL(fileURLWithPath: ggufOut))
        }
        let f = m.prunedFractions
        let summary = Summary(task: task, score: m.score.rawValue, schedule: m.schedule.rawValue, sparsity: m.sparsity,
                              prunedHeads: f.heads, prunedChannels: f.channels,
                              denseBytes: model.weightBytes.backbone, prunedBytes: pruned.weightBytes.backbone)
        if json { return try printJSON(summary) }
        print(String(format: "%@ %@/%@ %.0f%%: %.1f%% of heads and %.1f%% of channels pruned; weights %@ → %@", task,
                     m.score.rawValue, m.schedule.rawValue, m.sparsity * 100, f.heads * 100, f.channels * 100,
                     formatBytes(summary.denseBytes), formatBytes(summary.prunedBytes)))
    }
}

/// `premoe seap trace`: every layer's projection inputs for one sequence, as raw f32 files, to
/// compare with another engine layer by layer (scripts/compare_seap_layer_traces.py).
struct SEAPTraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Write each layer's attn_in, o_proj_in, mlp_in and down_proj_in rows for token ids (raw f32).")
    @OptionGroup var options: ModelOptions
    @Option(help: "Comma-separated token ids, e.g. 1,2,3.") var ids: String
    @Option(help: "Output directory: <site>-<layer>.f32, [tokens, width] row-major, little-endian.") var out: String

    func run() throws {
        let tokens = try parseIDs(ids)
        guard !tokens.isEmpty else { throw ValidationError("--ids is empty") }
        let model = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads)).model
        let trace = try ActivationTrace.record(model: model, tokens: tokens)
        let dir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (layer, sites) in trace.values {
            for (site, values) in sites {
                try values.withUnsafeBytes { try Data($0).write(to: dir.appendingPathComponent("\(site.rawValue)-\(layer).f32")) }
            }
        }
    }
}

struct SEAPRunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Route a prompt to its task (or use --task), prune to that task's mask, and generate.")
    @OptionGroup var options: ModelOptions
    @OptionGroup var mask: SEAPMaskOptions
    @Option(help: "Task name or generic; default: the profile's router decides.") var task: String?
    @Option(help: "The prompt.") var prompt: String
    @Option(name: .customLong("max-tokens"), help: "Tokens to generate at most.") var maxTokens = 64
    @Flag(help: "Format the prompt with the model's chat template.") var chat = false
    @Flag(help: "Print JSON.") var json = false

    struct Output: Encodable { let task: String; let routed: Bool; let probability: Double?; let text: String; let tokensPerSecond: Double }

    func run() throws {
        let loaded = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads))
        let tokenizer = try loaded.requireTokenizer()
        let model = loaded.model
        var chosen = task
        var probability: Double?
        if chosen == nil {
            let profile = try SEAPProfile.read(URL(fileURLWithPath: mask.profile), spec: model.spec)
            guard let router = profile.router else {
                throw CLIError(description: "\(mask.profile): no task router (profile two or more tasks, or pass --task)")
            }
            let decision = try router.route(prompt, model: model, tokenizer: tokenizer)
            chosen = decision.task
            probability = decision.probability
            if !json { printError(String(format: "routed to %@ (p = %.2f)", decision.task, decision.probability)) }
        }
        let m = try mask.mask(task: chosen!, model: model)
        let pruned = try StructuredPruning.prune(model, mask: m, storage: mask.storage)
        let text = chat ? try chatPrompt(prompt, tokenizer: tokenizer, model: options.url.path) : prompt
        let generator = Generator(model: pruned, tokenizer: tokenizer)
        let start = Date()
        let result = try generator.generate(promptIDs: tokenizer.encode(text),
                                            parameters: GenerationParameters(maxTokens: maxTokens, eosTokenIDs: loaded.eosTokenIDs))
        let seconds = Date().timeIntervalSince(start)
        let output = Output(task: chosen!, routed: task == nil, probability: probability, text: result.text,
                            tokensPerSecond: Double(result.tokens.count) / max(seconds, 1e-9))
        if json { return try printJSON(output) }
        print(result.text)
    }
}

struct SEAPEvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Dense vs SEAP and the baselines at each sparsity: acc, acc_norm, perplexity, speed, weight bytes.")
    @OptionGroup var options: ModelOptions
    @Option(help: "Comma-separated tasks (folders of --data-dir).") var tasks = "ai2_arc,obqa,piqa,winogrande,boolq"
    @Option(help: "Comma-separated sparsities, e.g. 20%,50%.") var sparsity = "20%,50%"
    @Option(help: "Comma-separated scores: wifv (SEAP), wifn, wanda, flap, random; NAME+bc forces bias compensation on, NAME-bc off (e.g. wifv-bc, the paper's SEAP).")
    var scores = "wifv,wanda,flap,random"
    @Option(help: "Layer schedule: logistic (SEAP), uniform, adaptive.") var schedule: SparsitySchedule = .logistic
    @Option(name: .customLong("data-dir"), help: "Task data laid out as <task>/<split>.jsonl.") var dataDir: String?
    @Option(help: "Evaluation split.") var split = "test"
    @Option(name: .customLong("calibration-split"), help: "Calibration split.") var calibrationSplit = "train"
    @Option(name: .customLong("max-examples"), help: "Evaluation items per task.") var maxExamples = 100
    @Option(name: .customLong("calibration-count"), help: "Calibration records per task.") var calibrationCount = SEAPData.defaultCount
    @Option(help: "Seed of the calibration draw and the random score.") var seed: UInt64 = SEAPData.defaultSeed
    @Flag(help: "Add rows for SEAP's generic mask (method wifv-generic).") var generic = false
    @Option(help: "Down projections whose quantization blocks are cut: requantize, q8_0, float16, float32.")
    var storage: PrunedStorage = .requantize
    @Option(help: "Attention heads: prune (default: query heads at the layer's ratio under the GQA rule, like channels) or keep (FFN channels only, the sparsity is theirs; the official code on GQA models).")
    var heads: HeadPruning = .prune
    @Option(name: .customLong("router-prompts"), help: "Held-out prompts per task for the router's accuracy (0: skip).")
    var routerPrompts = 50
    @Option(help: "Directory for seap-report.md and seap-report.json (optional).") var out: String?
    @Flag(help: "Print JSON: {\"rows\": […]}.") var json = false

    func validate() throws {
        if maxExamples < 1 { throw ValidationError("--max-examples must be ≥ 1") }
        if calibrationCount < 1 { throw ValidationError("--calibration-count must be ≥ 1") }
        if routerPrompts < 0 { throw ValidationError("--router-prompts must be ≥ 0") }
        _ = try parseScores()
        for s in parseList(sparsity) { _ = try parseSparsity(s, option: "--sparsity") }
    }

    /// The rows' methods, in the order given.
    func parseScores() throws -> [SEAPMethod] {
        try parseList(scores).map { name in
            guard let m = SEAPMethod(name) else {
                throw ValidationError("--scores: '\(name)' is not one of \(ScoreMethod.allCases.map(\.rawValue).joined(separator: ", "))"
                                      + " (optionally with +bc or -bc)")
            }
            return m
        }
    }

    struct Rows: Encodable { let rows: [SEAPEvalRow] }

    func run() throws {
        var o = SEAPEvalOptions(tasks: parseList(tasks), sparsities: try parseList(sparsity).map { try parseSparsity($0, option: "--sparsity") },
                                scores: try parseScores(),
                                dataDirectory: dataDir.map { URL(fileURLWithPath: $0) } ?? Eval.defaultDataDirectory())
        o.schedule = schedule
        o.split = split
        o.calibrationSplit = calibrationSplit
        o.maxExamples = maxExamples
        o.calibrationCount = calibrationCount
        o.seed = seed
        o.generic = generic
        o.storage = storage
        o.heads = heads
        o.routerPrompts = routerPrompts
        o.threads = options.threads
        let report = try SEAPEvaluation.run(model: options.url, options: o) { printError($0) }
        if let out {
            let url = URL(fileURLWithPath: out)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            try encoder.encode(report).write(to: url.appendingPathComponent("seap-report.json"))
            try Data(report.markdown().utf8).write(to: url.appendingPathComponent("seap-report.md"))
        }
        if json { return try printJSON(Rows(rows: report.rows)) }
        print(report.markdown())
        for note in report.notes { print("- \(note)") }
    }
}
