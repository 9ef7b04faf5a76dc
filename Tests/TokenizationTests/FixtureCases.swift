import Foundation
import TestSupport
import Tokenization

/// One row of a `Tests/Fixtures/tokenizers/<name>/cases.json` golden, produced by
/// `scripts/make_tokenizer_fixtures.py` with the Python `tokenizers` library.
struct TokenizerCase: Decodable {
    var text: String
    var ids: [Int]
    var idsNoSpecial: [Int]
    var decoded: String
    var decodedSkipSpecial: String

    enum CodingKeys: String, CodingKey {
        case text, ids, decoded
        case idsNoSpecial = "ids_no_special"
        case decodedSkipSpecial = "decoded_skip_special"
    }
}

/// Every tokenizer fixture, each mimicking one model family's `tokenizer.json`.
let tokenizerFixtures = ["gpt2", "qwen2", "llama3", "llama2", "mistral", "misc", "smollm2"]

/// Loaded tokenizers, shared by the tests (the SmolLM2 one takes a moment to parse).
enum LoadedFixtures {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [String: Tokenizer] = [:]

    static func tokenizer(_ name: String) throws -> Tokenizer {
        lock.lock()
        defer { lock.unlock() }
        if let t = cache[name] { return t }
        let t = try Tokenizer(url: Fixtures.url("tokenizers/\(name)"))
        cache[name] = t
        return t
    }

    static func cases(_ name: String) throws -> [TokenizerCase] {
        try Fixtures.json([TokenizerCase].self, "tokenizers/\(name)/cases.json")
    }
}

/// Shortens a string for failure messages.
func preview(_ s: String, _ limit: Int = 60) -> String {
    let d = s.debugDescription
    return d.count <= limit ? d : String(d.prefix(limit)) + "…"
}
