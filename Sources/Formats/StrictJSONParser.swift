import Foundation

/// A small recursive-descent JSON parser over raw bytes.
///
/// Why not `JSONSerialization`: it silently keeps one of two duplicate keys, and a safetensors
/// header with a repeated tensor name must be refused (which of the two tensors is meant?).
/// It also bounds nesting depth, so a hostile header of a million `[` cannot overflow the stack.
struct StrictJSONParser {
    /// Deeper nesting than any real header or config has; beyond it we refuse.
    static let maxDepth = 128

    private let bytes: UnsafeRawBufferPointer
    private let duplicateKeys: JSONValue.DuplicateKeyPolicy
    private var position = 0
    private var depth = 0

    init(bytes: UnsafeRawBufferPointer, duplicateKeys: JSONValue.DuplicateKeyPolicy) {
        self.bytes = bytes
        self.duplicateKeys = duplicateKeys
    }

    /// Parses one value that must fill the whole text (whitespace aside).
    mutating func parseDocument() throws -> JSONValue {
        // A UTF-8 byte-order mark is not JSON, but editors write it into config files.
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { position = 3 }
        skipWhitespace()
        let value = try parseValue()
        skipWhitespace()
        if position < bytes.count { throw fail("unexpected text after the JSON value") }
        return value
    }

    private func fail(_ reason: String, at offset: Int? = nil, key: String? = nil) -> JSONParseError {
        JSONParseError(offset: offset ?? position, reason: reason, duplicateKey: key, depth: depth)
    }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws {
        guard current == byte else {
            throw fail(current == nil ? "unexpected end of text, expected \(what)" : "expected \(what)")
        }
        position += 1
    }

    private mutating func parseValue() throws -> JSONValue {
        guard let byte = current else { throw fail("unexpected end of text, expected a value") }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try parseLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try parseLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try parseLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw fail("unexpected character '\(Character(Unicode.Scalar(byte)))'")
        }
    }

    private mutating func parseLiteral(_ literal: StaticString) throws {
        let start = position
        let count = literal.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw fail("invalid literal", at: start) }
        for i in 0..<count where bytes[position + i] != literal.utf8Start[i] {
            throw fail("invalid literal", at: start)
        }
        position += count
    }

    private mutating func enter() throws {
        depth += 1
        if depth > Self.maxDepth { throw fail("nesting deeper than \(Self.maxDepth) levels") }
    }

    private mutating func parseObject() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        position += 1  // {
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            let keyOffset = position
            guard current == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try parseString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "':'")
            skipWhitespace()
            let value = try parseValue()
            if members.updateValue(value, forKey: key) != nil, duplicateKeys == .reject {
                throw fail("duplicate key \"\(key)\"", at: keyOffset, key: key)
            }
            skipWhitespace()
            if current == UInt8(ascii: ",") {
                position += 1
                continue
            }
            try expect(UInt8(ascii: "}"), "',' or '}'")
            return .object(members)
        }
    }

    private mutating func parseArray() throws -> JSONValue {
        try enter()
        defer { depth -= 1 }
        position += 1  // [
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue())
            skipWhitespace()
            if current == UInt8(ascii: ",") {
                position += 1
                continue
            }
            try expect(UInt8(ascii: "]"), "',' or ']'")
            return .array(elements)
        }
    }

    private mutating func parseNumber() throws -> Double {
        let start = position
        if current == UInt8(ascii: "-") { position += 1 }
        guard let first = current, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else {
            throw fail("invalid number", at: start)
        }
        if first == UInt8(ascii: "0") {
            position += 1
        } else {
            skipDigits()
        }
        // Fast path for plain integers of up to 15 digits (exact in a Double): offsets and shapes.
        let isPlainInteger =
            current != UInt8(ascii: ".") && current != UInt8(ascii: "e") && current != UInt8(ascii: "E")
        let negative = bytes[start] == UInt8(ascii: "-")
        let digitCount = position - start - (negative ? 1 : 0)
        if isPlainInteger, digitCount <= 15 {
            var value = 0
            for i in (position - digitCount)..<position { value = value * 10 + Int(bytes[i] - UInt8(ascii: "0")) }
            return Double(negative ? -value : value)
        }
        if current == UInt8(ascii: ".") {
            position += 1
            guard skipDigits() > 0 else { throw fail("invalid number: no digits after '.'", at: start) }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard skipDigits() > 0 else { throw fail("invalid number: no digits in exponent", at: start) }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        guard let value = Double(text) else { throw fail("invalid number \(text)", at: start) }
        return value
    }

    @discardableResult
    private mutating func skipDigits() -> Int {
        let start = position
        while let byte = current, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") { position += 1 }
        return position - start
    }

    private mutating func parseString() throws -> String {
        let start = position
        position += 1  // opening quote
        let contentStart = position
        // Fast path: no escapes, the bytes are the string.
        while let byte = current, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") {
            if byte < 0x20 { throw fail("control character inside a string") }
            position += 1
        }
        guard let stop = current else { throw fail("unterminated string", at: start) }
        if stop == UInt8(ascii: "\"") {
            let content = UnsafeRawBufferPointer(rebasing: bytes[contentStart..<position])
            position += 1  // closing quote
            guard let string = Self.validatedString(content) else { throw fail("string is not valid UTF-8", at: start) }
            return string
        }
        var utf8 = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[contentStart..<position]))
        try parseEscapedTail(into: &utf8, start: start)
        position += 1  // closing quote
        guard let string = utf8.withUnsafeBytes({ Self.validatedString($0) }) else {
            throw fail("string is not valid UTF-8", at: start)
        }
        return string
    }

    /// The string if `bytes` are valid UTF-8, else nil (never a repaired string).
    private static func validatedString(_ bytes: UnsafeRawBufferPointer) -> String? {
        // Plain ASCII, the usual case, needs no further validation.
        if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        return String(bytes: bytes, encoding: .utf8)
    }

    /// Continues a string from its first backslash up to (not past) the closing quote.
    private mutating func parseEscapedTail(into utf8: inout [UInt8], start: Int) throws {
        while true {
            guard let byte = current else { throw fail("unterminated string", at: start) }
            if byte == UInt8(ascii: "\"") { return }
            if byte < 0x20 { throw fail("control character inside a string") }
            if byte != UInt8(ascii: "\\") {
                utf8.append(byte)
                position += 1
                continue
            }
            position += 1
            guard let escape = current else { throw fail("unterminated string", at: start) }
            position += 1
            switch escape {
            case UInt8(ascii: "\""): utf8.append(0x22)
            case UInt8(ascii: "\\"): utf8.append(0x5C)
            case UInt8(ascii: "/"): utf8.append(0x2F)
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800..<0xDC00).contains(code) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    guard current == UInt8(ascii: "\\"), position + 1 < bytes.count,
                        bytes[position + 1] == UInt8(ascii: "u")
                    else { throw fail("unpaired surrogate in \\u escape") }
                    position += 2
                    let low = try parseHex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate in \\u escape") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(code) {
                    throw fail("unpaired surrogate in \\u escape")
                }
                guard let scalar = Unicode.Scalar(code) else { throw fail("invalid \\u escape") }
                utf8.append(contentsOf: Array(String(Character(scalar)).utf8))
            default:
                throw fail("invalid escape \\\(Character(Unicode.Scalar(escape)))")
            }
        }
    }

    private mutating func parseHex4() throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw fail("invalid hex digit in \\u escape")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }
}
