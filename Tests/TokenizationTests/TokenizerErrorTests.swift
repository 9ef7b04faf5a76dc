import Foundation
import TestSupport
import Testing

@testable import Tokenization

/// Deliberately broken `tokenizer.json` files: each must throw a `TokenizerError` whose
/// description names the problem, never crash.
@Suite("Broken tokenizer files")
struct TokenizerErrorTests {
    struct BrokenCase: CustomStringConvertible, Sendable {
        var name: String
        var json: String
        /// Substrings the error description must contain.
        var mentions: [String]
        var description: String { name }
    }

    static let minimalModel = #""model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}"#

    static let cases: [BrokenCase] = [
        BrokenCase(name: "not JSON", json: "this is not json {", mentions: ["not a valid tokenizer JSON"]),
        BrokenCase(name: "top level array", json: "[1, 2]", mentions: ["top level is not a JSON object"]),
        BrokenCase(name: "empty file", json: "", mentions: ["not a valid tokenizer JSON"]),
        BrokenCase(name: "missing model", json: #"{"version": "1.0"}"#, mentions: ["missing required field 'model'"]),
        BrokenCase(
            name: "unknown model type", json: #"{"model": {"type": "Unigram", "vocab": []}}"#,
            mentions: ["unsupported model type 'Unigram'", "BPE"]),
        BrokenCase(
            name: "WordPiece model", json: #"{"model": {"type": "WordPiece", "vocab": {}}}"#,
            mentions: ["unsupported model type 'WordPiece'"]),
        BrokenCase(
            name: "model without vocab", json: #"{"model": {"type": "BPE", "merges": []}}"#,
            mentions: ["missing required field 'model.vocab'"]),
        BrokenCase(
            name: "vocab with a string id", json: #"{"model": {"type": "BPE", "vocab": {"a": "zero"}}}"#,
            mentions: ["model.vocab", "'a'"]),
        // Ids size the id → token table: a huge one must not become a huge allocation.
        BrokenCase(
            name: "vocab id 10^12", json: #"{"model": {"type": "BPE", "vocab": {"a": 1000000000000}}}"#,
            mentions: ["model.vocab", "'a'", "0..<16777216"]),
        BrokenCase(
            name: "vocab id 1e300", json: #"{"model": {"type": "BPE", "vocab": {"a": 1e300}}}"#,
            mentions: ["model.vocab", "'a'"]),
        BrokenCase(
            name: "added token id 10^12",
            json: #"{"added_tokens": [{"id": 1000000000000, "content": "<x>"}], \#(minimalModel)}"#,
            mentions: ["added_tokens", "id"]),
        BrokenCase(
            name: "unknown pre-tokenizer",
            json: #"{"pre_tokenizer": {"type": "UnicodeScripts"}, \#(minimalModel)}"#,
            mentions: ["unsupported pre_tokenizer type 'UnicodeScripts'"]),
        BrokenCase(
            name: "unknown pre-tokenizer inside a Sequence",
            json:
                #"{"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "CharDelimiterSplit"}]}, \#(minimalModel)}"#,
            mentions: ["CharDelimiterSplit"]),
        BrokenCase(
            name: "unknown normalizer", json: #"{"normalizer": {"type": "BertNormalizer"}, \#(minimalModel)}"#,
            mentions: ["unsupported normalizer type 'BertNormalizer'"]),
        BrokenCase(
            name: "unknown decoder", json: #"{"decoder": {"type": "CTC"}, \#(minimalModel)}"#,
            mentions: ["unsupported decoder type 'CTC'"]),
        BrokenCase(
            name: "unknown post-processor", json: #"{"post_processor": {"type": "Magic"}, \#(minimalModel)}"#,
            mentions: ["unsupported post_processor type 'Magic'"]),
        BrokenCase(
            name: "component without type", json: #"{"normalizer": {"lowercase": true}, \#(minimalModel)}"#,
            mentions: ["normalizer.type"]),
        BrokenCase(
            name: "unknown split behaviour",
            json:
                #"{"pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"}, \#(minimalModel)}"#,
            mentions: ["Sideways"]),
        BrokenCase(
            name: "bad regex",
            json:
                #"{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}, \#(minimalModel)}"#,
            mentions: ["cannot compile regex", "(unclosed"]),
        BrokenCase(
            name: "merge with an unknown left token",
            json: #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["x b"]}}"#,
            mentions: ["merge 'x b'", "token 'x'"]),
        BrokenCase(
            name: "merge producing an unknown token",
            json: #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}}"#,
            mentions: ["merge 'a b'", "token 'ab'"]),
        BrokenCase(
            name: "merge that is not a pair",
            json: #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]}}"#,
            mentions: ["model.merges[0]"]),
        BrokenCase(
            name: "unk token missing from vocab",
            json: #"{"model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"a": 0}, "merges": []}}"#,
            mentions: ["model.unk_token", "<unk>"]),
        BrokenCase(
            name: "added token without id",
            json: #"{"added_tokens": [{"content": "<x>"}], \#(minimalModel)}"#,
            mentions: ["added_tokens[0].id"]),
        BrokenCase(
            name: "template naming an unknown special token",
            json:
                #"{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}], "special_tokens": {}}, \#(minimalModel)}"#,
            mentions: ["special_tokens", "<s>"]),
        BrokenCase(
            name: "wrong field type", json: #"{"added_tokens": "none", \#(minimalModel)}"#,
            mentions: ["added_tokens", "expected an array"]),
    ]

    @Test("each broken file throws a descriptive TokenizerError", arguments: cases)
    func throwsDescriptiveError(c: BrokenCase) {
        do {
            _ = try Tokenizer(data: Data(c.json.utf8))
            Issue.record("\(c.name): no error thrown")
        } catch let error as TokenizerError {
            for m in c.mentions {
                #expect(error.description.contains(m), "\(c.name): \(error.description) does not mention \(m)")
            }
        } catch {
            Issue.record("\(c.name): unexpected error type \(error)")
        }
    }

    @Test("missing files and directories")
    func missingFiles() throws {
        #expect(throws: TokenizerError.fileNotFound(path: "/nonexistent/tokenizer.json")) {
            try Tokenizer(url: URL(fileURLWithPath: "/nonexistent/tokenizer.json"))
        }
        let dir = try Fixtures.temporaryDirectory("tok")
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(throws: TokenizerError.self) { try Tokenizer(url: dir) }
    }

    @Test("a malformed tokenizer_config.json throws")
    func brokenConfig() throws {
        let data = try Data(contentsOf: Fixtures.url("tokenizers/gpt2/tokenizer.json"))
        #expect(throws: TokenizerError.self) { try Tokenizer(data: data, configData: Data("{".utf8)) }
        #expect(throws: TokenizerError.self) {
            try Tokenizer(data: data, configData: Data(#"{"eos_token": 5}"#.utf8))
        }
    }

    @Test("the minimal valid file loads")
    func minimal() throws {
        let t = try Tokenizer(data: Data("{\(Self.minimalModel)}".utf8))
        #expect(t.encode("abab") == [2, 2])  // no pre-tokenizer: one word; there is no "ab ab" merge
        #expect(t.vocabularySize == 3)
    }
}
