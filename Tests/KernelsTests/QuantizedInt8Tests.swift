import Foundation
import Testing
import TestSupport

@testable import Kernels

/// Slack on the int8 path's analytic bound `Σ_i |w_i| · max|x_block(i)| / 254` (each activation
/// moves by at most half a quantization step): covers the f32 rounding of `x / d` and of the
/// block scales. Measured worst case ~0.3 of the bound on random data.
let int8ActivationBoundSlack: Float = 1.01
/// Float rounding allowance on top of that bound, relative to `Σ|w·x|`: blocks are summed in
/// f32 (the reference in Double).
let int8FloatTolerance: Float = 1e-5
/// Two instruction sets compute the same integer block sums and differ only in the f32 order of
/// the scaled block sums: relative to `Σ|w·x|`.
let int8CrossISATolerance: Float = 1e-6

@Suite struct QuantizedInt8Tests {
    static let supported = InstructionSet.allCases.filter(\.isSupported)

    /// Rows of `format` with every code value in play: 32-value formats through the reference
    /// quantizer, K-quants as random bytes with small positive block scales.
    static func randomRows(_ format: QuantizedFormat, rows: Int, cols: Int, seed: UInt64) -> [UInt8] {
        var rng = TestRandom(seed: seed)
        guard format.isKQuant else { return QuantizedReference.quantize(format, rng.floats(rows * cols, -2, 2)) }
        var bytes = (0..<(rows * format.rowBytes(cols))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for b in 0..<(bytes.count / format.blockBytes) {
            for o in format == .q6_K ? [208] : [0, 2] {
                let h = Float16(rng.float(0.001, 0.02)).bitPattern
                bytes[b * format.blockBytes + o] = UInt8(h & 0xFF)
                bytes[b * format.blockBytes + o + 1] = UInt8(h >> 8)
            }
        }
        return bytes
    }

    /// Activations with an all-zero block and one large outlier, to exercise `d = 0` and wide ranges.
    static func activations(_ count: Int, seed: UInt64) -> [Float] {
        var rng = TestRandom(seed: seed)
        var x = rng.floats(count, -3, 3)
        for i in 0..<min(32, count) { x[i] = 0 }
        if count > 40 { x[40] = 25 }
        return x
    }

    func int8(_ format: QuantizedFormat, _ w: [UInt8], _ x: [Float], tokens: Int, rows: Int, cols: Int,
              isa: InstructionSet, pool: ThreadPool = .serial) -> [Float] {
        var y = [Float](repeating: .nan, count: tokens * rows)
        w.withUnsafeBytes { wb in
            QuantizedKernels.matmulInt8(x, tokens: tokens, weight: wb.baseAddress!, into: &y, format: format, rows: rows,
                                        cols: cols, isa: isa, pool: pool)
        }
        return y
    }

    @Test(arguments: QuantizedFormat.allCases)
    func withinActivationQuantizationBoundOfReference(_ format: QuantizedFormat) {
        let actBlock = format.isKQuant ? 256 : 32
        for blocks in format.isKQuant ? [1, 3] : [1, 3, 7, 17] {
            let cols = blocks * format.blockSize
            for rows in [1, 3, 7, 17] {
                let w = Self.randomRows(format, rows: rows, cols: cols, seed: UInt64(rows * 31 + cols))
                let tokens = 3
                let x = Self.activations(tokens * cols, seed: UInt64(cols))
                var wf = [Float](repeating: 0, count: rows * cols)
                w.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &wf, count: rows * cols) }
                for isa in Self.supported {
                    let y = int8(format, w, x, tokens: tokens, rows: rows, cols: cols, isa: isa)
                    for t in 0..<tokens {
                        for r in 0..<rows {
                            var bound: Float = 0, scale: Float = 0
                            for b in 0..<(cols / actBlock) {
                                var amax: Float = 0
                                for i in 0..<actBlock { amax = max(amax, abs(x[t * cols + b * actBlock + i])) }
                                for i in 0..<actBlock {
                                    let j = b * actBlock + i
                                    bound += abs(wf[r * cols + j]) * amax / 254
                                    scale += abs(wf[r * cols + j] * x[t * cols + j])
                                }
                            }
                            let reference = w.withUnsafeBytes {
                                QuantizedReference.dot(format, $0.baseAddress! + r * format.rowBytes(cols), Array(x[(t * cols)...]), count: cols)
                            }
                            let error = abs(y[t * rows + r] - reference)
                            #expect(error <= bound * int8ActivationBoundSlack + int8FloatTolerance * scale,
                                    "\(format) \(isa.name) cols=\(cols) row \(r) token \(t): \(y[t * rows + r]) vs \(reference), bound \(bound)")
                        }
                    }
                }
            }
        }
    }

    /// Every instruction set quantizes activations to the same bytes and computes the same
    /// integer sums as the plain C kernels.
    @Test(arguments: QuantizedFormat.allCases)
    func instructionSetsAgreeWithScalar(_ format: QuantizedFormat) {
        let rows = 7, tokens = 2, cols = (format.isKQuant ? 3 : 9) * format.blockSize
        let w = Self.randomRows(format, rows: rows, cols: cols, seed: 77)
        let x = Self.activations(tokens * cols, seed: 78)
        let scalar = int8(format, w, x, tokens: tokens, rows: rows, cols: cols, isa: .scalar)
        let scalarBytes = QuantizedKernels.quantizeActivations(format, x, tokens: tokens, cols: cols, isa: .scalar)
        var wf = [Float](repeating: 0, count: rows * cols)
        w.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &wf, count: rows * cols) }
        for isa in Self.supported where isa != .scalar {
            #expect(QuantizedKernels.quantizeActivations(format, x, tokens: tokens, cols: cols, isa: isa) == scalarBytes, "\(isa.name)")
            let y = int8(format, w, x, tokens: tokens, rows: rows, cols: cols, isa: isa)
            expectNear(y, scalar, wf: wf, x: x, rows: rows, cols: cols, tolerance: int8CrossISATolerance, "\(format) \(isa.name)")
        }
    }

    /// Results do not depend on the thread split or the batch (prefill takes tokens four at a
    /// time), and the paired call equals two single ones.
    @Test(arguments: QuantizedFormat.allCases)
    func independentOfThreadsBatchAndPairing(_ format: QuantizedFormat) {
        let rows = 13, tokens = 6, cols = (format.isKQuant ? 2 : 5) * format.blockSize
        let a = Self.randomRows(format, rows: rows, cols: cols, seed: 5)
        let b = Self.randomRows(format, rows: rows, cols: cols, seed: 6)
        let x = Self.activations(tokens * cols, seed: 7)
        let ya = int8(format, a, x, tokens: tokens, rows: rows, cols: cols, isa: .best)
        let yb = int8(format, b, x, tokens: tokens, rows: rows, cols: cols, isa: .best)
        for t in 0..<tokens {
            let alone = int8(format, a, Array(x[(t * cols)..<((t + 1) * cols)]), tokens: 1, rows: rows, cols: cols, isa: .best)
            #expect(Array(ya[(t * rows)..<((t + 1) * rows)]) == alone, "token \(t) alone vs in a batch of \(tokens)")
        }
        for threads in testThreadCounts {
            let pool = testPool(threads)
            #expect(int8(format, a, x, tokens: tokens, rows: rows, cols: cols, isa: .best, pool: pool) == ya, "threads=\(threads)")
            var pa = [Float](repeating: .nan, count: tokens * rows), pb = pa
            a.withUnsafeBytes { ab in
                b.withUnsafeBytes { bb in
                    pb.withUnsafeMutableBufferPointer { pbp in
                        QuantizedKernels.matmulInt8(x, tokens: tokens, weight: ab.baseAddress!, into: &pa,
                                                    second: (bb.baseAddress!, pbp.baseAddress!), format: format, rows: rows,
                                                    cols: cols, pool: pool)
                    }
                }
            }
            #expect(pa == ya && pb == yb, "pair, threads=\(threads)")
        }
    }

    /// Every element of `y` (`[tokens, rows]`) within `tolerance · Σ_i |w_i · x_i|` of `expected`,
    /// with `wf` the dequantized weights `[rows, cols]` and `x` the activations `[tokens, cols]`.
    func expectNear(_ y: [Float], _ expected: [Float], wf: [Float], x: [Float], rows: Int, cols: Int, tolerance: Float,
                    _ label: String) {
        for t in 0..<(x.count / cols) {
            for r in 0..<rows {
                var scale: Float = 0
                for i in 0..<cols { scale += abs(wf[r * cols + i] * x[t * cols + i]) }
                let e = abs(y[t * rows + r] - expected[t * rows + r])
                #expect(e <= tolerance * scale, "\(label) row \(r) token \(t): \(y[t * rows + r]) vs \(expected[t * rows + r])")
            }
        }
    }

    /// A pool asking for int8 arithmetic routes quantized `matmul` there; the default pool stays exact.
    @Test func poolArithmeticSelectsThePath() {
        let rows = 5, cols = 64
        let w = Self.randomRows(.q4_0, rows: rows, cols: cols, seed: 9)
        let x = Self.activations(cols, seed: 10)
        let buffer = TensorBuffer(byteCount: w.count)
        w.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: w.count) }
        let tensor = Tensor(dtype: .q4_0, shape: [rows, cols], data: UnsafeRawPointer(buffer.pointer), owner: buffer)
        var exact = [Float](repeating: .nan, count: rows), fast = exact
        matmul(x, tokens: 1, weight: tensor, into: &exact, pool: ThreadPool(threads: 1))
        matmul(x, tokens: 1, weight: tensor, into: &fast, pool: ThreadPool(threads: 1, quantizedArithmetic: .int8))
        #expect(fast == int8(.q4_0, w, x, tokens: 1, rows: rows, cols: cols, isa: .best))
        var reference = [Float](repeating: .nan, count: rows)
        w.withUnsafeBytes { wb in
            QuantizedKernels.matmul(x, tokens: 1, weight: wb.baseAddress!, format: .q4_0, rows: rows, cols: cols, into: &reference, pool: .serial)
        }
        #expect(exact == reference)
        #expect(ThreadPool(threads: 2, quantizedArithmetic: .int8).serialCompanion.quantizedArithmetic == .int8)
    }

    /// The dispatcher never reports an instruction set this CPU lacks (the AVX-512 kernels are
    /// compiled into every x86-64 build but must only run where the CPU has AVX-512 VNNI).
    @Test func bestIsSupportedAndNothingAboveIt() {
        let best = InstructionSet.best
        #expect(best.isSupported)
        for isa in InstructionSet.allCases where isa.rawValue > best.rawValue { #expect(!isa.isSupported, "\(isa.name)") }
        #if arch(x86_64)
        #expect(best != .scalar, "an x86-64 CI machine without AVX2 is unexpected")
        #endif
    }
}

