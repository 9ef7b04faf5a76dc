import Foundation
import Testing
import TestSupport

@testable import Kernels

/// Fixture rows quantized by ggml (scripts/make_kquant_fixtures.py), in the layout of
/// `quant_reference.json`, plus raw Q5_K blocks dequantized by gguf-py. The K-quant bytes are the
/// quality bar premoe's own quantizer is held to; Q4_0/Q8_0 bytes are matched exactly.
struct KQuantReference: Decodable {
    struct Blocks: Decodable {
        let bytes: String
        let dequantized: [Float]
    }
    let cases: [QuantizedTests.Reference.Case]
    let q5KBlocks: Blocks

    static func load() throws -> KQuantReference { try Fixtures.json(KQuantReference.self, "gguf/kquant_reference.json") }
}

/// Root-mean-square of `a − b`.
func rmse(_ a: [Float], _ b: [Float]) -> Float {
    Float((zip(a, b).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / Double(a.count)).squareRoot())
}

/// `bytes` of `count` values in `format`, dequantized by the reference dequantizer.
func dequantized(_ format: QuantizedFormat, _ bytes: [UInt8], count: Int) -> [Float] {
    var y = [Float](repeating: .nan, count: count)
    bytes.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &y, count: count) }
    return y
}

@Suite struct QuantizeKQuantsTests {
    /// How much larger than ggml's reference quantizer's RMSE ours may be, per 256-value block.
    static let rmseRatioLimit: Float = 1.02

