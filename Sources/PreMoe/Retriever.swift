import Foundation
import Models

/// How query and pattern signatures are compared.
public enum DistanceMetric: String, Sendable, CaseIterable, Codable {
    /// Euclidean distance, no normalisation (the official code's `IndexFlatL2`, METHODS §2.2).
    case l2
    /// 1 − cosine similarity (0 for an all-zero vector against anything is taken as 1).
    case cosine

    /// The distance between two vectors of equal length.
    public func distance(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count, "signature lengths differ: \(a.count) vs \(b.count)")
        switch self {
        case .l2:
            var s: Double = 0
            for i in a.indices { s += (a[i] - b[i]) * (a[i] - b[i]) }
            return s.squareRoot()
        case .cosine:
            var dot: Double = 0, na: Double = 0, nb: Double = 0
            for i in a.indices {
                dot += a[i] * b[i]
                na += a[i] * a[i]
                nb += b[i] * b[i]
            }
            return na > 0 && nb > 0 ? 1 - dot / (na.squareRoot() * nb.squareRoot()) : 1
        }
    }
}

/// How a query is matched to a stored task.
public enum RetrievalMethod: String, Sendable, CaseIterable, Codable {
    /// Logistic regression on `QueryFeatures` with a typicality and a "none"-class fallback (`TaskClassifier`).
    case classifier
    /// The paper's rule: nearest stored TCESS signature of the first MoE layer (METHODS §2.2).
    case centroid
}

/// One stored task and how far the query is from it.
public struct RetrievalCandidate: Codable, Equatable, Sendable {
    public var task: String
    /// Centroid: the signature distance. Classifier: 1 − the task's probability.
    public var distance: Double
    /// Classifier only: the task's probability.
    public var probability: Double?

    public init(task: String, distance: Double, probability: Double? = nil) {
        self.task = task
        self.distance = distance
        self.probability = probability
    }
}

/// The outcome of matching a query against stored patterns.
public struct RetrievalResult: Sendable {
    /// The chosen task, or nil when the query falls back (no stored task fits).
    public var task: String?
    /// The best candidate's distance (also when `task` is nil).
    public var distance: Double
    /// Every stored task, best first (ties by task name).
    public var candidates: [RetrievalCandidate]
    public var method: RetrievalMethod
    /// Classifier: the best task's probability.
    public var confidence: Double?
    /// Classifier: the query's typicality of the stored tasks (`TypicalityModel`): the share of
    /// in-store calibration prompts at least as far from every task as it is.
    public var typicality: Double?
    /// Why the query fell back, when it did.
    public var fallbackReason: String?
    /// Query tokens.
    public var tokenCount: Int
    /// Seconds computing the features (backbone up to the first router) and deciding.
    public var signatureSeconds: Double
    public var matchSeconds: Double
}

/// Task-adaptive expert retrieval (TAER): the query runs through the backbone up to the first
/// MoE router (no expert is needed), then a prepared matcher names the task or falls back.
public struct Retriever: Sendable {
    public let patterns: [TaskPattern]
    public let method: RetrievalMethod
    /// Centroid: distance metric and the largest distance that still matches.
    public var metric: DistanceMetric = .l2
    public var maxDistance: Double?
    /// Classifier: below this probability the query falls back (default: never on probability).
    public var minConfidence: Double?
    /// Classifier: overrides the fitted typicality threshold (the share of in-store queries that fall back).
    public var minTypicality: Double?
    let classifier: TaskClassifier?
    /// The classifier's fallback model, decoded.
    let typicality: TypicalityModel.Scorer?
    let scorers: [ExpertScorer]

