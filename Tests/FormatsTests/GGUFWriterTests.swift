import Foundation
import Kernels
import Testing
import TestSupport

@testable import Formats

@Suite struct GGUFWriterTests {
    /// The content of `Tests/Fixtures/gguf/swift_written.gguf`, the file gguf-py reads in
    /// `scripts/make_gguf_fixtures.py` (its findings are committed as `interop.json`).
    static func interopWriter() throws -> GGUFWriter {
        var w = GGUFWriter(alignment: 64)
        w.set("general.architecture", .string("llama"))
        w.set("general.name", .string("premoe interop ✓"))
        w.set("llama.block_count", .uint32(2))
        w.set("llama.rope.freq_base", .float32(10000))
        w.set("test.i64", .int64(-5))
        w.set("test.f64", .float64(0.125))
        w.set("test.bool", .bool(false))
        w.set("test.u8", .uint8(7))
        w.set("tokenizer.ggml.tokens", .strings(["<s>", "a", "b c"]))
        w.set("tokenizer.ggml.token_type", .int32s([3, 1, 1]))
        try w.add("f32", Tensor.owned([1, -2, 3.5, 4, 5, 6], shape: [2, 3]))
        try w.add("f16", Tensor.owned([0.5, -1, 2, 65504], shape: [4], dtype: .float16))
        try w.add("bf16", Tensor.owned([1, 2], shape: [1, 2], dtype: .bfloat16))
        let q = QuantizedReference.quantize(.q8_0, (0..<64).map { Float($0) / 8 - 4 })
        try w.add("q8", type: .q8_0, dimensions: [32, 2], bytes: q)
        return w
    }

