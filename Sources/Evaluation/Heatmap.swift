import Foundation

/// Expert importance of one task as a layers × experts grid, each layer scaled to [0, 1] on its
/// own (layers differ in scale, and the question a heatmap answers is "which experts of this
/// layer does the task use", not "which layer has the largest scores").
public struct ExpertHeatmap: Sendable, Equatable {
    /// Shown above the grid (the task name).
    public var title: String
    /// A short note after the title (e.g. the calibration tokens).
    public var subtitle: String
    /// MoE layer indices, one per row.
    public var layers: [Int]
    /// `[layers][experts]`, each row in [0, 1].
    public var values: [[Double]]

    /// A heatmap from per-layer scores (a `TaskPattern`'s `scores`), each row normalised.
    public init(title: String, subtitle: String = "", scores: [Int: [Double]]) {
        self.title = title
        self.subtitle = subtitle
        layers = scores.keys.sorted()
        values = layers.map { Self.normalize(scores[$0]!) }
    }

    public var expertCount: Int { values.map(\.count).max() ?? 0 }

    /// Scales a layer's scores to [0, 1]: divided by the largest when none is negative (so 0
    /// stays "never chosen"), else min–max (raw-logit TCESS can be negative, METHODS §1.2).
    /// Non-finite values map to 0, and so does every entry of an all-zero or all-equal negative row.
    public static func normalize(_ row: [Double]) -> [Double] {
        let finite = row.filter(\.isFinite)
        guard let lo = finite.min(), let hi = finite.max() else { return row.map { _ in 0 } }
        let base = lo >= 0 ? 0 : lo
        let span = hi - base
        guard span > 0 else { return row.map { _ in 0 } }
        return row.map { $0.isFinite ? min(1, max(0, ($0 - base) / span)) : 0 }
    }
}

/// The colour scale of the plots: matplotlib's viridis (perceptually uniform, readable in grey
/// and by the colour-blind), sampled at nine points and interpolated linearly.
public enum ColorScale {
    static let stops: [RGB] = [
        RGB(68, 1, 84), RGB(71, 44, 122), RGB(59, 82, 139), RGB(44, 113, 142), RGB(33, 145, 140),
        RGB(39, 173, 129), RGB(92, 200, 99), RGB(170, 220, 50), RGB(253, 231, 37),
    ]

    /// The colour of `t` in [0, 1] (clamped; NaN is 0).
    public static func viridis(_ t: Double) -> RGB {
        let t = t.isNaN ? 0 : min(1, max(0, t))
        let position = t * Double(stops.count - 1)
        let i = min(Int(position), stops.count - 2)
        let f = position - Double(i)
        func mix(_ a: UInt8, _ b: UInt8) -> UInt8 { UInt8((Double(a) + (Double(b) - Double(a)) * f).rounded()) }
        let a = stops[i], b = stops[i + 1]
        return RGB(mix(a.r, b.r), mix(a.g, b.g), mix(a.b, b.b))
    }

    /// Characters from light to dense for terminals without colour.
    public static let asciiShades: [Character] = [" ", ".", ":", "-", "=", "+", "*", "#", "%", "@"]

    /// The shade of `t` in [0, 1].
    public static func asciiShade(_ t: Double) -> Character {
        let t = t.isNaN ? 0 : min(1, max(0, t))
        return asciiShades[min(asciiShades.count - 1, Int(t * Double(asciiShades.count)))]
    }
}

// MARK: - Terminal

extension ExpertHeatmap {
    /// How a heatmap is drawn in a terminal.
    public enum TerminalStyle: Sendable {
        /// 24-bit ANSI colours; `▀` half blocks put two layers in one text line.
        case color
        /// ASCII shades (`ColorScale.asciiShades`), one text line per layer.
        case plain
    }

    /// Columns per expert: two keep a cell about as wide as a half-block is tall.
    static func cellWidth(experts: Int) -> Int { experts <= 48 ? 2 : 1 }

    /// Draws heatmaps one below the other, each with its title, layer labels and expert ticks,
    /// and a colour legend at the end.
    public static func terminal(_ maps: [ExpertHeatmap], style: TerminalStyle) -> String {
        var out = ""
        out += maps.map { $0.terminal(style: style) }.joined(separator: "\n")
        let experts = maps.map(\.expertCount).max() ?? 0
        out += legend(style: style, width: max(20, experts * cellWidth(experts: experts) / 2))
        return out
    }

