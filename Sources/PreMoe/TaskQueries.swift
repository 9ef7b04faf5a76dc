import Formats
import Foundation
import Tokenization

/// What a person asks when they bring an item of a task: an optional passage, the question, and
/// the answer options of a multiple-choice item (empty otherwise). No answer, no scaffolding.
public struct TaskQuery: Sendable, Equatable {
    public var passage: String?
    public var question: String
    public var options: [String]
    /// The record's calibration rendering (`CalibrationData`'s context text), when it came from one.
    public var calibration: String?
    /// Texts of the item that are not a request: its passage alone, and its free-text answer
    /// (a `completion`, an assistant turn, a worked solution) when that is prose of at least
    /// `TaskQueries.minimumContextWords` words. (A fill-in-the-blank sentence with its gold option
    /// filled in was tried as well: WikiText fell back more often, GPL paragraphs and WinoGrande's
    /// own calibration rendering less.) Retrieval learns from them what the task's
    /// material looks like when nobody asks anything of it (`TaskClassifier`'s "none" class);
    /// they are never queries.
    public var context: [String]

    public init(passage: String? = nil, question: String, options: [String] = [], calibration: String? = nil,
                context: [String] = []) {
        self.passage = passage
        self.question = question
        self.options = options
        self.calibration = calibration
        self.context = context
    }
}

/// The ways a query reaches the model. Retrieval must not depend on which one: the patterns are
/// fitted on several and evaluated on each separately (`premoe eval` reports them one by one).
public enum QueryStyle: String, Sendable, CaseIterable, Codable {
    /// As typed: passage, question, options listed one per line (`A. …`).
    case raw
    /// `raw` inside the model's chat template, with the generation prompt.
    case chat
    /// `raw` lower-cased.
    case lowercase
    /// `raw` without trailing punctuation on any line.
    case bare
    /// `raw` after an instruction ("Answer this: …").
    case instruction
    /// The calibration rendering of `CalibrationData` (`Question: …\nAnswer:`).
    case calibration
}

/// Extracts `TaskQuery`s from task records and renders them in every `QueryStyle`.
///
/// Record shapes are those of `CalibrationData` (ARC, OBQA, PIQA, WinoGrande, BoolQ, GSM8K,
/// `prompt`, `messages`, `text`). A `text` record (prose such as WikiText) is its own query.
public enum TaskQueries {
    /// Instructions put in front of training renderings. Evaluation uses `evaluationInstructions`,
    /// a disjoint list, so a measured accuracy never rewards recognising a trained phrase.
    public static let trainingInstructions = [
        "Please help me with this.", "Can you solve this?", "I need an answer:", "Question for you:",
        "Quick one:", "Help me figure this out.", "What do you think?", "Hey, ", "Could you explain this?",
        "Tell me:",
    ]
    /// Instructions used only when evaluating retrieval.
    public static let evaluationInstructions = ["Answer this:", "Please respond to the following.", "I was wondering:"]

    /// Option layouts for training renderings; `raw` at evaluation time always uses the first.
    static let optionLayouts: [(Int, String) -> String] = [
        { i, o in "\(letter(i)). \(o)" },
        { i, o in "(\(letter(i))) \(o)" },
        { i, o in "\(letter(i))) \(o)" },
        { i, o in "\(i + 1). \(o)" },
        { _, o in "- \(o)" },
    ]

    static func letter(_ i: Int) -> String { String(UnicodeScalar(UInt8(65 + i % 26))) }

    /// Fewest words a free-text answer needs to serve as a context text (`TaskQuery.context`):
    /// shorter answers ("Paris", "42") carry no prose to learn from.
    public static let minimumContextWords = 12

    /// `[text]` when `text` has at least `minimumContextWords` words, else `[]`.
    static func prose(_ text: String?) -> [String] {
        guard let text else { return [] }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.split(whereSeparator: \.isWhitespace).count >= minimumContextWords ? [trimmed] : []
    }

    /// Reads the queries of a JSONL task file (answers never included).
    /// - Parameters:
    ///   - url: the file.
    ///   - limit: stop after this many queries.
    /// - Throws: `PreMoeError.invalidData` with the line number.
    public static func read(_ url: URL, limit: Int? = nil) throws -> [TaskQuery] {
        var queries: [TaskQuery] = []
        try CalibrationData.forEachRecord(url) { record, line in
            if let limit, queries.count >= limit { return false }
            do {
                if var query = try query(from: record) {
                    query.calibration = try CalibrationData.render(record, chatTemplate: nil, rendering: .context)
                    queries.append(query)
                }
            } catch let error as CalibrationData.RenderError {
                throw PreMoeError.invalidData(file: url.path, line: line, reason: error.reason)
            }
            return true
        }
        return queries
    }

