@testable import Evaluation
import Foundation
import PreMoe
import Testing
import TestSupport

@Suite struct SweepTests {
    /// A tiny data directory in the shared layout: two tasks, a few items each.
    func makeDataDirectory() throws -> URL {
        let boolq: [[String: Any]] = (0..<6).map { i in
            ["question": "is the sky blue \(i)", "answer": i % 2 == 0, "passage": "The sky is blue on a clear day number \(i)."]
        }
        let wiki: [[String: Any]] = (0..<8).map { ["text": " The river runs \($0) miles to the sea . \n"] }
        return try Fixtures.taskDataDirectory(["boolq": ["train": boolq, "test": boolq], "wikitext2": ["test": wiki]])
    }

    @Test func sweepProducesOneRowPerTaskScorerAndKeep() throws {
        let data = try makeDataDirectory()
        var options = SweepOptions(tasks: ["boolq", "wikitext2"], keeps: [1, 0.5], scorers: ["tcess", "random"],
                                   dataDirectory: data, maxExamples: 3, calibrationTokens: 64, retrievalPrompts: 2, threads: 1)
        options.selectRecipe = false
        let report = try PruningSweep.run(modelDirectory: Fixtures.url("models/qwen3_moe"), options: options)
        #expect(report.rows.count == 2 * 2 * 2)
        for row in report.rows {
            #expect(row.perplexity.map { $0.isFinite && $0 > 1 } == true)
            #expect(row.expertsKept == (row.keep == 1 ? 8 : 4))
        }
        // The full model is one model whatever the scorer; pruning saves memory.
        let full = report.rows.filter { $0.keep == 1 }
        #expect(Set(full.map { $0.perplexity! }).count == 2)  // one value per task
        let half = try #require(report.rows.first { $0.keep == 0.5 })
        #expect(half.memoryBytes < full[0].memoryBytes)
        #expect(report.rows.first { $0.task == "boolq" }?.accuracy != nil)
        #expect(report.rows.first { $0.task == "wikitext2" }?.accuracy == nil)
        #expect(Set(report.rows.map(\.method)) == ["tcess/uniform", "random/uniform"])
        #expect(report.rows.allSatisfy { !$0.isDefault })  // the default recipe is chosen per task
        let retrieval = try #require(report.retrieval)
        // Both methods, every rendering, two held-out queries per task.
        #expect(retrieval.reports.count == 2 * QueryStyle.allCases.count)
        #expect(Set(retrieval.reports.map(\.method)) == ["classifier", "centroid"])
        for r in retrieval.reports {
            #expect(r.tasks == ["boolq", "wikitext2"])
            #expect(r.confusion.joined().reduce(0, +) == 4)
            #expect(r.confusion.allSatisfy { $0.count == 3 })  // + fallback column
        }
        #expect(report.markdown().contains("| boolq | tcess/uniform |"))
        #expect(report.csv().split(separator: "\n").count == 1 + report.rows.count)
    }

    @Test func defaultRecipeAndOracleRowsAreMarked() throws {
        let data = try makeDataDirectory()
        // Enough calibration for all six items: the fifth is held out to choose the recipe.
        let options = SweepOptions(tasks: ["boolq"], keeps: [1, 0.5], scorers: ["tcess"], dataDirectory: data,
                                   maxExamples: 3, calibrationTokens: 10_000, retrievalPrompts: 0,
                                   allocations: [.uniform, .routingMass], oracle: true, threads: 1)
        let report = try PruningSweep.run(modelDirectory: Fixtures.url("models/qwen3_moe"), options: options)
        #expect(Set(report.rows.map(\.method)) == ["tcess/uniform", "tcess/routing-mass", "selected", "oracle"])
        #expect(PruningSweep.defaultMethod == "selected")
        #expect(report.rows.filter(\.isDefault).map(\.method) == [PruningSweep.defaultMethod, PruningSweep.defaultMethod])
        // The selected row names the recipe it chose, one of the candidates.
        let selected = try #require(report.rows.first { $0.method == "selected" && $0.keep == 0.5 })
        #expect(PruningRecipe.candidates.map(\.description).contains(selected.recipe ?? ""))
        let half = report.rows.filter { $0.keep == 0.5 }
        // Every recipe at 50% holds the same number of experts in all, whatever their spread.
        #expect(Set(half.map(\.memoryBytes)).count == 1)
        #expect(report.retrieval == nil)
        let json = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(json.contains("\"default\":true") && json.contains("\"method\":\"oracle\""))
    }

    @Test func eachTaskIsProfiledOnTheFullModelWhateverRanBefore() throws {
        // A task's rows must not depend on which task (and which pruned model) came before it.
        let data = try makeDataDirectory()
        func rows(_ tasks: [String]) throws -> [SweepRow] {
            var options = SweepOptions(tasks: tasks, keeps: [1, 0.25], scorers: ["tcess", "random"], dataDirectory: data,
                                       maxExamples: 3, calibrationTokens: 64, retrievalPrompts: 1, threads: 1)
            options.selectRecipe = false
            return try PruningSweep.run(modelDirectory: Fixtures.url("models/qwen3_moe"), options: options).rows
        }
        let alone = try rows(["wikitext2"])
        let after = try rows(["boolq", "wikitext2"]).filter { $0.task == "wikitext2" }
        #expect(alone.map(\.perplexity) == after.map(\.perplexity))
        #expect(alone.map(\.memoryBytes) == after.map(\.memoryBytes))
    }

    @Test func missingEvaluationSplitIsAClearError() throws {
        let data = try makeDataDirectory()
        let options = SweepOptions(tasks: ["piqa"], keeps: [1], scorers: ["tcess"], dataDirectory: data)
        #expect(throws: EvaluationError.self) {
            try PruningSweep.run(modelDirectory: Fixtures.url("models/qwen3_moe"), options: options)
        }
    }
}

/// SEAP's speed ratios come from the dense model timed in alternation with each pruned row, not
/// from the dense rows timed once at the start.
@Suite struct SEAPSpeedReportTests {
    @Test func ratiosUseTheDenseTimingTakenBesideTheRow() {
        let dense = SEAPEvalRow(task: "t", method: "wifv", sparsity: 0, accuracy: nil, normalizedAccuracy: nil, perplexity: 10,
                                decodeTokensPerSecond: 100, weightBytes: 1000, prefillTokensPerSecond: 400)
        let pruned = SEAPEvalRow(task: "t", method: "wifv", sparsity: 0.5, accuracy: nil, normalizedAccuracy: nil, perplexity: 12,
                                 decodeTokensPerSecond: 150, weightBytes: 600, prefillTokensPerSecond: 600,
                                 denseDecodeTokensPerSecond: 75, densePrefillTokensPerSecond: 200)
        let markdown = SEAPEvalReport(rows: [dense, pruned], router: nil, notes: []).markdown()
        #expect(markdown.contains("150.0 (×2.00)") && markdown.contains("600.0 (×3.00)"), "\(markdown)")
        // Without an adjacent timing, the dense row's.
        var alone = pruned
        alone.denseDecodeTokensPerSecond = nil
        alone.densePrefillTokensPerSecond = nil
        let fallback = SEAPEvalReport(rows: [dense, alone], router: nil, notes: []).markdown()
        #expect(fallback.contains("150.0 (×1.50)") && fallback.contains("600.0 (×1.50)"), "\(fallback)")
    }
}
