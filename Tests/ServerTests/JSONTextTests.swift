import Foundation
import Testing
@testable import Server

/// `ResponseJSON` (with Formats' `JSONText` for strings and numbers) writes every response body and stream chunk: exact bytes for the shapes the
/// server sends, and valid JSON that reads back to the same values for any string.
@Suite struct JSONTextTests {
    private func text(_ object: [String: Any]) -> String { String(decoding: APIResponses.encode(object), as: UTF8.self) }

    @Test func writesTheShapesTheServerSends() {
        let chunk: [String: Any] = [
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "demo/moe",
            "choices": [["index": 0, "delta": ["content": "a \"b\"\n"], "finish_reason": NSNull(), "logprobs": NSNull()]],
            "usage": NSNull(),
        ]
        #expect(text(chunk) == #"{"choices":[{"delta":{"content":"a \"b\"\n"},"finish_reason":null,"index":0,"logprobs":null}],"#
            + #""created":1700000000,"id":"chatcmpl-1","model":"demo/moe","object":"chat.completion.chunk","usage":null}"#)
        let mixed: [String: Any] = ["bool": true, "no": false, "half": 0.5, "whole": 2.0, "tiny": -1.5e-7, "inf": Double.infinity,
                                    "ints": [1, 2], "floats": [0.25], "strings": ["x"], "empty": [String: Any](), "none": [Int]()]
        var typed: [String: Any] = [:]
        typed["delta"] = ["role": "assistant", "content": ""]  // a [String: String]
        typed["pairs"] = [["a": 1]]  // a [[String: Int]]
        #expect(text(typed) == #"{"delta":{"content":"","role":"assistant"},"pairs":[{"a":1}]}"#)
        #expect(text(mixed) == #"{"bool":true,"empty":{},"floats":[0.25],"half":0.5,"inf":null,"ints":[1,2],"no":false,"#
            + #""none":[],"strings":["x"],"tiny":-1.5e-07,"whole":2}"#)
        #expect(String(decoding: APIResponses.event(["a": 1]), as: UTF8.self) == "data: {\"a\":1}\n\n")
    }

    /// Control characters, quotes, backslashes, slashes and non-ASCII text read back unchanged.
    @Test func anyStringReadsBack() throws {
        var pieces = (0..<32).map { String(UnicodeScalar(UInt8($0))) }
        pieces += ["\"", "\\", "/", "é", "日本", "🙂", "\u{2028}", "\u{7F}", "plain"]
        for a in pieces {
            for b in pieces.prefix(8) {
                let s = a + "x" + b
                let parsed = try JSONSerialization.jsonObject(with: APIResponses.encode(["k": s, "list": [s]])) as? [String: Any]
                #expect(parsed?["k"] as? String == s)
                #expect((parsed?["list"] as? [String])?.first == s)
            }
        }
    }
}
