import Foundation

/// One chat message.
public struct ChatMessage: Sendable, Equatable, Codable {
    /// `system`, `user`, `assistant`, ...
    public var role: String
    /// The message text, inserted verbatim.
    public var content: String

    /// Creates a message.
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Why a chat template could not be parsed or rendered.
public enum ChatTemplateError: Error, CustomStringConvertible, Equatable {
    /// The template text is not valid Jinja (line numbers count from 1).
    case syntax(line: Int, message: String)
    /// Rendering failed: an undefined value was used, a type did not fit, ...
    case render(line: Int?, message: String)
    /// The template called `raise_exception(message)`: it refuses this conversation (roles not
    /// alternating, a tool call it cannot express, ...).
    case raised(message: String)
    /// The template uses a Jinja feature this interpreter does not implement.
    case unsupported(feature: String)

    /// A one-line explanation.
    public var description: String {
        switch self {
        case .syntax(let line, let message): return "chat template, line \(line): \(message)"
        case .render(let line, let message):
            return "chat template\(line.map { ", line \($0)" } ?? ""): \(message)"
        case .raised(let message): return "the chat template refused the conversation: \(message)"
        case .unsupported(let feature):
            return "chat template uses \(feature), which this Jinja interpreter does not implement"
        }
    }
}

/// Formats chat messages into a prompt by running the model's own Jinja chat template (the
/// `chat_template` of `tokenizer_config.json` or GGUF's `tokenizer.chat_template`) as
/// transformers' `apply_chat_template` does: same whitespace settings (`trim_blocks`,
/// `lstrip_blocks`), same globals (`raise_exception`, `strftime_now`, `namespace`), same
/// variables (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `tools=None`).
/// Without a template (`plain`) it writes `Role: content` paragraphs, for base models.
public struct ChatTemplate: Sendable, Equatable {
    /// The Jinja source; nil for the plain layout.
    public let source: String?
    /// Passed to the template as `bos_token` (omitted when nil, as transformers omits it).
    public var bosToken: String?
    /// Passed to the template as `eos_token` (omitted when nil).
    public var eosToken: String?
    private let program: Program?

    /// The parsed template, or why it could not be parsed, and the user turn's markers once
    /// `userContent(of:)` has derived them. `nodes` is immutable; the markers are behind a lock.
    private final class Program: @unchecked Sendable {
        let nodes: Result<[JinjaNode], ChatTemplateError>
        private let lock = NSLock()
        private var markers: (bos: String?, eos: String?, value: UserTurnMarkers?)?

        /// The markers for these special tokens, derived by `make` on first use and kept.
        func userTurnMarkers(bos: String?, eos: String?, make: () -> UserTurnMarkers?) -> UserTurnMarkers? {
            lock.lock()
            defer { lock.unlock() }
            if let markers, markers.bos == bos, markers.eos == eos { return markers.value }
            let value = make()
            markers = (bos, eos, value)
            return value
        }

        init(_ source: String) {
            do {
                nodes = .success(try JinjaParser.parse(source))
            } catch let error as ChatTemplateError {
                nodes = .failure(error)
            } catch {
                nodes = .failure(.syntax(line: 1, message: "\(error)"))
            }
        }
    }

    /// The layout for models without a template: `System: ...\n\nUser: ...\n\nAssistant:`.
    public static let plain = ChatTemplate()

    private init() {
        source = nil
        program = nil
    }

    /// Parses a Jinja chat template. A template that does not parse is kept, and `render`
    /// reports why (`parseError` tells without rendering): a tokenizer stays usable for plain
    /// text when its template is broken.
    /// - Parameters:
    ///   - source: the template text.
    ///   - bosToken: the tokenizer's BOS token text.
    ///   - eosToken: the tokenizer's EOS token text.
    public init(source: String, bosToken: String? = nil, eosToken: String? = nil) {
        self.source = source
        self.bosToken = bosToken
        self.eosToken = eosToken
        program = Program(source)
    }

    /// Why the template does not parse; nil when it does (or for `plain`).
    public var parseError: ChatTemplateError? {
        guard let program, case .failure(let e) = program.nodes else { return nil }
        return e
    }

    /// Renders messages as a prompt string (special tokens written as text; `encode` recognises them).
    /// - Parameters:
    ///   - messages: the conversation so far.
    ///   - addGenerationPrompt: end with the assistant's turn header so the model answers.
    ///   - variables: further template variables (`enable_thinking`, `reasoning_effort`,
    ///     `date_string`, ...); they override the defaults above, as `apply_chat_template`'s kwargs do.
    ///   - now: the time `strftime_now` reports (gpt-oss and Llama 3.2 print today's date).
    /// - Returns: the prompt text.
    /// - Throws: `ChatTemplateError` when the template does not parse, refuses the conversation
    ///   (`raise_exception`) or fails while rendering.
    public func render(
        _ messages: [ChatMessage], addGenerationPrompt: Bool = true, variables: [String: JinjaValue] = [:],
        now: Date = Date()
    ) throws -> String {
        guard let program else { return ChatTemplate.plainLayout(messages, addGenerationPrompt: addGenerationPrompt) }
        let nodes = try program.nodes.get()
        let interpreter = JinjaInterpreter(globals: JinjaBuiltins.globals(now: { now }))
        let context = interpreter.root
        context.variables["messages"] = .array(messages.map { .object(JinjaObject([("role", .string($0.role)), ("content", .string($0.content))])) })
        context.variables["tools"] = JinjaValue.none
        context.variables["documents"] = JinjaValue.none
        context.variables["add_generation_prompt"] = .bool(addGenerationPrompt)
        if let bosToken { context.variables["bos_token"] = .string(bosToken) }
        if let eosToken { context.variables["eos_token"] = .string(eosToken) }
        for (k, v) in variables { context.variables[k] = v }
        return try interpreter.render(nodes)
    }

