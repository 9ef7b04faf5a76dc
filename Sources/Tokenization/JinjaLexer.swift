import Foundation

/// One token of a Jinja template.
enum JinjaToken: Equatable {
    /// Literal template text, already trimmed by the whitespace rules.
    case text(String)
    /// `{{`
    case variableBegin
    /// `}}`
    case variableEnd
    /// `{%`
    case blockBegin
    /// `%}`
    case blockEnd
    /// An identifier (`for`, `message`, `true`, ...).
    case name(String)
    /// A string literal, escapes decoded.
    case string(String)
    /// An integer literal.
    case int(Int)
    /// A float literal.
    case float(Double)
    /// An operator or punctuation (`+`, `==`, `(`, `|`, ...).
    case op(String)
}

/// Splits a template into tokens with the whitespace rules transformers compiles chat templates
/// with (`trim_blocks=True, lstrip_blocks=True`, jinja2's default `keep_trailing_newline=False`):
/// `-` on a tag strips all whitespace on that side; a block or comment tag drops the newline
/// right after it and the spaces and tabs before it on its line.
struct JinjaLexer {
    private let bytes: [UInt8]
    private var pos = 0
    private var line = 1
    private(set) var tokens: [(token: JinjaToken, line: Int)] = []

    /// Tokenizes a template.
    /// - Throws: `ChatTemplateError.syntax` for an unclosed tag, comment or string.
    static func tokenize(_ source: String) throws -> [(token: JinjaToken, line: Int)] {
        var text = source.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        if text.hasSuffix("\n") { text.removeLast() }
        var lexer = JinjaLexer(bytes: Array(text.utf8))
        try lexer.run()
        return lexer.tokens
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private enum TagKind { case variable, block, comment }

    private static let space: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D, 0x0B, 0x0C]

    private mutating func run() throws {
        var stripNext = false  // the previous tag ended with `-`
        var trimNewline = false  // the previous tag was a block or comment (trim_blocks)
        var lineStarting = true
        while pos < bytes.count {
            let tagStart = nextTag(from: pos)
            var text = Array(bytes[pos..<(tagStart ?? bytes.count)])
            if stripNext {
                text = Array(text.drop { Self.space.contains($0) })
            } else if trimNewline, text.first == 0x0A {
                text.removeFirst()
                lineStarting = true
            }
            var kind: TagKind = .variable
            if let tagStart {
                kind = bytes[tagStart + 1] == 0x7B ? .variable : bytes[tagStart + 1] == 0x25 ? .block : .comment
                let modifier = tagStart + 2 < bytes.count ? bytes[tagStart + 2] : 0
                if modifier == 0x2D {  // `-`
                    while let last = text.last, Self.space.contains(last) { text.removeLast() }
                } else if kind != .variable, modifier != 0x2B {  // lstrip_blocks, unless `+`
                    let lineStart = (text.lastIndex(of: 0x0A).map { $0 + 1 }) ?? 0
                    if lineStart > 0 || lineStarting,
                        text[lineStart...].allSatisfy({ $0 == 0x20 || $0 == 0x09 })
                    {
                        text.removeSubrange(lineStart...)
                    }
                }
            }
            if !text.isEmpty { tokens.append((.text(String(decoding: text, as: UTF8.self)), line)) }
            line += bytes[pos..<(tagStart ?? bytes.count)].filter { $0 == 0x0A }.count
            guard let tagStart else { break }
            pos = tagStart + 2
            if pos < bytes.count, bytes[pos] == 0x2D || bytes[pos] == 0x2B { pos += 1 }
            let closedWithMinus: Bool
            switch kind {
            case .comment: closedWithMinus = try skipComment()
            case .variable:
                tokens.append((.variableBegin, line))
                closedWithMinus = try lexInside(end: 0x7D)
                tokens.append((.variableEnd, line))
            case .block:
                tokens.append((.blockBegin, line))
                closedWithMinus = try lexInside(end: 0x25)
                tokens.append((.blockEnd, line))
                try lexRawIfNeeded()
            }
            stripNext = closedWithMinus
            trimNewline = kind != .variable && !closedWithMinus
            lineStarting = false
            if closedWithMinus {
                // jinja2 consumes the whitespace with the tag; a newline last means a line starts.
                var p = pos
                while p < bytes.count, Self.space.contains(bytes[p]) { p += 1 }
                lineStarting = p > pos && bytes[p - 1] == 0x0A
            }
        }
    }

