import Foundation

/// One entry of `tokenizer.json`'s `added_tokens`.
public struct AddedToken: Sendable, Equatable {
    /// The token id.
    public var id: Int
    /// The literal text matched in the input.
    public var content: String
    /// Only match when not preceded or followed by a word character.
    public var singleWord: Bool
    /// Absorb whitespace on the left / right of a match.
    public var lstrip: Bool
    /// See `lstrip`.
    public var rstrip: Bool
    /// Match in normalized text (after the normalizer) instead of raw text.
    public var normalized: Bool
    /// Special tokens are dropped by `decode(_:skipSpecialTokens: true)`.
    public var special: Bool

    /// Creates an added token; the defaults are those of a special token (`<|im_end|>`).
    public init(
        id: Int, content: String, singleWord: Bool = false, lstrip: Bool = false, rstrip: Bool = false,
        normalized: Bool = false, special: Bool = true
    ) {
        self.id = id
        self.content = content
        self.singleWord = singleWord
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.normalized = normalized
        self.special = special
    }
}

/// Leftmost-longest matcher for added tokens, mirroring `tokenizers`' `AddedVocabulary::find_matches`
/// (an Aho-Corasick automaton with `LeftmostLongest` semantics, then the single_word/lstrip/rstrip rules).
struct AddedTokenMatcher: Sendable {
    private struct Entry: Sendable {
        var scalars: [Unicode.Scalar]
        var token: AddedToken
    }
    /// First scalar → entries, longest first.
    private let byFirst: [Unicode.Scalar: [Entry]]
    /// Which ASCII scalars start some token: skips the dictionary lookup for most of the text.
    private let asciiFirst: [Bool]

    var isEmpty: Bool { byFirst.isEmpty }

    /// - Parameter patterns: (text to look for, token) pairs.
    init(_ patterns: [(String, AddedToken)]) {
        var table: [Unicode.Scalar: [Entry]] = [:]
        for (text, token) in patterns {
            let scalars = Array(text.unicodeScalars)
            guard let first = scalars.first else { continue }
            table[first, default: []].append(Entry(scalars: scalars, token: token))
        }
        for key in table.keys { table[key]!.sort { $0.scalars.count > $1.scalars.count } }
        byFirst = table
        asciiFirst = (0..<128).map { table[Unicode.Scalar(UInt8($0))] != nil }
    }

    /// Splits `s` into (range, token or nil) parts covering it. Always returns at least one part.
    func split(_ s: [Unicode.Scalar]) -> [(Range<Int>, AddedToken?)] {
        if byFirst.isEmpty || s.isEmpty { return [(0..<s.count, nil)] }
        var parts: [(Range<Int>, AddedToken?)] = []
        var startOffset = 0
        var i = 0
        while i < s.count {
            if s[i].value < 0x80 && !asciiFirst[Int(s[i].value)] {
                i += 1
                continue
            }
            guard let candidates = byFirst[s[i]],
                let entry = candidates.first(where: { e in
                    i + e.scalars.count <= s.count && s[i..<(i + e.scalars.count)].elementsEqual(e.scalars)
                })
            else {
                i += 1
                continue
            }
            var start = i
            var stop = i + entry.scalars.count
            i = stop  // non-overlapping: the next search starts after this match, even if it is discarded
            let token = entry.token
            if token.singleWord {
                let startOK = start == 0 || !s[start - 1].isWordCharacter
                let stopOK = stop == s.count || !s[stop].isWordCharacter
                if !startOK || !stopOK { continue }
            }
            if token.lstrip {
                var j = start
                while j > 0 && s[j - 1].isSpace { j -= 1 }
                start = max(j, startOffset)
            }
            if token.rstrip {
                while stop < s.count && s[stop].isSpace { stop += 1 }
                i = stop
            }
            if startOffset < start { parts.append((startOffset..<start, nil)) }
            parts.append((start..<stop, token))
            startOffset = stop
        }
        if startOffset < s.count { parts.append((startOffset..<s.count, nil)) }
        return parts
    }
}
