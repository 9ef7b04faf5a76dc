import Foundation
import Testing

@testable import Tokenization

@Suite("Normalizers")
struct NormalizerTests {
    @Test(
        "each normalizer",
        arguments: [
            (Normalizer.nfc, "cafe\u{0301}", "caf\u{00E9}"),
            (.nfd, "caf\u{00E9}", "cafe\u{0301}"),
            (.nfkc, "ﬁ①", "fi1"),
            (.nfkd, "\u{00C5}", "A\u{030A}"),
            (.lowercase, "ΣΑΣ İ HELLO", "σασ i\u{0307} hello"),
            (.prepend("\u{2581}"), "hi", "\u{2581}hi"),
            (.prepend("\u{2581}"), "", ""),
            (.replace(.string(" "), "\u{2581}", nil), " a  b", "\u{2581}a\u{2581}\u{2581}b"),
            (.strip(left: true, right: false), " \t x ", "x "),
            (.strip(left: true, right: true), "\n x \u{3000}", "x"),
            (.sequence([.prepend("_"), .lowercase]), "AB", "_ab"),
        ])
    func apply(normalizer: Normalizer, input: String, expected: String) {
        #expect(normalizer.apply(input).unicodeScalars.elementsEqual(expected.unicodeScalars))
    }
}
