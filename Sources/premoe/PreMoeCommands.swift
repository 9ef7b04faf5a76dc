import ArgumentParser
import Evaluation
import Formats
import Foundation
import Kernels
import Models
import PreMoe
import Runtime
import Tokenization

// The PreMoe commands: profile, patterns, retrieve, run, prune. `profile`, `retrieve --json`,
// `prune … --out` and `run` are read by scripts outside this repository; keep their options
// and JSON keys stable.

/// `--store` (or the per-model default) for commands that load a model.
struct StoreOptions: ParsableArguments {
    @Option(help: "Pattern store directory (default: ~/.cache/premoe/patterns/<model fingerprint prefix>).")
    var store: String?

    func resolve(fingerprint: String) -> PatternStore {
        PatternStore(directory: store.map { URL(fileURLWithPath: $0) } ?? PatternStore.defaultDirectory(fingerprint: fingerprint))
    }
}

/// `--keep` / `--budget`.
struct BudgetOptions: ParsableArguments {
    @Option(help: "Experts kept per MoE layer: a count (32) or a percentage (50%).") var keep: String?
    @Option(help: "Memory budget for backbone + kept experts at storage size (6GiB, 512MiB, bytes).") var budget: String?

    func validate() throws {
        if keep != nil && budget != nil { throw ValidationError("give --keep or --budget, not both") }
        if let keep { _ = try ExpertBudget(keep: keep) }
        if let budget { _ = try ExpertBudget(budget: budget) }
    }

    func resolve(default fallback: String = "50%") throws -> ExpertBudget {
        if let budget { return try ExpertBudget(budget: budget) }
        return try ExpertBudget(keep: keep ?? fallback)
    }
}

/// Parses `k=1,r=-1` into scorer parameters.
func parseScorerParameters(_ text: String?) throws -> [String: Double] {
    guard let text, !text.isEmpty else { return [:] }
    var result: [String: Double] = [:]
    for part in text.split(separator: ",") {
        let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard kv.count == 2, let value = Double(kv[1]) else {
            throw ValidationError("--scorer-params: '\(part)' is not name=number")
        }
        guard value.isFinite, abs(value) <= 1e15 else {
            throw ValidationError("--scorer-params: '\(part)': \(kv[0]) must be a finite number of magnitude at most 1e15")
        }
        result[kv[0]] = value
    }
    return result
}

/// A one-line progress bar on stderr, redrawn at most ~10 times a second.
final class ProgressBar {
    private var last = Date.distantPast
    private let enabled: Bool
    init(enabled: Bool) { self.enabled = enabled }
    func update(_ p: ProfileProgress, force: Bool = false) {
        guard enabled, force || Date().timeIntervalSince(last) > 0.1 else { return }
        last = Date()
        var line = "\r"
        if let target = p.targetTokens, target > 0 {
            let width = 30
            let filled = min(width, p.tokens * width / target)
            line += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
            line += "\(p.tokens)/\(target) tokens"
        } else {
            line += "\(p.tokens) tokens"
        }
        line += String(format: ", %d sequences, %.1f tok/s, %.1f s", p.sequences, p.tokensPerSecond, p.seconds)
        FileHandle.standardError.write(Data(line.utf8))
    }
    func finish() { if enabled { FileHandle.standardError.write(Data("\n".utf8)) } }
}

// MARK: profile

