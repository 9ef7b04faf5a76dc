import Foundation

/// A value inside a chat template: the data model of Jinja2 as Python sees it (strings, ints,
/// floats, lists, ordered dicts, `None`, and jinja2's `Undefined`), so that printing, comparing
/// and JSON-encoding give the bytes `transformers`' `apply_chat_template` gives.
public enum JinjaValue: Equatable {
    /// jinja2's `Undefined`: prints as nothing, is falsy, iterates as empty; reading an
    /// attribute of it is an error.
    case undefined
    /// Python `None` (`none` in a template).
    case none
    /// A boolean.
    case bool(Bool)
    /// A Python `int`.
    case int(Int)
    /// A Python `float`.
    case double(Double)
    /// A string.
    case string(String)
    /// A list (tuples are lists here: templates only read them).
    case array([JinjaValue])
    /// A dict, keys in insertion order (`tojson` and `items` keep that order, as Python does).
    case object(JinjaObject)
    /// A `namespace(...)`: the one mutable object templates have (`{% set ns.x = ... %}`).
    case namespace(JinjaNamespace)
    /// A macro or a global function.
    case callable(JinjaCallable)

    /// Converts the output of `JSONSerialization` (or plain Swift values) to template values.
    /// - Parameter json: `String`, `Bool`, `Int`, `Double`, `NSNumber`, arrays, dictionaries or `NSNull`.
    /// - Returns: the value; dictionary keys are sorted, as JSON objects have no order.
    public init(json: Any?) {
        switch json {
        case nil: self = .none
        case let v as JinjaValue: self = v
        case let s as String: self = .string(s)
        case let b as Bool where Swift.type(of: json!) == Bool.self: self = .bool(b)
        case let n as NSNumber:
            switch String(cString: n.objCType) {
            case "c", "B": self = .bool(n.boolValue)
            case "f", "d": self = .double(n.doubleValue)
            default: self = .int(n.intValue)
            }
        case let i as Int: self = .int(i)
        case let d as Double: self = .double(d)
        case let a as [Any]: self = .array(a.map { JinjaValue(json: $0) })
        case let o as [String: Any]:
            self = .object(JinjaObject(o.keys.sorted().map { ($0, JinjaValue(json: o[$0])) }))
        default: self = .none
        }
    }

    /// Python truthiness.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .object(let o): return !o.isEmpty
        case .namespace, .callable: return true
        }
    }

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// Python's `str(value)`, which is what `{{ value }}` prints (`Undefined` prints nothing).
    var pythonString: String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return pythonRepr
        }
    }

    /// Python's `repr(value)`: lists print as `['a', 1, None]`.
    var pythonRepr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return JinjaValue.pythonFloat(d)
        case .string(let s): return JinjaValue.pythonQuoted(s)
        case .array(let a): return "[" + a.map(\.pythonRepr).joined(separator: ", ") + "]"
        case .object(let o):
            return "{" + o.pairs.map { JinjaValue.pythonQuoted($0.key) + ": " + $0.value.pythonRepr }
                .joined(separator: ", ") + "}"
        case .namespace(let n):
            return "<Namespace " + JinjaValue.object(JinjaObject(n.attributes)).pythonRepr + ">"
        case .callable(let c): return "<function \(c.name)>"
        }
    }

    /// Python's `repr(float)`: shortest round-trip digits, `1.0` for integral values, `inf`, `nan`.
    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        return d.description  // Swift also prints the shortest round-trip form ("1.0", "1e-05", "1e+16")
    }

    /// Python's quoting of a string in `repr`: single quotes unless the text has `'` and no `"`.
    static func pythonQuoted(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for u in s.unicodeScalars {
            switch u {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(u) == quote {
                    out += "\\" + String(quote)
                } else if u.value < 0x20 || u.value == 0x7F {
                    out += String(format: "\\x%02x", u.value)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out.append(quote)
        return out
    }

    /// Python equality, as `==` in a template: `1 == 1.0 == true`, dicts compare unordered.
    static func pythonEqual(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        if let x = a.numeric, let y = b.numeric { return x == y }
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { pythonEqual($0, $1) }
        case (.object(let x), .object(let y)):
            return x.count == y.count && x.pairs.allSatisfy { p in y[p.key].map { pythonEqual(p.value, $0) } ?? false }
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.callable(let x), .callable(let y)): return x === y
        default: return false
        }
    }

    /// The value as a number when it is a bool, int or float (Python's `True == 1`).
    var numeric: Double? {
        switch self {
        case .bool(let b): return b ? 1 : 0
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    /// Python's `json.dumps` with `ensure_ascii=False`, as transformers' `tojson` calls it.
    /// - Parameters:
    ///   - indent: spaces per level; nil writes one line with `", "` and `": "` separators.
    ///   - sortKeys: sort dict keys.
    /// - Throws: `ChatTemplateError.render` for a value JSON cannot hold (`Undefined`, a macro).
    func json(indent: Int? = nil, sortKeys: Bool = false, separators: (String, String)? = nil) throws -> String {
        var out = ""
        let itemSeparator = separators?.0 ?? (indent == nil ? ", " : ",")
        let keySeparator = separators?.1 ?? ": "
        func write(_ v: JinjaValue, depth: Int) throws {
            func newline(_ level: Int) {
                if let indent { out += "\n" + String(repeating: " ", count: indent * level) }
            }
            switch v {
            case .none: out += "null"
            case .bool(let b): out += b ? "true" : "false"
            case .int(let i): out += String(i)
            case .double(let d):
                out += d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : JinjaValue.pythonFloat(d)
            case .string(let s): out += JinjaValue.jsonQuoted(s)
            case .array(let a):
                if a.isEmpty { out += "[]"; return }
                out += "["
                for (i, item) in a.enumerated() {
                    if i > 0 { out += itemSeparator }
                    newline(depth + 1)
                    try write(item, depth: depth + 1)
                }
                newline(depth)
                out += "]"
            case .object(let o):
                if o.isEmpty { out += "{}"; return }
                out += "{"
                let pairs = sortKeys ? o.pairs.sorted { $0.key < $1.key } : o.pairs
                for (i, p) in pairs.enumerated() {
                    if i > 0 { out += itemSeparator }
                    newline(depth + 1)
                    out += JinjaValue.jsonQuoted(p.key) + keySeparator
                    try write(p.value, depth: depth + 1)
                }
                newline(depth)
                out += "}"
            case .namespace(let n): try write(.object(JinjaObject(n.attributes)), depth: depth)
            case .undefined, .callable:
                throw ChatTemplateError.render(line: nil, message: "Object of type \(v.typeName) is not JSON serializable")
            }
        }
        try write(self, depth: 0)
        return out
    }

    /// JSON string quoting as Python's `json.dumps(ensure_ascii=False)` writes it.
    static func jsonQuoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    /// The Python type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .array: return "list"
        case .object: return "dict"
        case .namespace: return "Namespace"
        case .callable: return "function"
        }
    }
}