/// Bound of the int8 kernels against the plain C ones, per format, relative to `Σ|w·x|`: both
/// compute the same exact integer block sums; the SIMD kernels scale and sum blocks in their
/// own order, the C reference in one chain; for the
/// K-quants the 4-token tiles repeat the one-token arithmetic. f32 reordering of ≤ 64 scaled
/// block sums stays far below 1e-6 (observed ≲ 1e-7).
let int8KernelTolerance: [QuantizedFormat: Float] = [
    .q4_0: 1e-6, .q4_1: 1e-6, .q5_0: 1e-6, .q5_1: 1e-6, .q8_0: 1e-6, .q4_K: 1e-6, .q5_K: 1e-6, .q6_K: 1e-6,
]

extension QuantizedInt8Tests {
    /// Row counts that leave short tails (one token reads rows as four streams: 7 to 40 rows give
    /// 1 to 10 rows per stream and 0 to 3 left over), and token tiles of four with tails, against
    /// the scalar kernels; a token alone equals the same token in any batch, and a
    /// row computed in a slice starting mid-group (another thread split) equals the full pass.
    @Test(arguments: QuantizedFormat.allCases)
    func rowGroupsAndTokenTilesMatchScalar(_ format: QuantizedFormat) {
        let cols = (format.isKQuant ? 3 : 11) * format.blockSize
        let tolerance = int8KernelTolerance[format]!
        for rows in [1, 7, 8, 9, 23, 40] {
            let w = Self.randomRows(format, rows: rows, cols: cols, seed: UInt64(rows) &* 131)
            var wf = [Float](repeating: 0, count: rows * cols)
            w.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &wf, count: rows * cols) }
            for tokens in [1, 4, 5, 9] {
                let x = Self.activations(tokens * cols, seed: UInt64(tokens * 7 + rows))
                let scalar = int8(format, w, x, tokens: tokens, rows: rows, cols: cols, isa: .scalar)
                let fast = int8(format, w, x, tokens: tokens, rows: rows, cols: cols, isa: .best)
                expectNear(fast, scalar, wf: wf, x: x, rows: rows, cols: cols, tolerance: tolerance, "\(format) rows \(rows) tokens \(tokens)")
                for t in 0..<tokens {
                    let alone = int8(format, w, Array(x[(t * cols)..<((t + 1) * cols)]), tokens: 1, rows: rows, cols: cols, isa: .best)
                    #expect(Array(fast[(t * rows)..<((t + 1) * rows)]) == alone, "\(format) rows \(rows): token \(t) alone vs batch of \(tokens)")
                }
                if rows > 3 {
                    let tail = Array(w[(3 * format.rowBytes(cols))...])
                    let sliced = int8(format, tail, x, tokens: tokens, rows: rows - 3, cols: cols, isa: .best)
                    for t in 0..<tokens {
                        #expect(Array(sliced[(t * (rows - 3))..<((t + 1) * (rows - 3))]) == Array(fast[(t * rows + 3)..<((t + 1) * rows)]),
                                "\(format) rows \(rows) tokens \(tokens): rows 3... alone vs in the full pass, token \(t)")
                    }
                }
            }
        }
    }
}

