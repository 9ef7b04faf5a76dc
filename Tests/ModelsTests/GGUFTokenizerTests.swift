import Formats
import Foundation
import Models
import Testing
import TestSupport
import Tokenization

/// Ids from llama.cpp's `llama-tokenize` for small GGUF vocabularies under every pre-tokenizer
/// name its converter writes for the supported families, and a SentencePiece `llama` vocabulary
/// (Tests/Fixtures/gguf_tokenizers, scripts/make_gguf_tokenizer_fixtures.py).
@Suite struct GGUFTokenizerTests {
    struct Expected: Decodable {
        struct Case: Decodable {
            let text: String
            let ids: [Int]
        }
        struct File: Decodable {
            let kind: String?
            let cases: [Case]
        }
        let files: [String: File]
    }

    static let expected: Expected? = try? Fixtures.json(Expected.self, "gguf_tokenizers/expected.json")
    static let fileNames: [String] = expected?.files.keys.sorted() ?? []

    @Test("the fixture set covers the families' pre-tokenizers and SentencePiece")
    func coverage() throws {
        let names = try #require(Self.expected).files.keys
        for pre in ["gpt-2", "qwen2", "llama-bpe", "smollm", "default", "olmo", "deepseek-llm", "deepseek-v3"] {
            #expect(names.contains("bpe-\(pre).gguf"), "\(pre)")
        }
        #expect(names.contains("spm-llama.gguf"))
    }

    @Test("ids equal llama-tokenize", arguments: fileNames)
    func matchesLlamaCpp(_ name: String) throws {
        let file = try GGUFFile(url: Fixtures.url("gguf_tokenizers/\(name)"))
        let tokenizer = try #require(try Tokenizer.fromGGUF(file))
        let cases = try #require(Self.expected?.files[name]).cases
        #expect(cases.count >= 10)
        for c in cases {
            #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.ids, "\(name): \(c.text.debugDescription)")
        }
    }

    @Test("SentencePiece: BOS by default, byte tokens for unknown characters, decode round-trips")
    func sentencePiece() throws {
        let file = try GGUFFile(url: Fixtures.url("gguf_tokenizers/spm-llama.gguf"))
        let tokenizer = try #require(try Tokenizer.fromGGUF(file))
        let ids = tokenizer.encode("Hello world")
        #expect(ids.first == tokenizer.bosTokenID && tokenizer.bosTokenID != nil)
        let emoji = tokenizer.encode("😀", addSpecialTokens: false)
        #expect(emoji.contains { tokenizer.token($0)?.hasPrefix("<0x") == true }, "\(emoji)")
        for text in ["Hello world", " two  spaces\nand a line", "café 😀"] {
            #expect(tokenizer.decode(tokenizer.encode(text, addSpecialTokens: false)) == text, "\(text.debugDescription)")
        }
    }

    @Test("an unknown tokenizer.ggml.pre is refused with the supported names listed")
    func unknownPre() {
        #expect {
            try Tokenizer(vocabulary: ["a"], merges: [], preTokenizer: "mystery")
        } throws: { error in
            let text = "\(error)"
            return text.contains("mystery") && text.contains("gpt-2") && text.contains("qwen2") && text.contains("deepseek-v3")
        }
    }

    @Test("the real SmolLM2 GGUF tokenizes as llama-tokenize does (opt-in: PREMOE_SMOLLM2_GGUF)",
          .enabled(if: Fixtures.smolLM2GGUF() != nil))
    func smolLM2() throws {
        let url = try #require(Fixtures.smolLM2GGUF())
        let tokenizer = try #require(try Tokenizer.fromGGUF(try GGUFFile(url: url)))
        let cases = try Fixtures.json(Expected.File.self, "gguf_tokenizers/smollm2-llama-tokenize.json").cases
        for c in cases {
            #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.ids, "\(c.text.debugDescription)")
        }
    }
}
