import Evaluation
import Foundation
import Models
import Testing
import TestSupport

private struct TextGolden: Decodable {
    let input_text: String
    let input_ids: [Int]
    let logits: [[Float]]
}

/// Log-softmax of a reference logits row, in Double.
private func referenceLogProb(_ row: [Float], _ token: Int) -> Double {
    let m = Double(row.max()!)
    let s = row.reduce(0.0) { $0 + exp(Double($1) - m) }
    return Double(row[token]) - m - log(s)
}

@Suite struct TaskItemsTests {
    @Test func arcLooksUpTheKeyAmongLabels() throws {
        let row: [String: Any] = ["question": "Q?", "answerKey": "3",
                                  "choices": ["text": ["a", "b", "c"], "label": ["1", "2", "3"]]]
        let item = try TaskItems.multipleChoice(task: "ai2_arc", row: row)
        #expect(item.gold == 2)
        #expect(item.contexts[0] == "Question: Q?\nAnswer:")
        #expect(item.continuations == [" a", " b", " c"])
    }

    @Test func winograndeScoresTheSameContinuationUnderTwoContexts() throws {
        let row: [String: Any] = ["sentence": "Ian ate because _ was hungry .", "option1": "Ian", "option2": "Dennis", "answer": "2"]
        let item = try TaskItems.multipleChoice(task: "winogrande", row: row)
        #expect(item.contexts == ["Ian ate because Ian", "Ian ate because Dennis"])
        #expect(item.continuations == [" was hungry .", " was hungry ."])
        #expect(item.gold == 1)
    }

    @Test func hiddenLabelsBecomeNilAndBoolQAddsTheQuestionMark() throws {
        let piqa = try TaskItems.multipleChoice(task: "piqa", row: ["goal": "g", "sol1": "x", "sol2": "y", "label": -1])
        #expect(piqa.gold == nil)
        let boolq = try TaskItems.multipleChoice(task: "boolq", row: ["passage": "P", "question": "is it", "answer": true])
        #expect(boolq.contexts[0] == "P\nQuestion: is it?\nAnswer:")
        #expect(boolq.gold == 1)
        #expect(throws: EvaluationError.self) { try TaskItems.multipleChoice(task: "arc", row: [:]) }
        #expect(throws: EvaluationError.self) { try TaskItems.multipleChoice(task: "boolq", row: ["passage": "P"]) }
    }

    @Test(arguments: [
        ("so she has 2,125 dollars.", "2125"), ("#### 72", "72"), ("It is -3.", "-3"),
        ("no number here", nil as String?), ("3 then 4.5 then 18", "18"),
    ])
    func finalNumberExtraction(_ text: String, _ expected: String?) {
        #expect(TaskItems.finalNumber(in: text) == expected)
    }

    @Test func gsm8kGoldIsTheTextAfterTheLastMarker() throws {
        let item = try TaskItems.generative(row: ["question": "How many?", "answer": "2+2=<<2+2=4>>4\n#### 1,004"])
        #expect(item.answer == "1004")
        #expect(item.prompt == "Question: How many?\nAnswer:")
    }

    /// `../shared/data/tasks` beside the checkout (present in the workplace, absent elsewhere).
    static let sharedTasks = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/data/tasks")

    @Test(.enabled(if: FileManager.default.fileExists(atPath: sharedTasks.path), "no shared/data/tasks beside the checkout"))
    func sharedTaskFilesParse() throws {
        let root = Self.sharedTasks
        for task in TaskItems.multipleChoiceTasks {
            let url = root.appendingPathComponent("\(task)/train.jsonl")
            for (i, row) in try TaskItems.readJSONL(url, limit: 50).enumerated() {
                let item = try TaskItems.multipleChoice(task: task, row: row, file: url.path, line: i + 1)
                #expect(item.gold != nil && item.contexts.count == item.continuations.count)
            }
        }
    }
}

@Suite struct ScoringTests {
    @Test(arguments: [2, 3, 512])
    func perplexityMatchesTheReferenceLogits(_ window: Int) throws {
        let golden = try Fixtures.json(TextGolden.self, "models/qwen3/golden.json")
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3"), options: LoadOptions(threads: 1))
        let tokenizer = try #require(loaded.tokenizer)
        try #require(tokenizer.encode(golden.input_text) == golden.input_ids)
        let scorer = LogLikelihoodScorer(model: loaded.model, tokenizer: tokenizer, window: window)
        let (ppl, count) = try scorer.perplexity([golden.input_text])
        #expect(count == golden.input_ids.count - 1)
        if window >= golden.input_ids.count {
            // One window: the reference logits give the same number.
            var nll = 0.0
            for i in 1..<golden.input_ids.count { nll -= referenceLogProb(golden.logits[i - 1], golden.input_ids[i]) }
            let reference = exp(nll / Double(count))
            #expect(abs(ppl - reference) / reference < 1e-4)
        }
        #expect(ppl.isFinite && ppl > 1)
    }

    @Test func continuationScoreIsTheSumOfItsTokensLogProbabilities() throws {
        let golden = try Fixtures.json(TextGolden.self, "models/qwen3/golden.json")
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3"), options: LoadOptions(threads: 1))
        let tokenizer = try #require(loaded.tokenizer)
        let scorer = LogLikelihoodScorer(model: loaded.model, tokenizer: tokenizer)
        // Split the reference text at a word boundary the tokenizer also splits at.
        let context = "The sun is hot"
        let continuation = " and water is cold"
        let contextIDs = tokenizer.encode(context)
        try #require(Array(golden.input_ids.prefix(contextIDs.count)) == contextIDs)
        var expected = 0.0
        for i in contextIDs.count..<golden.input_ids.count {
            expected += referenceLogProb(golden.logits[i - 1], golden.input_ids[i])
        }
        let score = try scorer.score(context: context, continuation: continuation)
        #expect(abs(score - expected) < 1e-3 * max(1, abs(expected)))
    }
}
