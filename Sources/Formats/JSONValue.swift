import Foundation

/// A parsed JSON value: the small dynamic type for reading `config.json`, index files and
/// safetensors headers without declaring a struct for every shape they come in.
///
/// Numbers are held as `Double`; integers up to 2^53 (every byte offset and size a real file
/// has) round-trip exactly, and `intValue` returns them only when they are integral.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// What the strict parser does when an object repeats a key.
    public enum DuplicateKeyPolicy: Sendable {
        /// Throw `JSONParseError` naming the key: safetensors headers and index files, where a
        /// repeated tensor name means two tensors and a silent choice would load the wrong one.
        case reject
        /// Keep the last value, as Python's `json` module does (lenient `config.json` reading).
        case keepLast
    }

    /// Parses UTF-8 JSON text with the strict parser (RFC 8259; no comments, no trailing commas).
    /// - Parameters:
    ///   - data: the JSON text.
    ///   - duplicateKeys: what to do with a key repeated inside one object.
    /// - Throws: `JSONParseError` with the byte offset and the reason.
    public init(parsing data: Data, duplicateKeys: DuplicateKeyPolicy = .reject) throws {
        self = try data.withUnsafeBytes { raw in
            var parser = StrictJSONParser(bytes: raw, duplicateKeys: duplicateKeys)
            return try parser.parseDocument()
        }
    }

    /// Reads and parses a JSON file (duplicate keys keep the last value, as Python does).
    /// - Parameter url: the file.
    /// - Throws: Foundation's read error, or `JSONParseError`.
    public init(contentsOf url: URL, duplicateKeys: DuplicateKeyPolicy = .keepLast) throws {
        try self.init(parsing: Data(contentsOf: url), duplicateKeys: duplicateKeys)
    }

    // MARK: Accessors

    /// The member `key` of an object; nil for a missing key or a non-object.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    /// Element `index` of an array; nil when out of range or not an array.
    public subscript(index: Int) -> JSONValue? {
        if case .array(let elements) = self, elements.indices.contains(index) { return elements[index] }
        return nil
    }

    /// True for `null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The Boolean, if this is `true` or `false`.
    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The number as a Double, if this is a number.
    public var doubleValue: Double? {
        if case .number(let value) = self { return value }
        return nil
    }

    /// The number as a Float, if this is a number.
    public var floatValue: Float? { doubleValue.map { Float($0) } }

    /// The number as an Int, only if it is integral and fits (so `2.5` or `1e300` give nil
    /// rather than a silently truncated value).
    public var intValue: Int? {
        guard case .number(let value) = self, value.rounded(.towardZero) == value,
            value >= -9.2e18, value <= 9.2e18
        else { return nil }
        return Int(value)
    }

    /// The string, if this is a string.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The elements, if this is an array.
    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// The members, if this is an object.
    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// Compact JSON text with object keys sorted, so equal values always print the same.
    public var jsonString: String {
        var out: [UInt8] = []
        write(into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private func write(into out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let value): out.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let value): JSONText.appendNumber(value, to: &out)
        case .string(let value): JSONText.appendQuoted(value, to: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (i, element) in elements.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                element.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, key) in members.keys.sorted().enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONText.appendQuoted(key, to: &out)
                out.append(UInt8(ascii: ":"))
                members[key]?.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }
}

extension JSONValue: Codable {
    /// Decodes any JSON value (through `JSONDecoder`, which keeps the last of duplicate keys).
    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a JSON value")
        }
    }

    /// Encodes the value as itself.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

/// Why strict JSON parsing failed, and where (byte offset into the text).
public struct JSONParseError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Byte offset of the problem.
    public let offset: Int
    /// What was wrong.
    public let reason: String
    /// The repeated key, when the error is a duplicate key (so callers can name the tensor).
    public let duplicateKey: String?
    /// How deep the problem sits: 1 inside the top-level object or array, 0 outside any.
    public let depth: Int

    public var description: String { "JSON error at byte \(offset): \(reason)" }
}

/// The leaves of JSON text, written as UTF-8 bytes: one definition for every JSON this project
/// writes (`JSONValue.jsonString`, safetensors headers, the server's responses).
public enum JSONText {
    /// Appends `string` quoted the way serde_json does (the safetensors reference writer):
    /// `"` and `\` escaped, control characters as `\n`-style or `\u00xx` escapes, `/` and
    /// non-ASCII left as they are. Matching it byte for byte lets our writer produce files
    /// identical to the reference's.
    public static func appendQuoted(_ string: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0..<0x20:
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hexDigit(byte >> 4), hexDigit(byte & 15)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Appends `value`: a whole number below 10^15 as an integer, any other finite number in
    /// Swift's shortest round-trip form (valid JSON: "0.25", "-1.5e-07"), `null` for NaN and
    /// infinities, which JSON lacks.
    public static func appendNumber(_ value: Double, to out: inout [UInt8]) {
        guard value.isFinite else { return out.append(contentsOf: "null".utf8) }
        if value.rounded(.towardZero) == value, abs(value) < 1e15 {
            out.append(contentsOf: String(Int64(value)).utf8)
        } else {
            out.append(contentsOf: value.description.utf8)
        }
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? 0x30 + nibble : UInt8(ascii: "a") + nibble - 10
    }
}

/// `string` quoted as `JSONText.appendQuoted` writes it.
func jsonQuoted(_ string: String) -> String {
    var out: [UInt8] = []
    JSONText.appendQuoted(string, to: &out)
    return String(decoding: out, as: UTF8.self)
}
