import Foundation
import TestSupport
import Testing

@testable import Tokenization

@Suite("Streaming detokenizer")
struct StreamingDetokenizerTests {
    @Test("pieces concatenate to decode(ids) and never split a character", arguments: tokenizerFixtures)
    func concatenatesToFullDecode(name: String) throws {
        let tokenizer = try LoadedFixtures.tokenizer(name)
        for c in try LoadedFixtures.cases(name) {
            for skip in [false, true] {
                var stream = StreamingDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skip)
                var pieces: [String] = []
                for id in c.ids { pieces.append(stream.append(id)) }
                pieces.append(stream.finish())
                let expected = skip ? c.decodedSkipSpecial : c.decoded
                #expect(pieces.joined() == expected, "\(name) skip=\(skip): \(preview(c.text))")
                // Swift strings are always valid UTF-8; a broken sequence would show up as U+FFFD.
                if !expected.unicodeScalars.contains("\u{FFFD}") {
                    #expect(!pieces.contains { $0.unicodeScalars.contains("\u{FFFD}") }, "\(name): \(preview(c.text))")
                }
            }
        }
    }

    @Test(
        "byte-fallback emoji and byte-level CJK are held back until complete",
        arguments: [
            ("llama2", "😀 👨‍👩‍👧"), ("mistral", "👍🏽!"), ("gpt2", "中文测试"), ("qwen2", "你好，世界"),
            ("smollm2", "日本語 🇯🇵"),
        ])
    func holdsBackPartialCharacters(name: String, text: String) throws {
        let tokenizer = try LoadedFixtures.tokenizer(name)
        let ids = tokenizer.encode(text, addSpecialTokens: false)
        // The text must really be split below character level, or the test proves nothing.
        let partial = ids.contains { id in tokenizer.decode([id]).unicodeScalars.contains("\u{FFFD}") }
        #expect(partial, "\(name): \(text) has no partial-character token")
        var stream = StreamingDetokenizer(tokenizer: tokenizer)
        var out = ""
        var heldBack = false
        for id in ids {
            let piece = stream.append(id)
            if piece.isEmpty { heldBack = true }
            #expect(!piece.unicodeScalars.contains("\u{FFFD}"))
            out += piece
        }
        out += stream.finish()
        #expect(heldBack)
        #expect(out == tokenizer.decode(ids))
    }

    @Test("finish flushes an incomplete sequence as U+FFFD")
    func finishFlushesIncomplete() throws {
        let tokenizer = try LoadedFixtures.tokenizer("llama2")
        let firstByte = try #require(tokenizer.tokenID("<0xF0>"))
        var stream = StreamingDetokenizer(tokenizer: tokenizer)
        #expect(stream.append(firstByte) == "")
        #expect(stream.finish() == "\u{FFFD}")
        // After finish the detokenizer starts afresh.
        #expect(stream.append(try #require(tokenizer.tokenID("<0x41>"))) == "A")
    }
}
