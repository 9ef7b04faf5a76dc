import Kernels

/// One sequence's rows in a forward pass over several sequences (`[tokens, hidden]`, sequence
/// after sequence) and the KV cache those rows extend.
struct SequenceRows {
    /// Its rows of the batch.
    let rows: Range<Int>
    let cache: KVCache
}

/// Grouped-query self-attention with optional q/k norms and RoPE, writing to a `KVCache`.
/// Mirrors transformers' `LlamaAttention` / `Qwen3Attention` / `OlmoeAttention`.
public struct Attention: @unchecked Sendable {
    public let q: Linear
    public let k: Linear
    public let v: Linear
    public let o: Linear
    /// `[headDim]` for per-head norms, `[heads · headDim]` / `[kvHeads · headDim]` for whole-projection norms.
    public let qNorm: [Float]?
    public let kNorm: [Float]?
    /// Sliding window of this layer, attended inside the kernel (gpt-oss's `sliding_attention`
    /// layers); 0 for full attention.
    public let window: Int
    /// `[heads]` attention-sink logits (gpt-oss's `self_attn.sinks`), or nil.
    public let sinks: [Float]?
    /// Query heads served by each KV head, in order, when structured pruning (SEAP) left KV
    /// groups of different sizes; nil when every KV head serves `headCount / kvHeadCount` of them.
    /// Query heads are stored group after group, as in the unpruned layout.
    public let queryGroups: [Int]?

    /// - Precondition: `queryGroups`, when given, has one positive entry per KV head of `k` and
    ///   sums to the query heads of `q` (a programmer error otherwise: pruning builds it).
    public init(q: Linear, k: Linear, v: Linear, o: Linear, qNorm: [Float]?, kNorm: [Float]?,
                window: Int = 0, sinks: [Float]? = nil, queryGroups: [Int]? = nil) {
        self.q = q
        self.k = k
        self.v = v
        self.o = o
        self.qNorm = qNorm
        self.kNorm = kNorm
        self.window = window
        self.sinks = sinks
        self.queryGroups = queryGroups
    }

    /// Query heads of this layer (fewer than the spec's after head pruning).
    public func headCount(headDim: Int) -> Int { q.outFeatures / headDim }
    /// KV heads of this layer.
    public func kvHeadCount(headDim: Int) -> Int { k.outFeatures / headDim }

    /// Bytes of weight storage.
    public var byteCount: Int { weights.reduce(0) { $0 + $1.byteCount } }

    /// The projection weights.
    public var weights: [Tensor] { [q, k, v, o].map(\.weight) }

