import Foundation

/// A Jinja expression, with jinja2's operator precedence (filters and tests bind tighter than
/// arithmetic: `messages|length - 1` is `(messages|length) - 1`).
indirect enum JinjaExpr {
    case literal(JinjaValue)
    case name(String)
    case list([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
    case member(JinjaExpr, String)
    case index(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?)
    case call(JinjaExpr, [JinjaExpr], [(String, JinjaExpr)])
    case filter(JinjaExpr, String, [JinjaExpr], [(String, JinjaExpr)])
    case test(JinjaExpr, String, [JinjaExpr], negated: Bool)
    case negate(JinjaExpr)
    case not(JinjaExpr)
    case binary(String, JinjaExpr, JinjaExpr)
    case and(JinjaExpr, JinjaExpr)
    case or(JinjaExpr, JinjaExpr)
    case conditional(JinjaExpr, then: JinjaExpr, else: JinjaExpr?)
}

/// A statement or piece of output of a parsed template.
indirect enum JinjaNode {
    case text(String)
    case output(JinjaExpr, line: Int)
    case ifChain([(JinjaExpr, [JinjaNode])], else: [JinjaNode], line: Int)
    case forLoop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], else: [JinjaNode], line: Int)
    case set(targets: [String], attribute: String?, value: JinjaExpr, line: Int)
    case setBlock(name: String, body: [JinjaNode], line: Int)
    case macro(name: String, parameters: [(String, JinjaExpr?)], body: [JinjaNode], line: Int)
    case breakLoop
    case continueLoop
    /// transformers' `{% generation %}` block: renders its body (the assistant-mask tracking is not needed here).
    case generation([JinjaNode])
}

/// A recursive-descent parser from `JinjaLexer` tokens to `JinjaNode`s.
struct JinjaParser {
    private let tokens: [(token: JinjaToken, line: Int)]
    private var index = 0

    /// Parses a template.
    /// - Throws: `ChatTemplateError.syntax` naming the line and what was expected.
    static func parse(_ source: String) throws -> [JinjaNode] {
        var parser = JinjaParser(tokens: try JinjaLexer.tokenize(source))
        let (body, end) = try parser.parseBody(until: [])
        if let end { throw ChatTemplateError.syntax(line: parser.line, message: "unexpected {% \(end) %}") }
        return body
    }

    private init(tokens: [(token: JinjaToken, line: Int)]) { self.tokens = tokens }

    private var current: JinjaToken? { index < tokens.count ? tokens[index].token : nil }
    private var line: Int { index < tokens.count ? tokens[index].line : (tokens.last?.line ?? 1) }

    private func error(_ message: String) -> ChatTemplateError { .syntax(line: line, message: message) }

    private mutating func advance() -> JinjaToken? {
        defer { index += 1 }
        return current
    }

    private mutating func expect(_ token: JinjaToken, _ what: String) throws {
        guard current == token else { throw error("expected \(what), found \(describe(current))") }
        index += 1
    }

    private mutating func expectName() throws -> String {
        guard case .name(let n) = current else { throw error("expected a name, found \(describe(current))") }
        index += 1
        return n
    }

    private mutating func accept(_ token: JinjaToken) -> Bool {
        if current == token {
            index += 1
            return true
        }
        return false
    }

    private func isName(_ n: String) -> Bool { current == .name(n) }

    private func describe(_ t: JinjaToken?) -> String {
        switch t {
        case nil: return "the end of the template"
        case .text: return "text"
        case .variableBegin: return "'{{'"
        case .variableEnd: return "'}}'"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "'%}'"
        case .name(let n): return "'\(n)'"
        case .string(let s): return s.debugDescription
        case .int(let i): return String(i)
        case .float(let d): return String(d)
        case .op(let o): return "'\(o)'"
        }
    }

