import Foundation
import Kernels

/// The feed-forward half of a decoder layer.
public enum FeedForward: @unchecked Sendable {
    case dense(GatedMLP)
    case moe(MoEBlock)
}

/// The attention half of a decoder layer.
public enum LayerAttention: @unchecked Sendable {
    /// Grouped-query attention (every family but DeepSeek).
    case grouped(Attention)
    /// Multi-head latent attention (DeepSeek-V2/V3).
    case latent(MLAttention)

    /// The projection weights.
    public var weights: [Tensor] {
        switch self {
        case .grouped(let a): return a.weights
        case .latent(let a): return a.weights
        }
    }

    /// Bytes of weight storage.
    public var byteCount: Int {
        switch self {
        case .grouped(let a): return a.byteCount
        case .latent(let a): return a.byteCount
        }
    }
}

/// One transformer block: pre-norm attention and pre-norm feed-forward, both residual.
public struct DecoderLayer: @unchecked Sendable {
    public let inputNorm: [Float]
    public let attention: LayerAttention
    public let postAttentionNorm: [Float]
    public var feedForward: FeedForward

    public init(inputNorm: [Float], attention: LayerAttention, postAttentionNorm: [Float], feedForward: FeedForward) {
        self.inputNorm = inputNorm
        self.attention = attention
        self.postAttentionNorm = postAttentionNorm
        self.feedForward = feedForward
    }
}

/// Which positions' logits a forward pass returns.
public enum LogitsMode: Sendable {
    /// One row per input token, `[tokens, vocab]`.
    case all
    /// Only the last token's row, `[vocab]`.
    case last
    /// None (fills the cache only).
    case none
}

/// A decoder-only transformer (dense or MoE) that runs on the CPU from stored weights.
/// One forward pass at a time per model (it owns its scratch buffers).
public final class DecoderModel: @unchecked Sendable {
    public let spec: DecoderSpec
    /// `[vocab, hidden]`.
    public let embedding: Tensor
    public private(set) var layers: [DecoderLayer]
    public let finalNorm: [Float]
    /// `[vocab, hidden]`; the embedding itself when tied.
    public let lmHead: Tensor
    /// Receives every routing decision while set.
    public var observer: RouterObserver?
    /// Threads used by the kernels (and, through them, the quantized arithmetic).
    public var pool: ThreadPool
    /// Receives the wall time of each part of every forward pass while set (`bench --profile`).
    public var profiler: ForwardProfiler?
    let workspace = Workspace()

    public init(spec: DecoderSpec, embedding: Tensor, layers: [DecoderLayer], finalNorm: [Float], lmHead: Tensor,
                pool: ThreadPool = ThreadPool(threads: ProcessInfo.processInfo.activeProcessorCount)) {
        self.spec = spec
        self.embedding = embedding
        self.layers = layers
        self.finalNorm = finalNorm
        self.lmHead = lmHead
        self.pool = pool
    }

    /// An empty KV cache sized for this model, first holding `capacity` positions capped at
    /// `maxPositions` (a context can never be longer; the cache grows by doubling up to it).
    public func makeCache(capacity: Int = 256) -> KVCache {
        KVCache(layers: spec.layerCount, keyWidth: spec.cacheKeyWidth, valueWidth: spec.cacheValueWidth,
                initialCapacity: min(max(1, capacity), spec.maxPositions), maxCapacity: spec.maxPositions)
    }

    /// Replaces layer `index`'s feed-forward (used when experts are pruned or loaded later).
    public func setFeedForward(_ feedForward: FeedForward, layer index: Int) {
        layers[index].feedForward = feedForward
    }

