import Foundation
import TestSupport
import Testing

@testable import Tokenization

/// The GGUF-metadata initializer must rebuild the same tokenizer as the `tokenizer.json` of the family.
@Suite("Tokenizer from GGUF metadata")
struct TokenizerGGUFTests {
    /// Reads a fixture's vocab, merges and control tokens as GGUF would store them.
    static func metadata(_ name: String) throws -> (tokens: [String], merges: [String], types: [Int]) {
        let data = try Data(contentsOf: Fixtures.url("tokenizers/\(name)/tokenizer.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let model = try #require(json["model"] as? [String: Any])
        let vocab = try #require(model["vocab"] as? [String: Int])
        let added = try #require(json["added_tokens"] as? [[String: Any]])
        var tokens = [String](repeating: "", count: vocab.count + added.count)
        var types = [Int](repeating: Tokenizer.GGUFTokenType.normal.rawValue, count: tokens.count)
        for (t, id) in vocab { tokens[id] = t }
        for a in added {
            let id = try #require(a["id"] as? Int)
            tokens[id] = try #require(a["content"] as? String)
            let special = a["special"] as? Bool ?? false
            types[id] = (special ? Tokenizer.GGUFTokenType.control : .userDefined).rawValue
        }
        let maxID = (vocab.values.max() ?? 0)
        tokens = Array(tokens.prefix(max(maxID, added.compactMap { $0["id"] as? Int }.max() ?? 0) + 1))
        types = Array(types.prefix(tokens.count))
        let merges = (model["merges"] as? [Any] ?? []).map { m -> String in
            if let s = m as? String { return s }
            return (m as? [String] ?? []).joined(separator: " ")
        }
        return (tokens, merges, types)
    }

    @Test(
        "matches the tokenizer.json goldens",
        arguments: [("smollm2", "smollm"), ("qwen2", "qwen2"), ("llama3", "llama-bpe")])
    func matchesGoldens(name: String, pre: String) throws {
        let m = try Self.metadata(name)
        let tokenizer = try Tokenizer(vocabulary: m.tokens, merges: m.merges, tokenTypes: m.types, preTokenizer: pre)
        for c in try LoadedFixtures.cases(name) {
            #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.idsNoSpecial, "\(name): \(preview(c.text))")
            #expect(tokenizer.decode(c.ids) == c.decoded, "\(name): \(preview(c.text))")
        }
    }

    @Test("BOS, EOS and the chat template come from the metadata")
    func specialTokens() throws {
        let m = try Self.metadata("smollm2")
        let tokenizer = try Tokenizer(
            vocabulary: m.tokens, merges: m.merges, tokenTypes: m.types, preTokenizer: "smollm",
            bosTokenID: 1, eosTokenID: 2, addBOS: true, chatTemplate: "<|im_start|>...")
        #expect(tokenizer.bosTokenID == 1)
        #expect(tokenizer.eosTokenIDs.first == 2)
        #expect(tokenizer.encode("hi").first == 1)
        #expect(tokenizer.chatTemplate?.source == "<|im_start|>...")
        #expect(tokenizer.chatTemplate?.bosToken == m.tokens[1] && tokenizer.chatTemplate?.eosToken == m.tokens[2])
    }

    @Test("unknown pre-tokenizer names and inconsistent metadata throw")
    func errors() {
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: ["a"], merges: [], preTokenizer: "mystery")
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: ["a"], merges: [], tokenTypes: [1, 1], preTokenizer: "gpt2")
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: ["a", "b"], merges: ["a c"], preTokenizer: "gpt2")
        }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(vocabulary: ["a"], merges: [], preTokenizer: "gpt2", bosTokenID: 7)
        }
    }
}
