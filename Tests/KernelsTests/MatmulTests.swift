@testable import Kernels
import Testing
import TestSupport

/// Fast matmul vs the scalar reference. Both sum in Float: the reference left to right without
/// FMA, the fast path in 8 interleaved FMA chains. Each ordering has error ≲ n·u·Σ|x·w|; with
/// inputs in [-1, 1] the observed max |Δ| / max |y| is up to 3.8e-6 (n = 4096, all dtypes), so
/// 2e-5 leaves margin without hiding a wrong element (which shows up as ~1e-1).
let matmulTolerance: Float = 2e-5

let matmulLengths = [1, 3, 7, 8, 17, 33, 64, 1023, 1025]
let matmulTokens = [1, 2, 5, 37]
/// Output rows: 1, a full 4-row tile, and 13 = three tiles and a 1-row tail.
let matmulRows = [1, 4, 13]

struct MatmulCase: Sendable, CustomStringConvertible {
    var rows: Int, cols: Int, tokens: Int, dtype: DType
    var description: String { "\(rows)x\(cols) t=\(tokens) \(dtype.rawValue)" }
}

let matmulCases: [MatmulCase] = DType.allCases.flatMap { dtype in
    matmulLengths.flatMap { cols in
        matmulTokens.flatMap { tokens in matmulRows.map { MatmulCase(rows: $0, cols: cols, tokens: tokens, dtype: dtype) } }
    }
}

/// Runs the fast matmul; returns y.
func runMatmul(_ x: [Float], tokens: Int, weight: Tensor, threads: Int) -> [Float] {
    var y = [Float](repeating: .nan, count: tokens * weight.shape[0])
    x.withUnsafeBufferPointer { x in
        y.withUnsafeMutableBufferPointer { y in
            matmul(x.baseAddress!, tokens: tokens, weight: weight, into: y.baseAddress!, pool: testPool(threads))
        }
    }
    return y
}

@Test(arguments: matmulCases)
func matmulMatchesReference(_ c: MatmulCase) {
    var rng = TestRandom(seed: UInt64(c.rows * 100_003 + c.cols * 101 + c.tokens))
    let weight = Tensor.owned(rng.floats(c.rows * c.cols), shape: [c.rows, c.cols], dtype: c.dtype)
    let x = rng.floats(c.tokens * c.cols)
    var expected = [Float](repeating: 0, count: c.tokens * c.rows)
    x.withUnsafeBufferPointer { x in
        expected.withUnsafeMutableBufferPointer { y in
            ScalarReference.matmul(x.baseAddress!, tokens: c.tokens, weight: weight, into: y.baseAddress!)
        }
    }
    let serial = runMatmul(x, tokens: c.tokens, weight: weight, threads: 1)
    #expect(maxRelativeError(serial, expected) <= matmulTolerance, "\(c)")
    for threads in testThreadCounts.dropFirst() {
        // Bit-identical whatever the thread count (chunk boundaries move between 4-row tiles).
        #expect(runMatmul(x, tokens: c.tokens, weight: weight, threads: threads).bitwiseEqual(serial), "\(c) threads \(threads)")
    }
}

/// Every output element is exactly `dot(x[t], W[o] widened)`, whichever path computed it (GEMV
/// tile, 4x1/4x2/4x3 prefill tile, 1-row tail; f16/bf16 rows read in place for a few tokens, in
/// place through 2x6 tiles and a remainder for up to 16 (6 and 11: an odd row and five tokens
/// left over), or widened to scratch for many; on AVX-512 CPUs the C tiles with two tokens per
/// register, odd counts leaving a half empty): batch invariance, and the documented order.
@Test(arguments: DType.allCases, [1, 7, 17, 1025])
func matmulElementsEqualCanonicalDot(_ dtype: DType, _ cols: Int) {
    for tokens in [3, 6, 11, 37] {
        matmulElementsEqualCanonicalDot(dtype, cols, tokens: tokens)
    }
}

