import Foundation
import Testing
import TestSupport

@testable import Kernels

/// Fast quantized dot vs the scalar dequantize-then-dot reference: max |Δ| / (Σ|w·x|). The fast
/// path sums per block and in f32 (the reference in Double); observed ~1e-7.
let quantizedDotTolerance: Float = 2e-6
/// Fast dequantize vs reference: `fma(q, d, m)` vs `(q - 8)·d` may differ by one rounding.
let quantizedDequantizeTolerance: Float = 1e-6

@Suite struct QuantizedTests {
    static let formats32: [QuantizedFormat] = [.q4_0, .q4_1, .q8_0]
    static let lengthsInBlocks = [1, 3, 7, 17, 33]

    /// Quantized bytes of `rows` random rows of `cols` values (K-quants: random bytes with sane scales).
    static func randomRows(_ format: QuantizedFormat, rows: Int, cols: Int, seed: UInt64) -> [UInt8] {
        var rng = TestRandom(seed: seed)
        switch format {
        case .q4_K, .q6_K:
            var bytes = (0..<(rows * format.rowBytes(cols))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            for b in 0..<(bytes.count / format.blockBytes) {
                let base = b * format.blockBytes
                let scaleOffsets = format == .q4_K ? [0, 2] : [208]
                for o in scaleOffsets {
                    let h = Float16(rng.float(0.001, 0.02)).bitPattern
                    bytes[base + o] = UInt8(h & 0xFF)
                    bytes[base + o + 1] = UInt8(h >> 8)
                }
            }
            return bytes
        default:
            return QuantizedReference.quantize(format, rng.floats(rows * cols, -2, 2))
        }
    }

    static func relativeError(_ fast: Float, _ reference: Float, scale: Float) -> Float {
        abs(fast - reference) / max(scale, 1e-30)
    }

    @Test(arguments: QuantizedFormat.allCases)
    func dotMatchesScalarReference(_ format: QuantizedFormat) {
        for blocks in format.blockSize == 32 ? Self.lengthsInBlocks : [1, 2, 3] {
            let n = blocks * format.blockSize
            let row = Self.randomRows(format, rows: 1, cols: n, seed: UInt64(n))
            var rng = TestRandom(seed: 99)
            let x = rng.floats(n, -3, 3)
            var w = [Float](repeating: 0, count: n)
            row.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &w, count: n) }
            let scale = zip(w, x).reduce(Float(0)) { $0 + abs($1.0 * $1.1) }
            let reference = row.withUnsafeBytes { QuantizedReference.dot(format, $0.baseAddress!, x, count: n) }
            let fast = row.withUnsafeBytes { QuantizedKernels.dot(format, $0.baseAddress!, x, count: n) }
            #expect(Self.relativeError(fast, reference, scale: scale) <= quantizedDotTolerance, "\(format) n=\(n): \(fast) vs \(reference)")
        }
    }

    @Test(arguments: QuantizedFormat.allCases)
    func fastDequantizeMatchesReference(_ format: QuantizedFormat) {
        let n = 3 * format.blockSize
        let row = Self.randomRows(format, rows: 1, cols: n, seed: 5)
        var reference = [Float](repeating: 0, count: n)
        var fast = [Float](repeating: .nan, count: format.blockSize)
        row.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &reference, count: n) }
        // From block 1 on (an offset into the row), one block.
        row.withUnsafeBytes {
            QuantizedKernels.dequantize(format, $0.baseAddress!, offset: format.blockSize, into: &fast, count: format.blockSize)
        }
        for i in 0..<format.blockSize {
            let r = reference[format.blockSize + i]
            #expect(abs(fast[i] - r) <= quantizedDequantizeTolerance * max(1, abs(r)), "\(format) [\(i)]")
        }
    }

    /// The AVX2 dequantizer of K-quant blocks (what the exact path dots with) gives the
    /// reference's floats bit for bit: 64 blocks of random codes, scales, mins and fifth bits.
    @Test(.enabled(if: InstructionSet.avx2.isSupported, "this CPU lacks AVX2"), arguments: [QuantizedFormat.q4_K, .q5_K, .q6_K])
    func kBlockDequantizerEqualsReference(_ format: QuantizedFormat) {
        var rng = TestRandom(seed: 21)
        let bytes = (0..<(64 * format.blockBytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        bytes.withUnsafeBytes { raw in
            var fast = [Float](repeating: .nan, count: 256), reference = fast
            for b in 0..<64 {
                let block = raw.baseAddress! + b * format.blockBytes
                QuantizedReference.dequantizeBlock(format, block, into: &reference)
                #expect(QuantizedKernels.dequantizeKBlockAVX2(format, block, into: &fast))
                // Random halves include NaN and infinity: compare bit patterns.
                #expect(fast.map(\.bitPattern) == reference.map(\.bitPattern), "\(format) block \(b)")
            }
        }
    }

    /// Every output is the single-row dot (the Swift kernel), whatever the thread count or batch
    /// size: for the 32-value formats on AVX2 CPUs the matmul is the C kernel (four row streams
    /// for one token, 13 rows leaving a tail; four tokens per block and tails in prefill).
    @Test(arguments: QuantizedFormat.allCases, [2, 7])
    func matmulEqualsPerRowDotForAnyThreadsAndBatch(_ format: QuantizedFormat, _ blocks: Int) {
        let rows = 13, cols = blocks * format.blockSize
        let w = Self.randomRows(format, rows: rows, cols: cols, seed: 11)
        var rng = TestRandom(seed: 3)
        for tokens in [1, 2, 5, 9] {
            let x = rng.floats(tokens * cols)
            var expected = [Float](repeating: 0, count: tokens * rows)
            w.withUnsafeBytes { wb in
                x.withUnsafeBufferPointer { xb in
                    for t in 0..<tokens {
                        for r in 0..<rows {
                            expected[t * rows + r] = QuantizedKernels.dot(
                                format, wb.baseAddress! + r * format.rowBytes(cols), xb.baseAddress! + t * cols, count: cols)
                        }
                    }
                }
            }
            for threads in testThreadCounts {
                var y = [Float](repeating: .nan, count: tokens * rows)
                let pool = ThreadPool(threads: threads, ignoringMinChunk: true)
                w.withUnsafeBytes { wb in
                    QuantizedKernels.matmul(x, tokens: tokens, weight: wb.baseAddress!, format: format, rows: rows, cols: cols,
                                            into: &y, pool: pool)
                }
                #expect(y == expected, "\(format) tokens=\(tokens) threads=\(threads)")
            }
        }
    }

    /// Bytes and dequantized values computed by gguf-py (`scripts/make_gguf_fixtures.py`).
    struct Reference: Decodable {
        struct Case: Decodable {
            let type: String
            let values: [Float]?
            let bytes: String
            let dequantized: [Float]
        }
        let cases: [Case]
    }

    static func hexBytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    @Test func matchesGGUFPyQuantizeAndDequantize() throws {
        let reference = try Fixtures.json(Reference.self, "gguf/quant_reference.json")
        #expect(reference.cases.count == 11)
        try expectMatches(reference)
    }

    /// Q5_0 and Q5_1 (llama-quantize's fallback where a K-quant does not fit a row): gguf-py's bytes
    /// from the same values, and its dequantized values from those bytes.
    @Test func matchesGGUFPyQ5() throws {
        let reference = try Fixtures.json(Reference.self, "gguf/q5_reference.json")
        #expect(reference.cases.map(\.type) == ["Q5_0", "Q5_0", "Q5_0", "Q5_1", "Q5_1", "Q5_1"])
        try expectMatches(reference)
    }

    private func expectMatches(_ reference: Reference) throws {
        for c in reference.cases {
            let format = try #require(QuantizedFormat(rawValue: c.type))
            let bytes = Self.hexBytes(c.bytes)
            if let values = c.values {
                #expect(QuantizedReference.quantize(format, values) == bytes, "\(c.type) n=\(values.count): quantized bytes")
            }
            var ours = [Float](repeating: 0, count: c.dequantized.count)
            bytes.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &ours, count: ours.count) }
            let maxRef = c.dequantized.map(abs).max() ?? 1
            // A NaN difference counts as infinite: Array.max() would pass over it.
            let err = zip(ours, c.dequantized).map { $0.isNaN || $1.isNaN ? .infinity : abs($0 - $1) }.max() ?? 0
            #expect(err <= 1e-6 * max(1, maxRef), "\(c.type): dequantized differs by \(err)")
        }
    }
}