struct Profile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Profile a task: run its data through the model and store its expert pattern.")
    @OptionGroup var options: ModelOptions
    @Option(help: "Task name (the pattern's file name).") var task: String
    @Option(help: "JSONL calibration data (text | prompt+completion | messages | a task file of ../shared/data/tasks).")
    var data: String
    @Option(name: .customLong("max-tokens"), help: "Calibration tokens at most.") var maxTokens = 65536
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Scorer: \(Scorers.names.joined(separator: ", ")).") var scorer = "tcess"
    @Option(name: .customLong("scorer-params"), help: "Scorer parameters, e.g. k=1,r=-1 (tcess), seed=3 (random).")
    var scorerParams: String?
    @Option(help: "Longest forward pass in tokens (longer items are cut).") var window = 512
    @Option(help: "Calibration text: full (context + gold answer) or context (prompts only, like queries).")
    var render: CalibrationData.Rendering = .full
    @Option(name: .customLong("retrieval-queries"),
            help: "Calibration prompts rendered (as typed, chat template, lower-cased, …) into retrieval samples.")
    var retrievalQueries = TaskProfiling.Settings().retrievalQueries
    @Option(help: "Memory for the layer-by-layer pass: embedding + the largest layer + activations (e.g. 512MiB, 4GiB); windows are grouped to fit.")
    var memory = "1GiB"
    @Flag(name: .customLong("keep-weights-resident"),
          help: "Do not drop each layer's mapped weight pages after it is passed (faster when the model fits in memory twice).")
    var keepWeightsResident = false
    @Flag(name: .customLong("per-sequence"), help: "One forward pass per window instead of layer by layer (for comparison).")
    var perSequence = false
    @Option(name: .customLong("select-recipe"),
            help: "Choose the pruning recipe per keep level (50%, 25%, 12.5%) by loss on every 5th calibration item, held out: on, off, or auto (on when the whole model fits in --memory; each candidate is a forward pass over the held-out items).")
    var selectRecipe: RecipeSelectionMode = .auto
    @Flag(help: "Print a JSON summary on stdout.") var json = false
    @Flag(name: .customLong("no-progress"), help: "No progress bar on stderr.") var noProgress = false

    /// When `profile` chooses a recipe.
    enum RecipeSelectionMode: String, ExpressibleByArgument { case auto, on, off }

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens must be ≥ 1") }
        if window < 1 { throw ValidationError("--window must be ≥ 1") }
        if retrievalQueries < 0 { throw ValidationError("--retrieval-queries must be ≥ 0") }
        guard case .bytes = try ExpertBudget(budget: memory) else { throw ValidationError("--memory: expected a size") }
        if !PatternStore.isValidTaskName(task) { throw ValidationError("\(PreMoeError.invalidTaskName(task))") }
    }

    func settings() throws -> TaskProfiling.Settings {
        guard case .bytes(let bytes) = try ExpertBudget(budget: memory) else { throw ValidationError("--memory: expected a size") }
        var settings = TaskProfiling.Settings(maxTokens: maxTokens, window: window, retrievalQueries: retrievalQueries,
                                              memoryBytes: bytes, releaseWeights: !keepWeightsResident)
        settings.layerwise = !perSequence
        return settings
    }

    struct Summary: Encodable {
        let task: String, path: String, model: String, fingerprint: String, scorer: ScorerDescriptor
        let tokens: Int, sequences: Int, seconds: Double, tokensPerSecond: Double
        let moeLayers: [Int], experts: Int
        let retrievalSamples: Int, classifierTasks: [String]?
        /// Keep level (e.g. "50%") → the recipe chosen for it; absent without a selection.
        let recipes: [String: String]?
    }

    func run() throws {
        let loaded = try ModelLoader.load(options.url, options: LoadOptions(threads: options.threads))
        let tokenizer = try loaded.requireTokenizer()
        let spec = loaded.model.spec
        guard let first = spec.moeLayers.first, let moe = spec.moe(first) else {
            throw CLIError(description: "\(options.model): the model has no MoE layer")
        }
        let scorerImpl = try Scorers.make(scorer, parameters: try parseScorerParameters(scorerParams), modelTopK: moe.topK)
        let fingerprint = try ModelFingerprint.compute(loaded)
        let store = storeOptions.resolve(fingerprint: fingerprint)
        let calibration = try TaskCalibration.read(task: task, file: URL(fileURLWithPath: data),
                                                   chatTemplate: tokenizer.chatTemplate, rendering: render)
        guard !calibration.texts.isEmpty else { throw CLIError(description: "\(data): no calibration text") }
        let bar = ProgressBar(enabled: !noProgress)
        var settings = try settings()
        let weights = loaded.model.weightBytes
        if selectRecipe == .on || (selectRecipe == .auto && weights.backbone + weights.experts <= settings.memoryBytes) {
            settings.selection = RecipeSelector.Settings()
        }
        let result = try TaskProfiling.profile(
            model: loaded.model, tokenizer: tokenizer, fingerprint: fingerprint, calibration: calibration,
            scorers: [scorerImpl], settings: settings,
            validationLoss: { texts in
                log(try LogLikelihoodScorer(model: loaded.model, tokenizer: tokenizer).perplexity(texts).perplexity)
            }
        ) { bar.update($0) }
        bar.update(ProfileProgress(tokens: result.tokens, targetTokens: maxTokens, sequences: result.sequences,
                                   seconds: result.seconds), force: true)
        bar.finish()
        let pattern = result.patterns[0]
        let path = try store.save(pattern)
        // Refit the store's task classifier now, so that retrieval finds it ready.
        let classifier = try store.classifier(for: try store.list(fingerprint: fingerprint))
        let summary = Summary(
            task: task, path: path.path, model: options.model, fingerprint: fingerprint, scorer: scorerImpl.descriptor,
            tokens: result.tokens, sequences: result.sequences, seconds: result.seconds,
            tokensPerSecond: result.seconds > 0 ? Double(result.tokens) / result.seconds : 0,
            moeLayers: spec.moeLayers, experts: moe.expertCount,
            retrievalSamples: pattern.retrieval?.items.count ?? 0, classifierTasks: classifier?.tasks,
            recipes: pattern.recipeSelection.map { s in
                Dictionary(uniqueKeysWithValues: s.levels.map { (ExpertBudget.fraction($0.keep).description, $0.chosen) })
            })
        if json { return try printJSON(summary) }
        print("profiled '\(task)' with \(scorerImpl.descriptor): \(result.tokens) tokens from \(result.sequences) items "
            + String(format: "in %.1f s (%.1f tok/s)", result.seconds, summary.tokensPerSecond))
        print("pattern   \(path.path)")
        if let selection = pattern.recipeSelection {
            let chosen = selection.levels.map { "\(ExpertBudget.fraction($0.keep)) \($0.chosen)" }
            print("recipes   \(chosen.joined(separator: ", ")) (by loss on \(selection.validationItems) held-out items, "
                + "\(selection.validationTokens) tokens)")
        }
        if let classifier {
            print("retrieval \(summary.retrievalSamples) samples; task classifier over \(classifier.tasks.joined(separator: ", "))")
        }
    }
}