    /// The query of one record; nil for an empty `text` record.
    static func query(from r: JSONValue) throws -> TaskQuery? {
        func string(_ key: String) -> String? { r[key]?.stringValue }
        if let messages = r["messages"]?.arrayValue {
            guard let user = messages.first(where: { $0["role"]?.stringValue == "user" })?["content"]?.stringValue else {
                throw CalibrationData.RenderError(reason: "'messages' has no user turn with string content")
            }
            let replies = messages.filter { $0["role"]?.stringValue == "assistant" }.flatMap { prose($0["content"]?.stringValue) }
            return TaskQuery(question: user, context: replies)
        }
        if let prompt = string("prompt") { return TaskQuery(question: prompt, context: prose(string("completion"))) }
        if let text = string("text") {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            return trimmed.isEmpty ? nil : TaskQuery(question: trimmed)
        }
        if let passage = string("passage"), let question = string("question"), r["answer"]?.boolValue != nil {
            return TaskQuery(passage: passage, question: question.prefix(1).uppercased() + question.dropFirst() + "?",
                             context: [passage])
        }
        if let choices = r["choices"], let texts = choices["text"]?.arrayValue?.compactMap(\.stringValue) {
            if let stem = string("question_stem") { return TaskQuery(question: stem, options: texts) }
            if let question = string("question") { return TaskQuery(question: question, options: texts) }
        }
        if let goal = string("goal"), let sol1 = string("sol1"), let sol2 = string("sol2") {
            return TaskQuery(question: goal, options: [sol1, sol2])
        }
        if let sentence = string("sentence"), let option1 = string("option1"), let option2 = string("option2") {
            return TaskQuery(question: sentence, options: [option1, option2])
        }
        if let question = string("question"), let answer = string("answer") {
            return TaskQuery(question: question, context: prose(answer))
        }
        let keys = r.objectValue?.keys.sorted().joined(separator: ", ") ?? ""
        throw CalibrationData.RenderError(reason: "unknown record shape (fields: \(keys))")
    }

    /// The calibration rendering of a query: the record's own, else `Question: …\nAnswer:`.
    static func calibrationText(_ q: TaskQuery) -> String {
        if let calibration = q.calibration { return calibration }
        return (q.passage.map { $0 + "\n" } ?? "") + "Question: " + q.question + "\nAnswer:"
    }

    /// Renders a query.
    /// - Parameters:
    ///   - query: the query.
    ///   - style: how it arrives.
    ///   - chatTemplate: for `.chat` (plain `User:` turns without one).
    ///   - layout: the option layout (0 = `A. …`, the evaluation's canonical one).
    ///   - instruction: for `.instruction`.
    public static func render(_ query: TaskQuery, style: QueryStyle, chatTemplate: ChatTemplate?, layout: Int = 0,
                              instruction: String = evaluationInstructions[0]) -> String {
        let option = optionLayouts[layout % optionLayouts.count]
        var raw = query.passage.map { $0 + "\n\n" } ?? ""
        raw += query.question
        for (i, text) in query.options.enumerated() { raw += "\n" + option(i, text) }
        switch style {
        case .raw: return raw
        case .chat:
            let template = chatTemplate ?? .plain
            return template.format([ChatMessage(role: "user", content: raw)], addGenerationPrompt: true)
        case .lowercase: return raw.lowercased()
        case .bare:
            let lines = raw.split(separator: "\n", omittingEmptySubsequences: false).map { line in
                String(line.trimmingCharacters(in: .whitespaces).reversed().drop { ".?!:;,".contains($0) }.reversed())
            }
            return lines.joined(separator: "\n")
        case .instruction:
            return instruction + (instruction.hasSuffix(" ") ? "" : " ") + raw
        case .calibration: return calibrationText(query)
        }
    }

    /// The text retrieval reads from a prompt: the last user message when the prompt was rendered
    /// with the model's chat template (`ChatTemplate.userContent(of:)`), else the prompt itself.
    /// Profiling, evaluation, the CLI and the server all go through it, so a query is judged by
    /// what the user wrote, whichever way it arrives.
    public static func retrievalText(_ prompt: String, chatTemplate: ChatTemplate?) -> String {
        chatTemplate?.userContent(of: prompt) ?? prompt
    }

    /// The renderings a pattern's retrieval samples are made from, for one query: every style,
    /// with the option layout and the instruction varied by `item` (training instructions only).
    public static func trainingRenderings(_ query: TaskQuery, item: Int, chatTemplate: ChatTemplate?) -> [String] {
        QueryStyle.allCases.map {
            render(query, style: $0, chatTemplate: chatTemplate, layout: item,
                   instruction: trainingInstructions[item % trainingInstructions.count])
        }
    }
}
