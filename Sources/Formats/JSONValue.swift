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
        var out = ""
        write(into: &out)
        return out
    }

    private func write(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .number(let value):
            if value.isFinite, value.rounded(.towardZero) == value, abs(value) < 1e15 {
                out += String(Int(value))
            } else if value.isFinite {
                out += "\(value)"
            } else {
                out += "null"  // JSON has no NaN or infinity
            }
        case .string(let value): out += jsonQuoted(value)
        case .array(let elements):
            out += "["
            for (i, element) in elements.enumerated() {
                if i > 0 { out += "," }
                element.write(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, key) in members.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                out += jsonQuoted(key)
                out += ":"
                members[key]?.write(into: &out)
            }
            out += "}"
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

/// Quotes a string the way serde_json does (the safetensors reference writer): escapes `"`,
/// `\` and control characters, leaves `/` and non-ASCII as they are. Matching it byte for byte
/// lets our writer produce files identical to the reference's.
func jsonQuoted(_ string: String) -> String {
    var out = "\""
    for scalar in string.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    out += "\""
    return out
}
