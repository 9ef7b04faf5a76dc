import Foundation
import Testing
import TestSupport

@testable import Evaluation

@Suite struct HeatmapTests {
    @Test func rowsAreScaledPerLayer() {
        #expect(ExpertHeatmap.normalize([0, 1, 2, 4]) == [0, 0.25, 0.5, 1])
        // Negative scores (raw-logit TCESS): min–max.
        #expect(ExpertHeatmap.normalize([-2, 0, 2]) == [0, 0.5, 1])
        #expect(ExpertHeatmap.normalize([3, 3, 3]) == [1, 1, 1])
        #expect(ExpertHeatmap.normalize([0, 0]) == [0, 0])
        #expect(ExpertHeatmap.normalize([-2, -2]) == [0, 0])
        #expect(ExpertHeatmap.normalize([0, .nan, 2]) == [0, 0, 1])
        #expect(ExpertHeatmap.normalize([]) == [])
        let map = ExpertHeatmap(title: "t", scores: [3: [0, 10], 1: [5, 0]])
        #expect(map.layers == [1, 3])
        #expect(map.values == [[1, 0], [0, 1]])
    }

    @Test func colourScaleIsViridisClampedAndBrighteningMonotonically() {
        #expect(ColorScale.viridis(0) == RGB(68, 1, 84))
        #expect(ColorScale.viridis(0.5) == RGB(33, 145, 140))
        #expect(ColorScale.viridis(1) == RGB(253, 231, 37))
        #expect(ColorScale.viridis(-3) == ColorScale.viridis(0))
        #expect(ColorScale.viridis(7) == ColorScale.viridis(1))
        #expect(ColorScale.viridis(.nan) == ColorScale.viridis(0))
        // Interpolated between stops: halfway between the first two.
        #expect(ColorScale.viridis(0.0625) == RGB(70, 23, 103))
        func luminance(_ c: RGB) -> Double { 0.2126 * Double(c.r) + 0.7152 * Double(c.g) + 0.0722 * Double(c.b) }
        let samples = (0...100).map { luminance(ColorScale.viridis(Double($0) / 100)) }
        #expect(zip(samples, samples.dropFirst()).allSatisfy { $0 < $1 })
        #expect(ColorScale.asciiShade(0) == " ")
        #expect(ColorScale.asciiShade(1) == "@")
        #expect(ColorScale.asciiShade(0.55) == "+")
    }

    @Test func terminalDrawingUsesHalfBlocksOrASCII() {
        let scores = Dictionary(uniqueKeysWithValues: (0..<3).map { l in (l, (0..<8).map { Double(($0 + l) % 8) }) })
        let map = ExpertHeatmap(title: "math", subtitle: "64 tokens", scores: scores)
        let color = map.terminal(style: .color)
        let colorLines = color.split(separator: "\n")
        #expect(colorLines.count == 2 + 2)  // title, ticks, layers 0+1, layer 2
        #expect(colorLines[0] == "math  (64 tokens)")
        #expect(colorLines[2].hasPrefix("  L0,1 "))
        #expect(colorLines[2].contains("\u{1B}[38;2;68;1;84m\u{1B}[48;2;"))  // expert 0 of layer 0 is 0: darkest on top
        #expect(colorLines[2].filter { $0 == "▀" }.count == 8 * 2)
        #expect(colorLines[3].contains("\u{1B}[49m"))  // a lone last layer keeps the default background
        let plain = map.terminal(style: .plain)
        #expect(!plain.contains("\u{1B}"))
        let plainLines = plain.split(separator: "\n")
        #expect(plainLines.count == 2 + 3)
        #expect(plainLines[1] == "expert 0       4     7")
        #expect(plainLines[2].hasPrefix("    L0 "))
        let all = ExpertHeatmap.terminal([map, map], style: .plain)
        #expect(all.hasSuffix("1 = the layer's most important expert\n"))
    }

