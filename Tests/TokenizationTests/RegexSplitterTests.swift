import Foundation
import Testing

@testable import Tokenization

@Suite("Regex splitter")
struct RegexSplitterTests {
    /// Awkward fragments: every boundary between alternatives of the GPT-2 / Qwen2 / Llama-3 patterns.
    static let fragments = [
        " ", "  ", "\n", "\r\n", "\t", " \n ", "\u{00A0}", "\u{3000}", "a", "The", "HELLO", "don't", "I'LL", "'s",
        "'", "'re", "'Ve", "0", "42", "1234567", "3.14", "½", "Ⅻ", ".", "!?", "...", "(", "\"", "$5", "_x", "😀",
        "👍🏽", "中文", "한국어", "مرحبا", "e\u{0301}", "ǅ", "ʰ",
    ]

    /// A deterministic xorshift generator, so failures reproduce.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
    }

    @Test(
        "hand-written matchers agree with NSRegularExpression",
        arguments: [RegexSplitter.gpt2Pattern, RegexSplitter.qwen2Pattern, RegexSplitter.llama3Pattern])
    func agreesWithGeneralRegex(pattern: String) throws {
        let fast = try RegexSplitter(.regex(pattern), file: "test")
        let general = try RegexSplitter(.regex(pattern), file: "test", forceGeneral: true)
        if case .general = fast { Issue.record("pattern not recognised: \(pattern)") }
        var rng = Generator(state: 0x9E37_79B9_7F4A_7C15)
        for _ in 0..<2000 {
            let count = Int.random(in: 1...10, using: &rng)
            let text = (0..<count).map { _ in Self.fragments.randomElement(using: &rng)! }.joined()
            let scalars = Array(text.unicodeScalars)
            #expect(fast.matches(scalars) == general.matches(scalars), "\(text.debugDescription)")
        }
    }

    @Test("Llama-3 splits numbers in groups of three, Qwen2 digit by digit")
    func digitRuns() throws {
        func pieces(_ pattern: String, _ text: String) throws -> [String] {
            let s = Array(text.unicodeScalars)
            return try RegexSplitter(.regex(pattern), file: "test").matches(s).map {
                String(String.UnicodeScalarView(s[$0]))
            }
        }
        #expect(try pieces(RegexSplitter.llama3Pattern, "1234567") == ["123", "456", "7"])
        #expect(try pieces(RegexSplitter.qwen2Pattern, "123") == ["1", "2", "3"])
        #expect(try pieces(RegexSplitter.gpt2Pattern, "a 123  b\n") == ["a", " 123", " ", " b", "\n"])
        #expect(try pieces(RegexSplitter.qwen2Pattern, "x  \n\n y") == ["x", "  \n\n", " y"])
    }

    @Test(
        "split behaviours",
        arguments: [
            (SplitBehavior.isolated, ["a", "-", "b", "-", "-", "c"]),
            (.removed, ["a", "b", "c"]),
            (.mergedWithPrevious, ["a-", "b-", "-", "c"]),
            (.mergedWithNext, ["a", "-b", "-", "-c"]),
            (.contiguous, ["a", "-", "b", "--", "c"]),
        ])
    func behaviours(behavior: SplitBehavior, expected: [String]) {
        let piece = Piece(scalars: Array("a-b--c".unicodeScalars), atStart: true)
        let matches = [1..<2, 3..<4, 4..<5]
        let parts = behavior.split(piece, matches: matches).map { String(String.UnicodeScalarView($0.scalars)) }
        #expect(parts == expected)
    }
}
