import Foundation
import Kernels
import Testing
import TestSupport

@testable import Formats

/// Builds GGUF bytes field by field, so tests can break any part of a file.
struct RawGGUF {
    var magic = Array("GGUF".utf8)
    var version: UInt32 = 3
    var tensorCount: UInt64?
    var kvCount: UInt64?
    /// Raw bytes of each metadata entry (key, type, value).
    var kvs: [[UInt8]] = []
    struct Info { var name: String; var dims: [Int64]; var type: UInt32; var offset: UInt64 }
    var infos: [Info] = []
    var alignment = 32
    var data: [UInt8] = []
    /// Cut the file to this many bytes.
    var truncateTo: Int?

    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func str(_ s: String) -> [UInt8] { u64(UInt64(s.utf8.count)) + Array(s.utf8) }
    static func kv(_ key: String, type: UInt32, _ value: [UInt8]) -> [UInt8] { str(key) + u32(type) + value }

    /// A valid file: two F32 tensors `a` [2, 3] and `b` [4] and one string key.
    static func valid() -> RawGGUF {
        var g = RawGGUF()
        g.kvs = [kv("general.architecture", type: 8, str("llama"))]
        g.infos = [Info(name: "a", dims: [3, 2], type: 0, offset: 0), Info(name: "b", dims: [4], type: 0, offset: 32)]
        g.data = f32Bytes([1, 2, 3, 4, 5, 6]) + [UInt8](repeating: 0, count: 8) + f32Bytes([7, 8, 9, 10])
        return g
    }

    var bytes: [UInt8] {
        var out = magic + Self.u32(version) + Self.u64(tensorCount ?? UInt64(infos.count)) + Self.u64(kvCount ?? UInt64(kvs.count))
        for kv in kvs { out += kv }
        for i in infos {
            out += Self.str(i.name) + Self.u32(UInt32(i.dims.count))
            for d in i.dims { out += Self.u64(UInt64(bitPattern: d)) }
            out += Self.u32(i.type) + Self.u64(i.offset)
        }
        out += [UInt8](repeating: 0, count: (alignment - out.count % alignment) % alignment)
        out += data
        if let truncateTo { out = Array(out.prefix(truncateTo)) }
        return out
    }
}

/// What a broken file must throw: the error's case name, and a text its description must contain
/// (besides the file path, which every error names).
struct BrokenGGUF: CustomStringConvertible, Sendable {
    let name: String
    let expected: String
    let mentions: String
    let make: @Sendable () -> [UInt8]
    /// The file opens; reading this tensor throws.
    var onAccess: String? = nil
    var description: String { name }
}

