import Foundation
import Kernels
import Testing
import TestSupport

let awkwardLengths = [1, 3, 7, 8, 17, 33, 64, 1023, 1025]

/// rmsNorm: only the sum of squares is ordered differently (two 8-lane FMA chains vs a left to
/// right Float sum, whose own error grows like √n·u); sqrt halves it. Observed up to 1.1e-6
/// (n = 4096, release build); 1e-5 leaves margin and still catches any real bug (≥ 1e-3).
let rmsNormTolerance: Float = 1e-5
/// softmax: the vector exp is within 2 ulp of expf and the normaliser is summed in 8 lanes vs
/// left to right. Observed up to 1.5e-6 (max |Δ| / max |p|, logits spread ±200); 1e-5 margin.
let softmaxTolerance: Float = 1e-5
/// siluMul: one vector exp (≤ 2 ulp) inside g / (1 + e^-g); the division damps its error.
/// Observed 2e-8; 1e-6 margin (plus a 4-ulp per-element check below).
let siluMulTolerance: Float = 1e-6
/// axpy, add, scale, convertToFloat and RoPE perform exactly the reference's operations.
let exactTolerance: Float = 0

func withBuffers<R>(_ a: inout [Float], _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
    a.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}

@Test(arguments: awkwardLengths)
func rmsNormMatchesReference(_ dim: Int) {
    var rng = TestRandom(seed: UInt64(dim))
    let rows = 3
    let x = rng.floats(rows * dim, -4, 4)
    let w = rng.floats(dim, 0.5, 1.5)
    var fast = [Float](repeating: 0, count: rows * dim)
    var ref = fast
    x.withUnsafeBufferPointer { x in
        w.withUnsafeBufferPointer { w in
            withBuffers(&fast) { rmsNorm(x.baseAddress!, weight: w.baseAddress!, rows: rows, dim: dim, eps: 1e-6, into: $0) }
            withBuffers(&ref) {
                ScalarReference.rmsNorm(x.baseAddress!, weight: w.baseAddress!, rows: rows, dim: dim, eps: 1e-6, into: $0)
            }
        }
    }
    #expect(maxRelativeError(fast, ref) <= rmsNormTolerance)
    // In place.
    var inPlace = x
    w.withUnsafeBufferPointer { w in
        withBuffers(&inPlace) { rmsNorm($0, weight: w.baseAddress!, rows: rows, dim: dim, eps: 1e-6, into: $0) }
    }
    #expect(inPlace.bitwiseEqual(fast))
}

@Test(arguments: awkwardLengths)
func softmaxMatchesReference(_ count: Int) {
    var rng = TestRandom(seed: UInt64(count) + 17)
    for range: Float in [1, 30, 200] {
        let x = rng.floats(count, -range, range)
        var fast = x, ref = x
        withBuffers(&fast) { softmax($0, count: count) }
        withBuffers(&ref) { ScalarReference.softmax($0, count: count) }
        #expect(maxRelativeError(fast, ref) <= softmaxTolerance, "range \(range)")
        #expect(abs(fast.reduce(0, +) - 1) < 1e-5)
    }
}

@Test func softmaxSpecialValues() {
    // -inf entries (masked logits) get exactly 0; a single finite value gets 1.
    var x: [Float] = [-.infinity, 2, -.infinity, -.infinity, -.infinity, -.infinity, -.infinity, -.infinity, -.infinity]
    withBuffers(&x) { softmax($0, count: 9) }
    #expect(x == [0, 1, 0, 0, 0, 0, 0, 0, 0])
    // Equal values: exactly uniform.
    var u = [Float](repeating: 3.5, count: 10)
    withBuffers(&u) { softmax($0, count: 10) }
    #expect(u.allSatisfy { $0 == u[0] } && abs(u[0] - 0.1) < 1e-7)
    // A row of -inf gives NaN, like the reference.
    var n = [Float](repeating: -.infinity, count: 9)
    withBuffers(&n) { softmax($0, count: 9) }
    #expect(n.allSatisfy { $0.isNaN })
}

