import Foundation
import Testing
import TestSupport

/// Runs the `premoe` executable built next to the test bundle.
struct CLI {
    struct Result {
        let status: Int32
        let stdout: Data
        let stderr: String
        var text: String { String(decoding: stdout, as: UTF8.self) }
        func json() throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: stdout) as? [String: Any])
        }
    }

    static let binary: URL = {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // The runner may be inside a bundle directory (…/PreMoePackageTests.xctest/…).
        for _ in 0..<4 where !FileManager.default.fileExists(atPath: dir.appendingPathComponent("premoe").path) {
            dir.deleteLastPathComponent()
        }
        return dir.appendingPathComponent("premoe")
    }()

    static func run(_ arguments: [String]) throws -> Result {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: stdout, stderr: String(decoding: stderr, as: UTF8.self))
    }
}

private struct Golden: Decodable {
    let input_ids: [Int]
    let input_text: String
    let logits: [[Float]]
}

@Suite struct CLITests {
    let model = Fixtures.url("models/qwen3_moe").path

    @Test func logitsJSONHasOneRowPerPositionMatchingTheReference() throws {
        let golden = try Fixtures.json(Golden.self, "models/qwen3_moe/golden.json")
        let result = try CLI.run(["logits", model, "--ids", golden.input_ids.map(String.init).joined(separator: ","), "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let rows = try #require(try result.json()["logits"] as? [[Double]])
        #expect(rows.count == golden.input_ids.count)
        let error = maxRelativeError(rows.flatMap { $0.map(Float.init) }, golden.logits.flatMap { $0 })
        #expect(error <= 1e-4)
    }

    @Test func tokenizeJSONGivesTheReferenceIDs() throws {
        let golden = try Fixtures.json(Golden.self, "models/qwen3_moe/golden.json")
        let result = try CLI.run(["tokenize", model, "--text", golden.input_text, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try result.json()["ids"] as? [Int] == golden.input_ids)
    }

    @Test func inspectAndBenchReportJSON() throws {
        let inspect = try CLI.run(["inspect", model, "--json"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let report = try inspect.json()
        #expect(report["experts"] as? Int == 8)
        #expect(report["topK"] as? Int == 2)
        let bench = try CLI.run(["bench", model, "--prompt-tokens", "8", "--gen-tokens", "4", "--threads", "1", "--json"])
        #expect(bench.status == 0, "\(bench.stderr)")
        let numbers = try bench.json()
        for key in ["loadSeconds", "prefillTokensPerSecond", "decodeTokensPerSecond", "peakResidentBytes"] {
            #expect((numbers[key] as? Double ?? 0) > 0, "\(key)")
        }
    }

    /// `inspect` on quantized checkpoints reports what the file stores: the stored dtypes and the
    /// bytes of the safetensors header's tensors (MTP layer left out), not the f32 the engine
    /// dequantizes them to.
    @Test(arguments: [("gpt_oss_mxfp4", "MXFP4", nil), ("deepseek_v3_fp8", "F8_E4M3", "model.layers.2.")] as [(String, String, String?)])
    func inspectReportsStoredDTypesAndBytes(_ name: String, _ dtype: String, _ ignoredPrefix: String?) throws {
        let inspect = try CLI.run(["inspect", Fixtures.url("models/\(name)").path, "--json"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let report = try inspect.json()
        let file = try Data(contentsOf: Fixtures.url("models/\(name)/model.safetensors"))
        let headerLength = file.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try #require(try JSONSerialization.jsonObject(with: file.subdata(in: 8..<(8 + headerLength))) as? [String: Any])
        var fileBytes = 0
        for (tensor, value) in header where tensor != "__metadata__" && !(ignoredPrefix.map { tensor.hasPrefix($0) } ?? false) {
            let offsets = try #require((value as? [String: Any])?["data_offsets"] as? [Int])
            fileBytes += offsets[1] - offsets[0]
        }
        #expect(report["bytes"] as? Int == fileBytes)
        #expect((report["residentBytes"] as? Int ?? 0) > fileBytes)
        #expect((report["dtype"] as? String)?.contains(dtype) == true, "\(report["dtype"] ?? "")")
        #expect((report["dtypes"] as? [String: Int])?.values.reduce(0, +) == fileBytes)
    }

    @Test func benchProfilesDecodeAndScoresPerplexityWithBothArithmetics() throws {
        let gguf = Fixtures.url("gguf/qwen3_moe.q4_1.gguf").path
        let dir = try Fixtures.temporaryDirectory("premoe-cli-bench")
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = dir.appendingPathComponent("text.txt")
        try "The sun is hot and water is cold. Rain falls on the cold hills.".write(to: text, atomically: true, encoding: .utf8)
        let bench = try CLI.run(["bench", gguf, "--prompt-tokens", "4", "--gen-tokens", "3", "--threads", "1", "--profile",
                                 "--arithmetic", "int8", "--perplexity", text.path, "--json"])
        #expect(bench.status == 0, "\(bench.stderr)")
        let report = try bench.json()
        #expect(report["arithmetic"] as? String == "int8")
        let parts = (report["profile"] as? [[String: Any]] ?? []).compactMap { $0["part"] as? String }
        for part in ["attention", "router", "routed experts Q4_1", "output head Q4_1", "total"] {
            #expect(parts.contains(part), "\(parts)")
        }
        let perplexity = try #require(report["perplexity"] as? [String: Any])
        let exact = perplexity["exact"] as? Double ?? 0, int8 = perplexity["int8"] as? Double ?? 0
        #expect(exact > 1 && int8 > 1 && exact != int8, "\(perplexity)")
        // llama-bench reads only GGUF: a safetensors model is refused before anything runs.
        let refused = try CLI.run(["bench", model, "--compare-llama-bench", "/bin/true", "--gen-tokens", "1", "--prompt-tokens", "1"])
        #expect(refused.status != 0 && refused.stderr.contains("GGUF"), "\(refused.stderr)")
    }

    @Test func profileThenRetrieveJSONNamesTheTaskOfAnUnseenPrompt() throws {
        let store = try Fixtures.temporaryDirectory("premoe-cli-store")
        defer { try? FileManager.default.removeItem(at: store) }
        let weather = ["The sun is hot and water is cold.", "Rain falls on the cold hills.", "Wind and snow in the north.",
                       "A warm sunny day with clouds.", "Storms bring rain and thunder."]
        let numbers = ["1 2 3 4 5 6 7 8 9", "10 20 30 40", "7 8 9 10 11 12", "3 + 4 = 7", "100 200 300"]
        for (task, texts) in [("weather", weather), ("numbers", numbers)] {
            let file = store.appendingPathComponent("\(task).jsonl")
            let lines = try texts.map { String(decoding: try JSONSerialization.data(withJSONObject: ["text": $0]), as: UTF8.self) }
            try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
            let profile = try CLI.run(["profile", model, "--task", task, "--data", file.path, "--store", store.path, "--json", "--no-progress"])
            #expect(profile.status == 0, "\(profile.stderr)")
            #expect(try profile.json()["retrievalSamples"] as? Int == texts.count * 6)
        }
        let retrieve = try CLI.run(["retrieve", model, "--store", store.path, "--prompt", "Cold rain and strong wind tonight", "--json"])
        #expect(retrieve.status == 0, "\(retrieve.stderr)")
        let json = try retrieve.json()
        #expect(json["task"] as? String == "weather")
        #expect(json["method"] as? String == "classifier")
        let candidates = try #require(json["candidates"] as? [[String: Any]])
        #expect(candidates.count == 2)
        #expect((json["distance"] as? Double ?? -1) >= 0)
        let centroid = try CLI.run(["retrieve", model, "--store", store.path, "--prompt", "5 6 7 8", "--method", "centroid",
                                    "--max-distance", "0", "--json"])
        #expect(centroid.status == 0, "\(centroid.stderr)")
        #expect(try centroid.json()["task"] is NSNull)
        let strict = try CLI.run(["retrieve", model, "--store", store.path, "--prompt", "5 6 7 8", "--min-typicality", "1", "--json"])
        #expect(try strict.json()["task"] is NSNull)
        let bad = try CLI.run(["retrieve", model, "--store", store.path, "--prompt", "x", "--min-confidence", "nan"])
        #expect(bad.status != 0 && bad.stderr.contains("--min-confidence"), "\(bad.stderr)")
    }

    /// `inspect` reports `experts` per MoE layer for `model`, and `logits` runs it.
    func expectRuns(_ model: String, experts: Int) throws {
        let inspect = try CLI.run(["inspect", model, "--json"])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        #expect(try inspect.json()["experts"] as? Int == experts)
        let logits = try CLI.run(["logits", model, "--ids", "1,2,3", "--json"])
        #expect(logits.status == 0, "\(logits.stderr)")
    }

    @Test func pruneWritesAGGUFThatTheCLILoads() throws {
        let store = try Fixtures.temporaryDirectory("premoe-cli-gguf")
        defer { try? FileManager.default.removeItem(at: store) }
        let data = store.appendingPathComponent("data.jsonl")
        try #"{"text": "The sun is hot and water is cold"}"#.appending("\n").write(to: data, atomically: true, encoding: .utf8)
        let profile = try CLI.run(["profile", model, "--task", "weather", "--data", data.path, "--store", store.path, "--json", "--no-progress"])
        #expect(profile.status == 0, "\(profile.stderr)")
        let out = store.appendingPathComponent("pruned")
        let prune = try CLI.run(["prune", model, "--task", "weather", "--store", store.path, "--keep", "50%",
                                 "--out", out.path, "--format", "gguf", "--json"])
        #expect(prune.status == 0, "\(prune.stderr)")
        #expect(try prune.json()["files"] as? [String] == ["model.gguf"])
        try expectRuns(out.appendingPathComponent("model.gguf").path, experts: 4)
        let bad = try CLI.run(["prune", model, "--task", "weather", "--store", store.path, "--keep", "50%",
                               "--out", store.appendingPathComponent("x").path, "--format", "onnx"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--format"), "\(bad.stderr)")
        // --merge: a safetensors checkpoint whose config says its experts were merged.
        let merged = store.appendingPathComponent("merged")
        let merge = try CLI.run(["prune", model, "--task", "weather", "--store", store.path, "--keep", "50%",
                                 "--out", merged.path, "--merge", "--json"])
        #expect(merge.status == 0, "\(merge.stderr)")
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: merged.appendingPathComponent("config.json"))) as? [String: Any]
        #expect((config?["premoe"] as? [String: Any])?["merged_experts"] as? Bool == true)
        let mergeGGUF = try CLI.run(["prune", model, "--task", "weather", "--store", store.path, "--keep", "50%",
                                     "--out", store.appendingPathComponent("y").path, "--merge", "--format", "gguf"])
        #expect(mergeGGUF.status != 0)
        #expect(mergeGGUF.stderr.contains("--merge"), "\(mergeGGUF.stderr)")
    }

    @Test func pruneOfAGGUFUsesThePatternProfiledOnItAndWritesGGUF() throws {
        let store = try Fixtures.temporaryDirectory("premoe-cli-gguf-in")
        defer { try? FileManager.default.removeItem(at: store) }
        let gguf = Fixtures.url("gguf/qwen3_moe.q4_1.gguf").path
        let data = store.appendingPathComponent("data.jsonl")
        try #"{"text": "The sun is hot and water is cold"}"#.appending("\n").write(to: data, atomically: true, encoding: .utf8)
        let profile = try CLI.run(["profile", gguf, "--task", "weather", "--data", data.path, "--store", store.path, "--json", "--no-progress"])
        #expect(profile.status == 0, "\(profile.stderr)")
        // No --format: a GGUF input is pruned into GGUF.
        let out = store.appendingPathComponent("pruned")
        let prune = try CLI.run(["prune", gguf, "--task", "weather", "--store", store.path, "--keep", "50%", "--out", out.path, "--json"])
        #expect(prune.status == 0, "\(prune.stderr)")
        let json = try prune.json()
        #expect(json["files"] as? [String] == ["model.gguf"])
        #expect(json["expertsPerLayer"] as? Int == 4)
        try expectRuns(out.appendingPathComponent("model.gguf").path, experts: 4)
        // Bad requests name the flag and the reason, and write nothing.
        for (flags, mention) in [(["--type", "q8_0"], "requantizing"), (["--format", "safetensors"], "GGUF")] {
            let bad = try CLI.run(["prune", gguf, "--task", "weather", "--store", store.path, "--keep", "50%",
                                   "--out", store.appendingPathComponent("bad").path] + flags)
            #expect(bad.status != 0)
            #expect(bad.stderr.contains(flags[0]) && bad.stderr.contains(mention), "\(bad.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: store.appendingPathComponent("bad").path))
        // A pattern profiled on the safetensors checkpoint is not this file's.
        let other = try Fixtures.temporaryDirectory("premoe-cli-gguf-in-other")
        defer { try? FileManager.default.removeItem(at: other) }
        let safetensorsProfile = try CLI.run(["profile", model, "--task", "weather", "--data", data.path, "--store", other.path,
                                              "--json", "--no-progress"])
        #expect(safetensorsProfile.status == 0, "\(safetensorsProfile.stderr)")
        let mismatch = try CLI.run(["prune", gguf, "--task", "weather", "--store", other.path, "--keep", "50%",
                                    "--out", other.appendingPathComponent("out").path])
        #expect(mismatch.status != 0, "\(mismatch.stderr)")
    }

    @Test(arguments: [
        (["logits", "Tests/does-not-exist", "--ids", "1"], "does-not-exist"),
        (["logits", Fixtures.url("models/qwen3_moe").path, "--ids", "1,99999"], "99999"),
        (["logits", Fixtures.url("models/qwen3_moe").path, "--ids", "1,x"], "'x'"),
        (["generate", Fixtures.url("models/qwen3_moe").path, "--prompt", ""], "prompt"),
    ])
    func badInputExitsNonZeroWithAMessage(_ arguments: [String], _ mention: String) throws {
        let result = try CLI.run(arguments)
        #expect(result.status != 0)
        #expect(result.stderr.contains(mention), "\(result.stderr)")
    }

    @Test func unsupportedModelTypeIsRefusedByTheCLI() throws {
        let dir = try Fixtures.temporaryDirectory("premoe-cli-bad")
        try #"{"model_type": "mamba", "hidden_size": 8}"#.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let result = try CLI.run(["inspect", dir.path])
        #expect(result.status != 0)
        #expect(result.stderr.contains("mamba") && result.stderr.contains("qwen3_moe"))
    }
}
