import Foundation

/// A thin typed view over `JSONSerialization` output that turns every type mismatch into a
/// `TokenizerError` naming the field path, so malformed files throw instead of crashing.
struct JSONReader {
    let object: [String: Any]
    /// Dotted path of this object inside the file, for error messages (`pre_tokenizer.pretokenizers[1]`).
    let path: String
    let file: String

    init(_ object: [String: Any], path: String, file: String) {
        self.object = object
        self.path = path
        self.file = file
    }

    static func parse(_ data: Data, file: String) throws -> JSONReader {
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw TokenizerError.invalidJSON(file: file, reason: "\(error.localizedDescription)")
        }
        guard let object = value as? [String: Any] else {
            throw TokenizerError.invalidJSON(file: file, reason: "top level is not a JSON object")
        }
        return JSONReader(object, path: "", file: file)
    }

    func fieldPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func has(_ key: String) -> Bool { raw(key) != nil }

    /// The value of `key`, nil when absent or JSON `null`. Compares the dynamic type instead of
    /// `value is NSNull`: on Linux that cast bridges a whole nested dictionary (a 50k-entry vocab)
    /// to `NSDictionary` first.
    func raw(_ key: String) -> Any? {
        guard let value = object[key], Swift.type(of: value) != NSNull.self else { return nil }
        return value
    }

    func invalid(_ key: String, _ reason: String) -> TokenizerError {
        .invalidField(field: fieldPath(key), file: file, reason: reason)
    }

    func string(_ key: String) throws -> String? {
        guard let value = raw(key) else { return nil }
        guard let s = value as? String else { throw invalid(key, "expected a string") }
        return s
    }

    func requiredString(_ key: String) throws -> String {
        guard let s = try string(key) else {
            throw TokenizerError.missingField(field: fieldPath(key), file: file)
        }
        return s
    }

    func bool(_ key: String, default value: Bool) throws -> Bool {
        guard let v = raw(key) else { return value }
        if let b = v as? Bool { return b }
        throw invalid(key, "expected a boolean")
    }

    func int(_ key: String) throws -> Int? {
        guard let v = raw(key) else { return nil }
        guard let n = Self.integer(v) else { throw invalid(key, "expected an integer") }
        return n
    }

    /// Largest token id accepted (16M, far above any vocabulary): tables are sized from ids.
    static let maxTokenID = 1 << 24

    /// A token id at `key`: an integer in `0..<maxTokenID`, nil when absent.
    func tokenID(_ key: String) throws -> Int? {
        guard let v = raw(key) else { return nil }
        guard let n = Self.tokenID(v) else { throw invalid(key, "expected a token id in 0..<\(Self.maxTokenID)") }
        return n
    }

    /// `value` as an integer: an integral number that fits `Int` (JSON numbers like `1e300` or
    /// `2.5` are not; `NSNumber.intValue` would silently wrap or truncate them).
    static func integer(_ value: Any) -> Int? {
        if let n = value as? Int { return n }
        guard let n = value as? NSNumber else { return nil }
        let d = n.doubleValue
        guard d.isFinite, d == d.rounded(), abs(d) < 9.2e18 else { return nil }
        return n.intValue
    }

    /// `value` as a token id in `0..<maxTokenID`.
    static func tokenID(_ value: Any) -> Int? {
        integer(value).flatMap { (0..<maxTokenID).contains($0) ? $0 : nil }
    }

    func object(_ key: String) throws -> JSONReader? {
        guard let v = raw(key) else { return nil }
        guard let o = v as? [String: Any] else { throw invalid(key, "expected an object") }
        return JSONReader(o, path: fieldPath(key), file: file)
    }

    func requiredObject(_ key: String) throws -> JSONReader {
        guard let o = try object(key) else { throw TokenizerError.missingField(field: fieldPath(key), file: file) }
        return o
    }

    func objects(_ key: String) throws -> [JSONReader] {
        guard let v = raw(key) else { return [] }
        guard let array = v as? [Any] else { throw invalid(key, "expected an array") }
        return try array.enumerated().map { i, element in
            guard let o = element as? [String: Any] else { throw invalid("\(key)[\(i)]", "expected an object") }
            return JSONReader(o, path: "\(fieldPath(key))[\(i)]", file: file)
        }
    }

    /// The `type` discriminator of a component object.
    func type() throws -> String {
        guard let t = try string("type") else {
            throw TokenizerError.missingField(field: fieldPath("type"), file: file)
        }
        return t
    }

    /// A `{"String": "..."}` or `{"Regex": "..."}` pattern object.
    func pattern(_ key: String) throws -> Pattern {
        let p = try requiredObject(key)
        if let s = try p.string("String") { return .string(s) }
        if let r = try p.string("Regex") { return .regex(r) }
        throw TokenizerError.unsupported(
            component: "pattern", type: p.object.keys.sorted().joined(separator: ","), file: file)
    }
}

/// A `tokenizers` pattern: a literal string or a regular expression.
enum Pattern: Sendable, Equatable {
    case string(String)
    case regex(String)
}