    /// The index of the next `{{`, `{%` or `{#` at or after `start`.
    private func nextTag(from start: Int) -> Int? {
        var i = start
        while i + 1 < bytes.count {
            if bytes[i] == 0x7B, bytes[i + 1] == 0x7B || bytes[i + 1] == 0x25 || bytes[i + 1] == 0x23 { return i }
            i += 1
        }
        return nil
    }

    /// Skips a comment body; returns whether it closed with `-#}`.
    private mutating func skipComment() throws -> Bool {
        var i = pos
        while i + 1 < bytes.count {
            if bytes[i] == 0x23, bytes[i + 1] == 0x7D {
                let minus = i > pos && bytes[i - 1] == 0x2D
                line += bytes[pos..<i].filter { $0 == 0x0A }.count
                pos = i + 2
                return minus
            }
            i += 1
        }
        throw ChatTemplateError.syntax(line: line, message: "unclosed comment")
    }

    /// After `{% raw %}`, takes everything up to `{% endraw %}` as text.
    private mutating func lexRawIfNeeded() throws {
        let n = tokens.count
        guard n >= 3, tokens[n - 3].token == .blockBegin, tokens[n - 2].token == .name("raw") else { return }
        tokens.removeLast(3)
        var i = pos
        while let start = nextTag(from: i) {
            var j = start + 2
            if j < bytes.count, bytes[j] == 0x2D { j += 1 }
            while j < bytes.count, bytes[j] == 0x20 { j += 1 }
            if bytes[start + 1] == 0x25, bytes[j...].starts(with: Array("endraw".utf8)) {
                var body = Array(bytes[pos..<start])
                if start + 2 < bytes.count, bytes[start + 2] == 0x2D {
                    while let last = body.last, Self.space.contains(last) { body.removeLast() }
                }
                tokens.append((.text(String(decoding: body, as: UTF8.self)), line))
                pos = j
                let kept = tokens.count
                _ = try lexInside(end: 0x25)  // the `endraw %}` itself
                tokens.removeSubrange(kept...)
                return
            }
            i = start + 2
        }
        throw ChatTemplateError.syntax(line: line, message: "{% raw %} without {% endraw %}")
    }