    @Test func plainRowsMapEachExpertToItsShade() {
        let map = ExpertHeatmap(title: "x", scores: [0: [0, 9, 4.5, 1]])
        let line = map.terminal(style: .plain).split(separator: "\n")[2]
        #expect(line == "    L0   @@++..|")
    }

    @Test func imageHasEveryCellColourAndLabels() {
        let map = ExpertHeatmap(title: "math", subtitle: "64 tokens", scores: [0: [0, 1, 2, 3], 1: [3, 2, 1, 0]])
        let image = ExpertHeatmap.image([map, map], caption: "importance")
        #expect(image.width > 4 * 4 && image.height > 2 * 2 * 4)
        var colours = Set<RGB>()
        for y in 0..<image.height { for x in 0..<image.width { colours.insert(image[x, y]) } }
        for v in [0.0, 1.0 / 3, 2.0 / 3, 1] { #expect(colours.contains(ColorScale.viridis(v))) }
        #expect(colours.contains(RGB(30, 30, 30)), "label text")
        let png = PNG.encode(image)
        #expect(png.count > image.pixels.count)
    }

    @Test func ticksLabelEveryFourthExpertAndTheLast() {
        #expect(ExpertHeatmap.ticks(experts: 8, cell: 2) == "0       4     7")
        #expect(ExpertHeatmap.ticks(experts: 32, cell: 2).hasSuffix("28    31"))
        #expect(ExpertHeatmap.ticks(experts: 128, cell: 1).hasPrefix("0       8"))
    }
}

@Suite struct DemoTests {
    /// Two tasks in the shared layout, a few items each.
    func makeDataDirectory() throws -> URL {
        let dir = try Fixtures.temporaryDirectory("premoe-demo")
        func write(_ task: String, _ split: String, _ rows: [[String: Any]]) throws {
            let taskDir = dir.appendingPathComponent(task)
            try FileManager.default.createDirectory(at: taskDir, withIntermediateDirectories: true)
            let lines = try rows.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
            try (lines.joined(separator: "\n") + "\n").write(to: taskDir.appendingPathComponent("\(split).jsonl"),
                                                              atomically: true, encoding: .utf8)
        }
        let boolq: [[String: Any]] = (0..<6).map { i in
            ["question": "is the sky blue \(i)", "answer": i % 2 == 0, "passage": "The sky is blue on a clear day number \(i)."]
        }
        try write("boolq", "train", boolq)
        try write("boolq", "test", boolq)
        let gsm8k: [[String: Any]] = (0..<6).map { i in
            ["question": "Tom has \(i) apples and buys 3 more. How many?", "answer": "\(i) + 3 = \(i + 3)\n#### \(i + 3)"]
        }
        try write("gsm8k", "train", gsm8k)
        try write("gsm8k", "test", gsm8k)
        return dir
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
        if let own = report.quality.first(where: { $0.task == comparison.evaluationTask && $0.pattern == comparison.retrievedTask && $0.keep == 0.5 }) {
            #expect(abs(own.perplexity - (comparison.levels[1].perplexity ?? 0)) < 1e-9 * own.perplexity)
        }

        // summary.json is the same report.
        let summary = try JSONDecoder().decode(DemoReport.self, from: Data(contentsOf: out.appendingPathComponent("summary.json")))
        #expect(summary.quality.count == report.quality.count)
        #expect(summary.comparison?.levels.count == 3)
        let json = try String(decoding: Data(contentsOf: out.appendingPathComponent("summary.json")), as: UTF8.self)
        for key in ["\"pattern\" : null", "\"expert_bytes_loaded\"", "\"peak_rss_bytes\"", "\"decode_tokens_per_second\"", "\"retrieval_accuracy\"",
                    "\"heatmap_png\""] {
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
        #expect(DemoText.bytes(2048) == "2.00 KiB")
        #expect(DemoText.table([["a", "bb"], ["ccc", "d"]], rightAligned: [1]) == "  a    bb\n  ccc   d\n")
    }
}
