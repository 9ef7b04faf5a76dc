import Kernels

/// Multi-head latent attention (DeepSeek-V2/V3), writing expanded keys and values to a `KVCache`.
/// Mirrors transformers' `DeepseekV3Attention` / `DeepseekV2Attention`:
///
/// - q = `q_b_proj(rmsNorm(q_a_proj(x)))` (or `q_proj(x)`), per head `[nope | rope]`;
/// - `kv_a_proj_with_mqa(x)` = `[latent (kv_lora) | k_rope (rope)]`; the latent goes through
///   `kv_a_layernorm` and `kv_b_proj` to per head `[k_nope | v]`; `k_rope` is one head shared by all;
/// - RoPE on q's rope dims and on `k_rope`; keys are `[k_nope | k_rope]` per head;
/// - softmax scale `1/sqrt(nope + rope)`, times `mscale²` under YaRN with `mscale_all_dim`.
///
/// The cache holds the expanded keys `[heads · (nope + rope)]` and values `[heads · v]` per
/// position (not the latent): simplest, and the shared attention kernel reads it as is.
/// Interleaved RoPE is applied in place on pairs `(2i, 2i+1)`. transformers' V3 path writes the
/// rotated pairs de-interleaved (`[evens | odds]`), V2's complex path keeps them in place; both
/// apply the same permutation to q and k, so `q·k`, the only use of those dims, is identical.
public struct MLAttention: @unchecked Sendable {
    /// `q_proj` `[heads · (nope + rope), hidden]`, when there is no query compression.
    public let q: Linear?
    /// `q_a_proj` `[qLoRA, hidden]`, `q_a_layernorm` `[qLoRA]`, `q_b_proj` `[heads · (nope + rope), qLoRA]`.
    public let qA: Linear?
    public let qANorm: [Float]?
    public let qB: Linear?
    /// `kv_a_proj_with_mqa` `[kvLoRA + rope, hidden]`.
    public let kvA: Linear
    /// `kv_a_layernorm` `[kvLoRA]`.
    public let kvANorm: [Float]
    /// `kv_b_proj` `[heads · (nope + v), kvLoRA]`.
    public let kvB: Linear
    /// `o_proj` `[hidden, heads · v]`.
    public let o: Linear

    /// transformers builds q_a_layernorm and kv_a_layernorm with the RMSNorm default eps, not
    /// `rms_norm_eps`.
    static let latentNormEps: Float = 1e-6

    public init(q: Linear?, qA: Linear?, qANorm: [Float]?, qB: Linear?, kvA: Linear, kvANorm: [Float], kvB: Linear, o: Linear) {
        precondition((q == nil) != (qA == nil) && (qA == nil) == (qB == nil) && (qA == nil) == (qANorm == nil),
                     "MLA needs q_proj or q_a_proj + q_a_layernorm + q_b_proj")
        self.q = q
        self.qA = qA
        self.qANorm = qANorm
        self.qB = qB
        self.kvA = kvA
        self.kvANorm = kvANorm
        self.kvB = kvB
        self.o = o
    }

    /// Bytes of weight storage.
    public var byteCount: Int {
        weights.reduce(0) { $0 + $1.byteCount } + ((qANorm?.count ?? 0) + kvANorm.count) * 4
    }

    /// The projection weights.
    public var weights: [Tensor] { [q, qA, qB, kvA, kvB, o].compactMap { $0?.weight } }

    /// Floats of scratch `apply` needs besides the q and output buffers.
    static func scratchCount(tokens: Int, spec: DecoderSpec, mla: MLASpec) -> Int {
        let heads = spec.headCount
        return tokens * ((mla.qLoRARank ?? 0) + (mla.kvLoRARank + mla.qkRopeHeadDim) + mla.kvLoRARank
            + heads * (mla.qkNopeHeadDim + mla.vHeadDim))
    }