    /// Parses nodes until a `{% name %}` with a name in `terminators`; returns the body and the
    /// terminator found (its tag is consumed up to and including the name).
    private mutating func parseBody(until terminators: Set<String>) throws -> ([JinjaNode], String?) {
        var nodes: [JinjaNode] = []
        while let token = current {
            switch token {
            case .text(let s):
                index += 1
                nodes.append(.text(s))
            case .variableBegin:
                let l = line
                index += 1
                let e = try parseExpression()
                try expect(.variableEnd, "'}}'")
                nodes.append(.output(e, line: l))
            case .blockBegin:
                index += 1
                guard case .name(let keyword) = current else { throw error("expected a statement name") }
                if terminators.contains(keyword) {
                    index += 1
                    return (nodes, keyword)
                }
                nodes.append(try parseStatement(keyword))
            default:
                throw error("unexpected \(describe(token))")
            }
        }
        if !terminators.isEmpty {
            throw error("missing {% \(terminators.sorted().joined(separator: " or ")) %}")
        }
        return (nodes, nil)
    }

    private mutating func parseStatement(_ keyword: String) throws -> JinjaNode {
        let l = line
        index += 1
        switch keyword {
        case "if":
            var branches: [(JinjaExpr, [JinjaNode])] = []
            var condition = try parseExpression()
            while true {
                try expect(.blockEnd, "'%}'")
                let (body, end) = try parseBody(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                switch end {
                case "elif": condition = try parseExpression()
                case "else":
                    try expect(.blockEnd, "'%}'")
                    let (elseBody, _) = try parseBody(until: ["endif"])
                    try expect(.blockEnd, "'%}'")
                    return .ifChain(branches, else: elseBody, line: l)
                default:
                    try expect(.blockEnd, "'%}'")
                    return .ifChain(branches, else: [], line: l)
                }
            }
        case "for":
            var targets = [try expectName()]
            while accept(.op(",")) { targets.append(try expectName()) }
            guard accept(.name("in")) else { throw error("expected 'in' in a for loop") }
            let iterable = try parseConditional(allowIf: false)
            let filter = accept(.name("if")) ? try parseConditional(allowIf: false) : nil
            if isName("recursive") { throw ChatTemplateError.unsupported(feature: "recursive for loops") }
            try expect(.blockEnd, "'%}'")
            let (body, end) = try parseBody(until: ["else", "endfor"])
            var elseBody: [JinjaNode] = []
            if end == "else" {
                try expect(.blockEnd, "'%}'")
                (elseBody, _) = try parseBody(until: ["endfor"])
            }
            try expect(.blockEnd, "'%}'")
            return .forLoop(targets: targets, iterable: iterable, filter: filter, body: body, else: elseBody, line: l)
        case "set":
            var targets = [try expectName()]
            var attribute: String?
            if accept(.op(".")) {
                attribute = try expectName()
            } else {
                while accept(.op(",")) { targets.append(try expectName()) }
            }
            if accept(.blockEnd) {
                guard targets.count == 1, attribute == nil else { throw error("a block set takes one name") }
                let (body, _) = try parseBody(until: ["endset"])
                try expect(.blockEnd, "'%}'")
                return .setBlock(name: targets[0], body: body, line: l)
            }
            try expect(.op("="), "'='")
            var value = try parseExpression()
            if accept(.op(",")) {  // `set a, b = 1, 2`
                var items = [value]
                repeat { items.append(try parseExpression()) } while accept(.op(","))
                value = .list(items)
            }
            try expect(.blockEnd, "'%}'")
            return .set(targets: targets, attribute: attribute, value: value, line: l)
        case "macro":
            let name = try expectName()
            try expect(.op("("), "'('")
            var parameters: [(String, JinjaExpr?)] = []
            while !accept(.op(")")) {
                if !parameters.isEmpty { try expect(.op(","), "','") }
                let p = try expectName()
                parameters.append((p, accept(.op("=")) ? try parseExpression() : nil))
            }
            try expect(.blockEnd, "'%}'")
            let (body, _) = try parseBody(until: ["endmacro"])
            if case .name = current { index += 1 }  // `{% endmacro name %}`
            try expect(.blockEnd, "'%}'")
            return .macro(name: name, parameters: parameters, body: body, line: l)
        case "break", "continue":
            try expect(.blockEnd, "'%}'")
            return keyword == "break" ? .breakLoop : .continueLoop
        case "generation":
            try expect(.blockEnd, "'%}'")
            let (body, _) = try parseBody(until: ["endgeneration"])
            try expect(.blockEnd, "'%}'")
            return .generation(body)
        case "include", "import", "from", "extends", "block", "call", "filter", "with", "autoescape":
            throw ChatTemplateError.unsupported(feature: "{% \(keyword) %}")
        default:
            throw error("unknown statement '\(keyword)'")
        }
    }

    // MARK: - Expressions

    mutating func parseExpression() throws -> JinjaExpr { try parseConditional(allowIf: true) }

    private mutating func parseConditional(allowIf: Bool) throws -> JinjaExpr {
        var e = try parseOr()
        while allowIf, accept(.name("if")) {
            let condition = try parseOr()
            let other = accept(.name("else")) ? try parseConditional(allowIf: true) : nil
            e = .conditional(condition, then: e, else: other)
        }
        return e
    }

    private mutating func parseOr() throws -> JinjaExpr {
        var e = try parseAnd()
        while accept(.name("or")) { e = .or(e, try parseAnd()) }
        return e
    }

    private mutating func parseAnd() throws -> JinjaExpr {
        var e = try parseNot()
        while accept(.name("and")) { e = .and(e, try parseNot()) }
        return e
    }

    private mutating func parseNot() throws -> JinjaExpr {
        if accept(.name("not")) { return .not(try parseNot()) }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> JinjaExpr {
        var e = try parseMath1()
        while true {
            if case .op(let o) = current, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                index += 1
                e = .binary(o, e, try parseMath1())
            } else if accept(.name("in")) {
                e = .binary("in", e, try parseMath1())
            } else if isName("not"), index + 1 < tokens.count, tokens[index + 1].token == .name("in") {
                index += 2
                e = .not(.binary("in", e, try parseMath1()))
            } else {
                return e
            }
        }
    }

    private mutating func parseBinary(_ ops: Set<String>, next: (inout JinjaParser) throws -> JinjaExpr) throws -> JinjaExpr {
        var e = try next(&self)
        while case .op(let o) = current, ops.contains(o) {
            index += 1
            e = .binary(o, e, try next(&self))
        }
        return e
    }

    private mutating func parseMath1() throws -> JinjaExpr {
        try parseBinary(["+", "-"]) { try $0.parseConcat() }
    }
    private mutating func parseConcat() throws -> JinjaExpr {
        try parseBinary(["~"]) { try $0.parseMath2() }
    }
    private mutating func parseMath2() throws -> JinjaExpr {
        try parseBinary(["*", "/", "//", "%"]) { try $0.parsePow() }
    }
    private mutating func parsePow() throws -> JinjaExpr {
        try parseBinary(["**"]) { try $0.parseUnary(withFilter: true) }
    }

    private mutating func parseUnary(withFilter: Bool) throws -> JinjaExpr {
        var e: JinjaExpr
        if accept(.op("-")) {
            e = .negate(try parseUnary(withFilter: false))
        } else if accept(.op("+")) {
            e = try parseUnary(withFilter: false)
        } else {
            e = try parsePostfix(try parsePrimary())
        }
        if withFilter { e = try parseFilterExpr(e) }
        return e
    }

    private mutating func parsePrimary() throws -> JinjaExpr {
        let token = advance()
        switch token {
        case .name(let n):
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case .string(var s):
            while case .string(let more) = current {  // adjacent literals concatenate
                s += more
                index += 1
            }
            return .literal(.string(s))
        case .int(let i): return .literal(.int(i))
        case .float(let d): return .literal(.double(d))
        case .op("("):
            if accept(.op(")")) { return .list([]) }
            let first = try parseExpression()
            if accept(.op(")")) { return first }
            var items = [first]
            while accept(.op(",")) {
                if current == .op(")") { break }
                items.append(try parseExpression())
            }
            try expect(.op(")"), "')'")
            return .list(items)
        case .op("["):
            var items: [JinjaExpr] = []
            while !accept(.op("]")) {
                if !items.isEmpty { try expect(.op(","), "','") }
                if accept(.op("]")) { break }
                items.append(try parseExpression())
            }
            return .list(items)
        case .op("{"):
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !accept(.op("}")) {
                if !pairs.isEmpty { try expect(.op(","), "','") }
                if accept(.op("}")) { break }
                let key = try parseExpression()
                try expect(.op(":"), "':'")
                pairs.append((key, try parseExpression()))
            }
            return .dict(pairs)
        default:
            index -= 1
            throw error("unexpected \(describe(token))")
        }
    }

    private mutating func parsePostfix(_ base: JinjaExpr) throws -> JinjaExpr {
        var e = base
        while true {
            if accept(.op(".")) {
                if case .int(let i) = current {  // `items.0`
                    index += 1
                    e = .index(e, .literal(.int(i)))
                } else {
                    e = .member(e, try expectName())
                }
            } else if accept(.op("[")) {
                e = try parseSubscript(e)
            } else if current == .op("(") {
                e = try parseCall(e)
            } else {
                return e
            }
        }
    }

    private mutating func parseSubscript(_ base: JinjaExpr) throws -> JinjaExpr {
        var parts: [JinjaExpr?] = [nil]
        var isSlice = false
        while !accept(.op("]")) {
            if accept(.op(":")) {
                isSlice = true
                parts.append(nil)
            } else {
                guard parts[parts.count - 1] == nil else { throw error("expected ']'") }
                parts[parts.count - 1] = try parseExpression()
            }
        }
        if !isSlice {
            guard let key = parts[0] else { throw error("empty subscript") }
            return .index(base, key)
        }
        guard parts.count <= 3 else { throw error("a slice takes at most three parts") }
        return .slice(base, parts[0], parts.count > 1 ? parts[1] : nil, parts.count > 2 ? parts[2] : nil)
    }

    private mutating func parseArguments() throws -> ([JinjaExpr], [(String, JinjaExpr)]) {
        try expect(.op("("), "'('")
        var args: [JinjaExpr] = []
        var kwargs: [(String, JinjaExpr)] = []
        while !accept(.op(")")) {
            if !args.isEmpty || !kwargs.isEmpty { try expect(.op(","), "','") }
            if accept(.op(")")) { break }
            if case .name(let n) = current, index + 1 < tokens.count, tokens[index + 1].token == .op("=") {
                index += 2
                kwargs.append((n, try parseExpression()))
            } else {
                args.append(try parseExpression())
            }
        }
        return (args, kwargs)
    }

    private mutating func parseCall(_ callee: JinjaExpr) throws -> JinjaExpr {
        let (args, kwargs) = try parseArguments()
        return .call(callee, args, kwargs)
    }

    private mutating func parseFilterExpr(_ base: JinjaExpr) throws -> JinjaExpr {
        var e = base
        while true {
            if accept(.op("|")) {
                var name = try expectName()
                while accept(.op(".")) { name += "." + (try expectName()) }
                var args: [JinjaExpr] = []
                var kwargs: [(String, JinjaExpr)] = []
                if current == .op("(") { (args, kwargs) = try parseArguments() }
                e = .filter(e, name, args, kwargs)
            } else if accept(.name("is")) {
                let negated = accept(.name("not"))
                var name = try expectName()
                while accept(.op(".")) { name += "." + (try expectName()) }
                var args: [JinjaExpr] = []
                if current == .op("(") {
                    let (a, _) = try parseArguments()
                    args = a
                } else if let t = current, startsTestArgument(t) {
                    args = [try parsePostfix(try parsePrimary())]
                }
                e = .test(e, name, args, negated: negated)
            } else if current == .op("(") {
                e = try parseCall(e)
            } else {
                return e
            }
        }
    }

    /// Whether a token begins the single argument of a test written without parentheses (`is divisibleby 3`).
    private func startsTestArgument(_ t: JinjaToken) -> Bool {
        switch t {
        case .name(let n): return !["else", "or", "and", "if", "in", "not", "is"].contains(n)
        case .string, .int, .float: return true
        case .op(let o): return o == "[" || o == "{"
        default: return false
        }
    }
}
