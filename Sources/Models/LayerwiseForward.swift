import Foundation
import Kernels

/// Hidden states of many sequences that advance through the model together, one layer at a
/// time, so each layer's weights are read once for all of them (profiling a model larger than
/// memory: the per-sequence forward pass would read every weight once per sequence).
/// `[tokens, hidden]`, sequence after sequence.
public final class LayerwiseBatch {
    /// Each sequence's rows.
    public let ranges: [Range<Int>]
    public let tokenCount: Int
    /// The next layer to run.
    public fileprivate(set) var nextLayer = 0
    fileprivate let hidden: UnsafeMutablePointer<Float>

    fileprivate init(ranges: [Range<Int>], hiddenSize: Int) {
        self.ranges = ranges
        tokenCount = ranges.last?.upperBound ?? 0
        hidden = .allocate(capacity: max(1, tokenCount * hiddenSize))
    }

    deinit { hidden.deallocate() }

    /// Bytes held for `tokens` tokens of a model with this hidden size.
    public static func bytes(tokens: Int, hiddenSize: Int) -> Int { tokens * hiddenSize * MemoryLayout<Float>.size }
}

extension DecoderModel {
    /// Embeds every sequence; the batch then advances with `advance`.
    /// - Throws: `ModelError` for an empty sequence, ids out of range, or a sequence longer than
    ///   the model's context or sliding window.
    public func beginLayerwise(_ sequences: [[Int]]) throws -> LayerwiseBatch {
        var ranges: [Range<Int>] = []
        var start = 0
        for tokens in sequences {
            guard !tokens.isEmpty else { throw ModelError.emptyInput("an empty sequence in a layer-wise batch") }
            for id in tokens where id < 0 || id >= spec.vocabularySize {
                throw ModelError.tokenOutOfRange(id: id, vocabularySize: spec.vocabularySize)
            }
            if tokens.count > spec.maxPositions {
                throw ModelError.contextTooLong(positions: tokens.count, limit: spec.maxPositions,
                                                reason: "the model's max_position_embeddings")
            }
            if let window = spec.slidingWindow, tokens.count > window {
                throw ModelError.contextTooLong(positions: tokens.count, limit: window,
                                                reason: "sliding-window attention is not implemented")
            }
            ranges.append(start..<(start + tokens.count))
            start += tokens.count
        }
        let batch = LayerwiseBatch(ranges: ranges, hiddenSize: spec.hiddenSize)
        let h = spec.hiddenSize
        for (range, tokens) in zip(ranges, sequences) {
            for (t, id) in tokens.enumerated() {
                convertToFloat(embedding, offset: id * h, into: batch.hidden + (range.lowerBound + t) * h, count: h)
            }
        }
        return batch
    }

    /// Runs the batch's next layer: attention sequence by sequence (each attends to itself only,
    /// positions from 0), then the feed-forward on up to `chunkTokens` rows at a time across
    /// sequences (MoE tokens of many sequences grouped by expert). The observer sees the routing.
    /// - Parameter releaseWeights: drop the layer's mapped weight pages once it is done.
    /// - Throws: `ModelError` when a MoE layer's experts are not loaded.
    public func advance(_ batch: LayerwiseBatch, chunkTokens: Int = 4096, releaseWeights: Bool = false) throws {
        let l = batch.nextLayer
        precondition(l < layers.count, "the batch has passed the last layer")
        let h = spec.hiddenSize
        var positions: [Int] = []
        for range in batch.ranges {
            let n = range.count
            if positions.count < n { positions = Array(0..<n) }
            let cache = KVCache(layers: 1, keyWidth: spec.cacheKeyWidth, valueWidth: spec.cacheValueWidth, initialCapacity: n)
            cache.reserve(n)
            positions.withUnsafeBufferPointer { p in
                attentionHalf(l, x: batch.hidden + range.lowerBound * h, tokens: n,
                              sequences: [SequenceRows(rows: 0..<n, cache: cache)], cacheLayer: 0, positions: p.baseAddress!,
                              pass: ownPass)
            }
        }
        let chunk = max(1, chunkTokens)
        for start in stride(from: 0, to: batch.tokenCount, by: chunk) {
            try feedForwardHalf(l, x: batch.hidden + start * h, tokens: min(chunk, batch.tokenCount - start), pass: ownPass)
        }
        if releaseWeights { releaseWeightPages(layer: l) }
        batch.nextLayer += 1
    }

    /// Bytes of layer `l`'s weights (attention, norms, router, every expert held).
    public func weightBytes(layer l: Int) -> Int {
        let layer = layers[l]
        var bytes = layer.attention.byteCount + (layer.inputNorm.count + layer.postAttentionNorm.count) * 4
        switch layer.feedForward {
        case .dense(let mlp): bytes += mlp.byteCount
        case .moe(let block):
            bytes += block.router.weight.byteCount + block.expertBytes + (block.shared?.byteCount ?? 0)
                + (block.sharedGate?.byteCount ?? 0)
        }
        return bytes
    }

    /// Drops the resident pages of layer `l`'s mapped weights (see `Tensor.releasePages`).
    public func releaseWeightPages(layer l: Int) {
        let layer = layers[l]
        layer.attention.weights.forEach { $0.releasePages() }
        switch layer.feedForward {
        case .dense(let mlp): mlp.weights.forEach { $0.releasePages() }
        case .moe(let block):
            block.router.weight.releasePages()
            for expert in block.experts { expert.weights.forEach { $0.releasePages() } }
            block.shared?.weights.forEach { $0.releasePages() }
        }
    }

