import Foundation

/// A piece of normalized text on its way to the model.
struct Piece {
    var scalars: [Unicode.Scalar]
    /// Whether this piece starts at offset 0 of the original text (Metaspace `prepend_scheme: first`).
    var atStart: Bool
    /// Set by the ByteLevel pre-tokenizer: the piece is already in byte-level characters.
    var byteLevel: Bool = false
}

/// How a `Split`-style pre-tokenizer treats the matched delimiters.
enum SplitBehavior: String, Sendable {
    case isolated = "Isolated"
    case removed = "Removed"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"

    /// Splits `piece` given its matches (sorted, non-overlapping), as `tokenizers`' `split` does.
    func split(_ piece: Piece, matches: [Range<Int>], invert: Bool = false) -> [Piece] {
        let n = piece.scalars.count
        if matches.isEmpty && !invert { return n == 0 ? [] : [piece] }
        // Cover the whole piece with (range, isMatch).
        var parts: [(Range<Int>, Bool)] = []
        var last = 0
        for m in matches {
            if m.lowerBound > last { parts.append((last..<m.lowerBound, invert)) }
            parts.append((m, !invert))
            last = m.upperBound
        }
        if last < n { parts.append((last..<n, invert)) }

        var out: [Range<Int>] = []
        switch self {
        case .removed:
            out = parts.filter { !$0.1 }.map { $0.0 }
        case .isolated:
            out = parts.map { $0.0 }
        case .mergedWithPrevious:
            var previousMatch = false
            for (r, isMatch) in parts {
                if isMatch && !previousMatch, let prev = out.last {
                    out[out.count - 1] = prev.lowerBound..<r.upperBound
                } else {
                    out.append(r)
                }
                previousMatch = isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            var reversed: [Range<Int>] = []
            for (r, isMatch) in parts.reversed() {
                if isMatch && !previousMatch, let next = reversed.last {
                    reversed[reversed.count - 1] = r.lowerBound..<next.upperBound
                } else {
                    reversed.append(r)
                }
                previousMatch = isMatch
            }
            out = reversed.reversed()
        case .contiguous:
            var previousMatch = false
            for (r, isMatch) in parts {
                if isMatch == previousMatch, let prev = out.last {
                    out[out.count - 1] = prev.lowerBound..<r.upperBound
                } else {
                    out.append(r)
                }
                previousMatch = isMatch
            }
        }
        return out.compactMap { r in
            r.isEmpty
                ? nil
                : Piece(
                    scalars: Array(piece.scalars[r]), atStart: piece.atStart && r.lowerBound == 0,
                    byteLevel: piece.byteLevel)
        }
    }
}

/// A `tokenizer.json` pre-tokenizer.
indirect enum PreTokenizer: Sendable {
    case split(RegexSplitter, SplitBehavior, invert: Bool)
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme, split: Bool)
    case digits(individual: Bool)
    case whitespace
    case whitespaceSplit
    case punctuation(SplitBehavior)
    case bert
    case sequence([PreTokenizer])

    enum PrependScheme: String, Sendable { case always, first, never }

