import Formats
import Foundation
import Tokenization

/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// HTTP status.
    public var status: Int
    public var message: String
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`, ...
    public var type: String
    /// The request field at fault, when one is.
    public var param: String?
    public var code: String?
    /// Seconds for a `Retry-After` header (429, 503 while shutting down).
    public var retryAfter: Int?

    /// Creates an error.
    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil,
                retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }

    /// A 400 about one field.
    static func invalid(_ message: String, param: String?, code: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param, code: code)
    }

    public var description: String { "\(status) \(type): \(message)" + (param.map { " (param \($0))" } ?? "") }

    /// The JSON body.
    var body: [String: Any] {
        ["error": ["message": message, "type": type, "param": param ?? NSNull(), "code": code ?? NSNull()] as [String: Any]]
    }
}

/// A completion request after validation: every field it carried is honoured or the parse failed.
struct CompletionRequest: Sendable {
    enum Kind: Sendable { case chat, text }
    var kind: Kind
    var model: String?
    /// Chat: the conversation.
    var messages: [ChatMessage] = []
    /// Text completions: the prompt as text or as token ids.
    var prompt: String?
    var promptIDs: [Int]?
    var maxTokens: Int?
    var temperature: Float = 1
    var topP: Float = 1
    var seed: UInt64?
    var stop: [String] = []
    var stream = false
    var includeUsage = false
    /// nil: no log-probabilities; n: the sampled token's plus n alternatives.
    var topLogprobs: Int?
    /// Text completions: prepend the prompt to the output.
    var echo = false
    /// `premoe.task`.
    var forcedTask: String?
    /// `premoe.ignore_eos`: generate `max_tokens` whatever the model says (benchmarks).
    var ignoreEOS = false

    /// The first user turn (what retrieval sees), or for text completions the prompt.
    var query: String? {
        switch kind {
        case .chat: return messages.first { $0.role == "user" }?.content
        case .text: return prompt
        }
    }
}

/// Reads an object's members, remembering which were read so the rest can be refused by name.
private struct Fields {
    let members: [String: JSONValue]
    let path: String
    private(set) var read: Set<String> = []

    init(_ members: [String: JSONValue], path: String = "") {
        self.members = members
        self.path = path
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The member, nil when absent or JSON null (OpenAI treats null as not given).
    mutating func value(_ key: String) -> JSONValue? {
        read.insert(key)
        guard let v = members[key], !v.isNull else { return nil }
        return v
    }

    mutating func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.stringValue else { throw APIError.invalid("'\(name(key))' must be a string", param: name(key)) }
        return s
    }

    mutating func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.boolValue else { throw APIError.invalid("'\(name(key))' must be a boolean", param: name(key)) }
        return b
    }

    mutating func int(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let v = value(key) else { return nil }
        guard let i = v.intValue, range.contains(i) else {
            throw APIError.invalid("'\(name(key))' must be an integer in \(range.lowerBound)...\(range.upperBound), got \(v.jsonString)",
                                   param: name(key))
        }
        return i
    }

    mutating func number(_ key: String, _ range: ClosedRange<Double>) throws -> Double? {
        guard let v = value(key) else { return nil }
        guard let d = v.doubleValue, range.contains(d) else {
            throw APIError.invalid("'\(name(key))' must be a number in \(range.lowerBound)...\(range.upperBound), got \(v.jsonString)",
                                   param: name(key))
        }
        return d
    }

    /// Throws for the first member (sorted) that no reader asked for.
    func refuseUnread(_ supported: String) throws {
        if let extra = members.keys.filter({ !read.contains($0) }).sorted().first {
            throw APIError.invalid("unknown or unsupported field '\(name(extra))'; this server accepts: \(supported)",
                                   param: name(extra), code: "unsupported_field")
        }
    }
}

enum RequestParser {
    static let chatFields = "model, messages, max_tokens, max_completion_tokens, temperature, top_p, seed, stop, n (1), "
        + "stream, stream_options.include_usage, logprobs, top_logprobs, frequency_penalty (0), presence_penalty (0), premoe.task, premoe.ignore_eos"
    static let textFields = "model, prompt, max_tokens, temperature, top_p, seed, stop, n (1), stream, "
        + "stream_options.include_usage, logprobs (0-20), echo, frequency_penalty (0), presence_penalty (0), premoe.task, premoe.ignore_eos"

    /// Parses and validates a request body.
    /// - Parameters:
    ///   - body: the raw JSON text.
    ///   - kind: chat or text completions.
    ///   - tasks: names `premoe.task` may take.
    /// - Throws: `APIError` (400) naming the field at fault.
    static func parse(_ body: Data, kind: CompletionRequest.Kind, tasks: [String]) throws -> CompletionRequest {
        let json: JSONValue
        do {
            json = try JSONValue(parsing: body, duplicateKeys: .reject)
        } catch let error as JSONParseError {
            throw APIError.invalid("malformed JSON body: \(error.description)", param: error.duplicateKey, code: "invalid_json")
        }
        guard let object = json.objectValue else {
            throw APIError.invalid("the body must be a JSON object", param: nil, code: "invalid_json")
        }
        var f = Fields(object)
        var r = CompletionRequest(kind: kind)
        r.model = try f.string("model")
        switch kind {
        case .chat:
            r.messages = try messages(f.value("messages"))
            let maxTokens = try f.int("max_tokens", 0...Int(Int32.max))
            let maxCompletion = try f.int("max_completion_tokens", 0...Int(Int32.max))
            if maxTokens != nil && maxCompletion != nil && maxTokens != maxCompletion {
                throw APIError.invalid("'max_tokens' and 'max_completion_tokens' disagree; give one", param: "max_tokens")
            }
            r.maxTokens = maxCompletion ?? maxTokens
            if let logprobs = try f.bool("logprobs"), logprobs { r.topLogprobs = 0 }
            if let top = try f.int("top_logprobs", 0...20) {
                guard r.topLogprobs != nil else {
                    throw APIError.invalid("'top_logprobs' needs 'logprobs': true", param: "top_logprobs")
                }
                r.topLogprobs = top
            }
        case .text:
            guard let prompt = f.value("prompt") else { throw APIError.invalid("'prompt' is required", param: "prompt") }
            try parsePrompt(prompt, into: &r)
            r.maxTokens = try f.int("max_tokens", 0...Int(Int32.max)) ?? 16  // OpenAI's default for completions
            r.topLogprobs = try f.int("logprobs", 0...20)
            r.echo = try f.bool("echo") ?? false
            if r.echo && r.topLogprobs != nil {
                throw APIError.invalid("'echo' with 'logprobs' is not supported (no prompt log-probabilities)", param: "echo")
            }
        }
        r.temperature = Float(try f.number("temperature", 0...2) ?? 1)
        let topP = try f.number("top_p", 0...1) ?? 1
        guard topP > 0 else { throw APIError.invalid("'top_p' must be > 0", param: "top_p") }
        r.topP = Float(topP)
        if let seed = f.value("seed") {
            guard let s = seed.intValue, abs(s) <= 1 << 53 else {
                throw APIError.invalid("'seed' must be an integer of magnitude at most 2^53", param: "seed")
            }
            r.seed = UInt64(bitPattern: Int64(s))
        }
        r.stop = try stop(f.value("stop"))
        if let n = try f.int("n", 1...Int(Int32.max)), n != 1 {
            throw APIError.invalid("only 'n': 1 is supported (one choice per request)", param: "n")
        }
        for penalty in ["frequency_penalty", "presence_penalty"] {
            if let p = try f.number(penalty, -2...2), p != 0 {
                throw APIError.invalid("'\(penalty)' other than 0 is not supported", param: penalty)
            }
        }
        r.stream = try f.bool("stream") ?? false
        if let options = f.value("stream_options") {
            guard r.stream else {
                throw APIError.invalid("'stream_options' is only allowed with 'stream': true", param: "stream_options")
            }
            guard let members = options.objectValue else {
                throw APIError.invalid("'stream_options' must be an object", param: "stream_options")
            }
            var o = Fields(members, path: "stream_options")
            r.includeUsage = try o.bool("include_usage") ?? false
            try o.refuseUnread("include_usage")
        }
        if let extensionField = f.value("premoe") {
            try parseExtension(extensionField, tasks: tasks, into: &r)
        }
        try f.refuseUnread(kind == .chat ? chatFields : textFields)
        return r
    }

    private static func messages(_ value: JSONValue?) throws -> [ChatMessage] {
        guard let value else { throw APIError.invalid("'messages' is required", param: "messages") }
        guard let items = value.arrayValue else { throw APIError.invalid("'messages' must be an array", param: "messages") }
        guard !items.isEmpty else { throw APIError.invalid("'messages' is empty", param: "messages") }
        return try items.enumerated().map { i, item in
            let path = "messages[\(i)]"
            guard let members = item.objectValue else { throw APIError.invalid("'\(path)' must be an object", param: path) }
            var m = Fields(members, path: path)
            guard let role = try m.string("role") else { throw APIError.invalid("'\(path).role' is required", param: "\(path).role") }
            guard ["system", "user", "assistant"].contains(role) else {
                throw APIError.invalid("'\(path).role' must be system, user or assistant, got '\(role)'", param: "\(path).role")
            }
            let content = try messageContent(m.value("content"), path: "\(path).content")
            try m.refuseUnread("role, content")
            return ChatMessage(role: role, content: content)
        }
    }

    /// A string, or an array of `{"type": "text", "text": …}` parts (joined).
    private static func messageContent(_ value: JSONValue?, path: String) throws -> String {
        guard let value else { throw APIError.invalid("'\(path)' is required", param: path) }
        if let text = value.stringValue { return text }
        guard let parts = value.arrayValue else {
            throw APIError.invalid("'\(path)' must be a string or an array of text parts", param: path)
        }
        return try parts.enumerated().map { i, part in
            let p = "\(path)[\(i)]"
            guard let members = part.objectValue else { throw APIError.invalid("'\(p)' must be an object", param: p) }
            var f = Fields(members, path: p)
            guard try f.string("type") == "text" else {
                throw APIError.invalid("'\(p).type' must be 'text' (this model reads text only)", param: "\(p).type")
            }
            guard let text = try f.string("text") else { throw APIError.invalid("'\(p).text' is required", param: "\(p).text") }
            try f.refuseUnread("type, text")
            return text
        }.joined()
    }

    private static func parsePrompt(_ value: JSONValue, into r: inout CompletionRequest) throws {
        if let text = value.stringValue {
            r.prompt = text
            return
        }
        guard let items = value.arrayValue, !items.isEmpty else {
            throw APIError.invalid("'prompt' must be a string, one string in an array, or an array of token ids", param: "prompt")
        }
        if items.count == 1, let text = items[0].stringValue {
            r.prompt = text
            return
        }
        let ids = items.compactMap(\.intValue)
        guard ids.count == items.count else {
            throw APIError.invalid("'prompt' as an array must hold one string or only integer token ids (one prompt per request)",
                                   param: "prompt")
        }
        r.promptIDs = ids
    }

    private static func stop(_ value: JSONValue?) throws -> [String] {
        guard let value else { return [] }
        let list = value.stringValue.map { [$0] } ?? value.arrayValue?.compactMap(\.stringValue)
        guard let list, list.count == (value.arrayValue?.count ?? 1), list.count <= 4 else {
            throw APIError.invalid("'stop' must be a string or an array of at most 4 strings", param: "stop")
        }
        guard list.allSatisfy({ !$0.isEmpty }) else { throw APIError.invalid("'stop' has an empty string", param: "stop") }
        return list
    }

    /// `"premoe": {"task": NAME, "ignore_eos": BOOL}`, or just a task name.
    private static func parseExtension(_ value: JSONValue, tasks: [String], into r: inout CompletionRequest) throws {
        var name: String?
        if let text = value.stringValue {
            name = text
        } else if let members = value.objectValue {
            var f = Fields(members, path: "premoe")
            name = try f.string("task")
            r.ignoreEOS = try f.bool("ignore_eos") ?? false
            try f.refuseUnread("task, ignore_eos")
        } else {
            throw APIError.invalid("'premoe' must be an object {\"task\": NAME, \"ignore_eos\": BOOL} or a task name",
                                   param: "premoe")
        }
        guard let name else { return }
        guard tasks.contains(name) else {
            throw APIError.invalid("'premoe.task' '\(name)' is not known; tasks: \(tasks.joined(separator: ", "))",
                                   param: "premoe.task", code: "unknown_task")
        }
        r.forcedTask = name
    }
}
