import Foundation

/// Runs a parsed template the way jinja2's `ImmutableSandboxedEnvironment` does for
/// transformers: `for` bodies get a fresh scope per iteration (a `set` inside a loop does not
/// leak out; that is what `namespace` is for), `if` bodies share their scope, macros see the
/// template's top level as it is when they are called.
final class JinjaInterpreter {
    /// One scope. Reads walk outwards; `set` writes the innermost one.
    final class Frame {
        var variables: [String: JinjaValue] = [:]
        let parent: Frame?
        init(parent: Frame?) { self.parent = parent }

        func lookup(_ name: String) -> JinjaValue? {
            var f: Frame? = self
            while let frame = f {
                if let v = frame.variables[name] { return v }
                f = frame.parent
            }
            return nil
        }
    }

    private enum Flow { case normal, breakLoop, continueLoop }

    let root: Frame
    private var depth = 0
    /// Nested macro calls allowed before a template is declared runaway (gpt-oss's type renderer recurses).
    private static let maxDepth = 200

    init(globals: [String: JinjaValue]) {
        let builtins = Frame(parent: nil)
        builtins.variables = globals
        root = Frame(parent: builtins)
    }

    func render(_ nodes: [JinjaNode]) throws -> String {
        var out = ""
        _ = try execute(nodes, frame: root, into: &out)
        return out
    }

    // MARK: - Statements