let brokenGGUFFiles: [BrokenGGUF] = [
    BrokenGGUF(name: "empty file", expected: "badMagic", mentions: "shorter than", make: { [] }),
    BrokenGGUF(name: "three bytes", expected: "badMagic", mentions: "GGU", make: { Array("GGU".utf8) }),
    BrokenGGUF(name: "safetensors file", expected: "badMagic", mentions: "not a GGUF file", make: {
        var g = RawGGUF.valid(); g.magic = [0x20, 0, 0, 0]; return g.bytes }),
    BrokenGGUF(name: "version 1", expected: "unsupportedVersion", mentions: "version 1", make: {
        var g = RawGGUF.valid(); g.version = 1; return g.bytes }),
    BrokenGGUF(name: "big-endian", expected: "unsupportedVersion", mentions: "big-endian", make: {
        var g = RawGGUF.valid(); g.version = UInt32(3).byteSwapped; return g.bytes }),
    BrokenGGUF(name: "cut in the counts", expected: "truncated", mentions: "tensor count", make: {
        var g = RawGGUF.valid(); g.truncateTo = 12; return g.bytes }),
    BrokenGGUF(name: "cut in a key", expected: "truncated", mentions: "metadata key #0", make: {
        var g = RawGGUF.valid(); g.infos = []; g.data = []; g.truncateTo = 37; return g.bytes }),
    BrokenGGUF(name: "cut in a tensor info", expected: "truncated", mentions: "'a'", make: {
        var g = RawGGUF.valid(); g.truncateTo = 86; return g.bytes }),
    BrokenGGUF(name: "absurd tensor count", expected: "truncated", mentions: "entries of tensor count", make: {
        var g = RawGGUF.valid(); g.tensorCount = UInt64.max; return g.bytes }),
    BrokenGGUF(name: "absurd metadata count", expected: "truncated", mentions: "metadata count", make: {
        var g = RawGGUF.valid(); g.kvCount = 1 << 40; return g.bytes }),
    BrokenGGUF(name: "string longer than the file", expected: "truncated", mentions: "string", make: {
        var g = RawGGUF.valid(); g.kvs = [RawGGUF.kv("k", type: 8, RawGGUF.u64(1 << 50))]; return g.bytes }),
    BrokenGGUF(name: "array longer than the file", expected: "truncated", mentions: "elements of 'k'", make: {
        var g = RawGGUF.valid(); g.kvs = [RawGGUF.kv("k", type: 9, RawGGUF.u32(4) + RawGGUF.u64(1 << 40))]; return g.bytes }),
    BrokenGGUF(name: "tensor data past the end", expected: "tensorDataOutOfBounds", mentions: "'b'", make: {
        var g = RawGGUF.valid(); g.data.removeLast(4); return g.bytes }),
    BrokenGGUF(name: "offset past the end", expected: "tensorDataOutOfBounds", mentions: "'b'", make: {
        var g = RawGGUF.valid(); g.infos[1].offset = 1 << 40; return g.bytes }),
    BrokenGGUF(name: "misaligned tensor", expected: "misalignedTensor", mentions: "'b'", make: {
        var g = RawGGUF.valid(); g.infos[1].offset = 24; return g.bytes }),
    BrokenGGUF(name: "overlapping tensors", expected: "overlappingTensors", mentions: "'b'", make: {
        var g = RawGGUF.valid(); g.infos[1].offset = 0; return g.bytes }),
    BrokenGGUF(name: "duplicate tensor", expected: "duplicateTensor", mentions: "'a'", make: {
        var g = RawGGUF.valid(); g.infos[1].name = "a"; return g.bytes }),
    BrokenGGUF(name: "duplicate key", expected: "duplicateKey", mentions: "general.architecture", make: {
        var g = RawGGUF.valid(); g.kvs += g.kvs; return g.bytes }),
    BrokenGGUF(name: "unknown value type", expected: "invalidValueType", mentions: "type 13", make: {
        var g = RawGGUF.valid(); g.kvs = [RawGGUF.kv("k", type: 13, [])]; return g.bytes }),
    BrokenGGUF(name: "alignment not a power of two", expected: "invalidMetadata", mentions: "general.alignment", make: {
        var g = RawGGUF.valid(); g.kvs.append(RawGGUF.kv("general.alignment", type: 4, RawGGUF.u32(24))); return g.bytes }),
    BrokenGGUF(name: "alignment as a string", expected: "metadataTypeMismatch", mentions: "general.alignment", make: {
        var g = RawGGUF.valid(); g.kvs.append(RawGGUF.kv("general.alignment", type: 8, RawGGUF.str("32"))); return g.bytes }),
    BrokenGGUF(name: "bool byte 2", expected: "invalidMetadata", mentions: "bool byte", make: {
        var g = RawGGUF.valid(); g.kvs = [RawGGUF.kv("k", type: 7, [2])]; return g.bytes }),
    BrokenGGUF(name: "key not UTF-8", expected: "invalidMetadata", mentions: "UTF-8", make: {
        var g = RawGGUF.valid(); g.kvs = [RawGGUF.u64(2) + [0xC3, 0x28] + RawGGUF.u32(7) + [1]]; return g.bytes }),
    BrokenGGUF(name: "arrays nested too deep", expected: "invalidMetadata", mentions: "nested", make: {
        var g = RawGGUF.valid()
        var value: [UInt8] = RawGGUF.u32(4) + RawGGUF.u64(0)
        for _ in 0..<6 { value = RawGGUF.u32(9) + RawGGUF.u64(1) + value }
        g.kvs = [RawGGUF.kv("deep", type: 9, value)]
        return g.bytes
    }),
    BrokenGGUF(name: "five dimensions", expected: "invalidTensorInfo", mentions: "5 dimensions", make: {
        var g = RawGGUF.valid(); g.infos[0].dims = [1, 1, 1, 3, 2]; return g.bytes }),
    BrokenGGUF(name: "negative dimension", expected: "invalidTensorInfo", mentions: "negative", make: {
        var g = RawGGUF.valid(); g.infos[0].dims = [-3, 2]; return g.bytes }),
    BrokenGGUF(name: "overflowing size", expected: "invalidTensorInfo", mentions: "overflows", make: {
        var g = RawGGUF.valid(); g.infos[0].dims = [1 << 40, 1 << 40]; return g.bytes }),
    BrokenGGUF(name: "row not whole blocks", expected: "invalidTensorInfo", mentions: "block size 32", make: {
        var g = RawGGUF.valid(); g.infos[0].dims = [33, 1]; g.infos[0].type = 8; return g.bytes }),
    BrokenGGUF(name: "unknown GGML type", expected: "unknownType", mentions: "type 99", make: {
        var g = RawGGUF.valid(); g.infos[0].type = 99; return g.bytes }),
    // Found by mutating fixture GGUFs (issue 12): `inspect` tried to allocate 16 EB.
    BrokenGGUF(name: "flipped bytes: huge dim, unknown type", expected: "unknownType", mentions: "type 13835", make: {
        var g = RawGGUF.valid(); g.infos[0].dims = [64, 32, 9_187_343_239_835_811_848]; g.infos[0].type = 13835; return g.bytes }),
    BrokenGGUF(name: "flipped bytes: huge dim, F16", expected: "invalidTensorInfo", mentions: "overflows", make: {
        var g = RawGGUF.valid(); g.infos[0].dims = [64, 32, 9_187_343_239_835_811_848]; g.infos[0].type = 1; return g.bytes }),
    BrokenGGUF(name: "element count overflows, bytes would not", expected: "invalidTensorInfo", mentions: "element count", make: {
        var g = RawGGUF.valid(); g.infos[0].dims = [1 << 61, 4]; g.infos[0].type = 2; return g.bytes }),
    BrokenGGUF(name: "type the kernels lack", expected: "unsupportedType", mentions: "Q3_K", make: {
        var g = RawGGUF.valid(); g.infos[0].dims = [256, 1]; g.infos[0].type = 11
        g.infos[1].offset = 128; g.data = [UInt8](repeating: 0, count: 128) + f32Bytes([7, 8, 9, 10]); return g.bytes
    }, onAccess: "a"),
    BrokenGGUF(name: "unknown tensor name", expected: "unknownTensor", mentions: "Did you mean 'a'", make: {
        RawGGUF.valid().bytes }, onAccess: "a_"),
]