// MARK: patterns

struct Patterns: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, show or remove stored task patterns.", subcommands: [List.self, Show.self, Remove.self])

    /// `--store DIR`, or `--model DIR` for that model's default store.
    struct Location: ParsableArguments {
        @Option(help: "Pattern store directory.") var store: String?
        @Option(help: "Use this model's default store instead of --store.") var model: String?
        func validate() throws {
            if (store == nil) == (model == nil) { throw ValidationError("give --store DIR or --model DIR") }
        }
        func resolve() throws -> PatternStore {
            if let store { return PatternStore(directory: URL(fileURLWithPath: store)) }
            let loaded = try ModelLoader.load(URL(fileURLWithPath: model!), options: LoadOptions(loadExperts: false))
            return PatternStore(directory: PatternStore.defaultDirectory(fingerprint: try ModelFingerprint.compute(loaded)))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List stored patterns.")
        @OptionGroup var location: Location
        @Flag(help: "Print JSON.") var json = false

        struct Entry: Encodable {
            let task: String, scorer: ScorerDescriptor, tokenCount: Int, experts: Int, layers: Int
            let fingerprint: String, createdAt: String, path: String
        }

        func run() throws {
            let store = try location.resolve()
            let entries = try store.list().map {
                Entry(task: $0.task, scorer: $0.scorer, tokenCount: $0.tokenCount, experts: $0.expertCount,
                      layers: $0.layers.count, fingerprint: $0.modelFingerprint, createdAt: $0.createdAt,
                      path: store.url(for: $0.task).path)
            }
            if json { return try printJSON(["store": AnyEncodable(store.directory.path), "patterns": AnyEncodable(entries)]) }
            if entries.isEmpty { return print("\(store.directory.path): no patterns") }
            for e in entries {
                print("\(e.task)\t\(e.scorer)\t\(e.tokenCount) tokens\t\(e.layers) layers × \(e.experts) experts\t"
                    + "\(e.fingerprint.prefix(16))\t\(e.createdAt)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one pattern (top experts per layer, or the JSON).")
        @Argument(help: "Task name.") var task: String
        @OptionGroup var location: Location
        @Option(help: "Experts listed per layer.") var top = 8
        @Flag(help: "Print the pattern's JSON.") var json = false

        func run() throws {
            let pattern = try location.resolve().load(task)
            if json { return try printJSON(pattern) }
            print("task        \(pattern.task)")
            print("scorer      \(pattern.scorer)")
            print("tokens      \(pattern.tokenCount)")
            print("model       \(pattern.modelType) \(pattern.modelFingerprint)")
            print("created     \(pattern.createdAt)\(pattern.source.map { " from \($0)" } ?? "")")
            print("signature   layer \(pattern.signature.layer), \(pattern.signature.scorer)")
            let scores = pattern.scores
            for l in pattern.layerIndices {
                let s = scores[l]!
                let ranked = Scorers.ranking(s).prefix(top).map { "\($0):" + String(format: "%.4g", s[$0]) }
                print("layer \(l)\t" + ranked.joined(separator: " "))
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a stored pattern.")
        @Argument(help: "Task name.") var task: String
        @OptionGroup var location: Location
        func run() throws {
            let store = try location.resolve()
            try store.remove(task)
            print("removed \(store.url(for: task).path)")
        }
    }
}

/// Type-erased Encodable, for small ad-hoc JSON objects.
struct AnyEncodable: Encodable {
    let encodeValue: (Encoder) throws -> Void
    init<T: Encodable>(_ value: T) { encodeValue = value.encode }
    func encode(to encoder: Encoder) throws { try encodeValue(encoder) }
}

// MARK: retrieve

/// `--method` and the fallback thresholds, shared by `retrieve` and `run`.
struct RetrievalOptions: ParsableArguments {
    @Option(help: "classifier (default: logistic regression on backbone features, learned fallback) or centroid (the paper's rule).")
    var method: RetrievalMethod = .classifier
    @Option(help: "Centroid distance: l2 (default) or cosine.") var metric: DistanceMetric = .l2
    @Option(name: .customLong("max-distance"), help: "Centroid: farther than this, no task matches.") var maxDistance: Double?
    @Option(name: .customLong("min-confidence"), help: "Classifier: below this probability, no task matches.")
    var minConfidence: Double?
    @Option(name: .customLong("min-typicality"),
            help: "Classifier: typicality below which no task matches, i.e. the share of in-store queries allowed to fall back (default 0.05).")
    var minTypicality: Double?

    func validate() throws {
        for (flag, value) in [("--max-distance", maxDistance), ("--min-confidence", minConfidence), ("--min-typicality", minTypicality)] {
            if let value, !value.isFinite { throw ValidationError("\(flag) must be a finite number, got \(value)") }
        }
        if let maxDistance, maxDistance < 0 { throw ValidationError("--max-distance must be a number ≥ 0, got \(maxDistance)") }
        if let minConfidence, !(0...1).contains(minConfidence) { throw ValidationError("--min-confidence must be in [0, 1]") }
        if let minTypicality, !(0...1).contains(minTypicality) { throw ValidationError("--min-typicality must be in [0, 1]") }
    }

    /// A matcher for the store's patterns (the classifier comes from the store's cache, fitted
    /// there when the patterns changed).
    func retriever(patterns: [TaskPattern], store: PatternStore, spec: DecoderSpec) throws -> Retriever {
        let topK = spec.moeLayers.first.flatMap { spec.moe($0)?.topK } ?? 1
        let classifier = method == .classifier ? try store.classifier(for: patterns) : nil
        var retriever = try Retriever(patterns: patterns, method: method, classifier: classifier, modelTopK: topK,
                                      storeName: store.directory.path)
        retriever.metric = metric
        retriever.maxDistance = maxDistance
        retriever.minConfidence = minConfidence
        retriever.minTypicality = minTypicality
        return retriever
    }
}

/// Output of `retrieve --json`: `{"task": NAME|null, "distance": x, "candidates": [{"task", "distance"}, …],
/// "method", "confidence", "typicality", "fallback_reason"}`.
struct RetrievalOutput: Encodable {
    let result: RetrievalResult
    enum CodingKeys: String, CodingKey {
        case task, distance, candidates, method, confidence, typicality
        case fallbackReason = "fallback_reason"
    }
    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(result.task, forKey: .task)  // null, not absent, when no task fits
        try c.encode(result.distance, forKey: .distance)
        try c.encode(result.candidates, forKey: .candidates)
        try c.encode(result.method.rawValue, forKey: .method)
        try c.encodeIfPresent(result.confidence, forKey: .confidence)
        try c.encodeIfPresent(result.typicality, forKey: .typicality)
        try c.encode(result.fallbackReason, forKey: .fallbackReason)
    }
}

struct Retrieve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the stored task of a prompt (backbone only: no expert is read), or none.")
    @OptionGroup var options: ModelOptions
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "The query text, as a user would send it.") var prompt: String
    @OptionGroup var retrievalOptions: RetrievalOptions
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if prompt.isEmpty { throw ValidationError("--prompt is empty") }
    }

    func run() throws {
        let loaded = try Reconstruction.loadBackbone(options.url, threads: options.threads)
        let tokenizer = try loaded.requireTokenizer()
        let fingerprint = try ModelFingerprint.compute(loaded)
        let store = storeOptions.resolve(fingerprint: fingerprint)
        let patterns = try store.list(fingerprint: fingerprint, spec: loaded.model.spec)
        let retriever = try retrievalOptions.retriever(patterns: patterns, store: store, spec: loaded.model.spec)
        let query = TaskQueries.retrievalText(prompt, chatTemplate: tokenizer.chatTemplate)
        let result = try retriever.retrieve(model: loaded.model, tokens: tokenizer.encode(query))
        if json { return try printJSON(RetrievalOutput(result: result)) }
        print("task      \(result.task ?? "none (\(result.fallbackReason ?? "no match"))")")
        for c in result.candidates {
            let value = c.probability.map { String(format: "p=%.4f", $0) } ?? String(format: "%.6g", c.distance)
            print(String(format: "  %-20@ %@", c.task as NSString, value))
        }
    }
}