@Test(arguments: awkwardLengths)
func siluMulMatchesReference(_ count: Int) {
    var rng = TestRandom(seed: UInt64(count) + 99)
    var gate = rng.floats(count, -12, 12)
    if count > 2 { gate[0] = 100; gate[1] = -100; gate[2] = 0 }
    let up = rng.floats(count, -2, 2)
    var fast = [Float](repeating: 0, count: count)
    var ref = fast
    gate.withUnsafeBufferPointer { g in
        up.withUnsafeBufferPointer { u in
            withBuffers(&fast) { siluMul(g.baseAddress!, u.baseAddress!, into: $0, count: count) }
            withBuffers(&ref) { ScalarReference.siluMul(g.baseAddress!, u.baseAddress!, into: $0, count: count) }
        }
    }
    #expect(maxRelativeError(fast, ref) <= siluMulTolerance)
    // Element-wise too: each output within a few ulp of the reference.
    for i in 0..<count where ref[i] != 0 {
        #expect(abs(fast[i] - ref[i]) <= 4 * ref[i].ulp, "i \(i) gate \(gate[i])")
    }
    // Aliasing the output with the gate.
    var aliased = gate
    up.withUnsafeBufferPointer { u in withBuffers(&aliased) { siluMul($0, u.baseAddress!, into: $0, count: count) } }
    #expect(aliased.bitwiseEqual(fast))
}

@Test(arguments: awkwardLengths)
func axpyAddScaleAreExact(_ count: Int) {
    var rng = TestRandom(seed: UInt64(count) + 5)
    let x = rng.floats(count), y0 = rng.floats(count)
    var y = y0
    x.withUnsafeBufferPointer { x in withBuffers(&y) { axpy(0.37, x.baseAddress!, $0, count: count) } }
    #expect(maxRelativeError(y, zip(x, y0).map { $1 + 0.37 * $0 }) <= exactTolerance)
    var s = [Float](repeating: 0, count: count)
    x.withUnsafeBufferPointer { x in
        y0.withUnsafeBufferPointer { y0 in withBuffers(&s) { add(x.baseAddress!, y0.baseAddress!, into: $0, count: count) } }
    }
    #expect(s.bitwiseEqual(zip(x, y0).map { $0 + $1 }))
    var scaled = x
    withBuffers(&scaled) { scale($0, by: -1.75, count: count) }
    #expect(scaled.bitwiseEqual(x.map { $0 * -1.75 }))
}

/// dot: 8 FMA chains vs a left to right sum; same bound as matmul.
@Test(arguments: awkwardLengths)
func dotMatchesPlainSum(_ count: Int) {
    var rng = TestRandom(seed: UInt64(count) + 11)
    let a = rng.floats(count), b = rng.floats(count)
    let fast = a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in dot(a.baseAddress!, b.baseAddress!, count: count) } }
    let exact = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    let scaleRef = zip(a, b).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
    #expect(abs(Double(fast) - exact) <= Double(matmulTolerance) * max(scaleRef, 1e-30))
}

@Test(arguments: DType.allCases, awkwardLengths)
func convertToFloatIsExact(_ dtype: DType, _ count: Int) {
    var rng = TestRandom(seed: UInt64(count) * 3 + 1)
    let t = Tensor.owned(rng.floats(count + 3, -1000, 1000), shape: [count + 3], dtype: dtype)
    for offset in [0, 1, 3] {
        var fast = [Float](repeating: 0, count: count)
        var ref = fast
        withBuffers(&fast) { convertToFloat(t, offset: offset, into: $0, count: count) }
        withBuffers(&ref) { ScalarReference.convertToFloat(t, offset: offset, into: $0, count: count) }
        #expect(fast.bitwiseEqual(ref))
    }
}