@Suite struct GGUFFileTests {
    @Test func validFileReadsMetadataTensorsAndAlignment() throws {
        let dir = try Fixtures.temporaryDirectory()
        let url = try writeFile(RawGGUF.valid().bytes, "ok.gguf", in: dir)
        let f = try GGUFFile(url: url)
        #expect(f.version == 3)
        #expect(f.architecture == "llama")
        #expect(f.alignment == 32)
        #expect(f.dataOffset % 32 == 0)
        #expect(f.tensorNames == ["a", "b"])
        let a = try f.tensor("a")
        #expect(a.shape == [2, 3])
        #expect(a.dtype == .float32)
        #expect(a.toFloatArray() == [1, 2, 3, 4, 5, 6])
        #expect(try f.tensor("b").toFloatArray() == [7, 8, 9, 10])
        #expect(try f.readRows("a", rows: 1..<2).toFloatArray() == [4, 5, 6])
        #expect(f.bytesRead == 12)
        #expect(throws: GGUFError.self) { try f.readRows("a", rows: 1..<3) }
    }

    @Test(arguments: brokenGGUFFiles)
    func brokenFileThrowsNamingFileAndCause(_ c: BrokenGGUF) throws {
        let dir = try Fixtures.temporaryDirectory()
        let url = try writeFile(c.make(), "broken.gguf", in: dir)
        do {
            let f = try GGUFFile(url: url)
            guard let tensor = c.onAccess else {
                Issue.record("\(c.name): opened without error")
                return
            }
            _ = try f.tensor(tensor)
            Issue.record("\(c.name): reading '\(tensor)' did not throw")
        } catch let error as GGUFError {
            let text = error.description
            #expect(Mirror(reflecting: error).children.first?.label == c.expected, "\(c.name): got \(error)")
            #expect(text.contains(url.path), "\(c.name): \(text)")
            #expect(text.contains(c.mentions), "\(c.name): \(text)")
        }
    }