    /// Prepares a matcher.
    /// - Parameters:
    ///   - patterns: candidates (already checked against the model).
    ///   - method: classifier (needs patterns with retrieval samples and a fitted classifier) or centroid.
    ///   - classifier: fitted on these patterns (`PatternStore.classifier(for:)` or `fitClassifier`).
    ///   - modelTopK: the model's top-k (to rebuild centroid signature scorers).
    /// - Throws: `PreMoeError.emptyStore`, `.unsupported` when the classifier lacks a task.
    public init(patterns: [TaskPattern], method: RetrievalMethod, classifier: TaskClassifier? = nil, modelTopK: Int,
                storeName: String = "store") throws {
        guard !patterns.isEmpty else { throw PreMoeError.emptyStore(storeName) }
        self.patterns = patterns
        self.method = method
        scorers = try patterns.map { try Scorers.make($0.signature.scorer, modelTopK: modelTopK) }
        if method == .classifier {
            guard let classifier else {
                throw PreMoeError.unsupported("classifier retrieval needs patterns profiled with retrieval samples "
                    + "(profile the tasks again, or use --method centroid)")
            }
            let stored = Set(patterns.filter { $0.retrieval != nil }.map(\.task))
            if let missing = classifier.tasks.first(where: { !stored.contains($0) }) {
                throw PreMoeError.unsupported("the task classifier knows '\(missing)', which has no retrieval samples here")
            }
            typicality = try classifier.typicality?.scorer()
        } else {
            typicality = nil
        }
        self.classifier = classifier
    }

    /// Fits a classifier on the patterns' retrieval samples (nil when any pattern has none).
    /// - Throws: `PreMoeError` for inconsistent samples.
    public static func fitClassifier(_ patterns: [TaskPattern], settings: TaskClassifier.Settings = .init(),
                                     key: String = "") throws -> TaskClassifier? {
        guard !patterns.isEmpty, patterns.allSatisfy({ $0.retrieval != nil }) else { return nil }
        var samples: [RetrievalSample] = []
        var context: [[Float]] = []
        let sorted = patterns.sorted { $0.task < $1.task }
        for (t, pattern) in sorted.enumerated() {
            let retrieval = pattern.retrieval!
            guard retrieval.features == QueryFeatures.name else {
                throw PreMoeError.unsupported("pattern '\(pattern.task)' has retrieval features '\(retrieval.features)', "
                    + "expected '\(QueryFeatures.name)'; profile it again")
            }
            for (item, vector) in zip(retrieval.items, try retrieval.vectors(file: pattern.task)) {
                samples.append(RetrievalSample(task: t, item: item, features: vector))
            }
            context += try retrieval.contextVectors(file: pattern.task)
        }
        return try TaskClassifier.fit(tasks: sorted.map(\.task), samples: samples, features: QueryFeatures.name,
                                      context: context, settings: settings, key: key)
    }

    /// What the backbone says about a query, enough for either method.
    public struct Probe: Sendable {
        public var features: [Float]
        /// The centroid signatures, by scorer.
        public var signatures: [ScorerDescriptor: [Double]]
        public var tokenCount: Int
        public var seconds: Double
    }

    /// Runs the query through the backbone up to the first MoE router (one pass for both
    /// methods' inputs).
    /// - Parameters:
    ///   - model: a load whose first MoE router is unpruned; backbone-only suffices and reads no expert byte.
    ///   - tokens: the query's ids, as it arrived (raw, chat template and all).
    ///   - alone: on the calling thread with scratch of its own, so that it may run beside
    ///     another thread's forward passes of the same model (a server's engine).
    /// - Throws: model errors.
    public func probe(model: DecoderModel, tokens: [Int], alone: Bool = false) throws -> Probe {
        let start = Date()
        let (features, signatures) = try Self.featuresAndSignatures(model: model, tokens: tokens, scorers: scorers,
                                                                    alone: alone)
        return Probe(features: features, signatures: signatures, tokenCount: tokens.count,
                     seconds: Date().timeIntervalSince(start))
    }

    /// Matches one query.
    /// - Throws: model errors, `PreMoeError` for mismatched lengths.
    public func retrieve(model: DecoderModel, tokens: [Int], alone: Bool = false) throws -> RetrievalResult {
        try decide(probe(model: model, tokens: tokens, alone: alone))
    }

