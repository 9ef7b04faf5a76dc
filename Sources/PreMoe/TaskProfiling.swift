import Foundation
import Models
import Tokenization

/// A task's calibration material: the texts whose routing makes the expert scores (context and
/// gold answer) and the queries whose renderings make the retrieval samples and signature.
public struct TaskCalibration: Sendable {
    public var task: String
    /// Scored text, in order; read until the token budget is spent.
    public var texts: [String]
    /// Prompts as people would send them (no answers).
    public var queries: [TaskQuery]
    /// Informational, recorded in the pattern.
    public var source: String?

    public init(task: String, texts: [String], queries: [TaskQuery], source: String? = nil) {
        self.task = task
        self.texts = texts
        self.queries = queries
        self.source = source
    }

    /// Reads both from one JSONL task file.
    /// - Parameters:
    ///   - rendering: how scored texts are rendered (`.full` = with gold answers, the default).
    /// - Throws: `PreMoeError.invalidData`.
    public static func read(task: String, file: URL, chatTemplate: ChatTemplate?,
                            rendering: CalibrationData.Rendering = .full) throws -> TaskCalibration {
        TaskCalibration(task: task, texts: try CalibrationData.read(file, chatTemplate: chatTemplate, rendering: rendering),
                        queries: try TaskQueries.read(file), source: file.path)
    }
}

/// The one way a task is profiled (CLI, demo and sweep all call it).
public enum TaskProfiling {
    /// Settings of a profile.
    public struct Settings: Sendable {
        /// Scored calibration tokens at most.
        public var maxTokens: Int
        /// Longest forward pass; longer texts are cut into windows.
        public var window: Int
        /// Calibration queries rendered for retrieval (each in every `QueryStyle`).
        public var retrievalQueries: Int
        /// Memory of the layer-by-layer pass (`Profiler.runLayerwise`).
        public var memoryBytes: Int
        /// Drop each layer's mapped weight pages once passed (resident memory about one layer).
        public var releaseWeights: Bool
        /// Layer by layer (default), or one forward pass per window (the earlier way, kept for
        /// comparison: it reads every weight once per window).
        public var layerwise = true
        /// Choose the pruning recipe per keep level on held-out calibration items (and store the
        /// other scorers' scores it may pick); nil: the pattern holds its own scorer's scores only.
        /// Costs one forward pass over the validation items per distinct candidate plan and level.
        public var selection: RecipeSelector.Settings?

        public init(maxTokens: Int = 65536, window: Int = 512, retrievalQueries: Int = 100, memoryBytes: Int = 1 << 30,
                    releaseWeights: Bool = true) {
            self.maxTokens = maxTokens
            self.window = window
            self.retrievalQueries = retrievalQueries
            self.memoryBytes = memoryBytes
            self.releaseWeights = releaseWeights
        }
    }

    /// What one profile produced.
    public struct Result {
        /// One pattern per scorer, in the order given.
        public var patterns: [TaskPattern]
        public var tokens: Int
        public var sequences: Int
        public var seconds: Double
        /// Seconds spent on the retrieval samples (included in `seconds`).
        public var retrievalSeconds: Double
    }

