import Foundation

/// The operators, filters, tests and methods chat templates use, each behaving as its jinja2 or
/// Python counterpart (`str.split`, `str.strip`, `json.dumps`, ...). Anything else is refused by
/// name rather than guessed.
enum JinjaBuiltins {
    static func fail(_ message: String) -> ChatTemplateError { .render(line: nil, message: message) }

    // MARK: - Operators

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        switch op {
        case "==": return .bool(JinjaValue.pythonEqual(a, b))
        case "!=": return .bool(!JinjaValue.pythonEqual(a, b))
        case "<", ">", "<=", ">=":
            let order: Int
            if let x = a.numeric, let y = b.numeric {
                order = x < y ? -1 : x > y ? 1 : 0
            } else if case .string(let x) = a, case .string(let y) = b {
                order = x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? -1 : x == y ? 0 : 1
            } else {
                throw fail("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
            }
            switch op {
            case "<": return .bool(order < 0)
            case ">": return .bool(order > 0)
            case "<=": return .bool(order <= 0)
            default: return .bool(order >= 0)
            }
        case "in": return .bool(try contains(b, a))
        case "~": return .string(a.pythonString + b.pythonString)
        case "+":
            switch (a, b) {
            case (.string(let x), .string(let y)): return .string(x + y)
            case (.array(let x), .array(let y)): return .array(x + y)
            default: return try arithmetic(op, a, b)
            }
        case "*":
            if case .string(let s) = a, let n = b.integerIndex { return .string(String(repeating: s, count: max(n, 0))) }
            if case .array(let x) = a, let n = b.integerIndex {
                return .array(Array(repeating: x, count: max(n, 0)).flatMap { $0 })
            }
            return try arithmetic(op, a, b)
        default: return try arithmetic(op, a, b)
        }
    }