extension DistanceMetric: ExpressibleByArgument {}
extension RetrievalMethod: ExpressibleByArgument {}
extension LayerAllocation: ExpressibleByArgument {}
extension CalibrationData.Rendering: ExpressibleByArgument {}

// MARK: run

struct RunTask: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "TAER end to end: load the backbone, retrieve the task, load only its experts, generate.")
    @OptionGroup var options: ModelOptions
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "The prompt (retrieval sees it raw; generation too unless --chat).") var prompt: String
    @OptionGroup var budgetOptions: BudgetOptions
    @Option(name: .customLong("max-tokens"), help: "Tokens to generate at most.") var maxTokens = 64
    @OptionGroup var retrievalOptions: RetrievalOptions
    @Option(help: "Experts per layer: selected (default: the recipe the task's profile chose for the nearest keep level; else routing-mass), routing-mass (per-layer counts under the same total) or uniform (the paper).")
    var allocation: LayerAllocation = .selected
    @Option(help: "When no stored task fits: full (every expert) or generalist (all stored tasks' patterns combined, same budget).")
    var fallback: Fallback = .full
    @Option(name: .customLong("top-k"), help: "Experts per token after pruning (the paper's a/b, e.g. 4 for 4/64); default: the model's.")
    var topK: Int?
    @Option(help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(help: "Random seed for sampling.") var seed: UInt64 = 0
    @Flag(help: "Format the prompt for generation with the model's chat template.") var chat = false
    @Flag(help: "Print JSON instead of streaming.") var json = false
    @Option(help: "Quantized-weight arithmetic for generation: exact or int8 (retrieval always runs exact).")
    var arithmetic: QuantizedArithmetic = Generate.defaultArithmetic

    func validate() throws {
        if prompt.isEmpty { throw ValidationError("--prompt is empty") }
        if maxTokens < 0 { throw ValidationError("--max-tokens must be ≥ 0") }
        if !(temperature >= 0 && temperature.isFinite) { throw ValidationError("--temperature must be a finite number ≥ 0") }
    }

    enum Fallback: String, ExpressibleByArgument { case full, generalist }

    struct Timings: Encodable {
        let backboneLoadSeconds: Double, signatureSeconds: Double, retrievalSeconds: Double
        let loadingSeconds: Double, prefillSeconds: Double, timeToFirstTokenSeconds: Double, decodeSeconds: Double
        /// Of `loadingSeconds`: reading the kept experts, and building the blocks from them.
        let loadingReadSeconds: Double?, loadingBindSeconds: Double?
    }
    struct Output: Encodable {
        let task: String?, distance: Double, candidates: [RetrievalCandidate]
        let fallbackReason: String?, plannedFrom: [String]
        let expertsPerLayer: Int?, keptExperts: [String: [Int]]
        let expertBytesLoaded: Int?, backboneBytes: Int, peakResidentBytes: Int?
        let text: String, tokens: [Int], promptTokens: Int, finishReason: String, timings: Timings
    }

    func run() throws {
        let t0 = Date()
        let loaded = try Reconstruction.loadBackbone(options.url, threads: options.threads)
        let backboneLoad = Date().timeIntervalSince(t0)
        let tokenizer = try loaded.requireTokenizer()
        let fingerprint = try ModelFingerprint.compute(loaded)
        let store = storeOptions.resolve(fingerprint: fingerprint)
        let patterns = try store.list(fingerprint: fingerprint, spec: loaded.model.spec)
        let promptIDs = tokenizer.encode(prompt)
        let retriever = try retrievalOptions.retriever(patterns: patterns, store: store, spec: loaded.model.spec)
        let query = TaskQueries.retrievalText(prompt, chatTemplate: tokenizer.chatTemplate)
        let retrieval = try retriever.retrieve(model: loaded.model, tokens: query == prompt ? promptIDs : tokenizer.encode(query))
        // Loading: plan + only the kept experts' bytes.
        let loadStart = Date()
        let checkpoint = loaded.checkpoint
        let before = checkpoint.bytesRead
        var plan: PruningPlan?
        var split: (readSeconds: Double, bindSeconds: Double)?
        let chosen = retrieval.task.map { task in patterns.filter { $0.task == task } } ?? (fallback == .generalist ? patterns : [])
        if !chosen.isEmpty {
            let sizes = ModelSizes.measure(checkpoint, spec: loaded.model.spec)
            plan = try PruningPlan.make(patterns: chosen, budget: try budgetOptions.resolve(), sizes: sizes,
                                        allocation: allocation)
        }
        if let plan {
            split = try Reconstruction.equip(loaded, plan: plan)
            if let topK { try loaded.model.overrideRoutedTopK(topK) }
        } else {
            try loaded.loadExperts(kept: [:], copy: true)  // no match: the full model
        }
        let loading = Date().timeIntervalSince(loadStart)
        let expertBytes: Int? = checkpoint.bytesRead - before
        for w in plan?.warnings ?? [] { printError("warning: \(w)") }

        var text = prompt
        if chat { text = try chatPrompt(prompt, tokenizer: tokenizer, model: options.url.path) }
        let ids = chat ? tokenizer.encode(text) : promptIDs
        // Retrieval above compared exact router signatures; generation may take the faster arithmetic.
        loaded.model.pool = ThreadPool(threads: loaded.model.pool.threadCount, quantizedArithmetic: arithmetic)
        let generator = Generator(model: loaded.model, tokenizer: tokenizer)
        let parameters = GenerationParameters(maxTokens: maxTokens, temperature: temperature, seed: seed,
                                              eosTokenIDs: loaded.eosTokenIDs)
        if !json {
            let none = fallback == .generalist ? "none, using the generalist of all stored tasks" : "none, using every expert"
            printError("task: \(retrieval.task ?? none)" + (retrieval.fallbackReason.map { " (\($0))" } ?? "")
                + (retrieval.confidence.map { String(format: " (p=%.3f)", $0) } ?? String(format: " (distance %.4g)", retrieval.distance)))
        }
        let result = try generator.generate(promptIDs: ids, parameters: parameters) { piece in
            if !json { FileHandle.standardOutput.write(Data(piece.utf8)) }
            return true
        }
        let timings = Timings(
            backboneLoadSeconds: backboneLoad, signatureSeconds: retrieval.signatureSeconds,
            retrievalSeconds: retrieval.matchSeconds, loadingSeconds: loading, prefillSeconds: result.prefillSeconds,
            timeToFirstTokenSeconds: retrieval.signatureSeconds + retrieval.matchSeconds + loading + result.prefillSeconds,
            decodeSeconds: result.decodeSeconds, loadingReadSeconds: split?.readSeconds,
            loadingBindSeconds: split?.bindSeconds)
        let output = Output(
            task: retrieval.task, distance: retrieval.distance, candidates: retrieval.candidates,
            fallbackReason: retrieval.fallbackReason, plannedFrom: chosen.map(\.task),
            expertsPerLayer: plan?.expertsPerLayer, keptExperts: plan?.keptExpertsJSON ?? [:],
            expertBytesLoaded: expertBytes, backboneBytes: loaded.model.weightBytes.backbone,
            peakResidentBytes: ProcessMemory.peakResidentBytes, text: result.text, tokens: result.tokens,
            promptTokens: result.promptTokens, finishReason: result.finishReason.rawValue, timings: timings)
        if json { return try printJSON(output) }
        print("")
        var lines = ["task             \(retrieval.task ?? "none") (distance \(String(format: "%.4g", retrieval.distance)))"]
        if let plan {
            let counts = plan.keptExperts.keys.sorted().map { String(plan.keptExperts[$0]!.count) }
            lines.append("experts kept     \(counts.joined(separator: ", ")) per layer (\(plan.recipe ?? allocation.rawValue))")
            for l in plan.keptExperts.keys.sorted() {
                lines.append("  layer \(l): " + plan.keptExperts[l]!.map(String.init).joined(separator: ","))
            }
        }
        if let expertBytes { lines.append("expert bytes     \(formatBytes(expertBytes)) read") }
        lines.append("backbone         \(formatBytes(output.backboneBytes))")
        if let peak = output.peakResidentBytes { lines.append("peak RSS         \(formatBytes(peak))") }
        lines.append(String(format: "time to first    %.3f s = signature %.3f + retrieval %.4f + loading %.3f + prefill %.3f",
                            timings.timeToFirstTokenSeconds, timings.signatureSeconds, timings.retrievalSeconds,
                            timings.loadingSeconds, timings.prefillSeconds))
        if let split {
            lines.append(String(format: "loading          %.3f s reading experts + %.3f s building blocks", split.readSeconds,
                                split.bindSeconds))
        }
        lines.append(String(format: "backbone load    %.3f s; decode %.3f s for %d tokens", backboneLoad,
                            result.decodeSeconds, result.tokens.count))
        for line in lines { printError(line) }
    }
}

