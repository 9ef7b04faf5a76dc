import Foundation
import Runtime

/// The demo's report as terminal text, one section per stage.
extension DemoReport {
    /// The opening line: model, shape, calibration budget.
    public func headerText(style: ExpertHeatmap.TerminalStyle) -> String {
        DemoText.heading("PreMoe demo: \(model)", style: style) + "\n"
            + "\(moeLayers.count) MoE layers × \(experts) experts, top-\(topK); "
            + "fingerprint \(fingerprint.prefix(12))…\n"
    }

    /// Stage 1: the heatmaps and where their PNGs are.
    public func profileText(_ heatmaps: [ExpertHeatmap], style: ExpertHeatmap.TerminalStyle) -> String {
        var out = DemoText.heading("1. Which experts each task uses", style: style) + "\n"
        out += "TCESS per expert from \(calibrationTokens) calibration tokens of each task's train split "
            + "(rows: layers, columns: experts).\n\n"
        out += ExpertHeatmap.terminal(heatmaps, style: style)
        let seconds = profiles.map(\.seconds).reduce(0, +)
        out += String(format: "profiled %d tokens in %.1f s; PNGs: ", profiles.map(\.tokens).reduce(0, +), seconds)
        out += files.filter { $0.hasSuffix(".png") }.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", ")
        if let dir = files.first(where: { $0.hasSuffix(".png") }).map({ URL(fileURLWithPath: $0).deletingLastPathComponent().path }) {
            out += " in \(dir)"
        }
        return out + "\n"
    }

    /// Stage 2: one line per held-out prompt.
    public func retrievalText(style: ExpertHeatmap.TerminalStyle) -> String {
        var out = DemoText.heading("2. Retrieval: questions it never saw, as people send them → task pattern", style: style) + "\n"
        out += "Typed as is, or inside the chat template. Features from the backbone up to the first MoE router (no expert\n"
        out += "is needed): mean token embedding, router logits, last tokens; a classifier fitted at profile time picks the task.\n\n"
        let width = 52
        var rows = [["prompt (test split)", "sent as", "true", "retrieved", "p", "runner-up"]]
        for r in retrieval {
            let runnerUp = r.candidates.dropFirst().first.map { String(format: "%@ %.3f", $0.task, $0.probability ?? $0.distance) } ?? ""
            let shown = r.rendering == "chat" ? r.prompt.replacingOccurrences(of: "<|im_start|>user\n", with: "") : r.prompt
            rows.append(["\"" + DemoText.oneLine(shown, max: width) + "\"", r.rendering, r.task,
                         (r.retrieved ?? "none") + (r.correct ? " ✓" : " ✗"), String(format: "%.3f", 1 - r.distance), runnerUp])
        }
        out += DemoText.table(rows, rightAligned: [4])
        if let accuracy = retrievalAccuracy {
            let correct = retrieval.filter(\.correct).count
            out += String(format: "retrieval accuracy %d/%d (%.0f%%)\n", correct, retrieval.count, accuracy * 100)
        }
        return out
    }

    /// Stage 3: perplexity per task and keep level, and the cross-task matrix at the smallest level.
    public func qualityText(style: ExpertHeatmap.TerminalStyle) -> String {
        let tasks = profiles.map(\.task)
        let keeps = Array(Set(quality.map(\.keep))).sorted(by: >)
        let items = quality.map(\.items).max()
        var out = DemoText.heading("3. What pruning costs each task", style: style) + "\n"
        out += "Held-out perplexity\(items.map { " on \($0) test items" } ?? "") per task (lower is better), "
            + "pruned with the task's own pattern.\n\n"
        func ppl(_ task: String, _ pattern: String?, _ keep: Double) -> String {
            quality.first { $0.task == task && $0.pattern == pattern && $0.keep == keep }
                .map { String(format: "%.2f", $0.perplexity) } ?? "—"
        }
        var header = ["task"]
        for keep in keeps {
            let n = quality.first { $0.keep == keep }?.expertsPerLayer ?? 0
            header.append(keep == 1 ? "full (\(n))" : String(format: "%g%% (%d)", keep * 100, n))
        }
        var rows = [header]
        for task in tasks {
            rows.append([task] + keeps.map { ppl(task, $0 == 1 ? nil : task, $0) })
        }
        out += DemoText.table(rows, rightAligned: Set(1..<header.count))
        out += "(n) = experts kept per layer, of \(experts).\n"

        guard let smallest = keeps.filter({ $0 < 1 }).min(), tasks.count > 1 else { return out }
        out += "\n" + String(format: "At %g%%, whose experts? Rows: the task evaluated; columns: the task whose pattern chose "
            + "the experts.\n", smallest * 100)
        var matrix = [["evaluated \\ pattern"] + tasks]
        var diagonalWins = 0
        for task in tasks {
            let values = tasks.map { pattern in
                quality.first { $0.task == task && $0.pattern == pattern && $0.keep == smallest }?.perplexity
            }
            let best = values.compactMap { $0 }.min()
            if let best, values[tasks.firstIndex(of: task)!] == best { diagonalWins += 1 }
            matrix.append([task] + values.map { v in
                guard let v else { return "—" }
                return String(format: "%.2f", v) + (v == best ? "*" : " ")
            })
        }
        out += DemoText.table(matrix, rightAligned: Set(1...tasks.count))
        out += "* = lowest in the row; the task's own pattern is lowest for \(diagonalWins) of \(tasks.count) tasks.\n"
        return out
    }

    /// Stage 4: the answers and the side-by-side table of memory, time and quality.
    public func comparisonText(style: ExpertHeatmap.TerminalStyle) -> String {
        guard let c = comparison, !c.levels.isEmpty else { return "" }
        var out = DemoText.heading("4. One prompt, the full model and its pruned versions", style: style) + "\n"
        out += "Each model is loaded from disk with only its experts (those of the retrieved task's pattern).\n\n"
        out += "prompt      \"" + DemoText.oneLine(c.prompt, max: 100) + "\"\n"
        out += "task        " + (c.task.map { "\($0), " } ?? "") + "retrieved \(c.retrievedTask ?? "none")"
            + String(format: " (p = %.3f)\n", 1 - c.distance)
        for level in c.levels {
            out += DemoText.levelName(level.keep).padding(toLength: 12, withPad: " ", startingAt: 0)
                + "→ " + DemoText.oneLine(level.text, max: 110) + "\n"
        }
        out += "\n"
        var rows = [[""] + c.levels.map { DemoText.levelName($0.keep) }]
        rows.append(["experts per layer"] + c.levels.map { "\($0.expertsPerLayer) of \(experts)" })
        rows.append(["expert bytes loaded"] + c.levels.map { formatBytes($0.expertBytesLoaded) })
        rows.append(["model weights"] + c.levels.map { formatBytes($0.modelBytes) })
        rows.append(["peak RSS" + (c.levels.allSatisfy(\.peakIsPerLevel) ? "" : " (process)")]
            + c.levels.map { $0.peakResidentBytes.map(formatBytes) ?? "n/a" })
        rows.append(["load"] + c.levels.map { String(format: "%.0f ms", $0.loadSeconds * 1000) })
        rows.append(["prefill"] + c.levels.map {
            String(format: "%@ tok/s", DemoText.grouped($0.prefillTokensPerSecond))
        })
        rows.append(["decode"] + c.levels.map { String(format: "%@ tok/s", DemoText.grouped($0.decodeTokensPerSecond)) })
        rows.append(["perplexity (\(c.evaluationTask), \(c.evaluationItems) items)"]
            + c.levels.map { $0.perplexity.map { String(format: "%.2f", $0) } ?? "n/a" })
        out += DemoText.table(rows, rightAligned: Set(1..<rows[0].count))
        let prompt = c.levels.first?.promptTokens ?? 0
        out += "prefill: \(prompt) prompt tokens; decode: greedy, \(c.levels.first?.generatedTokens ?? 0) tokens; speeds are the "
            + "fastest of \(DemoSession.timingRepeats) runs; peak RSS is reset before each load.\n"
            + "Pruning saves memory, not work: every token still runs its top-\(topK) experts; speed differences come from "
            + "caches and other load on the machine.\n"
        return out
    }

    /// Where everything went and how long it took.
    public func footerText(style: ExpertHeatmap.TerminalStyle) -> String {
        var parts: [String] = []
        for key in ["load", "profile", "retrieval", "quality", "comparison"] {
            if let s = seconds[key] { parts.append(String(format: "%@ %.1f s", key, s)) }
        }
        var out = String(format: "done in %.1f s (", seconds["total"] ?? 0) + parts.joined(separator: ", ") + ")\n"
        if let summary = files.first(where: { $0.hasSuffix("summary.json") }) { out += "summary: \(summary)\n" }
        return out
    }
}

