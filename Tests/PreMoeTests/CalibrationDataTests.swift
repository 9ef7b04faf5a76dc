import Foundation
@testable import PreMoe
import Testing
import TestSupport
import Tokenization

@Suite struct CalibrationDataTests {
    func read(_ lines: [String], template: ChatTemplate? = nil,
              rendering: CalibrationData.Rendering = .full) throws -> [String] {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("data.jsonl")
        try Data(lines.joined(separator: "\n").utf8).write(to: url)
        return try CalibrationData.read(url, chatTemplate: template, rendering: rendering)
    }

    @Test func genericFormats() throws {
        let texts = try read([
            #"{"text": "plain"}"#,
            #"{"text": ""}"#,
            "",
            #"{"prompt": "Q: 1+1?", "completion": " 2"}"#,
            #"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
        ], template: ChatTemplate(source: "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"))
        #expect(texts == ["plain", "Q: 1+1? 2", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"])
    }

    @Test func taskFormatsRenderContextAndGoldAnswer() throws {
        let texts = try read([
            #"{"id": "x", "question": "Which?", "choices": {"text": ["a", "b"], "label": ["1", "2"]}, "answerKey": "2"}"#,
            #"{"id": "y", "question_stem": "Sun is a", "choices": {"text": ["star", "moon"], "label": ["A", "B"]}, "answerKey": "A"}"#,
            #"{"goal": "Open a jar", "sol1": "twist", "sol2": "kick", "label": 0}"#,
            #"{"goal": "Hidden", "sol1": "x", "sol2": "y", "label": -1}"#,
            #"{"sentence": "Tom beat Ann because _ was fast.", "option1": "Tom", "option2": "Ann", "answer": "2"}"#,
            #"{"question": "is it", "answer": true, "passage": "P."}"#,
            #"{"question": "2+2?", "answer": "2+2=4\n#### 4"}"#,
        ])
        #expect(texts == [
            "Question: Which?\nAnswer: b",
            "Sun is a star",
            "Question: Open a jar\nAnswer: twist",
            "Question: Hidden\nAnswer:",
            "Tom beat Ann because Ann was fast.",
            "P.\nQuestion: is it?\nAnswer: yes",
            "Question: 2+2?\nAnswer: 2+2=4\n#### 4",
        ])
    }

    @Test func contextRenderingDropsAnswers() throws {
        let texts = try read([
            #"{"id": "x", "question": "Which?", "choices": {"text": ["a", "b"], "label": ["1", "2"]}, "answerKey": "2"}"#,
            #"{"id": "y", "question_stem": "Sun is a", "choices": {"text": ["star", "moon"], "label": ["A", "B"]}, "answerKey": "A"}"#,
            #"{"goal": "Open a jar", "sol1": "twist", "sol2": "kick", "label": 0}"#,
            #"{"sentence": "Tom beat Ann because _ was fast.", "option1": "Tom", "option2": "Ann", "answer": "2"}"#,
            #"{"question": "is it", "answer": true, "passage": "P."}"#,
            #"{"question": "2+2?", "answer": "2+2=4\n#### 4"}"#,
            #"{"prompt": "Q: 1+1?", "completion": " 2"}"#,
            #"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
            #"{"text": "plain"}"#,
        ], template: ChatTemplate(source: "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"), rendering: .context)
        #expect(texts == [
            "Question: Which?\nAnswer:", "Sun is a", "Question: Open a jar\nAnswer:", "Tom beat Ann because",
            "P.\nQuestion: is it?\nAnswer:", "Question: 2+2?\nAnswer:", "Q: 1+1?",
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "plain",
        ])
    }

    @Test func splitsOnNewlineBytesOnly() throws {
        // A raw U+2028 inside a JSON string is legal JSON; it must not end the record.
        let texts = try read(["{\"text\": \"a\u{2028}b\"}", #"{"text": "c"}"#])
        #expect(texts == ["a\u{2028}b", "c"])
    }

    @Test func badLinesNameTheLine() throws {
        #expect(throws: PreMoeError.self) { try read([#"{"text": "ok"}"#, "{nope"]) }
        do {
            _ = try read([#"{"text": "ok"}"#, #"{"unknown": 1}"#])
            Issue.record("expected an error")
        } catch let error as PreMoeError {
            #expect("\(error)".contains(":2:"))
        }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/work/shared/data/tasks"), "no /work/shared/data/tasks on this machine"),
          arguments: ["ai2_arc", "boolq", "gsm8k", "obqa", "piqa", "winogrande"])
    func sharedTaskFilesRead(_ task: String) throws {
        let url = URL(fileURLWithPath: "/work/shared/data/tasks/\(task)/train.jsonl")
        try #require(FileManager.default.fileExists(atPath: url.path), "\(url.path) is missing")
        let texts = try CalibrationData.read(url, limit: 50)
        #expect(texts.count == 50)
        #expect(texts.allSatisfy { !$0.isEmpty })
    }
}
