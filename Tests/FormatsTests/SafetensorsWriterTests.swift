import Foundation
import Kernels
import Testing
import TestSupport

@testable import Formats

@Suite struct SafetensorsWriterTests {
    static let shapes: [[Int]] = [[], [0], [1], [3, 5], [2, 3, 4], [4, 0, 2]]

    @Test(arguments: DType.allCases, shapes)
    func roundTripsEveryDTypeAndShape(dtype: DType, shape: [Int]) throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("t.safetensors")
        let tensor = sampleTensor(3, shape: shape, dtype: dtype)
        let other = sampleTensor(5, shape: [3], dtype: dtype)
        try SafetensorsWriter.write([("t", tensor), ("other", other)], to: url)

        let file = try SafetensorsFile(url: url)
        let read = try file.tensor("t")
        #expect(read.dtype == dtype)
        #expect(read.shape == shape)
        #expect(read.toFloatArray() == tensor.toFloatArray())
        #expect(try file.tensor("other").toFloatArray() == other.toFloatArray())
        #expect(file.entries["t"]?.dtypeName == dtype.rawValue)
        #expect(file.metadata.isEmpty)
    }

    @Test(arguments: [
        nil, [:], ["format": "pt"], ["b": "2", "a": "1", "quote\"and\\slash/": "é\n\t\u{01}😀"],
    ] as [[String: String]?])
    func roundTripsMetadata(metadata: [String: String]?) throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("m.safetensors")
        try SafetensorsWriter.write([("x", Tensor.owned([1, 2], shape: [2]))], metadata: metadata, to: url)
        let file = try SafetensorsFile(url: url)
        #expect(file.metadata == metadata ?? [:])
        let bytes = try [UInt8](Data(contentsOf: url))
        let header = String(decoding: bytes[8..<bytes.count - 8], as: UTF8.self)
        #expect(header.contains("__metadata__") == (metadata != nil))
    }

    @Test func headerIsPaddedAndEveryTensorAligned() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("mixed.safetensors")
        // An odd-length f16 tensor first would misalign the f32 ones after it; the writer
        // groups by decreasing element size instead (the reference does the same).
        let tensors: [(name: String, tensor: Tensor)] = [
            ("h", sampleTensor(1, shape: [3], dtype: .float16)),
            ("f", sampleTensor(2, shape: [5], dtype: .float32)),
            ("b", sampleTensor(3, shape: [1], dtype: .bfloat16)),
            ("g", sampleTensor(4, shape: [2], dtype: .float32)),
        ]
        try SafetensorsWriter.write(tensors, to: url)
        let bytes = try [UInt8](Data(contentsOf: url))
        let length = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(length % 8 == 0)
        #expect(bytes[8 + length - 1] == UInt8(ascii: " ") || bytes[8 + length - 1] == UInt8(ascii: "}"))

        let file = try SafetensorsFile(url: url)
        let order = file.entries.values.sorted { $0.dataRange.lowerBound < $1.dataRange.lowerBound }.map(\.name)
        #expect(order == ["f", "g", "h", "b"])
        for entry in file.entries.values {
            #expect((entry.dataRange.lowerBound - 8 - length) % (entry.dtype?.byteSize ?? 1) == 0)
            #expect(entry.dataRange.lowerBound % (entry.dtype?.byteSize ?? 1) == 0)
        }
        #expect(file.entries.values.map(\.dataRange.upperBound).max() == bytes.count)
        for (name, tensor) in tensors {
            #expect(try file.tensor(name).owner === file.mapping, "\(name) needed a copy")
            #expect(try file.tensor(name).toFloatArray() == tensor.toFloatArray())
        }
    }

    /// The reference writer orders tensors by dtype (F32, BF16, F16), then by name. Given that
    /// order, our file must be byte-for-byte the reference's, which also proves it reads ours.
    @Test func matchesTheReferenceWriterByteForByte() throws {
        let expected = try ReferenceExpectations.load()
        let spec = try #require(expected.files["reference_float"])
        let rank = ["F32": 0, "BF16": 1, "F16": 2]
        let names = spec.tensors.keys.sorted {
            (rank[spec.tensors[$0]?.dtype ?? ""] ?? 9, $0) < (rank[spec.tensors[$1]?.dtype ?? ""] ?? 9, $1)
        }
        var tensors: [(name: String, tensor: Tensor)] = []
        for name in names {
            let t = try #require(spec.tensors[name])
            let dtype = try #require(DType(rawValue: t.dtype))
            tensors.append((name, Tensor.owned(t.values, shape: t.shape, dtype: dtype)))
        }
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("ours.safetensors")
        try SafetensorsWriter.write(tensors, metadata: spec.metadata, to: url)
        let ours = try Data(contentsOf: url)
        let reference = try Data(contentsOf: Fixtures.url("safetensors/reference_float.safetensors"))
        #expect(ours == reference)
    }

    @Test func writesAtomicallyAndReplacesExistingFiles() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("w.safetensors")
        try Data("old contents".utf8).write(to: url)
        try SafetensorsWriter.write([("a", Tensor.owned([7], shape: [1]))], to: url)
        #expect(try SafetensorsFile(url: url).tensor("a").toFloatArray() == [7])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["w.safetensors"])

        // A failing write leaves neither a temporary file nor a partial destination.
        expectCheckpointError("invalidWriteRequest", mentioning: ["'a'", url.path]) {
            try SafetensorsWriter.write([("a", Tensor.owned([1], shape: [1])), ("a", Tensor.owned([2], shape: [1]))], to: url)
        }
        expectCheckpointError("invalidWriteRequest", mentioning: ["__metadata__"]) {
            try SafetensorsWriter.write([("__metadata__", Tensor.owned([1], shape: [1]))], to: url)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["w.safetensors"])
        #expect(try SafetensorsFile(url: url).tensor("a").toFloatArray() == [7])

        let nowhere = directory.appendingPathComponent("no/such/dir/x.safetensors")
        expectCheckpointError("io", mentioning: ["no/such/dir"]) {
            try SafetensorsWriter.write([("a", Tensor.owned([1], shape: [1]))], to: nowhere)
        }
    }

    @Test func writesAnEmptyFile() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("empty.safetensors")
        try SafetensorsWriter.write([], to: url)
        let file = try SafetensorsFile(url: url)
        #expect(file.entries.isEmpty)
    }

    /// Opt-in (`PREMOE_FIXTURE_OUT=DIR`): writes files for
    /// `scripts/make_safetensors_fixtures.py --check DIR`, so the reference library reads them.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["PREMOE_FIXTURE_OUT"] != nil))
    func writesFilesForTheReferenceToRead() throws {
        let out = URL(fileURLWithPath: ProcessInfo.processInfo.environment["PREMOE_FIXTURE_OUT"] ?? "")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let expected = try ReferenceExpectations.load()
        for (fileKey, target) in [("reference_float", "swift_written.safetensors"), ("sharded", "swift_sharded")] {
            let spec = try #require(expected.files[fileKey])
            var tensors: [(name: String, tensor: Tensor)] = []
            for name in spec.tensors.keys.sorted() {
                let t = try #require(spec.tensors[name])
                tensors.append((name, Tensor.owned(t.values, shape: t.shape, dtype: try #require(DType(rawValue: t.dtype)))))
            }
            if fileKey == "sharded" {
                try SafetensorsWriter.writeSharded(
                    tensors, metadata: spec.metadata, maxShardBytes: 100, to: out.appendingPathComponent(target))
            } else {
                try SafetensorsWriter.write(tensors.reversed(), metadata: spec.metadata, to: out.appendingPathComponent(target))
            }
        }
    }
}