    /// Decides on a probed query (no model work: microseconds).
    /// - Throws: `PreMoeError` when the probe's lengths do not match the patterns.
    public func decide(_ probe: Probe) throws -> RetrievalResult {
        let start = Date()
        switch method {
        case .classifier:
            let decision = try classifier!.decide(probe.features, typicality: typicality)
            let tasks = classifier!.tasks
            var candidates = tasks.indices.map {
                RetrievalCandidate(task: tasks[$0], distance: 1 - decision.probabilities[$0],
                                   probability: decision.probabilities[$0])
            }
            candidates.sort { ($0.distance, $0.task) < ($1.distance, $1.task) }
            let confidence = decision.probabilities[decision.best]
            let threshold = minTypicality ?? classifier!.minTypicality
            var reason: String?
            if let typicality = decision.typicality, typicality < threshold {
                reason = String(format: "typicality %.3f < %.3f: the query is farther from every stored task than "
                    + "%.1f%% of their own calibration prompts (nearest guess '%@')",
                                typicality, threshold, 100 * (1 - typicality), tasks[decision.best])
            } else if let none = decision.noneProbability, none > confidence {
                reason = String(format: "the query reads like the stored tasks' material without a request "
                    + "(probability of none %.3f > %.3f of '%@')", none, confidence, tasks[decision.best])
            } else if let minConfidence, confidence < minConfidence {
                reason = String(format: "probability %.3f < %.3f", confidence, minConfidence)
            }
            return RetrievalResult(
                task: reason == nil ? tasks[decision.best] : nil, distance: 1 - confidence, candidates: candidates,
                method: .classifier, confidence: confidence, typicality: decision.typicality, fallbackReason: reason,
                tokenCount: probe.tokenCount, signatureSeconds: probe.seconds,
                matchSeconds: Date().timeIntervalSince(start))
        case .centroid:
            var candidates: [RetrievalCandidate] = []
            for pattern in patterns {
                guard let q = probe.signatures[pattern.signature.scorer], q.count == pattern.signature.values.count else {
                    throw PreMoeError.invalidPattern(file: pattern.task, reason: "signature length does not match the model")
                }
                candidates.append(RetrievalCandidate(task: pattern.task, distance: metric.distance(q, pattern.signature.values)))
            }
            candidates.sort { ($0.distance, $0.task) < ($1.distance, $1.task) }
            let best = candidates[0]
            let reason = maxDistance.flatMap { best.distance <= $0 ? nil : String(format: "distance %.4g > %.4g", best.distance, $0) }
            return RetrievalResult(
                task: reason == nil ? best.task : nil, distance: best.distance, candidates: candidates, method: .centroid,
                confidence: nil, typicality: nil, fallbackReason: reason, tokenCount: probe.tokenCount,
                signatureSeconds: probe.seconds, matchSeconds: Date().timeIntervalSince(start))
        }
    }

    /// The query's signature for each of `scorers` (all from one forward pass).
    /// - Parameters:
    ///   - model: any load of the model whose first MoE router is unpruned; a backbone-only load
    ///     (`loadExperts: false`) suffices and reads no expert byte.
    ///   - tokens: the prompt's ids.
    /// - Throws: `ModelError` from the forward pass, `PreMoeError.unsupported` for a model
    ///   without MoE layers or with a pruned first router.
    public static func signatures(model: DecoderModel, tokens: [Int], scorers: [ExpertScorer]) throws -> [ScorerDescriptor: [Double]] {
        try featuresAndSignatures(model: model, tokens: tokens, scorers: scorers).1
    }

    /// `QueryFeatures` and the signatures of `scorers`, from one pass up to the first router.
    static func featuresAndSignatures(model: DecoderModel, tokens: [Int], scorers: [ExpertScorer], alone: Bool = false)
        throws -> ([Float], [ScorerDescriptor: [Double]])
    {
        guard let first = model.spec.moeLayers.first else {
            throw PreMoeError.unsupported("the model has no MoE layer; retrieval needs a router")
        }
        let stats = RouterStats(spec: model.spec, options: .union(scorers), onlyLayers: [first])
        let features = try QueryFeatures.compute(model: model, tokens: tokens, signatureStats: stats, alone: alone)
        var result: [ScorerDescriptor: [Double]] = [:]
        if let layerStats = stats.layers[first] {
            for scorer in scorers where result[scorer.descriptor] == nil {
                result[scorer.descriptor] = scorer.scores(layerStats)
            }
        }
        return (features, result)
    }
}