    /// Profiles a task: routes the scored texts through the full model layer by layer (scores of
    /// every MoE layer; each weight byte read once per group of windows), then renders the first `retrievalQueries` queries in every `QueryStyle` and runs
    /// each up to the first MoE router (retrieval samples and the paper's signature).
    /// - Parameters:
    ///   - model: the full model (every expert loaded).
    ///   - scorers: one pattern per scorer; all share one pass.
    ///   - validationLoss: with `settings.selection`, the mean negative log-likelihood per token of
    ///     these texts on the model as it is when called (the caller's perplexity code).
    ///   - progress: called after each scored forward pass.
    /// - Throws: `PreMoeError.unsupported` without MoE layers (or a selection without
    ///   `validationLoss`), `.invalidData` without text, model errors.
    public static func profile(model: DecoderModel, tokenizer: Tokenizer, fingerprint: String,
                               calibration: TaskCalibration, scorers: [ExpertScorer], settings: Settings = Settings(),
                               validationLoss: (([String]) throws -> Double)? = nil,
                               progress: ((ProfileProgress) -> Void)? = nil) throws -> Result {
        let spec = model.spec
        guard let first = spec.moeLayers.first, let dimension = QueryFeatures.dimension(spec) else {
            throw PreMoeError.unsupported("the model has no MoE layer to profile")
        }
        guard !calibration.texts.isEmpty else {
            throw PreMoeError.invalidData(file: calibration.source ?? calibration.task, line: nil, reason: "no calibration text")
        }
        let start = Date()
        let sequences = Profiler.tokenize(calibration.texts, tokenizer: tokenizer, budget: settings.maxTokens)
        let stored = try settings.selection == nil ? [] : PruningRecipe.storedScorers.map {
            try Scorers.make($0, modelTopK: spec.moe(first)?.topK ?? 1)
        }
        // The pattern's own scorers last: where two share a statistic, their parameters win.
        let options = StatsOptions.union(stored + scorers)
        func pass(_ sequences: [[Int]], maxTokens: Int?) throws -> ProfileResult {
            settings.layerwise
                ? try Profiler.runLayerwise(model: model, sequences: sequences, options: options, maxTokens: maxTokens,
                                            window: settings.window, memoryBytes: settings.memoryBytes,
                                            releaseWeights: settings.releaseWeights, progress: progress)
                : try Profiler.run(model: model, sequences: sequences, options: options, maxTokens: maxTokens,
                                   window: settings.window, progress: progress)
        }
        func makePatterns(_ stats: RouterStats, signatureStats: RouterStats?) throws -> [TaskPattern] {
            try scorers.map { scorer -> TaskPattern in
                var pattern = try Profiler.makePattern(
                    stats: stats, scorer: scorer, spec: spec, fingerprint: fingerprint, task: calibration.task,
                    source: calibration.source, signatureStats: signatureStats)
                let others = stored.filter { $0.descriptor.name != scorer.descriptor.name }
                if !others.isEmpty {
                    pattern.scorerScores = Dictionary(uniqueKeysWithValues: others.map { other in
                        (other.descriptor.name, Dictionary(uniqueKeysWithValues: stats.layers.map { (String($0.key), other.scores($0.value)) }))
                    })
                }
                return pattern
            }
        }
        let scored: ProfileResult
        var selection: TaskPattern.RecipeSelection?
        let folds = settings.selection.map { Profiler.folds(Profiler.trim(sequences, to: settings.maxTokens), every: $0.validationEvery) }
        if let select = settings.selection, let folds, !folds.fit.isEmpty, !folds.validation.isEmpty {
            guard let validationLoss else {
                throw PreMoeError.unsupported("choosing a recipe needs a validation loss (the caller's perplexity code)")
            }
            // Rank on the fit fold, compare the recipes on the validation fold, then add the
            // validation fold's routing to the statistics the stored scores are made from.
            let fit = try pass(folds.fit.map(\.tokens), maxTokens: nil)
            let fitPattern = try makePatterns(fit.stats, signatureStats: nil)[0]
            let texts = folds.validation.map { calibration.texts[$0.item] }
            let compared = try RecipeSelector.compare(model: model, fit: fitPattern, settings: select) { try validationLoss(texts) }
            let validation = try pass(folds.validation.map(\.tokens), maxTokens: nil)
            fit.stats.merge(validation.stats)
            scored = ProfileResult(stats: fit.stats, tokens: fit.tokens + validation.tokens,
                                   sequences: fit.sequences + validation.sequences, seconds: Date().timeIntervalSince(start))
            selection = TaskPattern.RecipeSelection(
                fitItems: fit.sequences, fitTokens: fit.tokens, validationItems: validation.sequences,
                validationTokens: validation.tokens, fullLoss: compared.fullLoss, levels: compared.levels)
        } else {
            if settings.selection != nil {
                PreMoeLog.warning("\(calibration.task): too few calibration items to hold some out; the default recipe applies")
            }
            scored = try pass(sequences, maxTokens: settings.maxTokens)
        }

        let retrievalStart = Date()
        let signatureStats = RouterStats(spec: spec, options: .union(scorers.map(\.signatureScorer)), onlyLayers: [first])
        let longest = max(1, min(settings.window, spec.maxPositions))
        var vectors: [[Float]] = []
        var items: [Int] = []
        var contextVectors: [[Float]] = []
        var contextItems: [Int] = []
        for (item, query) in calibration.queries.prefix(settings.retrievalQueries).enumerated() {
            for text in TaskQueries.trainingRenderings(query, item: item, chatTemplate: tokenizer.chatTemplate) {
                let ids = Array(tokenizer.encode(TaskQueries.retrievalText(text, chatTemplate: tokenizer.chatTemplate)).prefix(longest))
                guard !ids.isEmpty else { continue }
                vectors.append(try QueryFeatures.compute(model: model, tokens: ids, signatureStats: signatureStats))
                items.append(item)
            }
            // The item's material without a request: the classifier's "none" examples. Not part of
            // the signature, which averages the task's queries.
            for text in query.context {
                let ids = Array(tokenizer.encode(text).prefix(longest))
                guard !ids.isEmpty else { continue }
                contextVectors.append(try QueryFeatures.compute(model: model, tokens: ids))
                contextItems.append(item)
            }
        }
        let samples = vectors.isEmpty ? nil : TaskPattern.RetrievalSamples(
            features: QueryFeatures.name, dimension: dimension, items: items,
            renderings: QueryStyle.allCases.map(\.rawValue), vectors: vectors,
            contextItems: contextItems, contextVectors: contextVectors)
        let patterns = try makePatterns(scored.stats, signatureStats: vectors.isEmpty ? nil : signatureStats).map { p in
            var pattern = p
            pattern.retrieval = samples
            pattern.recipeSelection = selection
            return pattern
        }
        let now = Date()
        return Result(patterns: patterns, tokens: scored.tokens, sequences: scored.sequences,
                      seconds: now.timeIntervalSince(start), retrievalSeconds: now.timeIntervalSince(retrievalStart))
    }
}