extension QuantizedInt8Tests {
    static let interleavedFormats: [QuantizedFormat] = [.q4_0, .q4_1, .q4_K]

    /// Bytes standing in for a file mapping: the kernels copy only `ReleasableStorage` owners.
    final class MappedBytes: ReleasableStorage {
        let storage: TensorBuffer
        var pointer: UnsafeMutableRawPointer { storage.pointer }
        init(_ storage: TensorBuffer) { self.storage = storage }
        func releasePages(from start: UnsafeRawPointer, count: Int) {}
    }

    /// `int8` with the weight in a mapping-like buffer passed as `owner`, so the kernels take the
    /// interleaved copy where the format and row count allow it.
    func int8Owned(_ format: QuantizedFormat, _ w: MappedBytes, _ x: [Float], tokens: Int, rows: Int, cols: Int,
                   pool: ThreadPool = .serial) -> [Float] {
        var y = [Float](repeating: .nan, count: tokens * rows)
        QuantizedKernels.matmulInt8(x, tokens: tokens, weight: UnsafeRawPointer(w.pointer), into: &y, format: format, rows: rows,
                                    cols: cols, owner: w, pool: pool)
        return y
    }

    static func buffer(_ bytes: [UInt8]) -> MappedBytes {
        let buffer = TensorBuffer(byteCount: bytes.count)
        bytes.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return MappedBytes(buffer)
    }