func matmulElementsEqualCanonicalDot(_ dtype: DType, _ cols: Int, tokens: Int) {
    let rows = 13
    var rng = TestRandom(seed: UInt64(cols) &* 7919)
    let weight = Tensor.owned(rng.floats(rows * cols), shape: [rows, cols], dtype: dtype)
    let wide = weight.toFloatArray()
    let x = rng.floats(tokens * cols)
    for threads in testThreadCounts {
        let y = runMatmul(x, tokens: tokens, weight: weight, threads: threads)
        var mismatches = 0
        x.withUnsafeBufferPointer { x in
            wide.withUnsafeBufferPointer { w in
                for t in 0..<tokens {
                    for o in 0..<rows {
                        let d = dot(x.baseAddress! + t * cols, w.baseAddress! + o * cols, count: cols)
                        if d.bitPattern != y[t * rows + o].bitPattern { mismatches += 1 }
                    }
                }
            }
        }
        #expect(mismatches == 0, "\(dtype) cols \(cols) tokens \(tokens) threads \(threads)")
        // A token alone (GEMV path) gives the same row as inside the batch.
        let t = tokens - 2  // a middle token when there are 3 or more
        let single = runMatmul(Array(x[(t * cols)..<((t + 1) * cols)]), tokens: 1, weight: weight, threads: threads)
        #expect(single.bitwiseEqual(Array(y[(t * rows)..<((t + 1) * rows)])))
    }
}

/// Larger shapes that the default (non-forced) chunking really splits, and that exercise the
/// prefill path's weight blocks (several blocks per thread for 1024 columns).
@Test(arguments: [DType.bfloat16, .float16])
func matmulLargeSplitsIdentically(_ dtype: DType) {
    let rows = 203, cols = 1024, tokens = 9
    var rng = TestRandom(seed: 42)
    let weight = Tensor.owned(rng.floats(rows * cols), shape: [rows, cols], dtype: dtype)
    let x = rng.floats(tokens * cols)
    var expected = [Float](repeating: 0, count: tokens * rows)
    x.withUnsafeBufferPointer { x in
        expected.withUnsafeMutableBufferPointer { y in
            ScalarReference.matmul(x.baseAddress!, tokens: tokens, weight: weight, into: y.baseAddress!)
        }
    }
    var results: [[Float]] = []
    for threads in [1, 2, 3] {
        var y = [Float](repeating: 0, count: tokens * rows)
        x.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { y in
                matmul(x.baseAddress!, tokens: tokens, weight: weight, into: y.baseAddress!, pool: ThreadPool(threads: threads))
            }
        }
        results.append(y)
    }
    #expect(maxRelativeError(results[0], expected) <= matmulTolerance)
    #expect(results[1].bitwiseEqual(results[0]))
    #expect(results[2].bitwiseEqual(results[0]))
}

/// Weights that start at an odd element (a row slice of an f16/bf16 tensor is only 2-byte
/// aligned; f32 only 4-byte): loads must be unaligned-safe.
@Test(arguments: DType.allCases)
func matmulUnalignedWeights(_ dtype: DType) {
    let rows = 9, cols = 33
    var rng = TestRandom(seed: 5)
    let big = Tensor.owned(rng.floats((rows + 1) * cols + 1), shape: [(rows + 1) * cols + 1], dtype: dtype)
    let weight = Tensor(dtype: dtype, shape: [rows, cols], data: big.data + dtype.byteSize, owner: big.owner)
    let x = rng.floats(2 * cols)
    var expected = [Float](repeating: 0, count: 2 * rows)
    x.withUnsafeBufferPointer { x in
        expected.withUnsafeMutableBufferPointer { y in
            ScalarReference.matmul(x.baseAddress!, tokens: 2, weight: weight, into: y.baseAddress!)
        }
    }
    #expect(maxRelativeError(runMatmul(x, tokens: 2, weight: weight, threads: 2), expected) <= matmulTolerance)
}

/// `matmulPair` (an expert's gate and up projections) is bit-identical to two `matmul` calls:
/// the fused one-token pass over both weights keeps each element's canonical order. Covers the
/// 8-row tile, the 1-row tail, batches (which take two plain calls) and mismatched shapes.
@Test(arguments: DType.allCases, [1, 7, 17, 1025])
func matmulPairEqualsTwoMatmuls(_ dtype: DType, _ cols: Int) {
    var rng = TestRandom(seed: UInt64(cols) &* 104_729)
    for (rowsA, rowsB) in [(13, 13), (4, 4), (1, 1), (13, 5)] {
        let a = Tensor.owned(rng.floats(rowsA * cols), shape: [rowsA, cols], dtype: dtype)
        let b = Tensor.owned(rng.floats(rowsB * cols), shape: [rowsB, cols], dtype: dtype)
        for tokens in [1, 5] {
            let x = rng.floats(tokens * cols)
            for threads in testThreadCounts {
                var ya = [Float](repeating: .nan, count: tokens * rowsA)
                var yb = [Float](repeating: .nan, count: tokens * rowsB)
                x.withUnsafeBufferPointer { x in
                    ya.withUnsafeMutableBufferPointer { ya in
                        yb.withUnsafeMutableBufferPointer { yb in
                            matmulPair(x.baseAddress!, tokens: tokens, first: a, second: b, into: ya.baseAddress!,
                                       yb.baseAddress!, pool: testPool(threads))
                        }
                    }
                }
                let c = "\(dtype) \(rowsA)/\(rowsB)x\(cols) t=\(tokens) threads \(threads)"
                #expect(ya.bitwiseEqual(runMatmul(x, tokens: tokens, weight: a, threads: 1)), "\(c)")
                #expect(yb.bitwiseEqual(runMatmul(x, tokens: tokens, weight: b, threads: 1)), "\(c)")
            }
        }
    }
}

