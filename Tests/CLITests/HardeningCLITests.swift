import Foundation
import Testing
import TestSupport

/// The CLI cases from attacking the release binary with bad input (issue 12): each must exit
/// non-zero naming the flag, field or file, or go on with a warning, never crash or hang.
@Suite struct HardeningCLITests {
    let model = Fixtures.url("models/qwen3_moe").path

    @Test(arguments: [
        (["generate", Fixtures.url("models/qwen3_moe").path, "--prompt", "hi", "--top-p", "nan"], "--top-p"),
        (["generate", Fixtures.url("models/qwen3_moe").path, "--prompt", "hi", "--temperature", "nan"], "--temperature"),
        (["bench", Fixtures.url("models/qwen3_moe").path, "--prompt-tokens", "9223372036854775807"], "max_position_embeddings"),
        (["logits", Fixtures.url("models/qwen3_moe").path, "--ids", "1", "--threads", "1000000000"], "--threads"),
    ])
    func absurdFlagIsNamed(_ arguments: [String], _ mention: String) throws {
        let result = try CLI.run(arguments)
        #expect(result.status != 0)
        #expect(result.stderr.contains(mention), "\(result.stderr)")
    }

    @Test(arguments: ["k=nan", "k=inf", "k=1e300", "k=-inf"])
    func absurdScorerParameterIsNamed(_ parameters: String) throws {
        let store = try Fixtures.temporaryDirectory("premoe-cli-scorer")
        defer { try? FileManager.default.removeItem(at: store) }
        let data = store.appendingPathComponent("data.jsonl")
        try #"{"text": "The sun is hot"}"#.appending("\n").write(to: data, atomically: true, encoding: .utf8)
        let result = try CLI.run(["profile", model, "--task", "t", "--data", data.path, "--store", store.path,
                                  "--scorer-params", parameters, "--no-progress"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--scorer-params"), "\(result.stderr)")
    }

    @Test func hugeMaxTokensIsCappedAtTheContextAndSaysSo() throws {
        let result = try CLI.run(["generate", model, "--prompt", "The sun", "--max-tokens", "100000000000", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("capped") && result.stderr.contains("max_position_embeddings"), "\(result.stderr)")
        let tokens = try #require(try result.json()["tokens"] as? [Int])
        #expect(tokens.count <= 256)
    }

    @Test func promptLongerThanTheContextFailsFast() throws {
        let prompt = Array(repeating: "word", count: 3000).joined(separator: " ")
        let start = Date()
        let result = try CLI.run(["generate", model, "--prompt", prompt, "--max-tokens", "4"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("max_position_embeddings"), "\(result.stderr)")
        #expect(Date().timeIntervalSince(start) < 60)
    }

    @Test func flippedGGUFTensorInfoIsAnErrorNotAnAllocation() throws {
        // qwen3_moe.q4_1.gguf with the first tensor's dims and type overwritten as in the crash.
        var bytes = [UInt8](try Data(contentsOf: Fixtures.url("gguf/qwen3_moe.q4_1.gguf")))
        let gguf = try GGUFHeaderEdit.firstTensorInfo(in: bytes)
        GGUFHeaderEdit.put(UInt64(64), at: gguf.dims, in: &bytes)
        GGUFHeaderEdit.put(UInt64(9_187_343_239_835_811_848), at: gguf.dims + 8, in: &bytes)
        GGUFHeaderEdit.put(UInt32(13835), at: gguf.type, in: &bytes)
        let dir = try Fixtures.temporaryDirectory("premoe-cli-gguf-flip")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("flipped.gguf")
        try Data(bytes).write(to: url)
        let result = try CLI.run(["inspect", url.path])
        #expect(result.status != 0)
        #expect(result.stderr.contains("type 13835") && result.stderr.contains(gguf.name), "\(result.stderr)")
    }

    @Test func junkFileInTheStoreIsSkippedAndAMissingLayerIsRefused() throws {
        let store = try Fixtures.temporaryDirectory("premoe-cli-junk")
        defer { try? FileManager.default.removeItem(at: store) }
        let data = store.appendingPathComponent("data.jsonl")
        try #"{"text": "The sun is hot and water is cold"}"#.appending("\n").write(to: data, atomically: true, encoding: .utf8)
        let profile = try CLI.run(["profile", model, "--task", "weather", "--data", data.path, "--store", store.path, "--no-progress"])
        #expect(profile.status == 0, "\(profile.stderr)")
        try Data(#"{"compilerOptions": {}}"#.utf8).write(to: store.appendingPathComponent("tsconfig.json"))

        let list = try CLI.run(["patterns", "list", "--store", store.path])
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.text.contains("weather"))
        #expect(list.stderr.contains("warning: skipping") && list.stderr.contains("tsconfig.json"), "\(list.stderr)")
        let retrieve = try CLI.run(["retrieve", model, "--store", store.path, "--prompt", "The sun", "--json"])
        #expect(retrieve.status == 0, "\(retrieve.stderr)")
        #expect(try retrieve.json()["task"] as? String == "weather")

        // A pattern missing one MoE layer: `run --keep` must not load every expert of that layer.
        let file = store.appendingPathComponent("weather.json")
        var pattern = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        var layers = try #require(pattern["layers"] as? [String: Any])
        layers["1"] = nil
        pattern["layers"] = layers
        try JSONSerialization.data(withJSONObject: pattern).write(to: file)
        let prune = try CLI.run(["prune", model, "--task", "weather", "--store", store.path, "--keep", "4",
                                 "--out", store.appendingPathComponent("out").path])
        #expect(prune.status != 0)
        #expect(prune.stderr.contains("MoE layer 1 is missing") && prune.stderr.contains("weather.json"), "\(prune.stderr)")
        let run = try CLI.run(["run", model, "--store", store.path, "--prompt", "The sun", "--keep", "4", "--max-tokens", "2"])
        #expect(run.status != 0 || !run.stderr.contains("experts kept"), "\(run.stderr)")
        #expect(run.stderr.contains("weather.json"), "\(run.stderr)")
    }
}

/// Finds byte positions inside a GGUF header (version 3, little-endian) for surgical edits.
enum GGUFHeaderEdit {
    struct TensorInfo { let name: String; let dims: Int; let type: Int }

    static func u64(_ b: [UInt8], _ at: Int) -> Int {
        (0..<8).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) }
    }

    static func put<T: FixedWidthInteger>(_ value: T, at offset: Int, in bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    /// Walks the metadata to the first tensor-info record.
    static func firstTensorInfo(in b: [UInt8]) throws -> TensorInfo {
        var at = 24
        func skipValue(_ type: Int) {
            let sizes = [0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8]
            if let s = sizes[type] { at += s; return }
            if type == 8 { at += 8 + u64(b, at); return }
            let elementType = Int(b[at]) | Int(b[at + 1]) << 8
            let count = u64(b, at + 4)
            at += 12
            for _ in 0..<count { skipValue(elementType) }
        }
        for _ in 0..<u64(b, 16) {
            at += 8 + u64(b, at)
            let type = Int(b[at]) | Int(b[at + 1]) << 8
            at += 4
            skipValue(type)
        }
        let length = u64(b, at)
        let name = String(decoding: b[(at + 8)..<(at + 8 + length)], as: UTF8.self)
        at += 8 + length
        let dimCount = Int(b[at])
        try #require(dimCount >= 2, "the first tensor needs two dims for this edit")
        return TensorInfo(name: name, dims: at + 4, type: at + 4 + 8 * dimCount)
    }
}
