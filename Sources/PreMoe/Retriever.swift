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

/// One stored task and its distance to the query.
public struct RetrievalCandidate: Codable, Equatable, Sendable {
    public var task: String
    public var distance: Double
}

/// The outcome of matching a query against stored patterns.
public struct RetrievalResult: Sendable {
    /// The nearest task, or nil when its distance is above the threshold.
    public var task: String?
    /// The nearest distance (also when `task` is nil).
    public var distance: Double
    /// Every stored task, nearest first (ties by task name).
    public var candidates: [RetrievalCandidate]
    /// Query tokens.
    public var tokenCount: Int
    /// Seconds computing the signature (backbone up to the first router) and comparing.
    public var signatureSeconds: Double
    public var matchSeconds: Double
}

/// Task-adaptive expert retrieval (TAER, METHODS §2.2): the query signature is the first MoE
/// layer's scorer vector over the query's tokens, computed by running the model only up to that
/// layer's router, so no expert is needed; the nearest stored signature names the task.
public enum Retriever {
    /// The query's signature for each of `scorers` (all from one forward pass).
    /// - Parameters:
    ///   - model: any load of the model whose first MoE router is unpruned; a backbone-only load
    ///     (`loadExperts: false`) suffices and reads no expert byte.
    ///   - tokens: the raw prompt's ids (no chat template, METHODS §8.6).
    /// - Throws: `ModelError` from the forward pass, `PreMoeError.unsupported` for a model
    ///   without MoE layers or with a pruned first router.
    public static func signatures(model: DecoderModel, tokens: [Int], scorers: [ExpertScorer]) throws -> [ScorerDescriptor: [Double]] {
        guard let first = model.spec.moeLayers.first, let moe = model.spec.moe(first) else {
            throw PreMoeError.unsupported("the model has no MoE layer; retrieval needs a router")
        }
        if case .moe(let block) = model.layers[first].feedForward, block.expertIDs.count != moe.expertCount {
            throw PreMoeError.unsupported(
                "layer \(first): the router holds \(block.expertIDs.count) of \(moe.expertCount) experts; "
                    + "signatures need the unpruned router (METHODS §8.6)")
        }
        let capture = RouterCapture(layer: first)
        let previous = model.observer
        model.observer = capture
        defer { model.observer = previous }
        try model.forward(tokens, cache: model.makeCache(capacity: tokens.count), logits: .none, stopAfterRouterOf: first)
        var result: [ScorerDescriptor: [Double]] = [:]
        for scorer in scorers where result[scorer.descriptor] == nil {
            let stats = RouterStats(spec: model.spec, options: scorer.statsOptions, onlyLayers: [first])
            for event in capture.events {
                event.logits.withUnsafeBufferPointer { z in
                    event.selected.withUnsafeBufferPointer { s in
                        stats.accumulate(layer: first, tokens: event.tokens, held: event.held, expertIDs: event.expertIDs,
                                         logits: z.baseAddress!, selected: s.baseAddress!, topK: event.topK)
                    }
                }
            }
            guard let layerStats = stats.layers[first] else { continue }
            result[scorer.descriptor] = scorer.scores(layerStats)
        }
        return result
    }

    /// Matches a query against patterns.
    /// - Parameters:
    ///   - model: see `signatures`.
    ///   - tokens: the query's ids.
    ///   - patterns: candidates (already checked against the model's fingerprint).
    ///   - metric: L2 (default) or cosine.
    ///   - maxDistance: above it the result's `task` is nil.
    /// - Throws: `PreMoeError.emptyStore` without patterns, plus `signatures`' errors.
    public static func retrieve(model: DecoderModel, tokens: [Int], patterns: [TaskPattern], metric: DistanceMetric = .l2,
                                maxDistance: Double? = nil, storeName: String = "store") throws -> RetrievalResult {
        guard !patterns.isEmpty else { throw PreMoeError.emptyStore(storeName) }
        let topK = model.spec.moeLayers.first.flatMap { model.spec.moe($0)?.topK } ?? 1
        let scorers = try patterns.map { try Scorers.make($0.signature.scorer, modelTopK: topK) }
        let start = Date()
        let queries = try signatures(model: model, tokens: tokens, scorers: scorers)
        let signatureSeconds = Date().timeIntervalSince(start)
        let matchStart = Date()
        var candidates: [RetrievalCandidate] = []
        for pattern in patterns {
            guard let q = queries[pattern.signature.scorer], q.count == pattern.signature.values.count else {
                throw PreMoeError.invalidPattern(file: pattern.task, reason: "signature length does not match the model")
            }
            candidates.append(RetrievalCandidate(task: pattern.task, distance: metric.distance(q, pattern.signature.values)))
        }
        candidates.sort { ($0.distance, $0.task) < ($1.distance, $1.task) }
        let best = candidates[0]
        let task = maxDistance.map { best.distance <= $0 } ?? true ? best.task : nil
        return RetrievalResult(task: task, distance: best.distance, candidates: candidates, tokenCount: tokens.count,
                               signatureSeconds: signatureSeconds, matchSeconds: Date().timeIntervalSince(matchStart))
    }
}

/// Copies one layer's router events (logits and choices) so several scorers can be applied to
/// a single forward pass.
final class RouterCapture: RouterObserver {
    struct Event {
        var tokens: Int, held: Int, topK: Int
        var expertIDs: [Int]
        var logits: [Float]
        var selected: [Int]
    }
    let layer: Int
    private(set) var events: [Event] = []
    init(layer: Int) { self.layer = layer }
    func routerDidRoute(_ event: RouterEvent) {
        guard event.layer == layer else { return }
        events.append(Event(
            tokens: event.tokenCount, held: event.expertCount, topK: event.topK, expertIDs: event.expertIDs,
            logits: Array(UnsafeBufferPointer(start: event.logits, count: event.tokenCount * event.expertCount)),
            selected: Array(UnsafeBufferPointer(start: event.selected, count: event.tokenCount * event.topK))))
    }
}
