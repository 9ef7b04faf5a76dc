import Foundation

/// A multiple-choice item as evaluation harnesses score it: each choice is a continuation
/// scored by its log-likelihood after its context. WinoGrande changes the context per choice and
/// keeps the continuation, so contexts are per choice too.
public struct MultipleChoiceItem: Sendable, Equatable {
    /// One context per choice (all equal except for WinoGrande).
    public var contexts: [String]
    /// One continuation per choice (all equal for WinoGrande).
    public var continuations: [String]
    /// Index of the correct choice, nil when the split hides labels.
    public var gold: Int?
}

/// A generative item (GSM8K): a prompt and the gold final answer.
public struct GenerativeItem: Sendable, Equatable {
    public var prompt: String
    public var answer: String
}

/// Errors reading task files.
public enum EvaluationError: Error, CustomStringConvertible {
    case unknownTask(String, known: [String])
    case malformedLine(file: String, line: Int, reason: String)
    case noItems(String)

    public var description: String {
        switch self {
        case .unknownTask(let task, let known):
            return "unknown task '\(task)'; known tasks: \(known.joined(separator: ", "))"
        case .malformedLine(let file, let line, let reason):
            return "\(file):\(line): \(reason)"
        case .noItems(let what):
            return "no items: \(what)"
        }
    }
}

/// The task files of `shared/data/tasks` (`<task>/<split>.jsonl`) turned into scored items,
/// rendered as their README describes (the usual log-likelihood setup of evaluation harnesses).
public enum TaskItems {
    /// Tasks scored by multiple-choice log-likelihood.
    public static let multipleChoiceTasks = ["ai2_arc", "obqa", "piqa", "winogrande", "boolq"]
    /// Tasks scored by exact match of a generated answer.
    public static let generativeTasks = ["gsm8k"]
    /// Tasks scored by perplexity only.
    public static let perplexityTasks = ["wikitext2"]
    public static var allTasks: [String] { multipleChoiceTasks + generativeTasks + perplexityTasks }

    /// Reads JSON objects from a JSONL file, splitting on `\n` bytes (not on every Unicode line
    /// break: values may hold U+2028).
    public static func readJSONL(_ url: URL, limit: Int? = nil) throws -> [[String: Any]] {
        try parseJSONL(try Data(contentsOf: url), file: url.path, limit: limit)
    }

    /// The JSON objects of JSONL bytes (`file` names them in errors); see `readJSONL`.
    /// - Throws: `EvaluationError.malformedLine` naming the file and line.
    public static func parseJSONL(_ data: Data, file: String, limit: Int? = nil) throws -> [[String: Any]] {
        var rows: [[String: Any]] = []
        var lineNumber = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if let limit, rows.count >= limit { break }
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw EvaluationError.malformedLine(file: file, line: lineNumber, reason: "not a JSON object")
            }
            rows.append(object)
        }
        return rows
    }

    /// The multiple-choice item of one row of `task`.
    /// - Throws: `EvaluationError.malformedLine` when a field is missing.
    public static func multipleChoice(task: String, row: [String: Any], file: String = "", line: Int = 0) throws -> MultipleChoiceItem {
        func field<T>(_ name: String, _ type: T.Type) throws -> T {
            guard let value = row[name] as? T else {
                throw EvaluationError.malformedLine(file: file, line: line, reason: "field '\(name)' missing or not \(T.self)")
            }
            return value
        }
        func lettered(_ context: String) throws -> MultipleChoiceItem {
            let choices = try field("choices", [String: Any].self)
            guard let texts = choices["text"] as? [String], let labels = choices["label"] as? [String] else {
                throw EvaluationError.malformedLine(file: file, line: line, reason: "choices.text / choices.label missing")
            }
            let key = try field("answerKey", String.self)
            return MultipleChoiceItem(contexts: Array(repeating: context, count: texts.count),
                                      continuations: texts.map { " " + $0 }, gold: labels.firstIndex(of: key))
        }
        switch task {
        case "ai2_arc":
            return try lettered("Question: " + field("question", String.self) + "\nAnswer:")
        case "obqa":
            return try lettered(field("question_stem", String.self))
        case "piqa":
            let context = "Question: " + (try field("goal", String.self)) + "\nAnswer:"
            let label = (row["label"] as? Int) ?? -1
            return MultipleChoiceItem(contexts: [context, context],
                                      continuations: [" " + (try field("sol1", String.self)), " " + (try field("sol2", String.self))],
                                      gold: label >= 0 ? label : nil)
        case "boolq":
            let context = (try field("passage", String.self)) + "\nQuestion: " + (try field("question", String.self)) + "?\nAnswer:"
            let answer = try field("answer", Bool.self)
            return MultipleChoiceItem(contexts: [context, context], continuations: [" no", " yes"], gold: answer ? 1 : 0)
        case "winogrande":
            let sentence = try field("sentence", String.self)
            guard let blank = sentence.firstIndex(of: "_") else {
                throw EvaluationError.malformedLine(file: file, line: line, reason: "sentence has no '_' blank")
            }
            let prefix = String(sentence[..<blank])
            let rest = " " + sentence[sentence.index(after: blank)...].trimmingCharacters(in: .whitespaces)
            let answer = (row["answer"] as? String).flatMap { Int($0) }
            return MultipleChoiceItem(
                contexts: [prefix + (try field("option1", String.self)), prefix + (try field("option2", String.self))],
                continuations: [rest, rest], gold: answer.map { $0 - 1 })
        default:
            throw EvaluationError.unknownTask(task, known: multipleChoiceTasks)
        }
    }

    /// GSM8K rows as prompts and gold numbers (text after the last `#### `, commas removed).
    public static func generative(row: [String: Any], file: String = "", line: Int = 0) throws -> GenerativeItem {
        guard let question = row["question"] as? String, let answer = row["answer"] as? String else {
            throw EvaluationError.malformedLine(file: file, line: line, reason: "gsm8k row needs 'question' and 'answer'")
        }
        let gold = answer.components(separatedBy: "#### ").last ?? ""
        return GenerativeItem(prompt: "Question: " + question + "\nAnswer:",
                              answer: gold.replacingOccurrences(of: ",", with: "").trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The last number in generated text (commas dropped), for exact match.
    public static func finalNumber(in text: String) -> String? {
        var best: String?
        var current = ""
        for ch in text + " " {
            if ch.isASCII && (ch.isNumber || (ch == "-" && current.isEmpty) || ch == "." || ch == ",") {
                current.append(ch)
            } else {
                let cleaned = current.replacingOccurrences(of: ",", with: "").trimmingCharacters(in: CharacterSet(charactersIn: "."))
                if cleaned.contains(where: \.isNumber) { best = cleaned }
                current = ""
            }
        }
        return best
    }
}