    @Test func roundTripKeepsMetadataTensorsAndAlignment() throws {
        let dir = try Fixtures.temporaryDirectory()
        let url = dir.appendingPathComponent("rt.gguf")
        try Self.interopWriter().write(to: url)
        let f = try GGUFFile(url: url)
        #expect(f.alignment == 64)
        #expect(f.dataOffset % 64 == 0)
        #expect(f.metadataKeys.first == "general.alignment")
        #expect(try f.string("general.name") == "premoe interop ✓")
        #expect(f["test.i64"] == .int64(-5))
        #expect(f["test.f64"] == .float64(0.125))
        #expect(f["test.bool"] == .bool(false))
        #expect(f["llama.rope.freq_base"] == .float32(10000))
        #expect(try f.strings("tokenizer.ggml.tokens") == ["<s>", "a", "b c"])
        #expect(try f.ints("tokenizer.ggml.token_type") == [3, 1, 1])
        #expect(try f.tensor("f32").toFloatArray() == [1, -2, 3.5, 4, 5, 6])
        #expect(try f.tensor("f32").shape == [2, 3])
        #expect(f.info("f32")?.dimensions == [3, 2])
        #expect(try f.tensor("f16").toFloatArray() == [0.5, -1, 2, 65504])
        #expect(try f.tensor("bf16").toFloatArray() == [1, 2])
        for info in f.tensorInfos { #expect(info.offset % 64 == 0, "\(info.name)") }
        #expect(f.info("q8")?.type == .q8_0)
        #expect(Array(try f.rawBytes("q8")) == QuantizedReference.quantize(.q8_0, (0..<64).map { Float($0) / 8 - 4 }))
    }

    @Test func emptyArraysAndNestedArraysRoundTrip() throws {
        var w = GGUFWriter()
        w.set("empty", .array(.string, []))
        w.set("nested", .array(.array, [.int32s([1, 2]), .int32s([])]))
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("e.gguf")
        try w.write(to: url)
        let f = try GGUFFile(url: url)
        #expect(f["empty"] == .array(.string, []))
        #expect(f["nested"] == .array(.array, [.int32s([1, 2]), .int32s([])]))
        #expect(f.tensorInfos.isEmpty)
    }

    @Test func rejectsBadRequests() throws {
        var w = GGUFWriter()
        try w.add("x", Tensor.owned([1, 2], shape: [2]))
        #expect(throws: GGUFError.self) { try w.add("x", Tensor.owned([1], shape: [1])) }
        #expect(throws: GGUFError.self) { try w.add("q", type: .q8_0, dimensions: [33], bytes: [UInt8](repeating: 0, count: 34)) }
        #expect(throws: GGUFError.self) { try w.add("q", type: .q8_0, dimensions: [32], bytes: [UInt8](repeating: 0, count: 33)) }
        #expect(throws: GGUFError.self) { try w.add("u", type: GGMLType(rawValue: 99), dimensions: [1], bytes: [0]) }
        #expect(throws: GGUFError.self) { try w.add("d", type: .f32, dimensions: [1, 1, 1, 1, 1], bytes: [0, 0, 0, 0]) }
    }

    /// Our writer's bytes are pinned by the committed fixture, which gguf-py read when the
    /// fixtures were made (`interop.json`); set PREMOE_WRITE_GGUF_FIXTURES=1 to rewrite it.
    @Test func writerOutputIsTheFileGGUFPyRead() throws {
        let committed = Fixtures.url("gguf/swift_written.gguf")
        if ProcessInfo.processInfo.environment["PREMOE_WRITE_GGUF_FIXTURES"] == "1" {
            try Self.interopWriter().write(to: committed)
        }
        let dir = try Fixtures.temporaryDirectory()
        let url = dir.appendingPathComponent("now.gguf")
        try Self.interopWriter().write(to: url)
        #expect(try Data(contentsOf: url) == Data(contentsOf: committed))

        struct Interop: Decodable {
            struct T: Decodable { let type: String; let ne: [Int]; let values: [Double] }
            let alignment: Int
            let tensors: [String: T]
        }
        let interop = try Fixtures.json(Interop.self, "gguf/interop.json")
        let raw = try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("gguf/interop.json"))) as? [String: Any]
        let metadata = try #require(raw?["metadata"] as? [String: Any])
        #expect(interop.alignment == 64)
        #expect(metadata["general.name"] as? String == "premoe interop ✓")
        #expect(metadata["tokenizer.ggml.tokens"] as? [String] == ["<s>", "a", "b c"])
        #expect(metadata["tokenizer.ggml.token_type"] as? [Int] == [3, 1, 1])
        #expect(metadata["test.i64"] as? Int == -5)
        #expect(metadata["test.bool"] as? Bool == false)
        #expect(interop.tensors["f32"]?.ne == [3, 2])
        #expect(interop.tensors["f32"]?.values == [1, -2, 3.5, 4, 5, 6])
        #expect(interop.tensors["f16"]?.values == [0.5, -1, 2, 65504])
        #expect(interop.tensors["bf16"]?.type == "BF16")
        #expect(interop.tensors["q8"]?.type == "Q8_0")
        let ours = QuantizedReference.quantize(.q8_0, (0..<64).map { Float($0) / 8 - 4 })
        var deq = [Float](repeating: 0, count: 64)
        ours.withUnsafeBytes { QuantizedReference.dequantize(.q8_0, $0.baseAddress!, into: &deq, count: 64) }
        #expect(interop.tensors["q8"]?.values.map { Float($0) } .elementsEqual(deq) { abs($0 - $1) < 1e-5 } == true)
    }

    /// Tensors made by producers at write time give the same file as the same tensors added up
    /// front; producers run only during `write`, once each, in tensor order.
    @Test func deferredTensorsWriteTheSameBytes() throws {
        let eager = try Self.interopWriter()
        var deferred = GGUFWriter(alignment: 64)
        for (key, value) in eager.metadata where key != "general.alignment" { deferred.set(key, value) }
        let calls = Counter()
        for (i, e) in eager.entries.enumerated() {
            guard case .bytes(let bytes, let owner) = e.data else { Issue.record("eager entry \(e.name)"); continue }
            try deferred.add(e.name, type: e.type, dimensions: e.dimensions) {
                calls.append(i)
                let dtype: DType = switch e.type {
                case .f32: .float32
                case .f16: .float16
                case .bf16: .bfloat16
                default: .q8_0
                }
                return Tensor(dtype: dtype, shape: e.dimensions.reversed(), data: bytes.baseAddress!, owner: owner)
            }
        }
        #expect(calls.values.isEmpty)
        let dir = try Fixtures.temporaryDirectory()
        try eager.write(to: dir.appendingPathComponent("eager.gguf"))
        try deferred.write(to: dir.appendingPathComponent("deferred.gguf"))
        #expect(calls.values == Array(eager.entries.indices))
        #expect(try Data(contentsOf: dir.appendingPathComponent("deferred.gguf"))
            == Data(contentsOf: dir.appendingPathComponent("eager.gguf")))
    }

    @Test func aProducerMakingTheWrongTensorFailsTheWrite() throws {
        var w = GGUFWriter()
        try w.add("x", type: .f32, dimensions: [3]) { Tensor.owned([1, 2], shape: [2]) }
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("bad.gguf")
        #expect(throws: GGUFError.self) { try w.write(to: url) }
        #expect(!FileManager.default.fileExists(atPath: url.path))
        var typed = GGUFWriter()
        try typed.add("y", type: .f16, dimensions: [2]) { Tensor.owned([1, 2], shape: [2]) }
        #expect(throws: GGUFError.self) { try typed.write(to: url) }
        var duplicate = GGUFWriter()
        try duplicate.add("z", type: .f32, dimensions: [1]) { Tensor.owned([1], shape: [1]) }
        #expect(throws: GGUFError.self) { try duplicate.add("z", type: .f32, dimensions: [1]) { Tensor.owned([1], shape: [1]) } }
    }
}

/// Records producer calls.
private final class Counter: @unchecked Sendable {
    private(set) var values: [Int] = []
    func append(_ v: Int) { values.append(v) }
}