/// Small text helpers of the demo's output.
enum DemoText {
    static func heading(_ text: String, style: ExpertHeatmap.TerminalStyle) -> String {
        style == .color ? "\u{1B}[1m" + text + "\u{1B}[0m" : text
    }

    static func levelName(_ keep: Double) -> String { keep == 1 ? "full" : String(format: "%g%%", keep * 100) }

    /// `text` on one line (line breaks shown as `⏎`), cut to `max` characters with `…`.
    static func oneLine(_ text: String, max: Int) -> String {
        let flat = text.replacingOccurrences(of: "\r\n", with: "⏎").replacingOccurrences(of: "\n", with: "⏎")
            .replacingOccurrences(of: "\t", with: " ")
        return flat.count <= max ? flat : String(flat.prefix(max - 1)) + "…"
    }

    /// 1,234 style grouping of a rounded number.
    static func grouped(_ value: Double) -> String {
        guard value.isFinite, abs(value) < 9e18 else { return value.isFinite ? String(format: "%.3g", value) : "n/a" }
        let digits = String(Int(value.rounded()))
        var out = ""
        for (i, ch) in digits.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return String(out.reversed())
    }

    /// Columns padded to their widest cell (two spaces apart); the first row is the header.
    static func table(_ rows: [[String]], rightAligned: Set<Int> = []) -> String {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        var out = ""
        for row in rows {
            var cells: [String] = []
            for i in 0..<columns {
                let cell = i < row.count ? row[i] : ""
                let fill = String(repeating: " ", count: widths[i] - cell.count)
                cells.append(rightAligned.contains(i) ? fill + cell : cell + fill)
            }
            out += "  " + cells.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) + "\n"
        }
        return out
    }
}
