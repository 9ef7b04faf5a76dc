import Foundation

/// A `tokenizer.json` decoder: turns token strings back into text. Like `tokenizers`, each step
/// maps a list of token strings to a new list (`decode_chain`), and the result is concatenated.
indirect enum Decoder: Sendable {
    case byteLevel
    case byteFallback
    case metaspace(replacement: Unicode.Scalar, prependFirst: Bool)
    case replace(String, String)
    case fuse
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case sequence([Decoder])

    /// Parses a decoder object.
    /// - Throws: `TokenizerError.unsupported` for an unknown type or a regex `Replace`.
    init(_ json: JSONReader) throws {
        let type = try json.type()
        switch type {
        case "ByteLevel": self = .byteLevel
        case "ByteFallback": self = .byteFallback
        case "Fuse": self = .fuse
        case "Metaspace":
            let replacement = try json.string("replacement") ?? "\u{2581}"
            guard replacement.unicodeScalars.count == 1, let r = replacement.unicodeScalars.first else {
                throw json.invalid("replacement", "expected a single character")
            }
            let scheme =
                try json.string("prepend_scheme")
                ?? (try json.bool("add_prefix_space", default: true) ? "always" : "never")
            self = .metaspace(replacement: r, prependFirst: scheme != "never")
        case "Replace":
            switch try json.pattern("pattern") {
            case .string(let s): self = .replace(s, try json.requiredString("content"))
            case .regex:
                throw TokenizerError.unsupported(component: "decoder", type: "Replace with Regex", file: json.file)
            }
        case "Strip":
            let content = try json.string("content") ?? " "
            guard let c = content.unicodeScalars.first, content.unicodeScalars.count == 1 else {
                throw json.invalid("content", "expected a single character")
            }
            self = .strip(
                content: c, start: max(0, try json.int("start") ?? 0), stop: max(0, try json.int("stop") ?? 0))
        case "Sequence":
            self = .sequence(try json.objects("decoders").map(Decoder.init))
        default:
            throw TokenizerError.unsupported(component: "decoder", type: type, file: json.file)
        }
    }

    /// Decodes token strings into text.
    func decode(_ tokens: [String]) -> String { decodeChain(tokens).joined() }

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let list):
            return list.reduce(tokens) { $1.decodeChain($0) }
        case .fuse:
            return [tokens.joined()]
        case .replace(let pattern, let content):
            return tokens.map { $0.replacingScalars(pattern, with: content) }
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens {
                let start = bytes.count
                var ok = true
                for s in token.unicodeScalars {
                    guard let b = ByteLevelTable.byte(s) else { ok = false; break }
                    bytes.append(b)
                }
                if !ok {
                    // A token that is not byte-level text (an added token, say) passes through as UTF-8.
                    bytes.removeSubrange(start...)
                    bytes.append(contentsOf: token.utf8)
                }
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if Decoder.isValidUTF8(pending) {
                    out.append(String(decoding: pending, as: UTF8.self))
                } else {
                    out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for token in tokens {
                if let b = Decoder.byteToken(token) {
                    pending.append(b)
                } else {
                    flush()
                    out.append(token)
                }
            }
            flush()
            return out
        case .metaspace(let replacement, let prependFirst):
            return tokens.enumerated().map { i, token in
                var out: [Unicode.Scalar] = []
                for s in token.unicodeScalars {
                    if s == replacement {
                        if !(i == 0 && prependFirst) { out.append(" ") }
                    } else {
                        out.append(s)
                    }
                }
                return String(scalars: out)
            }
        case .strip(let content, let start, let stop):
            return tokens.map { token in
                let scalars = Array(token.unicodeScalars)
                var lo = 0
                while lo < min(start, scalars.count) && scalars[lo] == content { lo += 1 }
                var hi = scalars.count
                var k = 0
                while k < stop && hi > lo && scalars[hi - 1] == content { hi -= 1; k += 1 }
                return String(scalars: scalars[lo..<hi])
            }
        }
    }

    /// Whether `bytes` is well-formed UTF-8 (`String(validating:)` needs macOS 15).
    static func isValidUTF8(_ bytes: [UInt8]) -> Bool {
        var iterator = bytes.makeIterator()
        var parser = UTF8.ForwardParser()
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    /// The byte of a `<0xXX>` token.
    static func byteToken(_ token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }
}

extension String {
    /// Replaces every non-overlapping occurrence of `pattern`, comparing Unicode scalars (not
    /// grapheme clusters, so a combining mark after the pattern does not hide a match).
    func replacingScalars(_ pattern: String, with content: String) -> String {
        let ranges = RegexSplitter.literal(Array(pattern.unicodeScalars)).matches(Array(unicodeScalars))
        if ranges.isEmpty { return self }
        let scalars = Array(unicodeScalars)
        var out: [Unicode.Scalar] = []
        var last = 0
        for r in ranges {
            out.append(contentsOf: scalars[last..<r.lowerBound])
            out.append(contentsOf: content.unicodeScalars)
            last = r.upperBound
        }
        out.append(contentsOf: scalars[last...])
        return String(scalars: out)
    }
}
