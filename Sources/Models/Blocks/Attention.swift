import Kernels

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

    public init(q: Linear, k: Linear, v: Linear, o: Linear, qNorm: [Float]?, kNorm: [Float]?,
                window: Int = 0, sinks: [Float]? = nil) {
        self.q = q
        self.k = k
        self.v = v
        self.o = o
        self.qNorm = qNorm
        self.kNorm = kNorm
        self.window = window
        self.sinks = sinks
    }

    /// Bytes of weight storage.
    public var byteCount: Int { weights.reduce(0) { $0 + $1.byteCount } }

    /// The projection weights.
    public var weights: [Tensor] { [q, k, v, o].map(\.weight) }

    /// Runs attention for `tokens` new rows of `x` (already normalised) at positions
    /// `cache.count ..< cache.count + tokens`, appending their keys and values to `layer`'s cache.
    func apply(
        _ x: UnsafePointer<Float>, tokens: Int, layer: Int, spec: DecoderSpec, cache: KVCache,
        positions: UnsafePointer<Int>, into y: UnsafeMutablePointer<Float>, workspace: Workspace, pool: ThreadPool
    ) {
        let heads = spec.headCount
        let kvHeads = spec.kvHeadCount
        let hd = spec.headDim
        let qWidth = heads * hd
        let kvWidth = kvHeads * hd
        let start = cache.count
        let qBuf = workspace.buffer(.attentionQ, tokens * qWidth)
        let attnOut = workspace.buffer(.attentionOut, tokens * qWidth)
        let kDst = cache.keys[layer] + start * kvWidth
        let vDst = cache.values[layer] + start * kvWidth

        q.apply(x, tokens: tokens, into: qBuf, pool: pool)
        k.apply(x, tokens: tokens, into: kDst, pool: pool)
        v.apply(x, tokens: tokens, into: vDst, pool: pool)

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
        (sinks ?? []).withUnsafeBufferPointer { sinkValues in
            attention(
                q: qBuf, queries: tokens, heads: heads, kvHeads: kvHeads, headDim: hd, valueDim: hd,
                keys: cache.keys[layer], keyStride: kvWidth, values: cache.values[layer], valueStride: kvWidth,
                start: start, scale: spec.attentionScale, window: window,
                sinks: sinks == nil ? nil : sinkValues.baseAddress, into: attnOut, pool: pool)
        }
        o.apply(attnOut, tokens: tokens, into: y, pool: pool)
    }
}