    /// The interleaved layout (groups of eight rows) against the plain C kernels within
    /// `int8KernelTolerance`, for decode and prefill tiles with tails; a token alone equals the
    /// same token in any batch; thread splits and the gate/up pair give the same bits; the copy
    /// is made once per weight and dropped with its owner.
    @Test(arguments: interleavedFormats)
    func interleavedRowsMatchScalar(_ format: QuantizedFormat) {
        let tolerance = int8KernelTolerance[format]!
        let interleaving = InterleavedWeights.isSupported(format, rows: 8)
        // 40 and 72 rows: five and nine groups, so one-token passes read groups as four streams
        // (one and two groups each) with a one-group tail.
        for (rows, blocks) in format.isKQuant ? [(8, 1), (16, 2), (24, 3), (7, 1), (40, 1)]
            : [(8, 1), (16, 5), (24, 11), (7, 3), (40, 2), (72, 3)] {
            let cols = blocks * format.blockSize
            let w = Self.randomRows(format, rows: rows, cols: cols, seed: UInt64(rows * 1000 + cols))
            var wf = [Float](repeating: 0, count: rows * cols)
            w.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &wf, count: rows * cols) }
            let owned = Self.buffer(w)
            let otherBytes = Self.randomRows(format, rows: rows, cols: cols, seed: 99)
            let other = Self.buffer(otherBytes)
            let pair = Self.buffer(w + otherBytes)  // gate and up of one owner, back to back
            for tokens in [1, 3, 4, 6, 9] {
                let x = Self.activations(tokens * cols, seed: UInt64(tokens * 13 + rows))
                let scalar = int8(format, w, x, tokens: tokens, rows: rows, cols: cols, isa: .scalar)
                let fast = int8Owned(format, owned, x, tokens: tokens, rows: rows, cols: cols)
                expectNear(fast, scalar, wf: wf, x: x, rows: rows, cols: cols, tolerance: tolerance,
                           "\(format) interleaved rows \(rows) tokens \(tokens)")
                for t in 0..<tokens {
                    let alone = int8Owned(format, owned, Array(x[(t * cols)..<((t + 1) * cols)]), tokens: 1, rows: rows, cols: cols)
                    #expect(Array(fast[(t * rows)..<((t + 1) * rows)]) == alone,
                            "\(format) interleaved rows \(rows): token \(t) alone vs batch of \(tokens)")
                }
                for threads in testThreadCounts {
                    let pool = testPool(threads)
                    #expect(int8Owned(format, owned, x, tokens: tokens, rows: rows, cols: cols, pool: pool) == fast,
                            "\(format) interleaved rows \(rows) tokens \(tokens) threads \(threads)")
                    var ya = [Float](repeating: .nan, count: tokens * rows), yb = ya
                    yb.withUnsafeMutableBufferPointer { ybp in
                        QuantizedKernels.matmulInt8(x, tokens: tokens, weight: UnsafeRawPointer(pair.pointer), into: &ya,
                                                    second: (UnsafeRawPointer(pair.pointer + w.count), ybp.baseAddress!),
                                                    format: format, rows: rows, cols: cols, owner: pair, pool: pool)
                    }
                    #expect(ya == fast, "\(format) pair rows \(rows) tokens \(tokens) threads \(threads)")
                    #expect(yb == int8Owned(format, other, x, tokens: tokens, rows: rows, cols: cols),
                            "\(format) pair second rows \(rows) tokens \(tokens) threads \(threads)")
                }
            }
            if interleaving && rows % 8 == 0 {
                #expect(InterleavedWeights.holdsCopy(of: UnsafeRawPointer(owned.pointer), owner: owned), "\(format) rows \(rows)")
                #expect(InterleavedWeights.holdsCopy(of: UnsafeRawPointer(pair.pointer + w.count), owner: pair), "\(format) rows \(rows)")
            }
            #expect(!InterleavedWeights.holdsCopy(of: UnsafeRawPointer(owned.pointer), owner: other), "\(format) rows \(rows)")
            // An owned buffer (not a mapping) is never copied: the memory it counts stays the memory it uses.
            let plainOwner = owned.storage
            _ = int8Owned(format, owned, Self.activations(cols, seed: 5), tokens: 1, rows: rows, cols: cols)
            var y = [Float](repeating: .nan, count: rows)
            let xo = Self.activations(cols, seed: 6)
            QuantizedKernels.matmulInt8(xo, tokens: 1, weight: UnsafeRawPointer(plainOwner.pointer), into: &y, format: format,
                                        rows: rows, cols: cols, owner: plainOwner, pool: .serial)
            #expect(!InterleavedWeights.holdsCopy(of: UnsafeRawPointer(plainOwner.pointer), owner: plainOwner), "\(format) rows \(rows)")
            expectNear(y, int8(format, w, xo, tokens: 1, rows: rows, cols: cols, isa: .scalar), wf: wf, x: xo, rows: rows, cols: cols,
                       tolerance: tolerance, "\(format) owned buffer rows \(rows)")
        }
    }

    /// With int8 arithmetic `matmulGroup` quantizes x once per format and splits the rows of all
    /// weights over the threads in one pass; each weight's result is bit for bit its own
    /// `matmul` (interleaved copies where the owner is a mapping, plain rows otherwise, and
    /// weights of two formats in one group, as a Q4_K_M file's q, k and v; a weight whose row
    /// count is not a multiple of eight beside interleaved ones).
    @Test(arguments: QuantizedFormat.allCases)
    func groupEqualsOneCallPerWeight(_ format: QuantizedFormat) {
        let cols = 256
        let other: QuantizedFormat = format == .q6_K ? .q4_K : .q6_K
        let shapes: [(QuantizedFormat, Int)] = [(format, 16), (format, 8), (other, 8), (format, 5)]
        let tensors = shapes.enumerated().map { i, shape in
            let owner = Self.buffer(Self.randomRows(shape.0, rows: shape.1, cols: cols, seed: 40 + UInt64(i)))
            return Tensor(dtype: DType(rawValue: shape.0.rawValue)!, shape: [shape.1, cols], data: UnsafeRawPointer(owner.pointer), owner: owner)
        }
        for tokens in [1, 5] {
            let x = Self.activations(tokens * cols, seed: 50 + UInt64(tokens))
            for threads in testThreadCounts {
                let pool = ThreadPool(threads: threads, ignoringMinChunk: true, persistentWorkers: threads == 3,
                                      quantizedArithmetic: .int8)
                let outputs = shapes.map { UnsafeMutablePointer<Float>.allocate(capacity: tokens * $0.1) }
                defer { outputs.forEach { $0.deallocate() } }
                matmulGroup(x, tokens: tokens, weights: tensors, into: outputs, pool: pool)
                for (i, tensor) in tensors.enumerated() {
                    var alone = [Float](repeating: .nan, count: tokens * shapes[i].1)
                    matmul(x, tokens: tokens, weight: tensor, into: &alone, pool: pool)
                    let grouped = Array(UnsafeBufferPointer(start: outputs[i], count: alone.count))
                    #expect(grouped.bitwiseEqual(alone), "\(shapes[i].0) weight \(i) tokens \(tokens) threads \(threads)")
                }
            }
        }
    }

    /// A copy belongs to its owner: a new owner at the same address with other bytes gets its
    /// own copy, never the first one's.
    @Test func interleavedCopyFollowsItsOwner() {
        let rows = 8, cols = 64
        let x = Self.activations(cols, seed: 3)
        let a = Self.randomRows(.q4_0, rows: rows, cols: cols, seed: 1)
        let b = Self.randomRows(.q4_0, rows: rows, cols: cols, seed: 2)
        let buffer = Self.buffer(a)
        _ = int8Owned(.q4_0, buffer, x, tokens: 1, rows: rows, cols: cols)
        // Same storage, new contents, a different owner object: must not reuse the first copy.
        b.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: b.count) }
        final class OtherOwner: ReleasableStorage { func releasePages(from start: UnsafeRawPointer, count: Int) {} }
        let owner = OtherOwner()
        var second = [Float](repeating: .nan, count: rows)
        QuantizedKernels.matmulInt8(x, tokens: 1, weight: UnsafeRawPointer(buffer.pointer), into: &second, format: .q4_0, rows: rows,
                                    cols: cols, owner: owner, pool: .serial)
        let plain = int8(.q4_0, b, x, tokens: 1, rows: rows, cols: cols, isa: .scalar)
        var wf = [Float](repeating: 0, count: rows * cols)
        b.withUnsafeBytes { QuantizedReference.dequantize(.q4_0, $0.baseAddress!, into: &wf, count: rows * cols) }
        expectNear(second, plain, wf: wf, x: x, rows: rows, cols: cols, tolerance: int8KernelTolerance[.q4_0]!, "new owner")
    }
}