    /// Runs `tokens` at the positions after those already in `cache`, appending to it.
    /// - Parameters:
    ///   - tokens: token ids, each in `0..<vocabularySize`.
    ///   - cache: the sequence's KV cache.
    ///   - logits: which rows of logits to return.
    ///   - stopAfterRouterOf: if set, stop once that MoE layer's router has routed (the observer
    ///     has seen it) without running any expert; returns no logits and leaves the cache
    ///     unadvanced. This is how retrieval computes a signature before any expert is loaded.
    /// - Returns: logits `[tokens, vocab]` (`.all`), `[vocab]` (`.last`) or `[]`.
    /// - Throws: `ModelError` for empty input, ids out of range or a context too long.
    @discardableResult
    public func forward(_ tokens: [Int], cache: KVCache, logits mode: LogitsMode = .last,
                        stopAfterRouterOf stopLayer: Int? = nil) throws -> [Float] {
        guard !tokens.isEmpty else { throw ModelError.emptyInput("no tokens to run") }
        for id in tokens where id < 0 || id >= spec.vocabularySize {
            throw ModelError.tokenOutOfRange(id: id, vocabularySize: spec.vocabularySize)
        }
        let total = cache.count + tokens.count
        if let window = spec.slidingWindow, total > window {
            throw ModelError.contextTooLong(positions: total, limit: window, reason: "sliding-window attention is not implemented")
        }
        if total > spec.maxPositions {
            throw ModelError.contextTooLong(positions: total, limit: spec.maxPositions,
                                            reason: "the model's max_position_embeddings")
        }
        let n = tokens.count
        let h = spec.hiddenSize
        let x = workspace.buffer(.residual, n * h)
        profiled(profiler, "embedding") {
            for (t, id) in tokens.enumerated() {
                convertToFloat(embedding, offset: id * h, into: x + t * h, count: h)
            }
        }
        cache.reserve(n)
        let positions = (cache.count..<total).map { $0 }
        try positions.withUnsafeBufferPointer { positions in
            for l in layers.indices {
                attentionHalf(l, x: x, tokens: n, cache: cache, cacheLayer: l, positions: positions.baseAddress!)
                try feedForwardHalf(l, x: x, tokens: n, routeOnly: l == stopLayer)
                if l == stopLayer { return }
            }
        }
        if stopLayer != nil { return [] }
        cache.advance(n)

        let rows: Range<Int>
        switch mode {
        case .none: return []
        case .all: rows = 0..<n
        case .last: rows = (n - 1)..<n
        }
        let vocab = spec.vocabularySize
        let normed = workspace.buffer(.normed, n * h)
        finalNorm.withUnsafeBufferPointer { w in
            rmsNorm(x + rows.lowerBound * h, weight: w.baseAddress!, rows: rows.count, dim: h, eps: spec.rmsNormEps, into: normed)
        }
        var result = [Float](repeating: 0, count: rows.count * vocab)
        profiled(profiler, "output head \(lmHead.dtype.rawValue)") {
            result.withUnsafeMutableBufferPointer { out in
                matmul(normed, tokens: rows.count, weight: lmHead, into: out.baseAddress!, pool: pool)
            }
        }
        return result
    }

    /// Bytes of weights held, split into routed experts and everything else.
    public var weightBytes: (backbone: Int, experts: Int) { totals(\.byteCount, perFloat: 4) }

    /// Parameters held, split the same way (quantized blocks count their elements, not bytes).
    public var parameterCounts: (backbone: Int, experts: Int) { totals(\.count, perFloat: 1) }

    /// Sums `measure` over every stored weight; small f32 arrays (norms, biases) count
    /// `perFloat` each.
    private func totals(_ measure: (Tensor) -> Int, perFloat: Int) -> (backbone: Int, experts: Int) {
        func sum(_ tensors: [Tensor]) -> Int { tensors.reduce(0) { $0 + measure($1) } }
        var backbone = measure(embedding) + (spec.tieWordEmbeddings ? 0 : measure(lmHead)) + finalNorm.count * perFloat
        var experts = 0
        for layer in layers {
            backbone += sum(layer.attention.weights) + (layer.inputNorm.count + layer.postAttentionNorm.count) * perFloat
            switch layer.feedForward {
            case .dense(let mlp): backbone += sum(mlp.weights)
            case .moe(let block):
                experts += block.experts.reduce(0) { $0 + sum($1.weights) + $1.biasCount * perFloat }
                backbone += measure(block.router.weight) + (block.router.bias?.count ?? 0) * perFloat
                    + sum(block.shared?.weights ?? [])
                    + (block.sharedGate.map(measure) ?? 0) + (block.selectionBias?.count ?? 0) * perFloat
            }
        }
        return (backbone, experts)
    }
}

