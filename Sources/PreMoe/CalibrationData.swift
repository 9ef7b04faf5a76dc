import Formats
import Foundation
import Tokenization

/// Reads calibration (and later evaluation) text from JSON Lines files.
///
/// Each line is one JSON object; lines are split on `\n` bytes only (the task files escape
/// U+2028, which `Character.isNewline` would split on); blank lines are skipped. A record is
/// rendered as text by the first rule whose fields it has:
///
/// | fields | rendering |
/// | --- | --- |
/// | `messages` [{role, content}] | the tokenizer's chat template (its Jinja `chat_template`, else plain `Role: content`), no generation prompt |
/// | `prompt` + `completion` | `prompt + completion` |
/// | `text` | `text` (empty lines are skipped; `wikitext2`) |
/// | `passage`, `question`, `answer` (bool) | BoolQ: `passage + "\nQuestion: " + question + "?\nAnswer: " + ("yes"/"no")` |
/// | `question_stem`, `choices`, `answerKey` | OBQA: `question_stem + " " + gold choice text` |
/// | `question`, `choices`, `answerKey` | ARC: `"Question: " + question + "\nAnswer: " + gold choice text` |
/// | `goal`, `sol1`, `sol2`, `label` | PIQA: `"Question: " + goal + "\nAnswer: " + gold solution` |
/// | `sentence`, `option1`, `option2`, `answer` | WinoGrande: the sentence with `_` replaced by the gold option |
/// | `question`, `answer` (string) | GSM8K: `"Question: " + question + "\nAnswer: " + answer` |
///
/// That is the evaluation context followed by the gold answer (the evaluation's continuation,
/// with its leading space). Where a split hides the label (PIQA and WinoGrande test), the
/// context alone is used (PIQA: `"Question: " + goal + "\nAnswer:"`; WinoGrande: the sentence
/// with the blank filled by `option1`).
///
/// `Rendering.context` drops the answers instead: the evaluation context only (ARC, PIQA, BoolQ,
/// GSM8K end in `"\nAnswer:"`; OBQA is the stem; WinoGrande the text before the blank;
/// `prompt` without `completion`; `messages` without trailing assistant turns, with the
/// generation prompt). Queries at serving time look like contexts, so patterns profiled this
/// way match them better when answers are long (GSM8K's worked solutions).
public enum CalibrationData {
    /// Whether a record's gold answer is part of its text.
    public enum Rendering: String, Sendable, CaseIterable {
        /// Context followed by the gold answer (default).
        case full
        /// The context (the prompt a user would send) only.
        case context
    }

    /// Reads every record's text.
    /// - Parameters:
    ///   - url: the JSONL file.
    ///   - chatTemplate: used for `messages` records.
    ///   - limit: stop after this many texts.
    /// - Throws: `PreMoeError.invalidData` with the line number.
    ///   - rendering: with or without the gold answers.
    public static func read(_ url: URL, chatTemplate: ChatTemplate? = nil, limit: Int? = nil,
                            rendering: Rendering = .full) throws -> [String] {
        var texts: [String] = []
        try forEachRecord(url) { record, line in
            if let limit, texts.count >= limit { return false }
            do {
                if let text = try render(record, chatTemplate: chatTemplate, rendering: rendering), !text.isEmpty {
                    texts.append(text)
                }
            } catch let error as RenderError {
                throw PreMoeError.invalidData(file: url.path, line: line, reason: error.reason)
            }
            return true
        }
        return texts
    }

    /// Calls `body` with every record of a JSONL file and its line number, until it returns false.
    /// Lines are split on `\n` bytes only; blank lines are skipped.
    /// - Throws: `PreMoeError.invalidData` for an unreadable file or a line that is not JSON, and
    ///   whatever `body` throws.
    static func forEachRecord(_ url: URL, _ body: (JSONValue, Int) throws -> Bool) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw PreMoeError.invalidData(file: url.path, line: nil, reason: "cannot read the file")
        }
        var lineNumber = 0
        for line in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            let record: JSONValue
            do {
                record = try JSONValue(parsing: Data(line), duplicateKeys: .keepLast)
            } catch {
                throw PreMoeError.invalidData(file: url.path, line: lineNumber, reason: "\(error)")
            }
            guard try body(record, lineNumber) else { return }
        }
    }

    struct RenderError: Error { let reason: String }

    /// Renders one record (see the type's table); nil for an empty `text` record.
    static func render(_ r: JSONValue, chatTemplate: ChatTemplate?, rendering: Rendering = .full) throws -> String? {
        guard r.objectValue != nil else { throw RenderError(reason: "a line is not a JSON object") }
        let full = rendering == .full
        func string(_ key: String) -> String? { r[key]?.stringValue }
        if let messages = r["messages"]?.arrayValue {
            let parsed = try messages.map { m -> ChatMessage in
                guard let role = m["role"]?.stringValue, let content = m["content"]?.stringValue else {
                    throw RenderError(reason: "every message needs string 'role' and 'content'")
                }
                return ChatMessage(role: role, content: content)
            }
            let template = chatTemplate ?? .plain
            if full { return try template.render(parsed, addGenerationPrompt: false) }
            var turns = parsed
            while turns.last?.role == "assistant" { turns.removeLast() }
            return try template.render(turns, addGenerationPrompt: true)
        }
        if let prompt = string("prompt"), let completion = string("completion") { return full ? prompt + completion : prompt }
        if let text = string("text") { return text.isEmpty ? nil : text }
        if let passage = string("passage"), let question = string("question"), let answer = r["answer"]?.boolValue {
            return passage + "\nQuestion: " + question + "?\nAnswer:" + (full ? (answer ? " yes" : " no") : "")
        }
        if let choices = r["choices"], let key = string("answerKey") {
            guard let texts = choices["text"]?.arrayValue?.compactMap(\.stringValue),
                let labels = choices["label"]?.arrayValue?.compactMap(\.stringValue),
                let gold = labels.firstIndex(of: key), gold < texts.count
            else { throw RenderError(reason: "answerKey '\(key)' is not among choices.label") }
            if let stem = string("question_stem") { return full ? stem + " " + texts[gold] : stem }
            if let question = string("question") { return "Question: " + question + "\nAnswer:" + (full ? " " + texts[gold] : "") }
        }
        if let goal = string("goal"), let sol1 = string("sol1"), let sol2 = string("sol2") {
            let context = "Question: " + goal + "\nAnswer:"
            switch r["label"]?.intValue {
            case 0 where full: return context + " " + sol1
            case 1 where full: return context + " " + sol2
            default: return context
            }
        }
        if let sentence = string("sentence"), let option1 = string("option1"), let option2 = string("option2") {
            let option = string("answer") == "2" ? option2 : option1
            guard let blank = sentence.firstIndex(of: "_") else { return sentence }
            if !full { return String(sentence[..<blank]).trimmingCharacters(in: .whitespaces) }
            return String(sentence[..<blank]) + option + String(sentence[sentence.index(after: blank)...])
        }
        if let question = string("question"), let answer = string("answer") {
            return "Question: " + question + "\nAnswer:" + (full ? " " + answer : "")
        }
        let keys = r.objectValue?.keys.sorted().joined(separator: ", ") ?? ""
        throw RenderError(reason: "unknown record shape (fields: \(keys)); expected text, prompt+completion, "
            + "messages, or a known task format")
    }
}
