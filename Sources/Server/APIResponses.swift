import Foundation
import Runtime

/// JSON bodies of the OpenAI responses (dictionaries: the shapes are small and flat, and
/// `JSONSerialization` keeps `null`s where OpenAI has them).
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

    static func encode(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }

    /// One server-sent event carrying a JSON object.
    static func event(_ object: [String: Any]) -> Data {
        var data = Data("data: ".utf8)
        data.append(encode(object))
        data.append(Data("\n\n".utf8))
        return data
    }
}
