import Formats
import Foundation
import Runtime

/// JSON bodies of the OpenAI responses (dictionaries: the shapes are small and flat, `NSNull`
/// writes the `null`s OpenAI has), written by `ResponseJSON`.
enum APIResponses {
    /// OpenAI's finish reasons: end-of-sequence and stop strings are both `stop`.
    static func finishReason(_ reason: FinishReason) -> String {
        reason == .length ? "length" : "stop"
    }

    /// The extension field naming the task choice.
    static func premoe(_ choice: TaskChoice) -> [String: Any] {
        ["task": choice.task, "decision": choice.decision, "fallback_reason": choice.fallbackReason ?? NSNull()]
    }

    static func usage(prompt: Int, completion: Int) -> [String: Any] {
        ["prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion]
    }

    /// Chat `logprobs.content` entries.
    static func chatLogprobs(_ entries: [TokenLogprob]) -> [String: Any] {
        ["content": entries.map { e -> [String: Any] in
            ["token": e.token, "logprob": Double(e.logprob), "bytes": e.bytes.map(Int.init),
             "top_logprobs": e.top.map { ["token": $0.token, "logprob": Double($0.logprob), "bytes": $0.bytes.map(Int.init)] }]
        }]
    }

    /// Legacy completions `logprobs` (tokens, token_logprobs, top_logprobs, text_offset).
    static func textLogprobs(_ entries: [TokenLogprob], offset: Int) -> [String: Any] {
        var offsets: [Int] = []
        var at = offset
        for e in entries {
            offsets.append(at)
            at += e.token.count
        }
        return [
            "tokens": entries.map(\.token), "token_logprobs": entries.map { Double($0.logprob) },
            "top_logprobs": entries.map { e in
                Dictionary(e.top.map { ($0.token, Double($0.logprob)) }, uniquingKeysWith: { a, _ in a })
            },
            "text_offset": offsets,
        ]
    }

    static func encode(_ object: [String: Any]) -> Data { bytes(object) }

    /// One server-sent event carrying a JSON object.
    static func event(_ object: [String: Any]) -> Data { bytes(object, prefix: "data: ", suffix: "\n\n") }

    private static func bytes(_ object: [String: Any], prefix: String = "", suffix: String = "") -> Data {
        var out = Array(prefix.utf8)
        out.reserveCapacity(256)
        ResponseJSON.write(object, into: &out)
        out.append(contentsOf: suffix.utf8)
        return Data(out)
    }
}

/// Writes the response dictionaries as JSON: keys sorted, strings and numbers as Formats'
/// `JSONText` writes them (`/` unescaped, the shortest decimal that reads back as the same
/// `Double`). `JSONSerialization` wrote them before and measured 18% of
/// the server's CPU with 16 streams (one chunk per token: every value bridged to an `NSObject`,
/// keys sorted as `AnyHashable`); this writes the same JSON in a few percent of that.
enum ResponseJSON {
    /// Appends `value`: `String`, `Bool`, `Int`, `Double`, `Float`, `NSNull` (or nil),
    /// `[String: Any]`, or an array of those. Anything else, and a non-finite number, is `null`.
    static func write(_ value: Any?, into out: inout [UInt8]) {
        guard let value else { return out.append(contentsOf: "null".utf8) }
        // Dispatch on the exact type: a failed `as?` cast of an `Any` tries Foundation's
        // bridging first, which cost more than the writing itself.
        let type = Swift.type(of: value)
        if type == String.self {
            JSONText.appendQuoted(value as! String, to: &out)
        } else if type == Int.self {
            out.append(contentsOf: String(value as! Int).utf8)
        } else if type == Double.self {
            JSONText.appendNumber(value as! Double, to: &out)
        } else if type == [String: Any].self {
            object(value as! [String: Any], into: &out)
        } else if type == Bool.self {
            out.append(contentsOf: (value as! Bool ? "true" : "false").utf8)
        } else if type == Float.self {
            JSONText.appendNumber(Double(value as! Float), to: &out)
        } else if type == [[String: Any]].self {
            list(value as! [[String: Any]], into: &out)
        } else if type == [Int].self {
            list(value as! [Int], into: &out)
        } else if type == [String].self {
            list(value as! [String], into: &out)
        } else if type == [Double].self {
            list(value as! [Double], into: &out)
        } else if type == [Any].self {
            list(value as! [Any], into: &out)
        } else if type == NSNull.self {
            out.append(contentsOf: "null".utf8)
        } else if let other = value as? [String: Any] {  // e.g. a [String: String] literal
            object(other, into: &out)
        } else if let other = value as? [Any] {
            list(other, into: &out)
        } else {
            out.append(contentsOf: "null".utf8)
        }
    }

    private static func object(_ object: [String: Any], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        for (n, key) in object.keys.sorted().enumerated() {
            if n > 0 { out.append(UInt8(ascii: ",")) }
            JSONText.appendQuoted(key, to: &out)
            out.append(UInt8(ascii: ":"))
            write(object[key]!, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    private static func list<T>(_ items: [T], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "["))
        for (n, item) in items.enumerated() {
            if n > 0 { out.append(UInt8(ascii: ",")) }
            write(item, into: &out)
        }
        out.append(UInt8(ascii: "]"))
    }
}
