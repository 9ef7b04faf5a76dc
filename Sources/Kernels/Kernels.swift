import Foundation

// Public kernel entry points. Each takes buffers, counts and strides and never sees a model
// type. Fast paths are SIMD; `ScalarReference` keeps a plain version of each for tests.

/// Widens `count` elements of `tensor` (starting at element `offset`) to Float.
public func convertToFloat(_ tensor: Tensor, offset: Int = 0, into out: UnsafeMutablePointer<Float>, count: Int) {
    FastElementwise.convertToFloat(tensor, offset: offset, into: out, count: count)
}

/// Linear layer without bias: `y[t, o] = Σ_i x[t, i] · W[o, i]`.
/// - Parameters:
///   - x: activations `[tokens, in]`, row-major.
///   - tokens: number of rows of `x`.
///   - weight: `[out, in]` in any stored dtype.
///   - y: output `[tokens, out]`, overwritten.
///   - pool: threads; work is split by output rows.
///
/// Every output element is one fixed-order dot product (see `dot`), so `y` is bit-identical for
/// any thread count and any batch: row `t` of a batched call equals a `tokens: 1` call on `x[t]`,
/// and equals `dot(x[t], W[o])` for f32 weights. `y` must not overlap `x`.
public func matmul(
    _ x: UnsafePointer<Float>, tokens: Int, weight: Tensor, into y: UnsafeMutablePointer<Float>,
    pool: ThreadPool
) {
    FastMatmul.matmul(x, tokens: tokens, weight: weight, into: y, pool: pool)
}

/// Two linear layers over the same activations: `ya = x · Aᵀ`, `yb = x · Bᵀ` (an MLP's gate and
/// up projections). Results are bit-identical to two `matmul` calls; for one token with equal
/// shapes and dtypes both weights are streamed in a single pass over `x`.
/// - Parameters:
///   - x: activations `[tokens, in]`, row-major.
///   - tokens: number of rows of `x`.
///   - first: `[outA, in]`; `second`: `[outB, in]`, any stored dtype.
///   - ya: output `[tokens, outA]`; `yb`: output `[tokens, outB]`. Neither may overlap `x` or each other.
///   - pool: threads; work is split by output rows.
public func matmulPair(
    _ x: UnsafePointer<Float>, tokens: Int, first: Tensor, second: Tensor, into ya: UnsafeMutablePointer<Float>,
    _ yb: UnsafeMutablePointer<Float>, pool: ThreadPool
) {
    FastMatmul.matmulPair(x, tokens: tokens, first, second, into: ya, yb, pool: pool)
}

/// Several linear layers over the same activations (an attention layer's q, k and v):
/// `ys[i] = x · weights[i]ᵀ`. Results are bit-identical to one `matmul` call per weight; where the
/// weights allow it (see `FastMatmul.matmulGroup`) their rows are split over the threads in one
/// pass, so the pool is entered once instead of once per weight.
/// - Parameters:
///   - x: activations `[tokens, in]`, row-major; every weight is `[out_i, in]`.
///   - ys: one output `[tokens, out_i]` per weight, overwritten; none may overlap `x` or another.
///   - pool: threads; work is split by output rows.
public func matmulGroup(
    _ x: UnsafePointer<Float>, tokens: Int, weights: [Tensor], into ys: [UnsafeMutablePointer<Float>], pool: ThreadPool
) {
    FastMatmul.matmulGroup(x, tokens: tokens, weights, into: ys, pool: pool)
}

/// RMSNorm over rows: `out[r, i] = x[r, i] / sqrt(mean_i(x[r]²) + eps) · weight[i]`.
/// `out` may equal `x`.
public func rmsNorm(
    _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rows: Int, dim: Int, eps: Float,
    into out: UnsafeMutablePointer<Float>
) {
    FastElementwise.rmsNorm(x, weight: weight, rows: rows, dim: dim, eps: eps, into: out)
}

/// How rotary pairs are laid out inside a head.
public enum RoPEStyle: Sendable {
    /// Hugging Face / NeoX: pairs `(i, i + rotaryDim/2)`.
    case halfSplit
    /// GGML / original Llama / DeepSeek's GGUF: pairs `(2i, 2i + 1)`.
    case interleaved
}

/// Rotates the first `rotaryDim` dims of every head in place.
/// - Parameters:
///   - x: `[tokens, heads, headDim]`.
///   - positions: position of each token.
///   - invFreq: `rotaryDim/2` inverse frequencies (already adjusted for RoPE scaling).
///   - attentionScaling: multiplier on cos and sin (YaRN's mscale; 1 otherwise).
public func applyRoPE(
    _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, rotaryDim: Int,
    positions: UnsafePointer<Int>, invFreq: UnsafePointer<Float>, attentionScaling: Float, style: RoPEStyle
) {
    FastElementwise.applyRoPE(
        x, tokens: tokens, heads: heads, headDim: headDim, rotaryDim: rotaryDim, positions: positions,
        invFreq: invFreq, attentionScaling: attentionScaling, style: style)
}

/// Softmax in place over `count` values (max-subtracted). Uses a vector `exp` within 2 ulp of
/// Foundation's; a row holding NaN or +inf gives NaN, as the reference does.
public func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
    FastElementwise.softmax(x, count: count)
}