    /// Tokenizes the inside of a tag up to its closing `}}` (`end` = `}`) or `%}` (`end` = `%`).
    /// Returns whether the closing had a `-`.
    private mutating func lexInside(end: UInt8) throws -> Bool {
        var depth = 0  // open brackets: `}}` inside a dict literal does not close the tag
        while pos < bytes.count {
            let c = bytes[pos]
            if Self.space.contains(c) {
                if c == 0x0A { line += 1 }
                pos += 1
                continue
            }
            if depth == 0 {
                if c == 0x2D, pos + 2 < bytes.count, bytes[pos + 1] == end, bytes[pos + 2] == 0x7D {
                    pos += 3
                    return true
                }
                if c == end, pos + 1 < bytes.count, bytes[pos + 1] == 0x7D {
                    pos += 2
                    return false
                }
            }
            if c == 0x27 || c == 0x22 {
                tokens.append((.string(try lexString(quote: c)), line))
            } else if Self.isDigit(c) {
                tokens.append((lexNumber(), line))
            } else if Self.isNameStart(c) {
                let start = pos
                while pos < bytes.count, Self.isNameStart(bytes[pos]) || Self.isDigit(bytes[pos]) { pos += 1 }
                tokens.append((.name(String(decoding: bytes[start..<pos], as: UTF8.self)), line))
            } else {
                let two = pos + 1 < bytes.count ? String(decoding: bytes[pos...(pos + 1)], as: UTF8.self) : ""
                if ["==", "!=", "<=", ">=", "//", "**"].contains(two) {
                    tokens.append((.op(two), line))
                    pos += 2
                } else if "+-*/%~<>=.,:|()[]{}".utf8.contains(c) {
                    if c == 0x28 || c == 0x5B || c == 0x7B { depth += 1 }
                    if c == 0x29 || c == 0x5D || c == 0x7D { depth -= 1 }
                    tokens.append((.op(String(UnicodeScalar(c))), line))
                    pos += 1
                } else {
                    throw ChatTemplateError.syntax(
                        line: line, message: "unexpected character \(String(UnicodeScalar(c)).debugDescription)")
                }
            }
        }
        throw ChatTemplateError.syntax(line: line, message: end == 0x25 ? "unclosed {% tag" : "unclosed {{ tag")
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
    private static func isNameStart(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
    }

    private mutating func lexNumber() -> JinjaToken {
        let start = pos
        while pos < bytes.count, Self.isDigit(bytes[pos]) || bytes[pos] == 0x5F { pos += 1 }
        var isFloat = false
        if pos + 1 < bytes.count, bytes[pos] == 0x2E, Self.isDigit(bytes[pos + 1]) {
            isFloat = true
            pos += 1
            while pos < bytes.count, Self.isDigit(bytes[pos]) { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == 0x65 || bytes[pos] == 0x45 {
            var p = pos + 1
            if p < bytes.count, bytes[p] == 0x2B || bytes[p] == 0x2D { p += 1 }
            if p < bytes.count, Self.isDigit(bytes[p]) {
                isFloat = true
                pos = p
                while pos < bytes.count, Self.isDigit(bytes[pos]) { pos += 1 }
            }
        }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self).replacingOccurrences(of: "_", with: "")
        if isFloat { return .float(Double(text) ?? 0) }
        return Int(text).map { .int($0) } ?? .float(Double(text) ?? 0)
    }

    /// A quoted string with Python's escapes (`\n`, `\t`, `\\`, `\'`, `\"`, `\uXXXX`, ...).
    private mutating func lexString(quote: UInt8) throws -> String {
        let startLine = line
        pos += 1
        var out: [UInt8] = []
        while pos < bytes.count {
            let c = bytes[pos]
            if c == quote {
                pos += 1
                return String(decoding: out, as: UTF8.self)
            }
            if c == 0x0A { line += 1 }
            if c == 0x5C, pos + 1 < bytes.count {
                let e = bytes[pos + 1]
                pos += 2
                switch e {
                case 0x6E: out.append(0x0A)  // n
                case 0x74: out.append(0x09)  // t
                case 0x72: out.append(0x0D)  // r
                case 0x30: out.append(0x00)  // 0
                case 0x62: out.append(0x08)  // b
                case 0x66: out.append(0x0C)  // f
                case 0x76: out.append(0x0B)  // v
                case 0x61: out.append(0x07)  // a
                case 0x5C, 0x27, 0x22: out.append(e)
                case 0x0A: line += 1  // line continuation
                case 0x75, 0x55, 0x78:  // u, U, x
                    let count = e == 0x75 ? 4 : e == 0x55 ? 8 : 2
                    guard pos + count <= bytes.count,
                        let v = UInt32(String(decoding: bytes[pos..<(pos + count)], as: UTF8.self), radix: 16),
                        let scalar = UnicodeScalar(v)
                    else { throw ChatTemplateError.syntax(line: line, message: "bad escape in a string literal") }
                    out.append(contentsOf: Array(String(scalar).utf8))
                    pos += count
                default:
                    out.append(0x5C)
                    out.append(e)
                }
                continue
            }
            out.append(c)
            pos += 1
        }
        throw ChatTemplateError.syntax(line: startLine, message: "unterminated string literal")
    }
}