    /// `rmsNorm(x)` of `n` rows into the workspace's normed buffer, and the block-output buffer
    /// the half writes before adding it to `x`.
    private func normalized(_ x: UnsafeMutablePointer<Float>, tokens n: Int, weight: [Float], workspace: Workspace)
        -> (normed: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>)
    {
        let h = spec.hiddenSize
        let normed = workspace.buffer(.normed, n * h)
        weight.withUnsafeBufferPointer { w in
            rmsNorm(x, weight: w.baseAddress!, rows: n, dim: h, eps: spec.rmsNormEps, into: normed)
        }
        return (normed, workspace.buffer(.blockOut, n * h))
    }

    /// `x += attention(norm(x))` for `n` rows of layer `l`, the rows of `sequences` one after
    /// another, each reading and appending slot `cacheLayer` of its own cache; `positions` is
    /// `[n]`, each row's position.
    func attentionHalf(_ l: Int, x: UnsafeMutablePointer<Float>, tokens n: Int, sequences: [SequenceRows], cacheLayer: Int,
                       positions: UnsafePointer<Int>, pass: ForwardPass) {
        let (workspace, pool, profiler, observer) = (pass.workspace, pass.pool, pass.profiler, pass.observer)
        let h = spec.hiddenSize
        let layer = layers[l]
        let (normed, out) = normalized(x, tokens: n, weight: layer.inputNorm, workspace: workspace)
        profiled(profiler, "attention") {
            switch layer.attention {
            case .grouped(let attention):
                attention.apply(normed, tokens: n, layer: cacheLayer, spec: spec, sequences: sequences, positions: positions,
                                into: out, workspace: workspace, pool: pool)
            case .latent(let attention):
                let mla = spec.mla!
                attention.apply(
                    normed, tokens: n, layer: cacheLayer, spec: spec, sequences: sequences, positions: positions, into: out,
                    q: workspace.buffer(.attentionQ, n * spec.headCount * mla.qkHeadDim),
                    attentionOut: workspace.buffer(.attentionOut, n * spec.headCount * mla.vHeadDim),
                    scratch: workspace.buffer(.latentScratch, MLAttention.scratchCount(tokens: n, spec: spec, mla: mla)),
                    pool: pool)
            }
        }
        if let observer, observer.wantsActivations, case .grouped(let attention) = layer.attention {
            // The workspace still holds the block's inputs: the normed rows and o_proj's input.
            observer.activationDidCompute(ActivationEvent(layer: l, site: .attentionInput, tokenCount: n, width: h,
                                                          values: normed))
            let width = attention.o.inFeatures
            observer.activationDidCompute(ActivationEvent(
                layer: l, site: .attentionOutputInput, tokenCount: n, width: width,
                values: workspace.buffer(.attentionOut, n * width)))
        }
        for i in 0..<(n * h) { x[i] += out[i] }
    }

    /// `x += feedForward(norm(x))` for `n` rows of layer `l`; with `routeOnly` a MoE layer only
    /// routes (the observer sees it) and `x` is left as it is.
    /// - Parameter views: for a MoE layer, the rows of each sequence and the block that routes
    ///   them (`RoutedRows`); nil routes every row through the layer's own block.
    func feedForwardHalf(_ l: Int, x: UnsafeMutablePointer<Float>, tokens n: Int, views: [RoutedRows]? = nil,
                         routeOnly: Bool = false, pass: ForwardPass) throws {
        let (workspace, pool, profiler, observer) = (pass.workspace, pass.pool, pass.profiler, pass.observer)
        let h = spec.hiddenSize
        let layer = layers[l]
        let (normed, out) = normalized(x, tokens: n, weight: layer.postAttentionNorm, workspace: workspace)
        switch layer.feedForward {
        case .dense(let mlp):
            if routeOnly { return }
            let scratch = workspace.buffer(.mlpScratch, 2 * n * mlp.intermediateSize)
            profiled(profiler, "dense MLP \(mlp.typeLabel)") {
                mlp.apply(normed, tokens: n, into: out, scratch: scratch, pool: pool)
            }
            if let observer, observer.wantsActivations {
                // `scratch` starts with down_proj's input (GatedMLP.apply computes it in place).
                observer.activationDidCompute(ActivationEvent(layer: l, site: .feedForwardInput, tokenCount: n, width: h,
                                                              values: normed))
                observer.activationDidCompute(ActivationEvent(layer: l, site: .downInput, tokenCount: n,
                                                              width: mlp.intermediateSize, values: scratch))
            }
        case .moe(let block):
            let groups = views ?? [RoutedRows(rows: 0..<n, block: block)]
            if routeOnly {
                for g in groups {
                    _ = g.block.routeBatch(normed + g.rows.lowerBound * h, tokens: g.rows.count, layer: l, observer: observer,
                                           workspace: workspace, pool: pool)
                }
                return
            }
            try MoEBlock.apply(groups, normed, tokens: n, hidden: h, layer: l, into: out, observer: observer,
                               workspace: workspace, pool: pool, profiler: profiler)
        }
        for i in 0..<(n * h) { x[i] += out[i] }
    }
}