/// SwiGLU: `out[i] = silu(gate[i]) · up[i]`. `out` may alias `gate` or `up`.
public func siluMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
    FastElementwise.siluMul(gate, up, into: out, count: count)
}

/// `out[i] = exp(x[i])` with the vector exp the kernels use (within 2 ulp of Foundation's `exp`
/// for normal results; inputs below -104 give 0). `out` may equal `x`.
public func exponential(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
    FastElementwise.exponential(x, into: out, count: count)
}

/// `exp(x)` by the same vector exp as `exponential(_:into:count:)`: equal to its lanes.
public func exponential(_ x: Float) -> Float {
    fastExp1(x)
}

/// `y[i] += a · x[i]`.
/// Same rounding as the scalar loop (product, then sum; no FMA).
public func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    FastElementwise.axpy(a, x, y, count: count)
}

/// `Σ a[i] · b[i]` in the fixed order every matmul element uses: one 8-lane FMA chain over the
/// first `count & ~7` elements, a fixed horizontal sum, then the tail in order with FMA.
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    FastElementwise.dot(a, b, count: count)
}

/// `out[i] = a[i] + b[i]`. `out` may alias `a` or `b`.
public func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
    FastElementwise.add(a, b, into: out, count: count)
}

/// `x[i] *= factor` in place.
public func scale(_ x: UnsafeMutablePointer<Float>, by factor: Float, count: Int) {
    FastElementwise.scale(x, by: factor, count: count)
}

/// Indices of the `k` largest values, largest first. Ties go to the lower index; NaN ranks below
/// every number; `-0` and `+0` compare equal. Deterministic, one shared routine for all routers.
public func topK(_ values: UnsafePointer<Float>, count: Int, k: Int) -> [Int] {
    FastTopK.topK(values, count: count, k: k)
}

/// Causal grouped-query attention for `queries` new tokens at positions
/// `start ..< start + queries`; token `t` sees cache positions `0 ... start + t`.
/// - Parameters:
///   - q: `[queries, heads, headDim]`.
///   - keys: cache, position `p` of KV head `g` at `keys + p * keyStride + g * headDim`.
///   - values: cache, position `p` of KV head `g` at `values + p * valueStride + g * valueDim`.
///   - scale: multiplier on `q·k` (usually `1/sqrt(headDim)`).
///   - window: when > 0, query at position `p` sees only positions `p - window + 1 ... p`
///     (transformers' sliding-window mask); 0 sees every earlier position.
///   - sinks: `[heads]` attention-sink logits (gpt-oss): each joins its head's softmax as one more
///     score with no value row, so the weights of the real positions sum to less than 1.
///   - out: `[queries, heads, valueDim]`.
public func attention(
    q: UnsafePointer<Float>, queries: Int, heads: Int, kvHeads: Int, headDim: Int, valueDim: Int,
    keys: UnsafePointer<Float>, keyStride: Int, values: UnsafePointer<Float>, valueStride: Int,
    start: Int, scale: Float, window: Int = 0, sinks: UnsafePointer<Float>? = nil,
    into out: UnsafeMutablePointer<Float>, pool: ThreadPool
) {
    FastAttention.attention(
        q: q, queries: queries, heads: heads, kvHeads: kvHeads, headDim: headDim, valueDim: valueDim,
        keys: keys, keyStride: keyStride, values: values, valueStride: valueStride, start: start,
        scale: scale, window: window, sinks: sinks, into: out, pool: pool)
}

/// One sequence of a batched attention call (`attention(batch:...)`): its new queries, its KV
/// cache and where its outputs go. Pointers must stay valid for the call.
public struct AttentionSequence {
    /// `[queries, heads, headDim]`.
    public var q: UnsafePointer<Float>
    /// New tokens, at positions `start ..< start + queries`.
    public var queries: Int
    /// The sequence's cache keys and values (strides and head layout as in `attention`).
    public var keys: UnsafePointer<Float>
    public var values: UnsafePointer<Float>
    /// Positions already in the cache before the new tokens.
    public var start: Int
    /// `[queries, heads, valueDim]`.
    public var out: UnsafeMutablePointer<Float>

    public init(q: UnsafePointer<Float>, queries: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                start: Int, out: UnsafeMutablePointer<Float>) {
        self.q = q
        self.queries = queries
        self.keys = keys
        self.values = values
        self.start = start
        self.out = out
    }
}

/// Causal grouped-query attention for several sequences at once, each on its own cache, in one
/// hand-off to the pool (a batched decode step has one short query per sequence: splitting each
/// sequence's few microseconds of work over threads separately costs more than the work). Every
/// sequence's output is exactly what `attention` gives it alone.
/// - Parameters:
///   - batch: the sequences; their shapes (`heads`, `kvHeads`, dims, strides) are shared.
///   - window, sinks, scale: as in `attention`.
public func attention(
    batch: [AttentionSequence], heads: Int, kvHeads: Int, headDim: Int, valueDim: Int, keyStride: Int,
    valueStride: Int, scale: Float, window: Int = 0, sinks: UnsafePointer<Float>? = nil, pool: ThreadPool
) {
    FastAttention.attention(batch: batch, heads: heads, kvHeads: kvHeads, headDim: headDim, valueDim: valueDim,
                            keyStride: keyStride, valueStride: valueStride, scale: scale, window: window, sinks: sinks,
                            pool: pool)
}
