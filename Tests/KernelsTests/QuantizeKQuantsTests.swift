import Foundation
import Testing
import TestSupport

@testable import Kernels

/// Fixture rows quantized by ggml (scripts/make_kquant_fixtures.py), in the layout of
/// `quant_reference.json`, plus raw Q5_K blocks dequantized by gguf-py.
struct KQuantReference: Decodable {
    struct Blocks: Decodable {
        let bytes: String
        let dequantized: [Float]
    }
    let cases: [QuantizedTests.Reference.Case]
    let q5KBlocks: Blocks

    static func load() throws -> KQuantReference { try Fixtures.json(KQuantReference.self, "gguf/kquant_reference.json") }
}

@Suite struct QuantizeKQuantsTests {
    @Test("quantizing reproduces ggml's bytes (Q4_K, Q5_K, Q6_K, Q4_0, Q8_0)")
    func matchesGGML() throws {
        let reference = try KQuantReference.load()
        #expect(reference.cases.count >= 15)
        for c in reference.cases {
            let format = try #require(QuantizedFormat(rawValue: c.type))
            let expected = QuantizedTests.hexBytes(c.bytes)
            let values = try #require(c.values)
            let ours = QuantizedReference.quantize(format, values)
            #expect(ours.count == expected.count, "\(c.type) n=\(values.count)")
            // Same algorithm and the same float operations: byte for byte (also measured on
            // real-shaped tensors against llama-quantize, scripts/compare_quantizer.py).
            #expect(ours == expected, "\(c.type) n=\(values.count): \(zip(ours, expected).filter { $0 != $1 }.count) bytes differ")
        }
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
        let q = QuantizedReference.quantize(format, x)
        var y = [Float](repeating: .nan, count: x.count)
        q.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &y, count: y.count) }
        let rmse = (zip(x, y).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / Float(x.count)).squareRoot()
        // Uniform(-1, 1) has RMS 0.577; 4/5/6 bits leave roughly 1/16, 1/32, 1/64 of the range.
        let bound: Float = format == .q4_K ? 0.05 : format == .q5_K ? 0.025 : 0.013
        #expect(rmse <= bound, "\(format): RMSE \(rmse)")
    }

    @Test("all-zero input gives all-zero blocks", arguments: [QuantizedFormat.q4_K, .q5_K, .q6_K])
    func zeros(_ format: QuantizedFormat) {
        let q = QuantizedReference.quantize(format, [Float](repeating: 0, count: 256))
        var y = [Float](repeating: .nan, count: 256)
        q.withUnsafeBytes { QuantizedReference.dequantize(format, $0.baseAddress!, into: &y, count: 256) }
        #expect(y.allSatisfy { $0 == 0 })
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