    @Test("K-quants: per block, RMSE within 2% of ggml's bytes for the same values (Q4_K, Q5_K, Q6_K)")
    func qualityAgainstGGML() throws {
        let reference = try KQuantReference.load()
        var checked: Set<String> = []
        for c in reference.cases {
            let format = try #require(QuantizedFormat(rawValue: c.type))
            guard format.isKQuant else { continue }
            let values = try #require(c.values)
            let ours = dequantized(format, QuantizedReference.quantize(format, values), count: values.count)
            let ggml = dequantized(format, QuantizedTests.hexBytes(c.bytes), count: values.count)
            // The fixture's own dequantization (gguf-py) confirms the ggml bytes decode as we read them.
            #expect(maxRelativeError(ggml, c.dequantized) <= 1e-6, "\(c.type) n=\(values.count)")
            // Block by block, so the all-zero, constant and outlier blocks each count on their own.
            for b in 0..<(values.count / 256) {
                let r = (b * 256)..<((b + 1) * 256)
                let x = Array(values[r])
                let mine = rmse(Array(ours[r]), x), theirs = rmse(Array(ggml[r]), x)
                #expect(mine <= Self.rmseRatioLimit * theirs,
                        "\(c.type) n=\(values.count) block \(b): RMSE \(mine) vs ggml \(theirs) (×\(mine / theirs))")
            }
            #expect(rmse(ours, values) <= Self.rmseRatioLimit * rmse(ggml, values))
            checked.insert(c.type)
        }
        #expect(checked == ["Q4_K", "Q5_K", "Q6_K"])
    }

    @Test("Q4_0 and Q8_0 reproduce ggml's bytes (one rounding rule, no fitting)")
    func blocks32MatchGGML() throws {
        let reference = try KQuantReference.load()
        var count = 0
        for c in reference.cases {
            let format = try #require(QuantizedFormat(rawValue: c.type))
            guard !format.isKQuant else { continue }
            let values = try #require(c.values)
            #expect(QuantizedReference.quantize(format, values) == QuantizedTests.hexBytes(c.bytes), "\(c.type) n=\(values.count)")
            count += 1
        }
        #expect(count >= 6)
    }

    @Test("special blocks: zeros stay zero, a constant block is near exact, an outlier survives", arguments: [QuantizedFormat.q4_K, .q5_K, .q6_K])
    func specialBlocks(_ format: QuantizedFormat) {
        let zero = [Float](repeating: 0, count: 256)
        #expect(dequantized(format, QuantizedReference.quantize(format, zero), count: 256) == zero)
        for c: Float in [0.75, -0.3] {
            let x = [Float](repeating: c, count: 256)
            let y = dequantized(format, QuantizedReference.quantize(format, x), count: 256)
            #expect(y.allSatisfy { abs($0 - c) <= 2e-3 * abs(c) }, "\(format) constant \(c): \(y[0])")
        }
        var rng = TestRandom(seed: 3)
        var x = rng.floats(256, -0.01, 0.01)
        x[77] = 4
        let y = dequantized(format, QuantizedReference.quantize(format, x), count: 256)
        #expect(abs(y[77] - 4) <= 0.01, "\(format) outlier: \(y[77])")
    }

    @Test("fast dot on quantizer output agrees with dequantize-then-dot", arguments: [QuantizedFormat.q4_K, .q5_K, .q6_K])
    func fastDotOnQuantizedRows(_ format: QuantizedFormat) {
        var rng = TestRandom(seed: 21)
        // Heavy-tailed weights: a ratio of uniforms has Cauchy-like tails.
        let w = (0..<(4 * 256)).map { _ in 0.02 * rng.float(-1, 1) / max(0.05, abs(rng.float(-1, 1))) }
        let x = rng.floats(w.count, -3, 3)
        let row = QuantizedReference.quantize(format, w)
        let deq = dequantized(format, row, count: w.count)
        let scale = zip(deq, x).reduce(Float(0)) { $0 + abs($1.0 * $1.1) }
        let reference = row.withUnsafeBytes { QuantizedReference.dot(format, $0.baseAddress!, x, count: w.count) }
        let fast = row.withUnsafeBytes { QuantizedKernels.dot(format, $0.baseAddress!, x, count: w.count) }
        #expect(QuantizedTests.relativeError(fast, reference, scale: scale) <= quantizedDotTolerance, "\(format): \(fast) vs \(reference)")
    }

    @Test("Q5_K blocks dequantize as gguf-py does")
    func q5KDequantize() throws {
        let blocks = try KQuantReference.load().q5KBlocks
        let bytes = QuantizedTests.hexBytes(blocks.bytes)
        var out = [Float](repeating: .nan, count: blocks.dequantized.count)
        bytes.withUnsafeBytes { QuantizedReference.dequantize(.q5_K, $0.baseAddress!, into: &out, count: out.count) }
        #expect(maxRelativeError(out, blocks.dequantized) <= 1e-6)
    }

    @Test("quantize then dequantize stays close to the input", arguments: [QuantizedFormat.q4_K, .q5_K, .q6_K])
    func roundTrip(_ format: QuantizedFormat) {
        var rng = TestRandom(seed: 7)
        let x = rng.floats(3 * 256, -1, 1)
        let y = dequantized(format, QuantizedReference.quantize(format, x), count: x.count)
        let error = rmse(x, y)
        // Uniform(-1, 1) has RMS 0.577; 4/5/6 bits leave roughly 1/16, 1/32, 1/64 of the range.
        let bound: Float = format == .q4_K ? 0.05 : format == .q5_K ? 0.025 : 0.013
        #expect(error <= bound, "\(format): RMSE \(error)")
    }

    @Test("Tensor.converted quantizes row by row and keeps the shape; thread count does not matter")
    func convertedTensor() {
        var rng = TestRandom(seed: 11)
        let values = rng.floats(4 * 512, -2, 2)
        let t = Tensor.owned(values, shape: [4, 512])
        let serial = t.converted(to: .q4_K)
        let parallel = t.converted(to: .q4_K, pool: ThreadPool(threads: 3))
        #expect(serial.dtype == .q4_K && serial.shape == [4, 512])
        let direct = QuantizedReference.quantize(.q4_K, values)
        let a = Array(UnsafeRawBufferPointer(start: serial.data, count: serial.byteCount))
        let b = Array(UnsafeRawBufferPointer(start: parallel.data, count: parallel.byteCount))
        #expect(a == direct && b == direct)
        #expect(t.canConvert(to: .q8_0) && !Tensor.owned([Float](repeating: 0, count: 48), shape: [2, 24]).canConvert(to: .q8_0))
        let f16 = t.converted(to: .float16)
        #expect(f16.toFloatArray() == values.map { Float(Float16($0)) })
    }
}
