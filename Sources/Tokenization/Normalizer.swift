import Foundation

/// A `tokenizer.json` normalizer, applied to each piece of raw text between added tokens.
indirect enum Normalizer: Sendable {
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case prepend(String)
    case replace(Pattern, String, RegexSplitter?)
    case strip(left: Bool, right: Bool)
    case sequence([Normalizer])

    /// Parses a normalizer object (the `normalizer` field, or an element of a `Sequence`).
    /// - Throws: `TokenizerError.unsupported` for an unknown `type`.
    init(_ json: JSONReader) throws {
        let type = try json.type()
        switch type {
        case "NFC": self = .nfc
        case "NFD": self = .nfd
        case "NFKC": self = .nfkc
        case "NFKD": self = .nfkd
        case "Lowercase": self = .lowercase
        case "Prepend": self = .prepend(try json.requiredString("prepend"))
        case "Replace":
            let pattern = try json.pattern("pattern")
            let content = try json.requiredString("content")
            if case .regex = pattern {
                self = .replace(pattern, content, try RegexSplitter(pattern, file: json.file, forceGeneral: true))
            } else {
                self = .replace(pattern, content, nil)
            }
        case "Strip":
            self = .strip(
                left: try json.bool("strip_left", default: true), right: try json.bool("strip_right", default: true))
        case "Sequence":
            self = .sequence(try json.objects("normalizers").map(Normalizer.init))
        default:
            throw TokenizerError.unsupported(component: "normalizer", type: type, file: json.file)
        }
    }

    /// Normalizes `text`.
    func apply(_ text: String) -> String {
        switch self {
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        case .lowercase: return Normalizer.lowercase(text)
        case .prepend(let p): return text.isEmpty ? text : p + text
        case .replace(let pattern, let content, let regex):
            let scalars = Array(text.unicodeScalars)
            let ranges: [Range<Int>]
            if let regex {
                ranges = regex.matches(scalars)
            } else if case .string(let s) = pattern {
                ranges = RegexSplitter.literal(Array(s.unicodeScalars)).matches(scalars)
            } else {
                ranges = []
            }
            if ranges.isEmpty { return text }
            var out: [Unicode.Scalar] = []
            var last = 0
            for r in ranges {
                out.append(contentsOf: scalars[last..<r.lowerBound])
                out.append(contentsOf: content.unicodeScalars)
                last = r.upperBound
            }
            out.append(contentsOf: scalars[last...])
            return String(scalars: out)
        case .strip(let left, let right):
            var scalars = Substring(text).unicodeScalars[...]
            if left { while let f = scalars.first, f.isSpace { scalars.removeFirst() } }
            if right { while let l = scalars.last, l.isSpace { scalars.removeLast() } }
            return String(scalars: scalars)
        case .sequence(let list):
            return list.reduce(text) { $1.apply($0) }
        }
    }

    /// Per-scalar full Unicode lowercasing. Like `tokenizers` (each char's `to_lowercase`), and
    /// unlike Rust's `str::to_lowercase`, there is no final-sigma rule: ΣΑΣ → σασ.
    static func lowercase(_ text: String) -> String {
        var out: [Unicode.Scalar] = []
        for s in text.unicodeScalars {
            if s.value < 0x80 {
                out.append(s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(s.value | 0x20)! : s)
            } else {
                out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return String(scalars: out)
    }
}