    private static let whitespaceRegex = try! RegexSplitter(.regex(#"\w+|[^\w\s]+"#), file: "", forceGeneral: true)

    /// Parses a pre-tokenizer object.
    /// - Throws: `TokenizerError.unsupported` for an unknown `type`, behaviour or prepend scheme.
    init(_ json: JSONReader) throws {
        let type = try json.type()
        switch type {
        case "Split":
            let splitter = try RegexSplitter(try json.pattern("pattern"), file: json.file)
            self = .split(
                splitter, try PreTokenizer.behavior(json, default: .isolated),
                invert: try json.bool("invert", default: false))
        case "ByteLevel":
            self = .byteLevel(
                addPrefixSpace: try json.bool("add_prefix_space", default: true),
                useRegex: try json.bool("use_regex", default: true))
        case "Metaspace":
            let replacement = try json.string("replacement") ?? "\u{2581}"
            guard replacement.unicodeScalars.count == 1, let r = replacement.unicodeScalars.first else {
                throw json.invalid("replacement", "expected a single character")
            }
            var scheme = PrependScheme.always
            if let s = try json.string("prepend_scheme") {
                guard let parsed = PrependScheme(rawValue: s) else {
                    throw TokenizerError.unsupported(component: "prepend_scheme", type: s, file: json.file)
                }
                scheme = parsed
            } else if json.has("add_prefix_space") {
                scheme = try json.bool("add_prefix_space", default: true) ? .always : .never
            }
            self = .metaspace(replacement: r, prepend: scheme, split: try json.bool("split", default: true))
        case "Digits": self = .digits(individual: try json.bool("individual_digits", default: false))
        case "Whitespace": self = .whitespace
        case "WhitespaceSplit": self = .whitespaceSplit
        case "Punctuation": self = .punctuation(try PreTokenizer.behavior(json, default: .isolated))
        case "BertPreTokenizer": self = .bert
        case "Sequence": self = .sequence(try json.objects("pretokenizers").map(PreTokenizer.init))
        default:
            throw TokenizerError.unsupported(component: "pre_tokenizer", type: type, file: json.file)
        }
    }

    private static func behavior(_ json: JSONReader, default value: SplitBehavior) throws -> SplitBehavior {
        guard let s = try json.string("behavior") else { return value }
        guard let b = SplitBehavior(rawValue: s) else {
            throw TokenizerError.unsupported(component: "split behavior", type: s, file: json.file)
        }
        return b
    }

    /// Splits every piece further.
    func apply(_ pieces: [Piece]) -> [Piece] {
        switch self {
        case .sequence(let list):
            return list.reduce(pieces) { $1.apply($0) }
        case .split(let splitter, let behavior, let invert):
            return pieces.flatMap { behavior.split($0, matches: splitter.matches($0.scalars), invert: invert) }
        case .byteLevel(let addPrefixSpace, let useRegex):
            return pieces.flatMap { p -> [Piece] in
                var p = p
                if addPrefixSpace && p.scalars.first != " " { p.scalars.insert(" ", at: 0) }
                let parts =
                    useRegex
                    ? SplitBehavior.isolated.split(p, matches: RegexSplitter.gpt2.matches(p.scalars)) : [p]
                return parts.map { part in
                    var q = part
                    q.scalars = ByteLevelTable.encode(part.scalars)
                    q.byteLevel = true
                    return q
                }
            }
        case .metaspace(let replacement, let prepend, let split):
            return pieces.flatMap { p -> [Piece] in
                var p = p
                p.scalars = p.scalars.map { $0 == " " ? replacement : $0 }
                let shouldPrepend = prepend == .always || (prepend == .first && p.atStart)
                if shouldPrepend && p.scalars.first != replacement { p.scalars.insert(replacement, at: 0) }
                guard split else { return [p] }
                let matches = p.scalars.indices.filter { p.scalars[$0] == replacement }.map { $0..<($0 + 1) }
                return SplitBehavior.mergedWithNext.split(p, matches: matches)
            }
        case .digits(let individual):
            return pieces.flatMap { p in
                PreTokenizer.splitChars(p, where: { $0.isNumber }, individual ? .isolated : .contiguous)
            }
        case .whitespace:
            return pieces.flatMap { p in
                SplitBehavior.removed.split(p, matches: PreTokenizer.whitespaceRegex.matches(p.scalars), invert: true)
            }
        case .whitespaceSplit:
            return pieces.flatMap { PreTokenizer.splitChars($0, where: { $0.isSpace }, .removed) }
        case .punctuation(let behavior):
            return pieces.flatMap { PreTokenizer.splitChars($0, where: { $0.isPunctuation }, behavior) }
        case .bert:
            return PreTokenizer.punctuation(.isolated).apply(PreTokenizer.whitespaceSplit.apply(pieces))
        }
    }

    /// Splits on every scalar satisfying `predicate`, each one its own match (as Rust's char patterns do).
    private static func splitChars(
        _ p: Piece, where predicate: (Unicode.Scalar) -> Bool,
        _ behavior: SplitBehavior
    ) -> [Piece] {
        var matches: [Range<Int>] = []
        for (i, s) in p.scalars.enumerated() where predicate(s) { matches.append(i..<(i + 1)) }
        return behavior.split(p, matches: matches)
    }
}
