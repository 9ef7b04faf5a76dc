import Foundation
import Kernels
import Models

/// The features retrieval decides on, computed before any expert weight is read: the mean input
/// embedding of the query's tokens, the mean raw logits of the first MoE router, and the mean
/// input embedding of its last `tailTokens` tokens, each scaled to unit length and concatenated
/// (`[hidden + experts + hidden]`).
///
/// Why these: the mean embedding says which words the query uses (a bag of tokens the model
/// already knows), the router logits say how the model's first expert layer reads them in
/// context. Measured on the demo model (shared EXPERIMENTS.md), a classifier on both reaches
/// 97% by family on raw questions where the paper's TCESS centroid reaches 62–72%.
public enum QueryFeatures {
    /// Name stored with samples, so a store never mixes features of different definitions.
    public static let name = "embed-mean+router0-mean+tail-mean/v2"

    /// Tokens at the end of a query whose mean embedding is a feature of its own: the request
    /// usually sits at the end (a question after a passage), and long prose has none.
    public static let tailTokens = 16

    /// Feature length for a model: 2 × hidden size + routed experts of the first MoE layer.
    public static func dimension(_ spec: DecoderSpec) -> Int? {
        guard let first = spec.moeLayers.first, let moe = spec.moe(first) else { return nil }
        return 2 * spec.hiddenSize + moe.expertCount
    }

    /// Features of one query (one forward pass up to the first MoE router).
    /// - Parameters:
    ///   - model: any load whose first MoE router is unpruned; a backbone-only load suffices.
    ///   - tokens: the query's ids.
    ///   - signatureStats: when given, the first router's events are added to it as well (the
    ///     paper's TCESS signature comes from the same pass).
    /// - Returns: `[hidden + experts + hidden]` floats.
    /// - Throws: `PreMoeError.unsupported` without a MoE layer or with a pruned first router,
    ///   `ModelError` from the forward pass (empty query, ids out of range, context too long).
    public static func compute(model: DecoderModel, tokens: [Int], signatureStats: RouterStats? = nil) throws -> [Float] {
        let spec = model.spec
        guard let first = spec.moeLayers.first, let moe = spec.moe(first) else {
            throw PreMoeError.unsupported("the model has no MoE layer; retrieval needs a router")
        }
        if case .moe(let block) = model.layers[first].feedForward, block.expertIDs.count != moe.expertCount {
            throw PreMoeError.unsupported(
                "layer \(first): the router holds \(block.expertIDs.count) of \(moe.expertCount) experts; "
                    + "retrieval needs the unpruned router (METHODS §8.6)")
        }
        let probe = FirstRouterProbe(layer: first, experts: moe.expertCount, forward: signatureStats)
        let previous = model.observer
        model.observer = probe
        defer { model.observer = previous }
        try model.forward(tokens, cache: model.makeCache(capacity: tokens.count), logits: .none, stopAfterRouterOf: first)

        // ids were range-checked by the forward pass
        let (embedding, tail) = embeddingSums(model: model, tokens: tokens, tailTokens: tailTokens)
        return unitScaled(embedding) + unitScaled(probe.sums) + unitScaled(tail)
    }

    /// The mean input embedding of `tokens`, scaled to unit length, `[hidden]`: the whole-query
    /// block of `compute`, and on its own SEAP's task-router feature (METHODS §6.6).
    /// - Throws: `ModelError.tokenOutOfRange` for an id outside the vocabulary.
    public static func meanInputEmbedding(model: DecoderModel, tokens: [Int]) throws -> [Float] {
        for id in tokens where id < 0 || id >= model.spec.vocabularySize {
            throw ModelError.tokenOutOfRange(id: id, vocabularySize: model.spec.vocabularySize)
        }
        return unitScaled(embeddingSums(model: model, tokens: tokens, tailTokens: 0).all)
    }

    /// Sums of the input embeddings of all `tokens` and of the last `tailTokens` (ids in range).
    static func embeddingSums(model: DecoderModel, tokens: [Int], tailTokens: Int) -> (all: [Double], tail: [Double]) {
        let h = model.spec.hiddenSize
        var embedding = [Double](repeating: 0, count: h)
        var tail = [Double](repeating: 0, count: h)
        var row = [Float](repeating: 0, count: h)
        let tailStart = max(0, tokens.count - tailTokens)
        for (t, id) in tokens.enumerated() {
            row.withUnsafeMutableBufferPointer { convertToFloat(model.embedding, offset: id * h, into: $0.baseAddress!, count: h) }
            for i in 0..<h { embedding[i] += Double(row[i]) }
            if t >= tailStart { for i in 0..<h { tail[i] += Double(row[i]) } }
        }
        return (embedding, tail)
    }

    /// `v / ‖v‖` as floats (a zero vector stays zero).
    static func unitScaled(_ v: [Double]) -> [Float] {
        let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return v.map { norm > 0 ? Float($0 / norm) : 0 }
    }
}

/// Sums the first MoE router's raw logits per original expert over all tokens, and optionally
/// hands each event on to a `RouterStats`.
final class FirstRouterProbe: RouterObserver {
    let layer: Int
    private(set) var sums: [Double]
    private let forward: RouterStats?

    init(layer: Int, experts: Int, forward: RouterStats?) {
        self.layer = layer
        sums = [Double](repeating: 0, count: experts)
        self.forward = forward
    }

    func routerDidRoute(_ event: RouterEvent) {
        guard event.layer == layer else { return }
        forward?.routerDidRoute(event)
        for t in 0..<event.tokenCount {
            let z = event.logits + t * event.expertCount
            for (r, e) in event.expertIDs.enumerated() where e < sums.count { sums[e] += Double(z[r]) }
        }
    }
}
