// The small vocabulary every fast kernel is written in: unaligned vector loads and stores,
// widening loads from f16/bf16 storage, the canonical horizontal sum and a vector exp.
//
// Summation order contract (used by `dot` and `matmul`): a dot product of length n is one
// SIMD8 accumulator chain `acc = fma(x[i..<i+8], w[i..<i+8], acc)` over i = 0, 8, …, n8-8
// (n8 = n rounded down to 8), then `hsum8(acc)`, then the tail `s = fma(x[i], w[i], s)` for
// i = n8 ..< n in order. Every matmul path (GEMV, prefill tiles, any thread split) follows it,
// so each output element is bit-identical however the work is split or batched.

@inline(__always)
func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// Eight bf16 values at `p` widened to Float (exact): zero-extend and shift into the top half.
@inline(__always)
func loadBF16x8(_ p: UnsafeRawPointer) -> SIMD8<Float> {
    // Spelled lane by lane: the generic `SIMD8<UInt32>(truncatingIfNeeded:)` is not always
    // inlined into big callers (measured: a call per vector, 4x slower GEMV). LLVM turns this
    // into vpmovzxwd + vpslld.
    let u = p.loadUnaligned(as: SIMD8<UInt16>.self)
    let w = SIMD8<UInt32>(
        UInt32(u[0]), UInt32(u[1]), UInt32(u[2]), UInt32(u[3]),
        UInt32(u[4]), UInt32(u[5]), UInt32(u[6]), UInt32(u[7]))
    return unsafeBitCast(w &<< 16, to: SIMD8<Float>.self)
}

/// Eight IEEE halves at `p` widened to Float (exact; lowers to `vcvtph2ps` with F16C).
@inline(__always)
func loadF16x8(_ p: UnsafeRawPointer) -> SIMD8<Float> {
    SIMD8<Float>(p.loadUnaligned(as: SIMD8<Float16>.self))
}

/// Canonical horizontal sum: halves, then quarters, then the last pair.
@inline(__always)
func hsum8(_ v: SIMD8<Float>) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    return b[0] + b[1]
}

@inline(__always)
func hmax8(_ v: SIMD8<Float>) -> Float {
    let a = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
    let b = a.lowHalf.replacing(with: a.highHalf, where: a.highHalf .> a.lowHalf)
    return b[1] > b[0] ? b[1] : b[0]
}

/// Vector `exp` (Cephes `expf` scheme): x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial
/// for e^r, then a scale by 2^n done as two exact power-of-two multiplies so that results down
/// into the subnormal range and up to FLT_MAX are right. Measured against glibc `expf`: at most
/// 2 ulp on normal results (see `FastExpTests`). exp(±inf) = inf / 0, NaN stays NaN; inputs
/// below -104 give 0 (the true value is below the smallest subnormal).
@inline(__always)
func fastExp(_ input: SIMD8<Float>) -> SIMD8<Float> {
    var x = input
    x.replace(with: 89, where: x .> 89)  // comparisons are false for NaN, which passes through
    x.replace(with: -104, where: x .< -104)
    // Round x·log2(e) to nearest with the 1.5·2^23 trick: the integer lands in the low mantissa
    // bits, so no float→int conversion (which would trap on NaN in checked builds).
    let shifter = SIMD8<Float>(repeating: 12_582_912)
    let t = shifter.addingProduct(x, SIMD8(repeating: 1.442_695_040_888_963_4))
    let nf = t - shifter
    let n = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000
    // r = x - n·ln2 with ln2 split in two (Cody–Waite); the first product is exact.
    var r = x.addingProduct(nf, SIMD8(repeating: -0.693_359_375))
    r = r.addingProduct(nf, SIMD8(repeating: 2.121_944_4e-4))
    var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
    p = SIMD8(repeating: 1.398_199_950_7e-3).addingProduct(p, r)
    p = SIMD8(repeating: 8.333_451_907_3e-3).addingProduct(p, r)
    p = SIMD8(repeating: 4.166_579_589_4e-2).addingProduct(p, r)
    p = SIMD8(repeating: 1.666_666_545_9e-1).addingProduct(p, r)
    p = SIMD8(repeating: 5.000_000_120_1e-1).addingProduct(p, r)
    let y = r.addingProduct(p, r * r) + 1
    // 2^n as two normal powers of two (n ∈ [-150, 129] after the clamp): exact scaling.
    let n1 = n &>> 1
    let n2 = n &- n1
    let f1 = unsafeBitCast((n1 &+ 127) &<< 23, to: SIMD8<Float>.self)
    let f2 = unsafeBitCast((n2 &+ 127) &<< 23, to: SIMD8<Float>.self)
    return y * f1 * f2
}

/// Scalar companion of `fastExp` for tails (same algorithm, same results lane for lane).
@inline(__always)
func fastExp1(_ x: Float) -> Float {
    fastExp(SIMD8(repeating: x))[0]
}
