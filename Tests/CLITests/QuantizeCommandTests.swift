import Foundation
import Testing
import TestSupport

/// `premoe quantize` and `premoe tokenize` on GGUF files.
@Suite struct QuantizeCommandTests {
    @Test func quantizeWritesAGGUFThatGenerates() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("qwen3_moe.q4_k_m.gguf").path
        let result = try CLI.run(["quantize", Fixtures.url("models/qwen3_moe").path, "--type", "q4_k_m", "--out", out, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let json = try result.json()
        #expect((json["tensorCount"] as? Int ?? 0) > 0)
        // Hidden size 64 cannot hold 256-value blocks: the fallbacks are reported.
        #expect((json["notes"] as? [String])?.isEmpty == false)
        #expect(result.stderr.contains("note: "))
        let generated = try CLI.run(["generate", out, "--prompt", "Hello", "--max-tokens", "3", "--json"])
        #expect(generated.status == 0, "\(generated.stderr)")
        #expect((try generated.json()["tokens"] as? [Int])?.count == 3)
        // Never overwrites.
        let again = try CLI.run(["quantize", Fixtures.url("models/qwen3_moe").path, "--type", "q8_0", "--out", out])
        #expect(again.status != 0 && again.stderr.contains("already exists"))
    }

    /// FP8 DeepSeek-V3 and MXFP4 gpt-oss have no GGUF layout here: refused by model type, and no
    /// file is written.
    @Test(arguments: [("deepseek_v3_fp8", "deepseek_v3"), ("gpt_oss_mxfp4", "gpt_oss")])
    func familiesWithoutGGUFLayoutAreRefusedByName(_ name: String, _ modelType: String) throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("x.gguf").path
        let result = try CLI.run(["quantize", Fixtures.url("models/\(name)").path, "--type", "q8_0", "--out", out])
        #expect(result.status != 0)
        #expect(result.stderr.contains("'\(modelType)'") && result.stderr.contains("GGUF export supports model types"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func unknownTypeListsTheSupportedOnes() throws {
        let result = try CLI.run(["quantize", Fixtures.url("models/qwen3_moe").path, "--type", "q3_k", "--out", "/tmp/x.gguf"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("q4_k_m") && result.stderr.contains("q3_k"))
    }

    @Test func pruneTypeNeedsGGUFFormat() throws {
        let result = try CLI.run(["prune", Fixtures.url("models/qwen3_moe").path, "--task", "t", "--keep", "50%",
                                  "--out", "/tmp/premoe-never", "--type", "q8_0"])
        #expect(result.status != 0 && result.stderr.contains("--type needs --format gguf"))
    }

    @Test func tokenizeReadsTheGGUFVocabulary() throws {
        struct Expected: Decodable {
            struct Case: Decodable { let text: String, ids: [Int] }
            struct File: Decodable { let cases: [Case] }
            let files: [String: File]
        }
        let expected = try Fixtures.json(Expected.self, "gguf_tokenizers/expected.json")
        let c = try #require(expected.files["bpe-qwen2.gguf"]?.cases.first)
        let result = try CLI.run(["tokenize", Fixtures.url("gguf_tokenizers/bpe-qwen2.gguf").path, "--text", c.text, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try result.json()["ids"] as? [Int] == c.ids)
    }
}