    /// Runs attention for `tokens` new rows of `x` (already normalised), the rows of several
    /// sequences one after another: projections once over all rows, then each sequence's keys and
    /// values go to its own cache (at positions `cache.count ..< cache.count + rows.count`, slot
    /// `layer`) and it attends to that cache alone.
    /// - Parameters:
    ///   - x: `[tokens, hidden]`.
    ///   - sequences: each sequence's rows of `x` (in order, covering `0..<tokens`) and cache.
    ///   - positions: `[tokens]`, each row's position (for RoPE).
    ///   - q: scratch `[tokens, heads · (nope + rope)]`.
    ///   - attentionOut: scratch `[tokens, heads · v]`.
    ///   - scratch: `scratchCount(tokens:spec:mla:)` floats.
    ///   - y: `[tokens, hidden]`, overwritten.
    func apply(
        _ x: UnsafePointer<Float>, tokens: Int, layer: Int, spec: DecoderSpec, sequences: [SequenceRows],
        positions: UnsafePointer<Int>, into y: UnsafeMutablePointer<Float>,
        q qBuf: UnsafeMutablePointer<Float>, attentionOut: UnsafeMutablePointer<Float>,
        scratch: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        guard let mla = spec.mla else { preconditionFailure("MLAttention needs spec.mla") }
        let heads = spec.headCount
        let nope = mla.qkNopeHeadDim
        let rope = mla.qkRopeHeadDim
        let qkDim = mla.qkHeadDim
        let vDim = mla.vHeadDim
        let kvLoRA = mla.kvLoRARank
        let kvAWidth = kvLoRA + rope
        let kvBWidth = nope + vDim

        // Scratch layout: [qA | kvA | latent | kvB].
        let qLoRA = mla.qLoRARank ?? 0
        let qA = scratch
        let kvABuf = qA + tokens * qLoRA
        let latent = kvABuf + tokens * kvAWidth
        let kvBBuf = latent + tokens * kvLoRA

        if let qProj = q {
            qProj.apply(x, tokens: tokens, into: qBuf, pool: pool)
        } else if let qAProj = self.qA, let qANorm, let qB {
            qAProj.apply(x, tokens: tokens, into: qA, pool: pool)
            qANorm.withUnsafeBufferPointer { w in
                rmsNorm(qA, weight: w.baseAddress!, rows: tokens, dim: qLoRA, eps: Self.latentNormEps, into: qA)
            }
            qB.apply(qA, tokens: tokens, into: qBuf, pool: pool)
        }

        kvA.apply(x, tokens: tokens, into: kvABuf, pool: pool)
        for t in 0..<tokens {
            (latent + t * kvLoRA).update(from: kvABuf + t * kvAWidth, count: kvLoRA)
        }
        kvANorm.withUnsafeBufferPointer { w in
            rmsNorm(latent, weight: w.baseAddress!, rows: tokens, dim: kvLoRA, eps: Self.latentNormEps, into: latent)
        }
        kvB.apply(latent, tokens: tokens, into: kvBBuf, pool: pool)

        // RoPE on the rope dims of every q head and on the shared k_rope (one "head" per token,
        // `kvAWidth` apart, starting after the latent).
        let style: RoPEStyle = spec.rope.style == .halfSplit ? .halfSplit : .interleaved
        spec.rope.invFreq.withUnsafeBufferPointer { f in
            applyRoPE(qBuf + nope, tokens: tokens, heads: heads, headDim: qkDim, rotaryDim: rope,
                      positions: positions, invFreq: f.baseAddress!, attentionScaling: spec.rope.attentionScaling,
                      style: style)
            applyRoPE(kvABuf + kvLoRA, tokens: tokens, heads: 1, headDim: kvAWidth, rotaryDim: rope,
                      positions: positions, invFreq: f.baseAddress!, attentionScaling: spec.rope.attentionScaling,
                      style: style)
        }

        // Expand into the cache: key head h = [k_nope_h | k_rope], value head h = v_h.
        for s in sequences {
            let cache = s.cache
            let start = cache.count
            let keyWidth = cache.keyWidth
            let valueWidth = cache.valueWidth
            precondition(keyWidth >= heads * qkDim && valueWidth >= heads * vDim, "KV cache too narrow for MLA")
            for (i, t) in s.rows.enumerated() {
                let kRow = cache.keys[layer] + (start + i) * keyWidth
                let vRow = cache.values[layer] + (start + i) * valueWidth
                let kv = kvBBuf + t * heads * kvBWidth
                let kRope = kvABuf + t * kvAWidth + kvLoRA
                for h in 0..<heads {
                    (kRow + h * qkDim).update(from: kv + h * kvBWidth, count: nope)
                    (kRow + h * qkDim + nope).update(from: kRope, count: rope)
                    (vRow + h * vDim).update(from: kv + h * kvBWidth + nope, count: vDim)
                }
            }
            attention(
                q: qBuf + s.rows.lowerBound * heads * qkDim, queries: s.rows.count, heads: heads, kvHeads: heads,
                headDim: qkDim, valueDim: vDim, keys: cache.keys[layer], keyStride: keyWidth, values: cache.values[layer],
                valueStride: valueWidth, start: start, scale: spec.attentionScale,
                into: attentionOut + s.rows.lowerBound * heads * vDim, pool: pool)
        }
        o.apply(attentionOut, tokens: tokens, into: y, pool: pool)
    }
}
