import Foundation
import Kernels
import Models

/// The features retrieval decides on, computed before any expert weight is read: the mean input
/// embedding of the query's tokens, the mean raw logits of the first MoE router, the mean input
/// embedding of its last `tailTokens` tokens, and the mean of the first router's input (the
/// normalised hidden state after the first layer's attention) over all tokens and over the last
/// `tailTokens`; each block scaled to unit length and concatenated
/// (`[hidden + experts + hidden + hidden + hidden]`).
///
/// Why these: the mean embedding says which words the query uses (a bag of tokens the model
/// already knows), the router logits say how the model's first expert layer reads them in
/// context. Measured on the demo model (shared EXPERIMENTS.md), a classifier on both reaches
/// 97% by family on raw questions where the paper's TCESS centroid reaches 62–72%. The router's
/// input is the same reading before the router's projection to a few dozen logits: it keeps what
/// the projection drops, among it whether the query ends in a request (a question after a
/// passage) or is prose alone, which is what tells a task's query from a paragraph of the kind of
/// text its passages come from (measured in `TaskClassifier`'s notes).
public enum QueryFeatures {
    /// Name stored with samples, so a store never mixes features of different definitions.
    public static let name = "embed-mean+router0-mean+tail-mean+router0-input-mean+router0-input-tail/v3"

    /// Tokens at the end of a query whose mean embedding is a feature of its own: the request
    /// usually sits at the end (a question after a passage), and long prose has none.
    public static let tailTokens = 16

    /// Feature length for a model: 4 × hidden size + routed experts of the first MoE layer.
    public static func dimension(_ spec: DecoderSpec) -> Int? {
        guard let first = spec.moeLayers.first, let moe = spec.moe(first) else { return nil }
        return 4 * spec.hiddenSize + moe.expertCount
    }

    /// Features of one query (one forward pass up to the first MoE router).
    /// - Parameters:
    ///   - model: any load whose first MoE router is unpruned; a backbone-only load suffices.
    ///   - tokens: the query's ids.
    ///   - signatureStats: when given, the first router's events are added to it as well (the
    ///     paper's TCESS signature comes from the same pass).
    ///   - alone: probe on the calling thread with scratch of its own, beside another thread's
    ///     forward passes of the same model (`DecoderModel.route(_:upTo:observer:alone:)`).
    /// - Returns: `[hidden + experts + hidden + hidden + hidden]` floats.
    /// - Throws: `PreMoeError.unsupported` without a MoE layer or with a pruned first router,
    ///   `ModelError` from the forward pass (empty query, ids out of range, context too long).
    public static func compute(model: DecoderModel, tokens: [Int], signatureStats: RouterStats? = nil,
                               alone: Bool = false) throws -> [Float] {
        let spec = model.spec
        guard let first = spec.moeLayers.first, let moe = spec.moe(first) else {
            throw PreMoeError.unsupported("the model has no MoE layer; retrieval needs a router")
        }
        if case .moe(let block) = model.layers[first].feedForward, block.expertIDs.count != moe.expertCount {
            throw PreMoeError.unsupported(
                "layer \(first): the router holds \(block.expertIDs.count) of \(moe.expertCount) experts; "
                    + "retrieval needs the unpruned router (METHODS §8.6)")
        }
        let probe = FirstRouterProbe(layer: first, experts: moe.expertCount, hidden: spec.hiddenSize,
                                     tokens: tokens.count, tailTokens: tailTokens, forward: signatureStats)
        try model.route(tokens, upTo: first, observer: probe, alone: alone)

        // ids were range-checked by the forward pass
        let (embedding, tail) = embeddingSums(model: model, tokens: tokens, tailTokens: tailTokens)
        return unitScaled(embedding) + unitScaled(probe.sums) + unitScaled(tail)
            + unitScaled(probe.inputSums) + unitScaled(probe.inputTailSums)
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

/// Sums the first MoE router's raw logits per original expert, and its input rows over all
/// tokens and over the last `tailTokens` of a `tokens`-long pass, and optionally hands each event
/// on to a `RouterStats`.
final class FirstRouterProbe: RouterObserver {
    let layer: Int
    private(set) var sums: [Double]
    private(set) var inputSums: [Double]
    private(set) var inputTailSums: [Double]
    private let tailStart: Int
    private var position = 0
    private let forward: RouterStats?

    init(layer: Int, experts: Int, hidden: Int, tokens: Int, tailTokens: Int, forward: RouterStats?) {
        self.layer = layer
        sums = [Double](repeating: 0, count: experts)
        inputSums = [Double](repeating: 0, count: hidden)
        inputTailSums = [Double](repeating: 0, count: hidden)
        tailStart = max(0, tokens - tailTokens)
        self.forward = forward
    }

    func routerDidRoute(_ event: RouterEvent) {
        guard event.layer == layer else { return }
        forward?.routerDidRoute(event)
        // Summed in locals: element updates of a class's arrays each pay an exclusivity check
        // (most of a retrieval probe's time before).
        var sums = self.sums, inputSums = self.inputSums, inputTailSums = self.inputTailSums
        self.sums = []
        self.inputSums = []
        self.inputTailSums = []
        for t in 0..<event.tokenCount {
            let z = event.logits + t * event.expertCount
            for (r, e) in event.expertIDs.enumerated() where e < sums.count { sums[e] += Double(z[r]) }
            let x = event.input + t * event.hiddenSize
            let tail = position + t >= tailStart
            for i in 0..<min(event.hiddenSize, inputSums.count) {
                inputSums[i] += Double(x[i])
                if tail { inputTailSums[i] += Double(x[i]) }
            }
        }
        self.sums = sums
        self.inputSums = inputSums
        self.inputTailSums = inputTailSums
        position += event.tokenCount
    }
}