    private func execute(_ nodes: [JinjaNode], frame: Frame, into out: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case .text(let s):
                out += s
            case .output(let e, let line):
                out += try located(line) { try evaluate(e, frame).pythonString }
            case .ifChain(let branches, let elseBody, let line):
                var taken: [JinjaNode]? = nil
                for (condition, body) in branches {
                    if try located(line, { try evaluate(condition, frame).isTruthy }) {
                        taken = body
                        break
                    }
                }
                let flow = try execute(taken ?? elseBody, frame: frame, into: &out)
                if flow != .normal { return flow }
            case .forLoop(let targets, let iterable, let filter, let body, let elseBody, let line):
                try located(line) {
                    try runLoop(targets: targets, iterable: iterable, filter: filter, body: body, elseBody: elseBody,
                                frame: frame, into: &out)
                }
            case .set(let targets, let attribute, let value, let line):
                try located(line) {
                    let v = try evaluate(value, frame)
                    if let attribute {
                        guard case .namespace(let ns) = frame.lookup(targets[0]) ?? .undefined else {
                            throw ChatTemplateError.render(line: nil, message: "cannot assign attribute on non-namespace object")
                        }
                        ns[attribute] = v
                    } else if targets.count == 1 {
                        frame.variables[targets[0]] = v
                    } else {
                        let items = try iterate(v)
                        guard items.count == targets.count else {
                            throw ChatTemplateError.render(
                                line: nil, message: "cannot unpack \(items.count) values into \(targets.count) names")
                        }
                        for (t, item) in zip(targets, items) { frame.variables[t] = item }
                    }
                }
            case .setBlock(let name, let body, _):
                var captured = ""
                _ = try execute(body, frame: frame, into: &captured)
                frame.variables[name] = .string(captured)
            case .macro(let name, let parameters, let body, let line):
                frame.variables[name] = .callable(makeMacro(name: name, parameters: parameters, body: body, line: line))
            case .breakLoop: return .breakLoop
            case .continueLoop: return .continueLoop
            case .generation(let body):
                let flow = try execute(body, frame: frame, into: &out)
                if flow != .normal { return flow }
            }
        }
        return .normal
    }

    /// Adds the statement's line to an error raised without one.
    private func located<T>(_ line: Int, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let ChatTemplateError.render(at, message) where at == nil {
            throw ChatTemplateError.render(line: line, message: message)
        }
    }

    private func runLoop(
        targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], elseBody: [JinjaNode],
        frame: Frame, into out: inout String
    ) throws {
        var items = try iterate(try evaluate(iterable, frame))
        func bind(_ item: JinjaValue, in f: Frame) throws {
            if targets.count == 1 {
                f.variables[targets[0]] = item
            } else {
                let parts = try iterate(item)
                guard parts.count == targets.count else {
                    throw ChatTemplateError.render(
                        line: nil, message: "cannot unpack \(parts.count) values into \(targets.count) loop variables")
                }
                for (t, p) in zip(targets, parts) { f.variables[t] = p }
            }
        }
        if let filter {
            items = try items.filter { item in
                let f = Frame(parent: frame)
                try bind(item, in: f)
                return try evaluate(filter, f).isTruthy
            }
        }
        if items.isEmpty {
            _ = try execute(elseBody, frame: frame, into: &out)
            return
        }
        let count = items.count
        for (i, item) in items.enumerated() {
            let f = Frame(parent: frame)
            f.variables["loop"] = .object(JinjaObject([
                ("index", .int(i + 1)), ("index0", .int(i)), ("revindex", .int(count - i)),
                ("revindex0", .int(count - i - 1)), ("first", .bool(i == 0)), ("last", .bool(i == count - 1)),
                ("length", .int(count)), ("depth", .int(1)), ("depth0", .int(0)),
                ("previtem", i > 0 ? items[i - 1] : .undefined),
                ("nextitem", i + 1 < count ? items[i + 1] : .undefined),
            ]))
            try bind(item, in: f)
            if try execute(body, frame: f, into: &out) == .breakLoop { break }
        }
    }

    private func makeMacro(name: String, parameters: [(String, JinjaExpr?)], body: [JinjaNode], line: Int) -> JinjaCallable {
        JinjaCallable(name: name) { [unowned self] args, kwargs in
            guard args.count <= parameters.count else {
                throw ChatTemplateError.render(
                    line: line, message: "macro '\(name)' takes \(parameters.count) arguments, got \(args.count)")
            }
            self.depth += 1
            defer { self.depth -= 1 }
            guard self.depth <= JinjaInterpreter.maxDepth else {
                throw ChatTemplateError.render(line: line, message: "macro calls nested deeper than \(JinjaInterpreter.maxDepth)")
            }
            let f = Frame(parent: self.root)
            for (i, (p, defaultValue)) in parameters.enumerated() {
                if i < args.count {
                    f.variables[p] = args[i]
                } else if let v = kwargs.first(where: { $0.0 == p })?.1 {
                    f.variables[p] = v
                } else {
                    f.variables[p] = try defaultValue.map { try self.evaluate($0, f) } ?? .undefined
                }
            }
            var out = ""
            _ = try self.execute(body, frame: f, into: &out)
            return .string(out)
        }
    }

    // MARK: - Expressions

    func evaluate(_ e: JinjaExpr, _ frame: Frame) throws -> JinjaValue {
        switch e {
        case .literal(let v): return v
        case .name(let n): return frame.lookup(n) ?? .undefined
        case .list(let items): return .array(try items.map { try evaluate($0, frame) })
        case .dict(let pairs):
            return .object(JinjaObject(try pairs.map { k, v in
                guard case .string(let key) = try evaluate(k, frame) else {
                    throw ChatTemplateError.unsupported(feature: "dict literals with non-string keys")
                }
                return (key, try evaluate(v, frame))
            }))
        case .member(let base, let name):
            let b = try evaluate(base, frame)
            if case .undefined = b { throw undefinedError(base, attribute: name) }
            return attribute(b, name)
        case .index(let base, let key):
            let b = try evaluate(base, frame)
            if case .undefined = b { throw undefinedError(base, attribute: nil) }
            return try item(b, try evaluate(key, frame))
        case .slice(let base, let start, let stop, let step):
            return try slice(
                try evaluate(base, frame), start: try start.map { try evaluate($0, frame) },
                stop: try stop.map { try evaluate($0, frame) }, step: try step.map { try evaluate($0, frame) })
        case .call(let callee, let args, let kwargs):
            let a = try args.map { try evaluate($0, frame) }
            let k = try kwargs.map { ($0.0, try evaluate($0.1, frame)) }
            if case .member(let base, let name) = callee {
                let b = try evaluate(base, frame)
                if case .undefined = b { throw undefinedError(base, attribute: name) }
                if let result = try JinjaBuiltins.callMethod(b, name, a, k) { return result }
                return try call(attribute(b, name), a, k, what: name)
            }
            return try call(try evaluate(callee, frame), a, k, what: describe(callee))
        case .filter(let base, let name, let args, let kwargs):
            let b = try evaluate(base, frame)
            return try JinjaBuiltins.filter(
                name, b, try args.map { try evaluate($0, frame) }, try kwargs.map { ($0.0, try evaluate($0.1, frame)) },
                interpreter: self)
        case .test(let base, let name, let args, let negated):
            let b = try evaluate(base, frame)
            let result = try JinjaBuiltins.test(name, b, try args.map { try evaluate($0, frame) }, interpreter: self)
            return .bool(result != negated)
        case .negate(let operand):
            switch try evaluate(operand, frame) {
            case .int(let i): return .int(-i)
            case .double(let d): return .double(-d)
            case .bool(let b): return .int(b ? -1 : 0)
            case let v: throw ChatTemplateError.render(line: nil, message: "bad operand type for unary -: '\(v.typeName)'")
            }
        case .not(let operand): return .bool(!(try evaluate(operand, frame).isTruthy))
        case .and(let l, let r):
            let a = try evaluate(l, frame)
            return a.isTruthy ? try evaluate(r, frame) : a
        case .or(let l, let r):
            let a = try evaluate(l, frame)
            return a.isTruthy ? a : try evaluate(r, frame)
        case .conditional(let condition, let then, let otherwise):
            if try evaluate(condition, frame).isTruthy { return try evaluate(then, frame) }
            return try otherwise.map { try evaluate($0, frame) } ?? .undefined
        case .binary(let op, let l, let r):
            return try JinjaBuiltins.binary(op, try evaluate(l, frame), try evaluate(r, frame))
        }
    }

    private func describe(_ e: JinjaExpr) -> String {
        switch e {
        case .name(let n): return n
        case .member(let b, let n): return describe(b) + "." + n
        case .index(let b, .literal(let k)): return describe(b) + "[" + k.pythonRepr + "]"
        default: return "value"
        }
    }

    private func undefinedError(_ base: JinjaExpr, attribute: String?) -> ChatTemplateError {
        .render(line: nil, message: "'\(describe(base))' is undefined")
    }

    /// `value.name`: a dict key, a namespace attribute, a loop variable; else undefined.
    func attribute(_ v: JinjaValue, _ name: String) -> JinjaValue {
        switch v {
        case .object(let o): return o[name] ?? .undefined
        case .namespace(let ns): return ns[name] ?? .undefined
        default: return .undefined
        }
    }

    /// `value[key]`: dict keys, list and string indices (negative from the end); else undefined.
    func item(_ v: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        switch (v, key) {
        case (.object(let o), .string(let k)): return o[k] ?? .undefined
        case (.namespace(let ns), .string(let k)): return ns[k] ?? .undefined
        case (.array(let a), _):
            guard let i = key.integerIndex else { return .undefined }
            let j = i < 0 ? a.count + i : i
            return a.indices.contains(j) ? a[j] : .undefined
        case (.string(let s), _):
            guard let i = key.integerIndex else { return .undefined }
            let scalars = Array(s.unicodeScalars)
            let j = i < 0 ? scalars.count + i : i
            return scalars.indices.contains(j) ? .string(String(scalars[j])) : .undefined
        default: return .undefined
        }
    }

    /// Python slicing of lists and strings.
    func slice(_ v: JinjaValue, start: JinjaValue?, stop: JinjaValue?, step: JinjaValue?) throws -> JinjaValue {
        func indices(_ count: Int) throws -> [Int] {
            func bound(_ b: JinjaValue?) throws -> Int? {
                guard let b, !(b == .none) else { return nil }
                guard let i = b.integerIndex else {
                    throw ChatTemplateError.render(line: nil, message: "slice indices must be integers or None")
                }
                return i
            }
            let s = try bound(step) ?? 1
            guard s != 0 else { throw ChatTemplateError.render(line: nil, message: "slice step cannot be zero") }
            func clamp(_ i: Int?, _ fallback: Int) -> Int {
                guard var i else { return fallback }
                if i < 0 { i += count }
                return s > 0 ? min(max(i, 0), count) : min(max(i, -1), count - 1)
            }
            let lo = clamp(try bound(start), s > 0 ? 0 : count - 1)
            let hi = clamp(try bound(stop), s > 0 ? count : -1)
            return Array(stride(from: lo, to: hi, by: s))
        }
        switch v {
        case .array(let a): return .array(try indices(a.count).map { a[$0] })
        case .string(let str):
            let scalars = Array(str.unicodeScalars)
            var out = String.UnicodeScalarView()
            for i in try indices(scalars.count) { out.append(scalars[i]) }
            return .string(String(out))
        case .undefined: throw ChatTemplateError.render(line: nil, message: "cannot slice an undefined value")
        default: throw ChatTemplateError.render(line: nil, message: "'\(v.typeName)' object is not subscriptable")
        }
    }

    func call(_ f: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], what: String) throws -> JinjaValue {
        guard case .callable(let c) = f else {
            throw ChatTemplateError.render(line: nil, message: "'\(what)' is not callable (\(f.typeName))")
        }
        return try c.call(args, kwargs)
    }

    /// The items of a value in a `for` loop: list items, dict keys, string characters; undefined is empty.
    func iterate(_ v: JinjaValue) throws -> [JinjaValue] {
        switch v {
        case .array(let a): return a
        case .object(let o): return o.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw ChatTemplateError.render(line: nil, message: "'\(v.typeName)' object is not iterable")
        }
    }
}

extension JinjaValue {
    /// The value as a list or string index (ints and bools).
    var integerIndex: Int? {
        switch self {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
}