extension JinjaValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    /// A string value.
    public init(stringLiteral value: String) { self = .string(value) }
    /// A boolean value.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// An int value.
    public init(integerLiteral value: Int) { self = .int(value) }
    /// A list value.
    public init(arrayLiteral elements: JinjaValue...) { self = .array(elements) }
    /// A dict value, keys in the order written.
    public init(dictionaryLiteral elements: (String, JinjaValue)...) { self = .object(JinjaObject(elements)) }
    /// `None`.
    public init(nilLiteral: ()) { self = .none }
}

/// A dict with Python's insertion order.
public struct JinjaObject: Equatable {
    /// The entries in insertion order.
    public private(set) var pairs: [(key: String, value: JinjaValue)]

    /// Creates a dict from ordered entries; a repeated key keeps its first position and last value.
    public init(_ pairs: [(String, JinjaValue)]) {
        self.pairs = []
        for (k, v) in pairs { self[k] = v }
    }

    /// The value at `key`, nil when absent.
    public subscript(key: String) -> JinjaValue? {
        get { pairs.first { $0.key == key }?.value }
        set {
            if let i = pairs.firstIndex(where: { $0.key == key }) {
                if let newValue { pairs[i].value = newValue } else { pairs.remove(at: i) }
            } else if let newValue {
                pairs.append((key, newValue))
            }
        }
    }

    var count: Int { pairs.count }
    var isEmpty: Bool { pairs.isEmpty }
    var keys: [String] { pairs.map(\.key) }

    /// Equal when both hold the same entries in the same order.
    public static func == (a: JinjaObject, b: JinjaObject) -> Bool {
        a.pairs.count == b.pairs.count && zip(a.pairs, b.pairs).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

/// The object `namespace(...)` makes: attributes a template may assign across loop scopes.
public final class JinjaNamespace: Equatable {
    var attributes: [(String, JinjaValue)]

    init(_ attributes: [(String, JinjaValue)]) { self.attributes = attributes }

    subscript(name: String) -> JinjaValue? {
        get { attributes.first { $0.0 == name }?.1 }
        set {
            if let i = attributes.firstIndex(where: { $0.0 == name }) {
                attributes[i].1 = newValue ?? .none
            } else {
                attributes.append((name, newValue ?? .none))
            }
        }
    }

    /// Identity: two namespaces are the same object or different.
    public static func == (a: JinjaNamespace, b: JinjaNamespace) -> Bool { a === b }
}

/// A macro defined by the template or a global function (`raise_exception`, `range`, ...).
public final class JinjaCallable: Equatable {
    let name: String
    let call: ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue

    init(name: String, call: @escaping ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue) {
        self.name = name
        self.call = call
    }

    /// Identity.
    public static func == (a: JinjaCallable, b: JinjaCallable) -> Bool { a === b }
}