    /// Renders messages, for callers that cannot handle an error: when the template fails, the
    /// conversation is written in the `plain` layout instead. Prefer `render`, which says why.
    /// - Parameters:
    ///   - messages: the conversation so far.
    ///   - addGenerationPrompt: end with the assistant's turn header so the model answers.
    /// - Returns: the prompt text.
    public func format(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        (try? render(messages, addGenerationPrompt: addGenerationPrompt))
            ?? ChatTemplate.plainLayout(messages, addGenerationPrompt: addGenerationPrompt)
    }

    private static func plainLayout(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var out = ""
        for m in messages { out += "\(capitalized(m.role)): \(m.content)\n\n" }
        if addGenerationPrompt { out += "Assistant:" }
        return out
    }

    private static func capitalized(_ role: String) -> String {
        guard let first = role.first else { return role }
        return first.uppercased() + role.dropFirst()
    }

    /// The last user message of a conversation this template rendered, or nil when `text` does
    /// not carry the template's turn markers (or there is no template).
    ///
    /// What a query is about lives in what the user wrote, not in the scaffolding around it, which
    /// is the same for every query; retrieval reads this content so that a prompt sent already
    /// wrapped in the model's template is judged like the same prompt typed bare. The markers come
    /// from the template itself: a one-message conversation is rendered around a sentinel, which
    /// gives the text after the user's content (end of turn and the assistant header); renders
    /// with a system turn or an earlier exchange before the sentinel isolate the user turn's
    /// opening (what they share before it). Templates that fold the system prompt into the user
    /// turn (Mistral's) return it with the content, as the model reads it.
    /// - Parameter text: a prompt, possibly rendered with this template.
    public func userContent(of text: String) -> String? {
        guard let program,
              let markers = program.userTurnMarkers(bos: bosToken, eos: eosToken, make: deriveUserTurnMarkers)
        else { return nil }
        var content = Substring(text)
        var matched = false
        if !markers.closing.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            let trimmed = content.trimmingTrailingWhitespace
            if trimmed.hasSuffix(markers.closing) {
                content = trimmed.dropLast(markers.closing.count)
                matched = true
            }
        }
        if !markers.opening.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
           let start = content.range(of: markers.opening, options: .backwards) {
            content = content[start.upperBound...]
            matched = true
        }
        return matched ? String(content) : nil
    }

    /// What surrounds the user's content in this template's render: the turn's opening and the
    /// text after it (end of turn, assistant header), trailing whitespace dropped.
    fileprivate struct UserTurnMarkers {
        var opening: String
        var closing: String
    }

    /// Renders a one-message conversation around a sentinel (the closing marker), and the same
    /// after a system turn and after an earlier exchange (the opening: what all renders share
    /// just before the sentinel). Nil when the template cannot render a single user message.
    private func deriveUserTurnMarkers() -> UserTurnMarkers? {
        let sentinel = "\u{E000}premoe-user\u{E000}"
        let now = Date(timeIntervalSince1970: 0)
        guard let single = try? render([ChatMessage(role: "user", content: sentinel)], addGenerationPrompt: true, now: now),
              let cut = single.range(of: sentinel)
        else { return nil }
        let before = String(single[..<cut.lowerBound])
        let after = String(single[cut.upperBound...])
        // The user turn's opening: what the sentinel's turn starts with whatever precedes it (a
        // system turn, an earlier exchange). Renders that fold the system text into the user
        // turn share nothing and are skipped.
        var opening = before
        let earlier: [[ChatMessage]] = [
            [ChatMessage(role: "system", content: "\u{E001}")],
            [ChatMessage(role: "user", content: "\u{E002}"), ChatMessage(role: "assistant", content: "\u{E003}")],
        ]
        for prefix in earlier {
            guard let other = try? render(prefix + [ChatMessage(role: "user", content: sentinel)], addGenerationPrompt: true, now: now),
                  let cut2 = other.range(of: sentinel)
            else { continue }
            let shared = String(zip(before.reversed(), other[..<cut2.lowerBound].reversed()).prefix { $0 == $1 }.map(\.0).reversed())
            if !shared.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, shared.count < opening.count { opening = shared }
        }
        return UserTurnMarkers(opening: opening, closing: String(Substring(after).trimmingTrailingWhitespace))
    }

    /// Same source and special tokens.
    public static func == (a: ChatTemplate, b: ChatTemplate) -> Bool {
        a.source == b.source && a.bosToken == b.bosToken && a.eosToken == b.eosToken
    }
}

extension Substring {
    /// Without trailing spaces, tabs and newlines.
    fileprivate var trimmingTrailingWhitespace: Substring {
        var end = endIndex
        while end > startIndex, let c = self[index(before: end)].unicodeScalars.first, CharacterSet.whitespacesAndNewlines.contains(c) {
            end = index(before: end)
        }
        return self[..<end]
    }
}