extension QuantizedInt8Tests {
    /// The AVX-512 VNNI kernels hold two blocks (or two interleaved chunks) per zmm in the places
    /// of the AVX2 kernels' even and odd accumulators, and `vpdpbusd` forms the same exact int32
    /// sums: their results equal the AVX2 kernels' bit for bit, for plain rows (one token: four
    /// streams and their tails; prefill: four-token tiles and tails; odd block counts: the last
    /// block alone) and the interleaved layout. Runs only where the CPU has AVX-512 VNNI.
    @Test(.enabled(if: InstructionSet.avx512VNNI.isSupported, "this CPU lacks AVX-512 VNNI"),
          arguments: QuantizedFormat.allCases)
    func avx512EqualsAVX2BitForBit(_ format: QuantizedFormat) {
        for (rows, blocks) in [(1, 1), (5, 2), (8, 3), (13, 7), (40, 4), (72, 11)] {
            let cols = (format.isKQuant ? (blocks + 1) / 2 : blocks) * format.blockSize
            let w = Self.randomRows(format, rows: rows, cols: cols, seed: UInt64(rows * 7 + blocks))
            let owned = Self.buffer(w)
            for tokens in [1, 2, 4, 7] {
                let x = Self.activations(tokens * cols, seed: UInt64(tokens + 31 * rows))
                let avx2 = int8(format, w, x, tokens: tokens, rows: rows, cols: cols, isa: .avx2)
                let avx512 = int8(format, w, x, tokens: tokens, rows: rows, cols: cols, isa: .avx512VNNI)
                #expect(avx512.bitwiseEqual(avx2), "\(format) rows \(rows) cols \(cols) tokens \(tokens)")
                guard InterleavedWeights.isSupported(format, rows: rows, isa: .avx2) else { continue }
                let y2 = interleaved(format, owned, x, tokens: tokens, rows: rows, cols: cols, isa: .avx2)
                let y512 = interleaved(format, owned, x, tokens: tokens, rows: rows, cols: cols, isa: .avx512VNNI)
                #expect(y512.bitwiseEqual(y2), "\(format) interleaved rows \(rows) cols \(cols) tokens \(tokens)")
            }
        }
    }

    func interleaved(_ format: QuantizedFormat, _ w: MappedBytes, _ x: [Float], tokens: Int, rows: Int, cols: Int,
                     isa: InstructionSet) -> [Float] {
        var y = [Float](repeating: .nan, count: tokens * rows)
        QuantizedKernels.matmulInt8(x, tokens: tokens, weight: UnsafeRawPointer(w.pointer), into: &y, format: format, rows: rows,
                                    cols: cols, isa: isa, owner: w, pool: .serial)
        return y
    }
}