    @Test func smallAlignmentCopiesMisalignedFloats() throws {
        var g = RawGGUF.valid()
        g.kvs.append(RawGGUF.kv("general.alignment", type: 4, RawGGUF.u32(1)))
        g.alignment = 1
        g.infos[1].offset = 26  // a 2-byte F16 tensor at 24 pushes b off 4-byte alignment
        g.infos.insert(.init(name: "h", dims: [1], type: 1, offset: 24), at: 1)
        g.data = f32Bytes([1, 2, 3, 4, 5, 6]) + [0x00, 0x3C] + f32Bytes([7, 8, 9, 10])
        // Pad the header so the data section itself starts aligned: only b is off.
        let dir = try Fixtures.temporaryDirectory()
        let url = try writeFile(g.bytes, "a1.gguf", in: dir)
        let f = try GGUFFile(url: url)
        let b = try f.tensor("b")
        #expect(b.toFloatArray() == [7, 8, 9, 10])
        #expect(Int(bitPattern: b.data) % 4 == 0)
        #expect(try f.tensor("h").toFloatArray() == [1])
    }

    /// A file written by gguf-py (`scripts/make_gguf_fixtures.py`): every metadata type.
    @Test func readsFileWrittenByGGUFPy() throws {
        let f = try GGUFFile(url: Fixtures.url("gguf/gguf_py_written.gguf"))
        #expect(f["test.u8"] == .uint8(200))
        #expect(f["test.i8"] == .int8(-100))
        #expect(f["test.u16"] == .uint16(60000))
        #expect(f["test.i16"] == .int16(-30000))
        #expect(f["test.u32"] == .uint32(4_000_000_000))
        #expect(f["test.i32"] == .int32(-2_000_000_000))
        #expect(f["test.f32"] == .float32(1.5))
        #expect(f["test.u64"] == .uint64(1 << 63 + 5))
        #expect(f["test.i64"] == .int64(-(1 << 62)))
        #expect(f["test.f64"] == .float64(-2.25))
        #expect(f["test.bool"] == .bool(true))
        #expect(try f.string("test.string") == "héllo ✓")
        #expect(try f.strings("test.strings") == ["a", "", "ünï"])
        #expect(try f.ints("test.ints") == [1, -2, 3])
        #expect(f["test.empty"] == nil)  // gguf-py 0.19 drops empty arrays
        #expect(throws: GGUFError.self) { try f.int("test.string") }
        #expect(f.architecture == "llama")
        #expect(try f.tensor("f32").shape == [3, 5])
        #expect(try f.tensor("f16").dtype == .float16)
        #expect(try f.tensor("vec").toFloatArray() == (0..<7).map(Float.init))
        #expect(f.info("q8")?.type == .q8_0)
        #expect(f.info("q8")?.shape == [2, 64])
        #expect(f.info("q8")?.byteCount == 2 * 2 * 34)
    }

    /// The real SmolLM2-135M Q4_1 file, when `PREMOE_SMOLLM2_GGUF` names it (opt-in).
    @Test(.enabled(if: Fixtures.hasSmolLM2GGUF, "PREMOE_SMOLLM2_GGUF names no file (opt-in)"))
    func readsSmolLM2HeaderWhenAvailable() throws {
        let url = try #require(Fixtures.smolLM2GGUF())
        let f = try GGUFFile(url: url)
        #expect(f.architecture == "llama")
        #expect(f.tensorInfos.count == 272)
        #expect(try f.strings("tokenizer.ggml.tokens")?.count == 49152)
        #expect(f.info("token_embd.weight")?.type == .q8_0)
        #expect(f.info("blk.0.attn_q.weight")?.type == .q4_1)
    }
}