    /// This heatmap alone, without the legend.
    public func terminal(style: TerminalStyle) -> String {
        let experts = expertCount
        let cell = Self.cellWidth(experts: experts)
        let labels: [String]
        var lines: [String] = []
        switch style {
        case .color:
            labels = stride(from: 0, to: layers.count, by: 2).map { i in
                i + 1 < layers.count ? "L\(layers[i]),\(layers[i + 1])" : "L\(layers[i])"
            }
        case .plain:
            labels = layers.map { "L\($0)" }
        }
        let margin = max("expert".count, labels.map(\.count).max() ?? 0) + 1
        func pad(_ s: String) -> String { String(repeating: " ", count: max(0, margin - s.count - 1)) + s + " " }

        lines.append(title + (subtitle.isEmpty ? "" : "  (\(subtitle))"))
        lines.append(pad("expert") + Self.ticks(experts: experts, cell: cell))
        switch style {
        case .color:
            for (line, i) in stride(from: 0, to: layers.count, by: 2).enumerated() {
                var text = pad(labels[line])
                for e in 0..<experts {
                    let top = ColorScale.viridis(values[i][safe: e])
                    let piece: String
                    if i + 1 < values.count {
                        let bottom = ColorScale.viridis(values[i + 1][safe: e])
                        piece = "\u{1B}[38;2;\(top.r);\(top.g);\(top.b)m\u{1B}[48;2;\(bottom.r);\(bottom.g);\(bottom.b)m▀"
                    } else {
                        piece = "\u{1B}[49m\u{1B}[38;2;\(top.r);\(top.g);\(top.b)m▀"
                    }
                    text += piece + String(repeating: "▀", count: cell - 1)
                }
                lines.append(text + "\u{1B}[0m")
            }
        case .plain:
            for (i, row) in values.enumerated() {
                var text = pad(labels[i])
                for e in 0..<experts { text += String(repeating: ColorScale.asciiShade(row[safe: e]), count: cell) }
                lines.append(text + "|")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Expert indices every 4 (or 8, 16 … as the width allows) cells, left-aligned on their cell.
    static func ticks(experts: Int, cell: Int) -> String {
        guard experts > 0 else { return "" }
        var step = 4
        while step * cell < 6 { step *= 2 }
        var line = [Character](repeating: " ", count: experts * cell + 4)
        var e = 0
        while e < experts {
            let label = Array(String(e))
            let start = e * cell
            if start + label.count <= line.count { for (k, c) in label.enumerated() { line[start + k] = c } }
            e += step
        }
        // The last index, when it does not collide with the previous label.
        let last = Array(String(experts - 1)), lastStart = (experts - 1) * cell
        let previousEnd = ((experts - 1) / step) * step * cell + String(((experts - 1) / step) * step).count
        if (experts - 1) % step != 0, lastStart > previousEnd, lastStart + last.count <= line.count {
            for (k, c) in last.enumerated() { line[lastStart + k] = c }
        }
        return String(line).replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
    }

    static func legend(style: TerminalStyle, width: Int) -> String {
        switch style {
        case .color:
            var bar = ""
            for i in 0..<width {
                let c = ColorScale.viridis(Double(i) / Double(max(1, width - 1)))
                bar += "\u{1B}[38;2;\(c.r);\(c.g);\(c.b)m█"
            }
            return "scale  0 " + bar + "\u{1B}[0m 1 = the layer's most important expert\n"
        case .plain:
            return "scale  0 [" + String(ColorScale.asciiShades) + "] 1 = the layer's most important expert\n"
        }
    }
}

// MARK: - PNG

extension ExpertHeatmap {
    /// Pixel geometry of a plot.
    struct Layout {
        var cellWidth: Int
        var cellHeight: Int
        var scale = 2
        var gap = 1
        var margin = 12

        init(experts: Int, layers: Int) {
            cellWidth = max(4, min(18, 640 / max(1, experts)))
            cellHeight = max(4, min(18, 360 / max(1, layers)))
        }

        var lineHeight: Int { PixelFont.glyphHeight * scale }
    }

    /// Draws heatmaps stacked top to bottom, each with a title, layer labels (rows), expert ticks
    /// (columns) and axis names, and a colour bar under the last one.
    /// - Returns: an image about `experts × 18` pixels wide.
    public static func image(_ maps: [ExpertHeatmap], caption: String) -> RGBImage {
        let experts = max(1, maps.map(\.expertCount).max() ?? 1)
        let layerCount = max(1, maps.map(\.layers.count).max() ?? 1)
        let layout = Layout(experts: experts, layers: layerCount)
        let s = layout.scale
        let text = RGB(30, 30, 30), grey = RGB(110, 110, 110)
        let rowLabels = maps.flatMap(\.layers).map { "L\($0)" } + ["layer"]
        let left = layout.margin + (rowLabels.map { PixelFont.width($0, scale: s) }.max() ?? 0) + 8
        let gridWidth = experts * layout.cellWidth
        let axisName = "expert"
        let right = 8 + PixelFont.width(axisName, scale: s) + layout.margin
        let titleWidth = maps.map { PixelFont.width($0.title + "  " + $0.subtitle, scale: s) }.max() ?? 0
        let width = max(left + gridWidth + right, layout.margin * 2 + titleWidth,
                        layout.margin * 2 + PixelFont.width(caption, scale: s))

        // Panel: title, "layer" label line, grid, ticks.
        func panelHeight(_ map: ExpertHeatmap) -> Int {
            layout.lineHeight + 6 + layout.lineHeight + 4 + map.layers.count * layout.cellHeight + 6 + layout.lineHeight + 14
        }
        let legendHeight = layout.lineHeight + 8 + 16 + 6 + layout.lineHeight
        let height = layout.margin + maps.map(panelHeight).reduce(0, +) + legendHeight + layout.margin
        var image = RGBImage(width: width, height: height, fill: .white)

        var y = layout.margin
        for map in maps {
            PixelFont.draw(map.title, into: &image, x: layout.margin, y: y, scale: s, color: text)
            if !map.subtitle.isEmpty {
                let x = layout.margin + PixelFont.width(map.title + "  ", scale: s)
                PixelFont.draw(map.subtitle, into: &image, x: x, y: y, scale: s, color: grey)
            }
            y += layout.lineHeight + 6
            PixelFont.draw("layer", into: &image, x: left - 8 - PixelFont.width("layer", scale: s), y: y, scale: s, color: grey)
            y += layout.lineHeight + 4
            let gridTop = y
            image.fillRect(x: left - 1, y: gridTop - 1, width: gridWidth + 1, height: map.layers.count * layout.cellHeight + 1,
                           RGB(200, 200, 200))
            for (row, layer) in map.layers.enumerated() {
                let cy = gridTop + row * layout.cellHeight
                let label = "L\(layer)"
                PixelFont.draw(label, into: &image, x: left - 8 - PixelFont.width(label, scale: s),
                               y: cy + (layout.cellHeight - layout.lineHeight) / 2, scale: s, color: text)
                for e in 0..<map.expertCount {
                    image.fillRect(x: left + e * layout.cellWidth, y: cy, width: layout.cellWidth - layout.gap,
                                   height: layout.cellHeight - layout.gap, ColorScale.viridis(map.values[row][safe: e]))
                }
            }
            y = gridTop + map.layers.count * layout.cellHeight + 2
            // Ticks every 4 experts (more when cells are narrow), and the last expert.
            var step = 4
            while step * layout.cellWidth < PixelFont.width("000", scale: s) + 6 { step *= 2 }
            var tickExperts = Array(stride(from: 0, to: map.expertCount, by: step))
            if let lastTick = tickExperts.last, map.expertCount - 1 - lastTick >= step / 2 { tickExperts.append(map.expertCount - 1) }
            for e in tickExperts {
                let cx = left + e * layout.cellWidth + (layout.cellWidth - layout.gap) / 2
                image.fillRect(x: cx, y: y, width: 1, height: 4, grey)
                let label = String(e)
                PixelFont.draw(label, into: &image, x: cx - PixelFont.width(label, scale: s) / 2, y: y + 6, scale: s, color: text)
            }
            PixelFont.draw(axisName, into: &image, x: left + gridWidth + 8, y: y + 6, scale: s, color: grey)
            y += 6 + layout.lineHeight + 14
        }

        // Colour bar with its ends labelled, and the caption.
        PixelFont.draw(caption, into: &image, x: layout.margin, y: y, scale: s, color: text)
        y += layout.lineHeight + 8
        let barWidth = min(gridWidth, 360)
        let barX = left
        PixelFont.draw("0", into: &image, x: barX - 8 - PixelFont.width("0", scale: s), y: y, scale: s, color: text)
        for i in 0..<barWidth {
            image.fillRect(x: barX + i, y: y, width: 1, height: 16, ColorScale.viridis(Double(i) / Double(max(1, barWidth - 1))))
        }
        PixelFont.draw("1", into: &image, x: barX + barWidth + 8, y: y, scale: s, color: text)
        y += 16 + 6
        PixelFont.draw("least", into: &image, x: barX, y: y, scale: s, color: grey)
        let most = "most important"
        PixelFont.draw(most, into: &image, x: barX + barWidth - PixelFont.width(most, scale: s), y: y, scale: s, color: grey)
        return image
    }
}

extension Array where Element == Double {
    /// The element at `i`, or 0 past the end (rows of unequal length draw as "unused").
    subscript(safe i: Int) -> Double { indices.contains(i) ? self[i] : 0 }
}