    private static func arithmetic(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        let bothInts = a.integerIndex != nil && b.integerIndex != nil
        guard let x = a.numeric, let y = b.numeric else {
            throw fail("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        if bothInts, let i = a.integerIndex, let j = b.integerIndex {
            func checked(_ r: (partialValue: Int, overflow: Bool)) throws -> JinjaValue {
                if r.overflow { throw fail("integer overflow in \(op)") }
                return .int(r.partialValue)
            }
            switch op {
            case "+": return try checked(i.addingReportingOverflow(j))
            case "-": return try checked(i.subtractingReportingOverflow(j))
            case "*": return try checked(i.multipliedReportingOverflow(by: j))
            case "//", "%":
                guard j != 0 else { throw fail("integer division or modulo by zero") }
                var q = i / j
                if (i % j != 0) && ((i < 0) != (j < 0)) { q -= 1 }  // Python floors
                return .int(op == "//" ? q : i - q * j)
            case "**":
                guard j >= 0 else { return .double(pow(x, y)) }
                var r = 1
                for _ in 0..<j {
                    let m = r.multipliedReportingOverflow(by: i)
                    if m.overflow { throw fail("integer overflow in **") }
                    r = m.partialValue
                }
                return .int(r)
            default: break
            }
        }
        switch op {
        case "+": return .double(x + y)
        case "-": return .double(x - y)
        case "*": return .double(x * y)
        case "/":
            guard y != 0 else { throw fail("division by zero") }
            return .double(x / y)
        case "//":
            guard y != 0 else { throw fail("float floor division by zero") }
            return .double((x / y).rounded(.down))
        case "%":
            guard y != 0 else { throw fail("float modulo") }
            return .double(x - y * (x / y).rounded(.down))
        case "**": return .double(pow(x, y))
        default: throw fail("unknown operator \(op)")
        }
    }

    /// Python's `needle in haystack`.
    static func contains(_ haystack: JinjaValue, _ needle: JinjaValue) throws -> Bool {
        switch haystack {
        case .string(let s):
            guard case .string(let n) = needle else {
                throw fail("'in <string>' requires string as left operand, not \(needle.typeName)")
            }
            return n.isEmpty || s.contains(n)
        case .array(let a): return a.contains { JinjaValue.pythonEqual($0, needle) }
        case .object(let o):
            guard case .string(let k) = needle else { return false }
            return o[k] != nil
        case .namespace(let ns):
            guard case .string(let k) = needle else { return false }
            return ns[k] != nil
        case .undefined: return false
        default: throw fail("argument of type '\(haystack.typeName)' is not iterable")
        }
    }

    // MARK: - Methods

    /// Calls `value.name(args)` when `name` is a method of the value's Python type; nil when it is not.
    static func callMethod(_ v: JinjaValue, _ name: String, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue? {
        func arg(_ i: Int, _ key: String) -> JinjaValue? {
            i < args.count ? args[i] : kwargs.first { $0.0 == key }?.1
        }
        func stringArg(_ i: Int, _ key: String) throws -> String? {
            switch arg(i, key) {
            case nil, .none?: return nil
            case .string(let s)?: return s
            case let other?: throw fail("\(name)() argument must be str or None, not \(other.typeName)")
            }
        }
        switch v {
        case .string(let s):
            switch name {
            case "startswith", "endswith":
                let candidates: [JinjaValue]
                switch arg(0, "prefix") {
                case .string(let p)?: candidates = [.string(p)]
                case .array(let a)?: candidates = a
                default: throw fail("\(name) first arg must be str or a tuple of str")
                }
                return .bool(candidates.contains { c in
                    guard case .string(let p) = c else { return false }
                    return name == "startswith" ? s.unicodeScalars.starts(with: p.unicodeScalars)
                        : s.unicodeScalars.reversed().starts(with: p.unicodeScalars.reversed())
                })
            case "strip", "lstrip", "rstrip":
                return .string(strip(s, chars: try stringArg(0, "chars"), left: name != "rstrip", right: name != "lstrip"))
            case "split", "rsplit":
                let maxSplit = arg(1, "maxsplit")?.integerIndex ?? -1
                return .array(try split(s, separator: try stringArg(0, "sep"), maxSplit: maxSplit, fromRight: name == "rsplit")
                    .map { .string($0) })
            case "upper": return .string(s.uppercased())
            case "lower": return .string(s.lowercased())
            case "title": return .string(title(s))
            case "capitalize": return .string(capitalize(s))
            case "replace":
                guard let old = try stringArg(0, "old"), let new = try stringArg(1, "new") else {
                    throw fail("replace() takes two strings")
                }
                return .string(replace(s, old, new, count: arg(2, "count")?.integerIndex ?? -1))
            case "find", "rfind", "index", "rindex":
                guard let sub = try stringArg(0, "sub") else { throw fail("\(name)() takes a string") }
                let range = name.hasPrefix("r") ? s.range(of: sub, options: .backwards) : s.range(of: sub)
                if let range { return .int(s.unicodeScalars.distance(from: s.startIndex, to: range.lowerBound)) }
                if name.hasSuffix("index") { throw fail("substring not found") }
                return .int(-1)
            case "count":
                guard let sub = try stringArg(0, "sub"), !sub.isEmpty else { return .int(s.unicodeScalars.count + 1) }
                return .int(s.components(separatedBy: sub).count - 1)
            case "join":
                return .string(try iterateStrings(arg(0, "iterable") ?? .undefined, "join").joined(separator: s))
            case "isdigit": return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.numericType != nil })
            case "isalpha": return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic })
            case "isspace": return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.isWhitespace })
            case "splitlines": return .array(s.split(omittingEmptySubsequences: false) { $0.isNewline }.map { .string(String($0)) })
            default: return nil
            }
        case .object(let o):
            switch name {
            case "items": return .array(o.pairs.map { .array([.string($0.key), $0.value]) })
            case "keys": return .array(o.keys.map { .string($0) })
            case "values": return .array(o.pairs.map(\.value))
            case "get":
                guard case .string(let k)? = arg(0, "key") else { return arg(1, "default") ?? JinjaValue.none }
                return o[k] ?? arg(1, "default") ?? JinjaValue.none
            default: return nil
            }
        case .array:
            if ["append", "extend", "pop", "insert", "remove", "clear", "sort", "reverse"].contains(name) {
                throw fail("access to the list method '\(name)' is unsafe (the sandbox forbids changing a list)")
            }
            return nil
        default: return nil
        }
    }

    /// Python's `str.strip(chars)`: whitespace when `chars` is nil.
    static func strip(_ s: String, chars: String?, left: Bool = true, right: Bool = true) -> String {
        let set = chars.map { Set($0.unicodeScalars) }
        func drop(_ u: Unicode.Scalar) -> Bool { set?.contains(u) ?? u.properties.isWhitespace }
        var scalars = Substring(s).unicodeScalars[...]
        if left { while let f = scalars.first, drop(f) { scalars.removeFirst() } }
        if right { while let l = scalars.last, drop(l) { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    /// Python's `str.split(sep, maxsplit)` and `rsplit`.
    static func split(_ s: String, separator: String?, maxSplit: Int, fromRight: Bool) throws -> [String] {
        guard let separator else {
            var words = s.unicodeScalars.split { $0.properties.isWhitespace }.map { String(String.UnicodeScalarView($0)) }
            if maxSplit >= 0, words.count > maxSplit + 1 {
                // Rare in templates; keep Python's result by splitting the raw text again.
                let trimmed = strip(s, chars: nil)
                var parts: [String] = []
                var rest = Substring(trimmed)
                for _ in 0..<maxSplit {
                    guard let r = rest.firstIndex(where: { $0.isWhitespace }) else { break }
                    parts.append(String(rest[..<r]))
                    rest = rest[r...].drop { $0.isWhitespace }
                }
                parts.append(String(rest))
                words = parts
            }
            return words
        }
        guard !separator.isEmpty else { throw fail("empty separator") }
        var parts = s.components(separatedBy: separator)
        if maxSplit >= 0, parts.count > maxSplit + 1 {
            if fromRight {
                let head = parts[0..<(parts.count - maxSplit)].joined(separator: separator)
                parts = [head] + parts[(parts.count - maxSplit)...]
            } else {
                let tail = parts[maxSplit...].joined(separator: separator)
                parts = Array(parts[0..<maxSplit]) + [tail]
            }
        }
        return parts
    }

    private static func replace(_ s: String, _ old: String, _ new: String, count: Int) -> String {
        if count < 0 { return old.isEmpty ? s : s.replacingOccurrences(of: old, with: new) }
        var parts = s.components(separatedBy: old)
        guard parts.count > count + 1 else { return parts.joined(separator: new) }
        let tail = parts[(count)...].joined(separator: old)
        parts = Array(parts[0..<count]) + [tail]
        return parts.joined(separator: new)
    }

    private static func capitalize(_ s: String) -> String {
        guard let first = s.first else { return s }
        return first.uppercased() + s.dropFirst().lowercased()
    }

    private static func title(_ s: String) -> String {
        var out = ""
        var previousCased = false
        for c in s {
            out += previousCased ? c.lowercased() : c.uppercased()
            previousCased = c.isLetter
        }
        return out
    }

    private static func iterateStrings(_ v: JinjaValue, _ what: String) throws -> [String] {
        switch v {
        case .array(let a): return a.map(\.pythonString)
        case .string(let s): return s.unicodeScalars.map { String($0) }
        case .object(let o): return o.keys
        case .undefined: return []
        default: throw fail("\(what): '\(v.typeName)' object is not iterable")
        }
    }
}