    /// Runs attention for `tokens` new rows of `x` (already normalised), the rows of several
    /// sequences one after another: the projections run once over all rows, each sequence then
    /// attends to its own cache. A sequence's rows sit at positions `cache.count ..< cache.count
    /// + rows.count` of its cache, and their keys and values are appended to slot `layer` there.
    /// - Parameters:
    ///   - sequences: each sequence's rows of `x` (in order, covering `0..<tokens`) and cache.
    ///   - positions: `[tokens]`, each row's position (for RoPE).
    func apply(
        _ x: UnsafePointer<Float>, tokens: Int, layer: Int, spec: DecoderSpec, sequences: [SequenceRows],
        positions: UnsafePointer<Int>, into y: UnsafeMutablePointer<Float>, workspace: Workspace, pool: ThreadPool
    ) {
        let hd = spec.headDim
        // Per layer: a pruned layer holds fewer heads. Its cache rows are `kvHeads · headDim`
        // floats apart, inside a buffer sized for the spec's width.
        let heads = headCount(headDim: hd)
        let kvHeads = kvHeadCount(headDim: hd)
        let qWidth = heads * hd
        let kvWidth = kvHeads * hd
        let qBuf = workspace.buffer(.attentionQ, tokens * qWidth)
        let attnOut = workspace.buffer(.attentionOut, tokens * qWidth)
        // One sequence writes its keys and values straight into its cache; several write them
        // into scratch first and copy each sequence's rows to its own cache once they are final.
        let only = sequences.count == 1 ? sequences[0].cache : nil
        let kDst = only.map { $0.keys[layer] + $0.count * kvWidth } ?? workspace.buffer(.attentionK, tokens * kvWidth)
        let vDst = only.map { $0.values[layer] + $0.count * kvWidth } ?? workspace.buffer(.attentionV, tokens * kvWidth)

        Linear.apply([q, k, v], x, tokens: tokens, into: [qBuf, kDst, vDst], pool: pool)

        if let clip = spec.clipQKV {
            for (p, n) in [(qBuf, tokens * qWidth), (kDst, tokens * kvWidth), (vDst, tokens * kvWidth)] {
                for i in 0..<n { p[i] = min(max(p[i], -clip), clip) }
            }
        }
        switch spec.qkNorm {
        case .none:
            break
        case .perHead:
            qNorm!.withUnsafeBufferPointer { w in
                rmsNorm(qBuf, weight: w.baseAddress!, rows: tokens * heads, dim: hd, eps: spec.rmsNormEps, into: qBuf)
            }
            kNorm!.withUnsafeBufferPointer { w in
                rmsNorm(kDst, weight: w.baseAddress!, rows: tokens * kvHeads, dim: hd, eps: spec.rmsNormEps, into: kDst)
            }
        case .wholeProjection:
            qNorm!.withUnsafeBufferPointer { w in
                rmsNorm(qBuf, weight: w.baseAddress!, rows: tokens, dim: qWidth, eps: spec.rmsNormEps, into: qBuf)
            }
            kNorm!.withUnsafeBufferPointer { w in
                rmsNorm(kDst, weight: w.baseAddress!, rows: tokens, dim: kvWidth, eps: spec.rmsNormEps, into: kDst)
            }
        }
        let style: RoPEStyle = spec.rope.style == .halfSplit ? .halfSplit : .interleaved
        spec.rope.invFreq.withUnsafeBufferPointer { f in
            applyRoPE(qBuf, tokens: tokens, heads: heads, headDim: hd, rotaryDim: spec.rope.rotaryDim,
                      positions: positions, invFreq: f.baseAddress!, attentionScaling: spec.rope.attentionScaling, style: style)
            applyRoPE(kDst, tokens: tokens, heads: kvHeads, headDim: hd, rotaryDim: spec.rope.rotaryDim,
                      positions: positions, invFreq: f.baseAddress!, attentionScaling: spec.rope.attentionScaling, style: style)
        }
        let unequalGroups = queryGroups.map { Set($0).count > 1 } ?? false
        var batch: [AttentionSequence] = []
        for s in sequences {
            let n = s.rows.count
            let start = s.cache.count
            if only == nil {
                (s.cache.keys[layer] + start * kvWidth).update(from: kDst + s.rows.lowerBound * kvWidth, count: n * kvWidth)
                (s.cache.values[layer] + start * kvWidth).update(from: vDst + s.rows.lowerBound * kvWidth, count: n * kvWidth)
            }
            let qs = qBuf + s.rows.lowerBound * qWidth
            let out = attnOut + s.rows.lowerBound * qWidth
            if unequalGroups, let groups = queryGroups {
                groupedByKVHead(qs, groups: groups, tokens: n, headDim: hd, cache: s.cache, layer: layer, start: start,
                                scale: spec.attentionScale, into: out, workspace: workspace, pool: pool)
            } else {
                batch.append(AttentionSequence(q: qs, queries: n, keys: s.cache.keys[layer], values: s.cache.values[layer],
                                               start: start, out: out))
            }
        }
        // Every sequence in one call: one hand-off to the pool per layer, not one per sequence.
        (sinks ?? []).withUnsafeBufferPointer { sinkValues in
            attention(batch: batch, heads: heads, kvHeads: kvHeads, headDim: hd, valueDim: hd, keyStride: kvWidth,
                      valueStride: kvWidth, scale: spec.attentionScale, window: window,
                      sinks: sinks == nil ? nil : sinkValues.baseAddress, pool: pool)
        }
        o.apply(attnOut, tokens: tokens, into: y, pool: pool)
    }

    /// Attention when KV groups have different sizes: one kernel call per KV head with its own
    /// query heads, packed into `[tokens, groups[g] · headDim]` and written back in place.
    private func groupedByKVHead(
        _ qBuf: UnsafeMutablePointer<Float>, groups: [Int], tokens: Int, headDim hd: Int, cache: KVCache, layer: Int,
        start: Int, scale: Float, into attnOut: UnsafeMutablePointer<Float>, workspace: Workspace, pool: ThreadPool
    ) {
        let qWidth = groups.reduce(0, +) * hd
        let kvWidth = groups.count * hd
        let largest = groups.max() ?? 0
        let packed = workspace.buffer(.groupScratch, 2 * tokens * largest * hd)
        let packedOut = packed + tokens * largest * hd
        var first = 0
        for (g, count) in groups.enumerated() {
            let width = count * hd
            for t in 0..<tokens {
                (packed + t * width).update(from: qBuf + t * qWidth + first * hd, count: width)
            }
            (sinks ?? []).withUnsafeBufferPointer { sinkValues in
                attention(
                    q: packed, queries: tokens, heads: count, kvHeads: 1, headDim: hd, valueDim: hd,
                    keys: cache.keys[layer] + g * hd, keyStride: kvWidth, values: cache.values[layer] + g * hd,
                    valueStride: kvWidth, start: start, scale: scale, window: window,
                    sinks: sinks == nil ? nil : sinkValues.baseAddress! + first, into: packedOut, pool: pool)
            }
            for t in 0..<tokens {
                (attnOut + t * qWidth + first * hd).update(from: packedOut + t * width, count: width)
            }
            first += count
        }
    }
}
