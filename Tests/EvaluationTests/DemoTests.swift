import Foundation
import Runtime
import Testing
import TestSupport

@testable import Evaluation

@Suite struct DemoTests {
    /// Two tasks in the shared layout, a few items each.
    func makeDataDirectory() throws -> URL {
        let boolq: [[String: Any]] = (0..<6).map { i in
            ["question": "is the sky blue \(i)", "answer": i % 2 == 0, "passage": "The sky is blue on a clear day number \(i)."]
        }
        let gsm8k: [[String: Any]] = (0..<6).map { i in
            ["question": "Tom has \(i) apples and buys 3 more. How many?", "answer": "\(i) + 3 = \(i + 3)\n#### \(i + 3)"]
        }
        return try Fixtures.taskDataDirectory(["boolq": ["train": boolq, "test": boolq], "gsm8k": ["train": gsm8k, "test": gsm8k]])
    }

    @Test func demoRunsEveryStageOnTheFixture() throws {
        let data = try makeDataDirectory()
        let out = try Fixtures.temporaryDirectory("premoe-demo-out")
        let options = DemoOptions(tasks: ["gsm8k", "boolq"], dataDirectory: data, outputDirectory: out, calibrationTokens: 64,
                                  retrievalPrompts: 2, evaluationItems: 2, generationTokens: 3, threads: 1)
        var lines: [String] = []
        let report = try PreMoeDemo.run(modelDirectory: Fixtures.url("models/qwen3_moe"), options: options) { lines.append($0) }
        #expect(!lines.isEmpty)

        // 1. Patterns and heatmaps.
        #expect(report.profiles.map(\.task) == ["gsm8k", "boolq"])
        for profile in report.profiles {
            #expect(profile.tokens == 64)
            #expect(profile.importance.count == 2 && profile.importance.allSatisfy { $0.count == 8 })
            #expect(profile.importance.allSatisfy { row in row.allSatisfy { (0...1).contains($0) } && row.contains(1) })
            let png = try Data(contentsOf: URL(fileURLWithPath: profile.heatmapFile))
            #expect(Array(png.prefix(4)) == [0x89, 0x50, 0x4E, 0x47])
            #expect(FileManager.default.fileExists(atPath: profile.patternFile))
        }
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("heatmaps.png").path))
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("patterns/boolq.json").path))

        // 2. Retrieval: two held-out prompts per task.
        #expect(report.retrieval.count == 4)
        #expect(report.retrieval.allSatisfy { $0.candidates.count == 2 && $0.distance.isFinite })
        #expect(report.retrievalAccuracy != nil)

        // 3. Quality: full + own pattern at 50% + every pattern at 25%.
        #expect(report.quality.count == 2 + 2 + 2 * 2)
        #expect(report.quality.allSatisfy { $0.perplexity.isFinite && $0.perplexity > 1 && $0.items == 2 })
        #expect(Set(report.quality.map(\.expertsPerLayer)) == [8, 4, 2])

        // 4. The comparison: three loads, fewer expert bytes each time.
        let comparison = try #require(report.comparison)
        #expect(comparison.task == "gsm8k")
        #expect(comparison.levels.map(\.keep) == [1, 0.5, 0.25])
        #expect(comparison.levels.map(\.expertsPerLayer) == [8, 4, 2])
        let bytes = comparison.levels.map(\.expertBytesLoaded)
        #expect(bytes[0] > 0 && bytes[0] == 2 * bytes[1] && bytes[1] == 2 * bytes[2])
        #expect(comparison.levels.map(\.modelBytes) == comparison.levels.map { $0.backboneBytes + $0.expertBytesLoaded })
        for level in comparison.levels {
            #expect(level.perplexity?.isFinite == true)
            #expect(level.generatedTokens <= 3 && level.promptTokens > 0)
            #expect(level.loadSeconds >= 0 && level.prefillSeconds > 0)
        }
        // Loading only the kept experts gives the same model as masking the full one.
        let ownHalf = report.quality.first {
            $0.task == comparison.evaluationTask && $0.pattern == comparison.retrievedTask && $0.keep == 0.5
        }
        let own = try #require(ownHalf, "the quality table has no row for the retrieved task at 50%")
        #expect(abs(own.perplexity - (comparison.levels[1].perplexity ?? 0)) < 1e-9 * own.perplexity)

        // summary.json is the same report.
        let summary = try JSONDecoder().decode(DemoReport.self, from: Data(contentsOf: out.appendingPathComponent("summary.json")))
        #expect(summary.quality.count == report.quality.count)
        #expect(summary.comparison?.levels.count == 3)
        let json = try String(decoding: Data(contentsOf: out.appendingPathComponent("summary.json")), as: UTF8.self)
        for key in ["\"pattern\" : null", "\"expert_bytes_loaded\"", "\"peak_rss_bytes\"", "\"decode_tokens_per_second\"",
                    "\"retrieval_accuracy\"", "\"heatmap_png\""] {
            #expect(json.contains(key))
        }

        // The text of every section, coloured and plain.
        for style in [ExpertHeatmap.TerminalStyle.color, .plain] {
            let text = report.headerText(style: style) + report.retrievalText(style: style) + report.qualityText(style: style)
                + report.comparisonText(style: style) + report.footerText(style: style)
            #expect(text.contains("retrieval accuracy"))
            #expect(text.contains("expert bytes loaded"))
            #expect(text.contains("evaluated \\ pattern"))
            #expect(text.contains("\u{1B}") == (style == .color))
        }
    }

    @Test func missingTaskDataIsAClearError() throws {
        let data = try makeDataDirectory()
        let out = try Fixtures.temporaryDirectory("premoe-demo-out")
        let options = DemoOptions(tasks: ["piqa"], dataDirectory: data, outputDirectory: out, calibrationTokens: 16, threads: 1)
        #expect(throws: EvaluationError.self) {
            try PreMoeDemo.run(modelDirectory: Fixtures.url("models/qwen3_moe"), options: options)
        }
    }

    @Test func textHelpers() {
        #expect(DemoText.oneLine("a\nb", max: 10) == "a⏎b")
        #expect(DemoText.oneLine("abcdefghij", max: 5) == "abcd…")
        #expect(DemoText.grouped(1234567.4) == "1,234,567")
        #expect(formatBytes(2048) == "2.00 KiB")
        #expect(formatBytes(512) == "512 B")
        #expect(DemoText.table([["a", "bb"], ["ccc", "d"]], rightAligned: [1]) == "  a    bb\n  ccc   d\n")
    }
}
