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