// MARK: prune

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a pruned Hugging Face checkpoint or GGUF file for a task (or a generalist for several); a GGUF input is pruned into GGUF, its experts sliced block for block.")
    @OptionGroup var options: ModelOptions
    @Option(help: "Task name, or several separated by ',' for a generalist.") var task: String
    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var budgetOptions: BudgetOptions
    @Option(help: "Output directory (new or empty).") var out: String
    @Option(name: .customLong("max-shard-size"), help: "Largest weight file (e.g. 5GB; safetensors only).") var maxShardSize = "5GB"
    @Option(help: "Output format: safetensors (a Hugging Face checkpoint) or gguf (one model.gguf for llama.cpp); default: the input's.")
    var format: String?
    @Option(name: .customLong("top-k"), help: "Experts per token written into the config (the paper's a/b, e.g. 4 for 4/64; safetensors).")
    var topK: Int?
    @Option(help: "GGUF tensor type (\(ggufTypeList); --format gguf only; default: the checkpoint's).")
    var type: GGUFOutputType?
    @Flag(help: "Merge each dropped expert into its most similar kept expert instead of dropping it (safetensors output of a float per-expert checkpoint).")
    var merge = false
    @Flag(help: "Print JSON.") var json = false

    struct Output: Encodable {
        let out: String, tasks: [String], expertsPerLayer: Int, keptExperts: [String: [Int]]
        let files: [String], tensorBytes: Int, estimatedBytes: Int?, warnings: [String]
        /// The recipe that chose the kept experts (`reap/uniform`, …).
        let recipe: String?
    }

    func run() throws {
        let tasks = task.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !tasks.isEmpty else { throw ValidationError("--task is empty") }
        let url = options.url
        let ggufInput = ModelLoader.isGGUF(url)
        let format = self.format ?? (ggufInput ? "gguf" : "safetensors")
        guard ["safetensors", "gguf"].contains(format) else {
            throw ValidationError("--format: expected safetensors or gguf, got '\(format)'")
        }
        if topK != nil && format == "gguf" { throw ValidationError("--top-k is written into safetensors exports only") }
        if type != nil && format != "gguf" { throw ValidationError("--type needs --format gguf") }
        if ggufInput && format != "gguf" {
            throw ValidationError("--format \(format): a GGUF input is pruned into GGUF only (its tensors keep their "
                + "GGML types and llama.cpp names); export safetensors from the Hugging Face checkpoint")
        }
        if merge && format != "safetensors" {
            throw ValidationError("--merge writes a safetensors checkpoint (merged experts are new float weights)")
        }
        if ggufInput && type != nil {
            throw ValidationError("--type: a GGUF input is pruned without requantizing (its experts keep their bytes "
                + "and types); quantize the pruned file with `premoe quantize` or llama-quantize instead")
        }
        guard case .bytes(let shardBytes) = try ExpertBudget(budget: maxShardSize) else {
            throw ValidationError("--max-shard-size: expected a size")
        }
        let spec: DecoderSpec, fingerprint: String, sizes: ModelSizes
        if ggufInput {
            // The fingerprint `profile` computed for this file (of its synthesized config and
            // routers), so the patterns profiled on it apply.
            let source = try Reconstruction.loadBackbone(url, threads: options.threads)
            spec = source.model.spec
            fingerprint = try ModelFingerprint.compute(source)
            sizes = ModelSizes.measure(source.checkpoint, spec: spec)
        } else {
            spec = try ModelLoader.spec(at: url)
            let checkpoint = try SafetensorsCheckpoint(directory: url)
            let configData = try Data(contentsOf: url.appendingPathComponent("config.json"))
            fingerprint = try ModelFingerprint.compute(configData: configData, checkpoint: checkpoint, spec: spec)
            sizes = ModelSizes.measure(checkpoint, spec: spec)
        }
        let store = storeOptions.resolve(fingerprint: fingerprint)
        let patterns = try tasks.map { try store.load($0, fingerprint: fingerprint, spec: spec) }
        var plan = try PruningPlan.make(patterns: patterns, budget: try budgetOptions.resolve(), sizes: sizes)
        // Exports hold one expert count for all layers: of the recipes the profile compared, the
        // best with the same count everywhere (its score set) at this level.
        if patterns.count == 1, let first = spec.moeLayers.first, let experts = spec.moe(first)?.expertCount,
           let recipe = patterns[0].selectedRecipe(keep: Double(plan.expertsPerLayer) / Double(experts), allocations: [.uniform]) {
            plan = try PruningPlan.make(patterns: patterns, budget: try budgetOptions.resolve(), sizes: sizes,
                                        scoreSet: recipe.scores)
        }
        for w in plan.warnings { printError("warning: \(w)") }
        var merged: [Int: [GatedMLP]]?
        if merge {
            let model = try ModelLoader.load(url, options: LoadOptions(threads: options.threads)).model
            merged = try ExpertMerging.mergedExperts(model, kept: plan.keptExperts, weights: ExpertMerging.weights(patterns))
        }
        let report = ggufInput
            ? try GGUFExport.prune(gguf: url, keptExperts: plan.keptExperts, sourceFingerprint: fingerprint, tasks: tasks,
                                   to: URL(fileURLWithPath: out))
            : format == "gguf"
            ? try GGUFExport.write(modelDirectory: url, keptExperts: plan.keptExperts, sourceFingerprint: fingerprint,
                                   tasks: tasks, type: type, pool: options.threadPool, to: URL(fileURLWithPath: out))
            : try PrunedExport.write(modelDirectory: url, keptExperts: plan.keptExperts, sourceFingerprint: fingerprint,
                                     tasks: tasks, to: URL(fileURLWithPath: out), maxShardBytes: shardBytes,
                                     routedTopK: topK, merged: merged)
        for note in report.notes { printError("note: \(note)") }
        let output = Output(out: out, tasks: tasks, expertsPerLayer: plan.expertsPerLayer, keptExperts: plan.keptExpertsJSON,
                            files: report.files, tensorBytes: report.tensorBytes,
                            estimatedBytes: sizes.bytes(keeping: plan.keptExperts), warnings: plan.warnings,
                            recipe: plan.recipe)
        if json { return try printJSON(output) }
        print("wrote \(out): \(plan.expertsPerLayer) experts per MoE layer for \(tasks.joined(separator: ", ")), "
            + "\(formatBytes(report.tensorBytes)) of weights")
    }
}
