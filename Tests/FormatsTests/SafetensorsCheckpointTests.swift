import Foundation
import Kernels
import Testing
import TestSupport

@testable import Formats

/// A broken model directory: files to create, and what opening it (then reading `access`) must throw.
struct BrokenCheckpoint: Sendable, CustomTestStringConvertible {
    let label: String
    let files: [String: [UInt8]]
    var access: String? = nil
    let expected: String
    let mentions: [String]

    var testDescription: String { label }
}

private func tinyFile(_ names: [String]) -> [UInt8] {
    let entries = names.enumerated().map { i, name in
        "\"\(name)\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\(4 * i),\(4 * i + 4)]}"
    }
    return rawSafetensors("{" + entries.joined(separator: ",") + "}", data: f32Bytes(names.indices.map { Float($0) }))
}

private func index(_ map: [String: String]) -> [UInt8] {
    Array(("{\"metadata\":{},\"weight_map\":{" + map.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }
        .joined(separator: ",") + "}}").utf8)
}

private let indexName = "model.safetensors.index.json"

let brokenCheckpoints: [BrokenCheckpoint] = [
    BrokenCheckpoint(label: "empty directory", files: [:], expected: "noSafetensorsFiles", mentions: ["no model.safetensors"]),
    BrokenCheckpoint(label: "index naming a missing shard",
        files: [indexName: index(["a": "s-1.safetensors", "b": "s-2.safetensors"]), "s-1.safetensors": tinyFile(["a"])],
        expected: "missingShard", mentions: ["'s-2.safetensors'", "'b'"]),
    BrokenCheckpoint(label: "index that is not JSON", files: [indexName: Array("{\"weight_map\": ".utf8)],
        expected: "invalidIndex", mentions: [indexName]),
    BrokenCheckpoint(label: "index without weight_map", files: [indexName: Array("{\"metadata\": {}}".utf8)],
        expected: "invalidIndex", mentions: [indexName, "weight_map"]),
    BrokenCheckpoint(label: "index listing a tensor twice (two shards)",
        files: [
            indexName: Array(#"{"weight_map": {"a": "s-1.safetensors", "a": "s-2.safetensors"}}"#.utf8),
            "s-1.safetensors": tinyFile(["a"]), "s-2.safetensors": tinyFile(["a"]),
        ],
        expected: "invalidIndex", mentions: [indexName, "'a'", "twice"]),
    BrokenCheckpoint(label: "index pointing outside the directory",
        files: [indexName: index(["a": "../elsewhere.safetensors"])], expected: "invalidIndex",
        mentions: ["'a'", "../elsewhere.safetensors"]),
    BrokenCheckpoint(label: "index maps a tensor to a shard that lacks it",
        files: [indexName: index(["a": "s-1.safetensors", "zz": "s-1.safetensors"]), "s-1.safetensors": tinyFile(["a"])],
        access: "zz", expected: "indexMismatch", mentions: [indexName, "'zz'", "s-1.safetensors"]),
    BrokenCheckpoint(label: "corrupt shard, found when its tensor is read",
        files: [indexName: index(["a": "s-1.safetensors", "b": "s-2.safetensors"]), "s-1.safetensors": tinyFile(["a"]),
            "s-2.safetensors": [1, 2, 3]],
        access: "b", expected: "fileTooSmall", mentions: ["s-2.safetensors"]),
    BrokenCheckpoint(label: "a name in two files (no index)",
        files: ["a.safetensors": tinyFile(["x", "shared"]), "b.safetensors": tinyFile(["shared", "y"])],
        expected: "tensorInSeveralFiles", mentions: ["'shared'", "a.safetensors", "b.safetensors"]),
    BrokenCheckpoint(label: "incomplete shard set (no index)",
        files: ["model-00001-of-00003.safetensors": tinyFile(["a"]), "model-00003-of-00003.safetensors": tinyFile(["c"])],
        expected: "missingShard", mentions: ["'model-00002-of-00003.safetensors'"]),
    BrokenCheckpoint(label: "unknown tensor", files: ["model.safetensors": tinyFile(["model.norm.weight"])],
        access: "model.norm.wieght", expected: "unknownTensor", mentions: ["'model.norm.wieght'", "'model.norm.weight'"]),
]

@Suite struct SafetensorsCheckpointTests {
    @Test(arguments: brokenCheckpoints)
    func brokenCheckpointThrows(_ broken: BrokenCheckpoint) throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for (name, bytes) in broken.files { try writeFile(bytes, name, in: directory) }
        expectCheckpointError(broken.expected, mentioning: broken.mentions + [directory.lastPathComponent]) {
            let checkpoint = try SafetensorsCheckpoint(directory: directory)
            if let name = broken.access {
                _ = try checkpoint.entry(name)
                _ = try checkpoint.tensor(name)
            }
        }
    }

    @Test func unknownTensorIsNilForEntryAndThrowsForTensor() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try writeFile(tinyFile(["a"]), "model.safetensors", in: directory)
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        #expect(try checkpoint.entry("b") == nil)
        #expect(!checkpoint.contains("b"))
        expectCheckpointError("unknownTensor", mentioning: ["'b'", directory.path]) { _ = try checkpoint.tensor("b") }
        expectCheckpointError("unknownTensor", mentioning: ["'b'"]) { _ = try checkpoint.readRows("b", rows: 0..<1) }
    }

    @Test func readsTheReferenceShardedCheckpoint() throws {
        let expected = try ReferenceExpectations.load()
        let spec = try #require(expected.files["sharded"])
        let checkpoint = try SafetensorsCheckpoint(directory: Fixtures.url("safetensors/sharded"))
        #expect(checkpoint.indexURL?.lastPathComponent == indexName)
        #expect(checkpoint.files.count == 4)
        #expect(checkpoint.tensorNames == spec.tensors.keys.sorted())
        for (name, t) in spec.tensors {
            #expect(checkpoint.contains(name))
            let entry = try #require(try checkpoint.entry(name))
            #expect(entry.dtypeName == t.dtype)
            #expect(entry.shape == t.shape)
            #expect(try checkpoint.tensor(name).toFloatArray() == t.values, "\(name)")
            #expect(try checkpoint.readRows(name, rows: 0..<t.shape[0]).toFloatArray() == t.values, "\(name)")
        }
    }

    /// The shard split must be huggingface_hub's: same tensors, same limit, same weight_map.
    @Test func writeShardedSplitsLikeTheReference() throws {
        let expected = try ReferenceExpectations.load()
        let spec = try #require(expected.files["sharded"])
        let referenceIndex = try JSONValue(contentsOf: Fixtures.url("safetensors/sharded/\(indexName)"))
        // huggingface_hub keeps the state dict's insertion order, which for our fixture is sorted.
        var tensors: [(name: String, tensor: Tensor)] = []
        for name in spec.tensors.keys.sorted() {
            let t = try #require(spec.tensors[name])
            tensors.append((name, Tensor.owned(t.values, shape: t.shape, dtype: try #require(DType(rawValue: t.dtype)))))
        }
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let urls = try SafetensorsWriter.writeSharded(tensors, metadata: ["format": "pt"], maxShardBytes: 100, to: directory)
        #expect(urls.map(\.lastPathComponent) == (1...4).map { "model-0000\($0)-of-00004.safetensors" })
        let ourIndex = try JSONValue(contentsOf: directory.appendingPathComponent(indexName))
        #expect(ourIndex["weight_map"] == referenceIndex["weight_map"])
        #expect(ourIndex["metadata"]?["total_size"] == referenceIndex["metadata"]?["total_size"])
        #expect(ourIndex["metadata"]?["total_parameters"]?.intValue == tensors.reduce(0) { $0 + $1.tensor.count })
        for url in urls {
            let shardName = url.lastPathComponent
            let ours = try Data(contentsOf: url)
            let theirs = try Data(contentsOf: Fixtures.url("safetensors/sharded/\(shardName)"))
            #expect(ours == theirs, "\(shardName) differs from the reference's")
        }
    }

    @Test func indexFileIsFormattedLikeTransformers() {
        let text = SafetensorsWriter.indexJSON(
            weightMap: ["b.w": "model-00002-of-00002.safetensors", "a.é": "model-00001-of-00002.safetensors"],
            totalSize: 40, totalParameters: 10)
        #expect(
            text == """
                {
                  "metadata": {
                    "total_parameters": 10,
                    "total_size": 40
                  },
                  "weight_map": {
                    "a.\\u00e9": "model-00001-of-00002.safetensors",
                    "b.w": "model-00002-of-00002.safetensors"
                  }
                }

                """)
    }

    @Test(arguments: [1, 50, 200, 1 << 30])
    func shardedWriteReadRoundTrip(maxShardBytes: Int) throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let tensors: [(name: String, tensor: Tensor)] = [
            ("embed", sampleTensor(1, shape: [5, 4], dtype: .bfloat16)),
            ("layers.0.experts", sampleTensor(2, shape: [4, 3, 2], dtype: .float32)),
            ("layers.0.norm", sampleTensor(3, shape: [4], dtype: .float16)),
            ("scalar", sampleTensor(4, shape: [], dtype: .float32)),
            ("empty", sampleTensor(5, shape: [0], dtype: .float32)),
        ]
        let urls = try SafetensorsWriter.writeSharded(tensors, maxShardBytes: maxShardBytes, to: directory)
        let hasIndex = FileManager.default.fileExists(atPath: directory.appendingPathComponent(indexName).path)
        #expect(hasIndex == (urls.count > 1))
        if urls.count == 1 { #expect(urls[0].lastPathComponent == "model.safetensors") }
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        #expect(checkpoint.tensorNames == tensors.map(\.name).sorted())
        for (name, tensor) in tensors {
            let read = try checkpoint.tensor(name)
            #expect(read.shape == tensor.shape)
            #expect(read.dtype == tensor.dtype)
            #expect(read.toFloatArray() == tensor.toFloatArray())
        }
    }

    @Test func readRowsReadsExactlyTheKeptExperts() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let experts = 6, rows = 3, cols = 5
        let stacked = Tensor.owned((0..<(experts * rows * cols)).map(Float.init), shape: [experts, rows, cols])
        let perExpertBF16 = (0..<experts).map { sampleTensor($0, shape: [2, 4], dtype: .bfloat16) }
        var tensors: [(name: String, tensor: Tensor)] = [("experts.up", stacked)]
        for (e, t) in perExpertBF16.enumerated() { tensors.append(("experts.\(e).down", t)) }
        tensors.append(("bias", Tensor.owned([1, 2, 3, 4, 5], shape: [5])))
        tensors.append(("scale", Tensor.owned([9], shape: [])))
        try SafetensorsWriter.writeSharded(tensors, maxShardBytes: 128, to: directory)
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        #expect(checkpoint.files.count > 1)
        #expect(checkpoint.bytesRead == 0)

        let kept = [1, 4]
        var expectedBytes = 0
        for e in kept {
            let one = try checkpoint.readRows("experts.up", rows: e..<(e + 1))
            #expect(one.shape == [1, rows, cols])
            #expect(one.toFloatArray() == stacked.rows(e..<(e + 1)).toFloatArray())
            #expect(one.owner is TensorBuffer)
            expectedBytes += rows * cols * 4
            #expect(checkpoint.bytesRead == expectedBytes)

            let down = try checkpoint.readRows("experts.\(e).down", rows: 0..<2)
            #expect(down.shape == [2, 4])
            #expect(down.dtype == .bfloat16)
            #expect(down.toFloatArray() == perExpertBF16[e].toFloatArray())
            expectedBytes += 2 * 4 * 2
            #expect(checkpoint.bytesRead == expectedBytes)
        }
        let block = try checkpoint.readRows("experts.up", rows: 2..<5)
        #expect(block.toFloatArray() == Array(stacked.toFloatArray()[(2 * rows * cols)..<(5 * rows * cols)]))
        expectedBytes += 3 * rows * cols * 4

        // A 1-D tensor's rows are its elements; a scalar has the single row 0..<1.
        #expect(try checkpoint.readRows("bias", rows: 1..<3).toFloatArray() == [2, 3])
        #expect(try checkpoint.readRows("scale", rows: 0..<1).toFloatArray() == [9])
        #expect(try checkpoint.readRows("experts.up", rows: 3..<3).count == 0)
        expectedBytes += 8 + 4
        #expect(checkpoint.bytesRead == expectedBytes)

        for bad in [5..<7, -1..<1, 0..<(experts + 1)] {
            expectCheckpointError("rowsOutOfRange", mentioning: ["'experts.up'", "\(bad)"]) {
                _ = try checkpoint.readRows("experts.up", rows: bad)
            }
        }
        expectCheckpointError("rowsOutOfRange", mentioning: ["'scale'"]) { _ = try checkpoint.readRows("scale", rows: 0..<2) }
        #expect(checkpoint.bytesRead == expectedBytes)
    }

    /// A batch read returns what one-at-a-time reads return, in request order, whatever the reads
    /// in flight and whether it bypasses the page cache (tensors straddling 4 KiB pages, one
    /// ending the file, odd-sized bf16 ones); bad requests fail before anything is counted.
    @Test(arguments: [(1, false), (3, false), (8, true), (3, true)])
    func batchReadsMatchSingleReads(concurrency: Int, direct: Bool) throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let stacked = sampleTensor(1, shape: [6, 3, 700], dtype: .float32)
        var tensors: [(name: String, tensor: Tensor)] = [("experts.up", stacked)]
        for e in 0..<5 { tensors.append(("experts.\(e).down", sampleTensor(10 + e, shape: [3, 333], dtype: .bfloat16))) }
        tensors.append(("tail", sampleTensor(20, shape: [3000], dtype: .float32)))
        try SafetensorsWriter.writeSharded(tensors, maxShardBytes: 40_000, to: directory)
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        #if os(Linux)
            // Out of the page cache (the writer synced them), so `direct` reads really bypass it.
            for file in checkpoint.files {
                let fd = open(file.path, O_RDONLY)
                if fd >= 0 { _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); close(fd) }
            }
        #endif
        let requests: [(name: String, rows: Range<Int>)] = [
            ("experts.up", 4..<5), ("experts.3.down", 0..<3), ("experts.up", 0..<2), ("tail", 0..<3000),
            ("experts.0.down", 1..<3), ("experts.up", 5..<6), ("tail", 2999..<3000),
        ]
        let batch = try checkpoint.readRows(requests, concurrency: concurrency, direct: direct)
        let batchBytes = checkpoint.bytesRead
        #expect(batch.count == requests.count)
        var singleBytes = 0
        for (request, tensor) in zip(requests, batch) {
            let single = try checkpoint.readRows(request.name, rows: request.rows)
            #expect(tensor.shape == single.shape && tensor.dtype == single.dtype, "\(request)")
            #expect(tensor.toFloatArray() == single.toFloatArray(), "\(request)")
            singleBytes += single.byteCount
        }
        #expect(batchBytes == singleBytes)
        expectCheckpointError("rowsOutOfRange", mentioning: ["'experts.up'"]) {
            _ = try checkpoint.readRows([("tail", 0..<1), ("experts.up", 5..<7)], concurrency: concurrency, direct: direct)
        }
        expectCheckpointError("unknownTensor", mentioning: ["'nope'"]) {
            _ = try checkpoint.readRows([("nope", 0..<1)], concurrency: concurrency, direct: direct)
        }
        #expect(checkpoint.bytesRead == 2 * singleBytes)
    }

    @Test func bytesReadCountsConcurrentReads() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let stacked = sampleTensor(0, shape: [64, 16], dtype: .float32)
        try SafetensorsWriter.write([("w", stacked)], to: directory.appendingPathComponent("model.safetensors"))
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        let expected = stacked.toFloatArray()
        let failures = ManagedCounter()
        DispatchQueue.concurrentPerform(iterations: 64) { e in
            let ok = (try? checkpoint.readRows("w", rows: e..<(e + 1)).toFloatArray()) == Array(expected[(e * 16)..<(e * 16 + 16)])
            if !ok { failures.increment() }
        }
        #expect(failures.value == 0)
        #expect(checkpoint.bytesRead == 64 * 16 * 4)
    }

    @Test func opensShardsLazily() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        // The second shard is garbage: nothing may touch it until one of its tensors is asked for.
        try writeFile(index(["a": "s-1.safetensors", "b": "s-2.safetensors"]), indexName, in: directory)
        try writeFile(tinyFile(["a"]), "s-1.safetensors", in: directory)
        try writeFile(Array("not a safetensors file at all".utf8), "s-2.safetensors", in: directory)
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        #expect(checkpoint.tensorNames == ["a", "b"])
        #expect(checkpoint.contains("b"))
        #expect(try checkpoint.entry("a")?.shape == [1])
        #expect(try checkpoint.tensor("a").toFloatArray() == [0])
        expectCheckpointError("headerLengthOutOfRange", mentioning: ["s-2.safetensors"]) { _ = try checkpoint.entry("b") }
    }

    @Test func singleFileWinsOverIndexAndScanIsSorted() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try writeFile(tinyFile(["z", "y"]), "b.safetensors", in: directory)
        try writeFile(tinyFile(["x"]), "a.safetensors", in: directory)
        try writeFile(tinyFile(["hidden"]), ".partial.safetensors", in: directory)
        let scanned = try SafetensorsCheckpoint(directory: directory)
        #expect(scanned.indexURL == nil)
        #expect(scanned.files.map(\.lastPathComponent) == ["a.safetensors", "b.safetensors"])
        #expect(scanned.tensorNames == ["x", "y", "z"])
        #expect(try scanned.tensor("y").toFloatArray() == [1])

        try writeFile(index(["y": "b.safetensors"]), indexName, in: directory)
        let indexed = try SafetensorsCheckpoint(directory: directory)
        #expect(indexed.tensorNames == ["y"])
        #expect(indexed.files.map(\.lastPathComponent) == ["b.safetensors"])

        try writeFile(tinyFile(["only"]), "model.safetensors", in: directory)
        let single = try SafetensorsCheckpoint(directory: directory)
        #expect(single.tensorNames == ["only"])
        #expect(single.files.map(\.lastPathComponent) == ["model.safetensors"])
    }

    @Test func unsupportedDTypeThroughTheCheckpoint() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try writeFile(
            rawSafetensors(#"{"scale":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}"#, data: [1, 2, 3, 4]),
            "model.safetensors", in: directory)
        let checkpoint = try SafetensorsCheckpoint(directory: directory)
        #expect(try checkpoint.entry("scale")?.dtypeName == "F8_E4M3")
        #expect(try checkpoint.entry("scale")?.dtype == nil)
        expectCheckpointError("unsupportedDType", mentioning: ["'scale'", "F8_E4M3", "BF16"]) { _ = try checkpoint.tensor("scale") }
        expectCheckpointError("unsupportedDType", mentioning: ["'scale'"]) { _ = try checkpoint.readRows("scale", rows: 0..<1) }
        #expect(checkpoint.bytesRead == 0)
    }

    /// Every model fixture written by transformers (`Tests/Fixtures/models/*`, made by another
    /// script) opens, and each tensor's mmap view equals its `readRows` copy.
    @Test(arguments: modelFixtureDirectories())
    func readsEveryTransformersModelFixture(name: String) throws {
        let checkpoint = try SafetensorsCheckpoint(directory: Fixtures.url("models/\(name)"))
        #expect(!checkpoint.tensorNames.isEmpty)
        var total = 0
        for tensorName in checkpoint.tensorNames {
            let entry = try #require(try checkpoint.entry(tensorName))
            guard entry.dtype != nil else { continue }
            let mapped = try checkpoint.tensor(tensorName)
            let copied = try checkpoint.readRows(tensorName, rows: 0..<(entry.shape.first ?? 1))
            #expect(mapped.shape == entry.shape)
            #expect(memcmp(mapped.data, copied.data, mapped.byteCount) == 0, "\(tensorName)")
            total += mapped.byteCount
        }
        #expect(checkpoint.bytesRead == total)
    }

    @Test(arguments: [
        ("model-00002-of-00003.safetensors", "model", 2, 3),
        ("diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model", 1, 2),
    ])
    func parsesShardNames(name: String, prefix: String, index: Int, total: Int) throws {
        let parsed = try #require(parseShardName(name))
        #expect(parsed.prefix == prefix && parsed.index == index && parsed.total == total)
        #expect(shardName(prefix: prefix, index: index, total: total, width: parsed.width) == name)
    }

    @Test(arguments: ["model.safetensors", "model-2-of-00003.safetensors", "model-00004-of-00003.safetensors", "x-of-2.safetensors"])
    func ignoresOtherNames(name: String) {
        #expect(parseShardName(name) == nil)
    }
}

/// Model fixture folders present in this checkout (none is fine: they are made by another script).
func modelFixtureDirectories() -> [String] {
    let root = Fixtures.url("models")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
    return names.filter { name in
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: root.appendingPathComponent(name).path, isDirectory: &isDirectory)
            && isDirectory.boolValue
    }.sorted()
}

/// A thread-safe counter for concurrency tests.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() {
        lock.lock()
        count += 1
        lock.unlock()
    }
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
}
