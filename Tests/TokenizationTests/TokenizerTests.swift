import Foundation
import TestSupport
import Testing

@testable import Tokenization

@Suite("Tokenizer goldens")
struct TokenizerTests {
    @Test("encode matches tokenizers (add_special_tokens=True)", arguments: tokenizerFixtures)
    func encodeWithSpecialTokens(name: String) throws {
        let tokenizer = try LoadedFixtures.tokenizer(name)
        for c in try LoadedFixtures.cases(name) {
            #expect(tokenizer.encode(c.text) == c.ids, "\(name): \(preview(c.text))")
        }
    }

    @Test("encode matches tokenizers (add_special_tokens=False)", arguments: tokenizerFixtures)
    func encodeWithoutSpecialTokens(name: String) throws {
        let tokenizer = try LoadedFixtures.tokenizer(name)
        for c in try LoadedFixtures.cases(name) {
            #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.idsNoSpecial, "\(name): \(preview(c.text))")
        }
    }

    @Test("decode matches tokenizers", arguments: tokenizerFixtures)
    func decode(name: String) throws {
        let tokenizer = try LoadedFixtures.tokenizer(name)
        for c in try LoadedFixtures.cases(name) {
            #expect(tokenizer.decode(c.ids) == c.decoded, "\(name): \(preview(c.text))")
            #expect(
                tokenizer.decode(c.ids, skipSpecialTokens: true) == c.decodedSkipSpecial, "\(name): \(preview(c.text))")
        }
    }

    @Test("token ↔ id lookups agree", arguments: tokenizerFixtures)
    func lookups(name: String) throws {
        let tokenizer = try LoadedFixtures.tokenizer(name)
        var checked = 0
        for id in 0..<tokenizer.vocabularySize {
            guard var token = tokenizer.token(id) else { continue }
            // A normalized added token shows its normalized form but is looked up by its content.
            if let added = tokenizer.addedTokens.first(where: { $0.id == id }), added.normalized {
                token = added.content
            }
            #expect(tokenizer.tokenID(token) == id, "\(name): id \(id) token \(preview(token))")
            checked += 1
        }
        #expect(checked == tokenizer.vocabularySize)
        #expect(tokenizer.token(-1) == nil)
        #expect(tokenizer.token(tokenizer.vocabularySize) == nil)
    }

    @Test("BOS and EOS ids")
    func specialIDs() throws {
        let qwen = try LoadedFixtures.tokenizer("qwen2")
        #expect(qwen.bosTokenID == nil)  // tokenizer_config.json says bos_token: null
        #expect(qwen.eosTokenIDs.first == qwen.tokenID("<|im_end|>"))
        #expect(qwen.eosTokenIDs.contains(qwen.tokenID("<|endoftext|>")!))

        let llama3 = try LoadedFixtures.tokenizer("llama3")
        #expect(llama3.bosTokenID == llama3.tokenID("<|begin_of_text|>"))
        #expect(llama3.eosTokenIDs.first == llama3.tokenID("<|eot_id|>"))
        #expect(llama3.eosTokenIDs.contains(llama3.tokenID("<|end_of_text|>")!))

        let llama2 = try LoadedFixtures.tokenizer("llama2")
        #expect(llama2.bosTokenID == 1)
        #expect(llama2.eosTokenIDs == [2])

        // No tokenizer_config.json: BOS from the post-processor, EOS from well-known names.
        let mistral = try LoadedFixtures.tokenizer("mistral")
        #expect(mistral.bosTokenID == 1)
        #expect(mistral.eosTokenIDs == [2])
        let gpt2 = try LoadedFixtures.tokenizer("gpt2")
        #expect(gpt2.bosTokenID == nil)
        #expect(gpt2.eosTokenIDs == [gpt2.tokenID("<|endoftext|>")!])
        #expect(gpt2.isSpecialToken(gpt2.tokenID("<|endoftext|>")!))
    }

    @Test("vocabulary size covers vocab and added tokens")
    func vocabularySize() throws {
        #expect(try LoadedFixtures.tokenizer("smollm2").vocabularySize == 49152)
        let qwen = try LoadedFixtures.tokenizer("qwen2")
        #expect(qwen.vocabularySize == qwen.tokenID("<tool_call>")! + 1)
    }

    @Test("init(url:) accepts the tokenizer.json file itself")
    func fileURL() throws {
        let t = try Tokenizer(url: Fixtures.url("tokenizers/qwen2/tokenizer.json"))
        #expect(t.chatTemplate?.source?.contains("<|im_start|>") == true)
        #expect(t.encode("hello") == (try LoadedFixtures.tokenizer("qwen2")).encode("hello"))
    }

    @Test("one tokenizer can be shared across threads")
    func concurrentUse() async throws {
        let tokenizer = try LoadedFixtures.tokenizer("qwen2")
        let cases = try LoadedFixtures.cases("qwen2")
        let mismatches = await withTaskGroup(of: Int.self) { group in
            for shift in 0..<4 {
                group.addTask {
                    var bad = 0
                    for k in 0..<cases.count {
                        let c = cases[(k + shift * 7) % cases.count]
                        if tokenizer.encode(c.text) != c.ids { bad += 1 }
                    }
                    return bad
                }
            }
            return await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }

    @Test("encoding a long text is linear enough", .timeLimit(.minutes(1)))
    func longText() throws {
        let tokenizer = try LoadedFixtures.tokenizer("llama3")
        let words = (try LoadedFixtures.cases("llama3")).map(\.text).joined(separator: " ")
        let text = String(repeating: words, count: 20)
        let ids = tokenizer.encode(text, addSpecialTokens: false)
        #expect(tokenizer.decode(ids) == text)
        // One very long word (no pre-tokenizer splits in the Llama-2 pipeline).
        let llama2 = try LoadedFixtures.tokenizer("llama2")
        let long = String(repeating: "abcdefghij", count: 5000)
        #expect(llama2.decode(llama2.encode(long, addSpecialTokens: false)) == long)
    }
}
