import Foundation

extension JinjaBuiltins {
    // MARK: - Filters

    /// Applies `value | name(args)`.
    static func filter(
        _ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)],
        interpreter: JinjaInterpreter
    ) throws -> JinjaValue {
        func arg(_ i: Int, _ key: String) -> JinjaValue? {
            i < args.count ? args[i] : kwargs.first { $0.0 == key }?.1
        }
        switch name {
        case "trim":
            let chars: String? = if case .string(let c)? = arg(0, "chars") { c } else { nil }
            return .string(strip(v.pythonString, chars: chars))
        case "tojson":
            let indent = arg(0, "indent")?.integerIndex
            var separators: (String, String)?
            if case .array(let s)? = arg(2, "separators"), s.count == 2, case .string(let a) = s[0], case .string(let b) = s[1] {
                separators = (a, b)
            }
            return .string(try v.json(indent: indent, sortKeys: arg(3, "sort_keys")?.isTruthy ?? false,
                                      separators: separators))
        case "length", "count":
            switch v {
            case .string(let s): return .int(s.unicodeScalars.count)
            case .array(let a): return .int(a.count)
            case .object(let o): return .int(o.count)
            case .undefined: return .int(0)
            default: throw fail("object of type '\(v.typeName)' has no len()")
            }
        case "upper": return .string(v.pythonString.uppercased())
        case "lower": return .string(v.pythonString.lowercased())
        case "capitalize", "title":
            return try callMethod(.string(v.pythonString), name, [], []) ?? .string(v.pythonString)
        case "replace":
            return try callMethod(.string(v.pythonString), "replace", args, kwargs) ?? v
        case "default", "d":
            let fallback = arg(0, "default_value") ?? .string("")
            let boolean = arg(1, "boolean")?.isTruthy ?? false
            return v.isUndefined || (boolean && !v.isTruthy) ? fallback : v
        case "join":
            var items = try interpreter.iterate(v)
            if case .string(let attr)? = arg(1, "attribute") { items = items.map { interpreter.attribute($0, attr) } }
            let separator = arg(0, "d")?.pythonString ?? ""
            return .string(items.map(\.pythonString).joined(separator: separator))
        case "items":
            switch v {
            case .object(let o): return .array(o.pairs.map { .array([.string($0.key), $0.value]) })
            case .undefined: return .array([])
            default: throw fail("items: expected a mapping, got '\(v.typeName)'")
            }
        case "list": return .array(try interpreter.iterate(v))
        case "string": return .string(v.pythonString)
        case "safe", "e", "escape", "forceescape":
            // autoescape is off in transformers: `safe` is a no-op; `e` still escapes HTML, as jinja2 does.
            if name == "safe" { return v }
            return .string(v.pythonString.replacingOccurrences(of: "&", with: "&amp;")
                .replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
                .replacingOccurrences(of: "\"", with: "&#34;").replacingOccurrences(of: "'", with: "&#39;"))
        case "first", "last":
            let items = try interpreter.iterate(v)
            return (name == "first" ? items.first : items.last) ?? .undefined
        case "reverse":
            if case .string(let s) = v { return .string(String(s.reversed())) }
            return .array(try interpreter.iterate(v).reversed())
        case "unique":
            var out: [JinjaValue] = []
            for item in try interpreter.iterate(v) where !out.contains(where: { JinjaValue.pythonEqual($0, item) }) {
                out.append(item)
            }
            return .array(out)
        case "int":
            switch v {
            case .int: return v
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return .int(Int(d))
            case .string(let s): return .int(Int(strip(s, chars: nil)) ?? (arg(0, "default")?.integerIndex ?? 0))
            default: return arg(0, "default") ?? .int(0)
            }
        case "float":
            switch v {
            case .double: return v
            case .int(let i): return .double(Double(i))
            case .string(let s): return .double(Double(strip(s, chars: nil)) ?? 0)
            default: return arg(0, "default") ?? .double(0)
            }
        case "abs":
            switch v {
            case .int(let i): return .int(abs(i))
            case .double(let d): return .double(abs(d))
            default: throw fail("bad operand type for abs(): '\(v.typeName)'")
            }
        case "indent":
            let width = arg(0, "width")?.integerIndex ?? 4
            let first = arg(1, "first")?.isTruthy ?? false
            let blank = arg(2, "blank")?.isTruthy ?? false
            let pad = String(repeating: " ", count: width)
            let lines = v.pythonString.components(separatedBy: "\n")
            return .string(lines.enumerated().map { i, l in
                (i == 0 && !first) || (!blank && strip(l, chars: nil).isEmpty) ? l : pad + l
            }.joined(separator: "\n"))
        case "select", "reject", "selectattr", "rejectattr":
            let byAttribute = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            var rest = args
            var attribute: String?
            if byAttribute {
                guard case .string(let a)? = rest.first else { throw fail("\(name) needs an attribute name") }
                attribute = a
                rest.removeFirst()
            }
            let testName: String? = if case .string(let t)? = rest.first { t } else { nil }
            let testArgs = Array(rest.dropFirst())
            return .array(try interpreter.iterate(v).filter { item in
                let subject = attribute.map { interpreter.attribute(item, $0) } ?? item
                let passed = try testName.map { try test($0, subject, testArgs, interpreter: interpreter) } ?? subject.isTruthy
                return passed == keep
            })
        case "map":
            let items = try interpreter.iterate(v)
            if case .string(let attr)? = kwargs.first(where: { $0.0 == "attribute" })?.1 {
                let fallback = kwargs.first { $0.0 == "default" }?.1
                return .array(items.map { item in
                    let a = interpreter.attribute(item, attr)
                    return a.isUndefined ? (fallback ?? a) : a
                })
            }
            guard case .string(let f)? = args.first else { throw fail("map needs a filter name or attribute=") }
            return .array(try items.map { try filter(f, $0, Array(args.dropFirst()), [], interpreter: interpreter) })
        case "sort":
            let reverse = arg(0, "reverse")?.isTruthy ?? false
            let caseSensitive = arg(1, "case_sensitive")?.isTruthy ?? false
            let attribute: String? = if case .string(let a)? = arg(2, "attribute") { a } else { nil }
            func key(_ x: JinjaValue) -> JinjaValue {
                let k = attribute.map { interpreter.attribute(x, $0) } ?? x
                if !caseSensitive, case .string(let s) = k { return .string(s.lowercased()) }
                return k
            }
            var failure: ChatTemplateError?
            let sorted = try interpreter.iterate(v).sorted { a, b in
                do {
                    return try binary("<", key(a), key(b)).isTruthy
                } catch {
                    failure = error as? ChatTemplateError
                    return false
                }
            }
            if let failure { throw failure }
            return .array(reverse ? sorted.reversed() : sorted)
        case "dictsort":
            guard case .object(let o) = v else { throw fail("dictsort: expected a mapping") }
            return .array(o.pairs.sorted { $0.key.lowercased() < $1.key.lowercased() }.map { .array([.string($0.key), $0.value]) })
        case "sum":
            var total: JinjaValue = arg(1, "start") ?? .int(0)
            for item in try interpreter.iterate(v) { total = try binary("+", total, item) }
            return total
        case "min", "max":
            let items = try interpreter.iterate(v)
            guard var best = items.first else { return .undefined }
            for item in items.dropFirst() where try binary(name == "min" ? "<" : ">", item, best).isTruthy { best = item }
            return best
        case "wordcount": return .int(v.pythonString.split { $0.isWhitespace }.count)
        case "center":
            let width = arg(0, "width")?.integerIndex ?? 80
            let s = v.pythonString
            let total = max(width - s.count, 0)
            let left = total / 2 + (total % 2 & width % 2)
            return .string(String(repeating: " ", count: left) + s + String(repeating: " ", count: total - left))
        default:
            throw ChatTemplateError.unsupported(feature: "filter '\(name)'")
        }
    }

    // MARK: - Tests

    /// Evaluates `value is name(args)`.
    static func test(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], interpreter: JinjaInterpreter) throws -> Bool {
        let other = args.first ?? .undefined
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": return v == .none
        case "boolean": if case .bool = v { return true } else { return false }
        case "true": return v == .bool(true)
        case "false": return v == .bool(false)
        case "integer": if case .int = v { return true } else { return false }
        case "float": if case .double = v { return true } else { return false }
        case "number":
            switch v {
            case .int, .double, .bool: return true
            default: return false
            }
        case "string": if case .string = v { return true } else { return false }
        case "mapping": if case .object = v { return true } else { return false }
        case "iterable":
            switch v {
            case .string, .array, .object, .undefined: return true
            default: return false
            }
        case "sequence":
            switch v {
            case .string, .array, .object: return true
            default: return false
            }
        case "callable": if case .callable = v { return true } else { return false }
        case "odd", "even":
            guard let i = v.integerIndex else { throw fail("\(name) needs an integer") }
            return (abs(i) % 2 == 1) == (name == "odd")
        case "divisibleby":
            guard let i = v.integerIndex, let j = other.integerIndex, j != 0 else { throw fail("divisibleby needs integers") }
            return i % j == 0
        case "eq", "equalto", "==": return JinjaValue.pythonEqual(v, other)
        case "ne", "!=": return !JinjaValue.pythonEqual(v, other)
        case "lt", "<": return try binary("<", v, other).isTruthy
        case "le", "<=": return try binary("<=", v, other).isTruthy
        case "gt", ">", "greaterthan": return try binary(">", v, other).isTruthy
        case "ge", ">=": return try binary(">=", v, other).isTruthy
        case "lessthan": return try binary("<", v, other).isTruthy
        case "in": return try contains(other, v)
        case "sameas":
            switch (v, other) {
            case (.none, .none), (.undefined, .undefined): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.namespace(let a), .namespace(let b)): return a === b
            default: return false
            }
        case "lower": return v.pythonString == v.pythonString.lowercased()
        case "upper": return v.pythonString == v.pythonString.uppercased()
        case "escaped": return false
        default: throw ChatTemplateError.unsupported(feature: "test '\(name)'")
        }
    }

    // MARK: - Globals

    /// The globals transformers adds to jinja2's (`raise_exception`, `strftime_now`, `namespace`,
    /// `dict`) and jinja2's own `range`.
    /// - Parameter now: the clock `strftime_now` reads.
    static func globals(now: @escaping () -> Date) -> [String: JinjaValue] {
        func kwargsObject(_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> [(String, JinjaValue)] {
            var pairs: [(String, JinjaValue)] = []
            for a in args {
                guard case .object(let o) = a else { throw fail("namespace()/dict() takes a mapping or keywords") }
                pairs += o.pairs.map { ($0.key, $0.value) }
            }
            return pairs + kwargs
        }
        return [
            "raise_exception": .callable(JinjaCallable(name: "raise_exception") { args, _ in
                throw ChatTemplateError.raised(message: args.first?.pythonString ?? "")
            }),
            "strftime_now": .callable(JinjaCallable(name: "strftime_now") { args, _ in
                guard case .string(let format)? = args.first else { throw fail("strftime_now needs a format string") }
                return .string(try strftime(format, now()))
            }),
            "namespace": .callable(JinjaCallable(name: "namespace") { args, kwargs in
                let pairs = try kwargsObject(args, kwargs)
                if let bad = pairs.first(where: { $0.0.hasPrefix("_") }) {
                    throw fail("namespace attributes cannot start with '_': \(bad.0)")
                }
                return .namespace(JinjaNamespace(pairs))
            }),
            "dict": .callable(JinjaCallable(name: "dict") { args, kwargs in
                .object(JinjaObject(try kwargsObject(args, kwargs)))
            }),
            "range": .callable(JinjaCallable(name: "range") { args, _ in
                let n = args.compactMap(\.integerIndex)
                guard n.count == args.count, (1...3).contains(n.count) else { throw fail("range() takes 1 to 3 integers") }
                let (start, stop, step) = n.count == 1 ? (0, n[0], 1) : (n[0], n[1], n.count == 3 ? n[2] : 1)
                guard step != 0 else { throw fail("range() arg 3 must not be zero") }
                let count = max(0, (stop - start + step - (step > 0 ? 1 : -1)) / step)
                guard count <= 100_000 else { throw fail("range() of \(count) items is larger than a template needs") }
                return .array(stride(from: start, to: stop, by: step).map { .int($0) })
            }),
        ]
    }

    /// C-locale `strftime` for the directives templates use (`%Y %m %d %b %B %a %A %H %M %S %y %j %p %I %%`).
    static func strftime(_ format: String, _ date: Date) throws -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone.current
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
        let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                      "October", "November", "December"]
        let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
        func two(_ n: Int?) -> String { String(format: "%02d", n ?? 0) }
        var out = ""
        var it = format.makeIterator()
        while let ch = it.next() {
            guard ch == "%" else {
                out.append(ch)
                continue
            }
            guard let d = it.next() else { out.append("%"); break }
            let month = months[max(0, (c.month ?? 1) - 1)]
            let day = days[max(0, (c.weekday ?? 1) - 1)]
            let hour = c.hour ?? 0
            switch d {
            case "Y": out += String(c.year ?? 0)
            case "y": out += two((c.year ?? 0) % 100)
            case "m": out += two(c.month)
            case "d": out += two(c.day)
            case "H": out += two(hour)
            case "I": out += two(hour % 12 == 0 ? 12 : hour % 12)
            case "p": out += hour < 12 ? "AM" : "PM"
            case "M": out += two(c.minute)
            case "S": out += two(c.second)
            case "b": out += String(month.prefix(3))
            case "B": out += month
            case "a": out += String(day.prefix(3))
            case "A": out += day
            case "j": out += String(format: "%03d", calendar.ordinality(of: .day, in: .year, for: date) ?? 0)
            case "%": out += "%"
            default: throw ChatTemplateError.unsupported(feature: "strftime directive %\(d)")
            }
        }
        return out
    }
}