/// `matmulGroup` (an attention layer's q, k and v in one hand-off) is bit-identical to one
/// `matmul` per weight: one-token groups split rows of all weights in one pass (chunk
/// boundaries move across weights with the thread count), batches take one call each.
@Test(arguments: DType.allCases, [32, 1024])
func matmulGroupEqualsSeparateMatmuls(_ dtype: DType, _ cols: Int) {
    var rng = TestRandom(seed: UInt64(cols) &* 7_919)
    let rows = [13, 4, 1, 8]
    let weights = rows.map { Tensor.owned(rng.floats($0 * cols), shape: [$0, cols], dtype: dtype) }
    for tokens in [1, 3] {
        let x = rng.floats(tokens * cols)
        for threads in testThreadCounts {
            var ys = rows.map { [Float](repeating: .nan, count: tokens * $0) }
            let outputs = ys.indices.map { i in UnsafeMutablePointer<Float>.allocate(capacity: tokens * rows[i]) }
            defer { outputs.forEach { $0.deallocate() } }
            x.withUnsafeBufferPointer { x in
                matmulGroup(x.baseAddress!, tokens: tokens, weights: weights, into: outputs, pool: testPool(threads))
            }
            for i in ys.indices {
                ys[i] = Array(UnsafeBufferPointer(start: outputs[i], count: tokens * rows[i]))
                #expect(ys[i].bitwiseEqual(runMatmul(x, tokens: tokens, weight: weights[i], threads: 1)),
                        "\(dtype) weight \(i) (\(rows[i])x\(cols)) t=\(tokens) threads \(threads)")
            }
        }
    }
}

/// The AVX2 bf16/f16 GEMV (`pm_gemv_half`, used for one token) runs on an AVX2 CPU and gives
/// each row bit for bit the canonical dot product of SIMDSupport.swift, with its rows read as four
/// streams (1 to 128 rows per stream: 5, 13, 40, 514 rows), the 1- to 3-row tails (1, 3, 5, 6, 13,
/// 514 rows), and lengths with 8- and 1-value tails.
@Test(arguments: [DType.bfloat16, .float16], [1, 7, 33, 64, 1025])
func halfGemvEqualsCanonicalDot(_ dtype: DType, _ cols: Int) {
    var rng = TestRandom(seed: UInt64(cols) &* 31 + (dtype == .bfloat16 ? 1 : 2))
    for rows in [1, 3, 5, 6, 13, 40, 514] {
        let weight = Tensor.owned(rng.floats(rows * cols), shape: [rows, cols], dtype: dtype)
        let wide = weight.toFloatArray()
        let x = rng.floats(cols)
        var y = [Float](repeating: .nan, count: rows)
        let ran = x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                dtype == .bfloat16
                    ? FastMatmul.halfGemvC(BF16Row.self, xp.baseAddress!, weight.data, r0: 0, r1: rows, n: cols, yp.baseAddress!)
                    : FastMatmul.halfGemvC(F16Row.self, xp.baseAddress!, weight.data, r0: 0, r1: rows, n: cols, yp.baseAddress!)
            }
        }
        #expect(ran == InstructionSet.avx2.isSupported, "\(dtype): the C kernel runs exactly where AVX2 is")
        guard ran else { continue }
        var mismatches = 0
        x.withUnsafeBufferPointer { xp in
            wide.withUnsafeBufferPointer { w in
                for o in 0..<rows where dot(xp.baseAddress!, w.baseAddress! + o * cols, count: cols).bitPattern != y[o].bitPattern {
                    mismatches += 1
                }
            }
        }
        #expect(mismatches == 0, "\(dtype) \(rows)x\(cols)")
    }
}
