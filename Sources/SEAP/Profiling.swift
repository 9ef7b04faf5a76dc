import Foundation
import Kernels
import Models
import PreMoe
import Tokenization

/// A task's SEAP material from `<data>/<task>/<split>.jsonl` files: calibration texts (question +
/// gold answer, METHODS §6.1), calibration queries for the router, and the held-out items.
public struct SEAPTaskData: Sendable {
    public var task: String
    /// Calibration texts: `count` records drawn with the seed, rendered with their gold answer.
    public var calibration: [String]
    /// The same records as queries (no answers), for the task router.
    public var calibrationQueries: [TaskQuery]
    /// Where the held-out evaluation rows come from and which rows (line order).
    public var evaluationFile: URL
    public var evaluationRows: Range<Int>
    /// How the split was made, for reports.
    public var note: String
}

/// Reads SEAP's per-task data.
public enum SEAPData {
    /// Calibration records per task (METHODS: 200, seed 42).
    public static let defaultCount = 200
    public static let defaultSeed: UInt64 = 42
    /// The generic-text task (`wikitext2`): the baselines' calibration and the generic mask's
    /// weight-3 term.
    public static let genericTask = "wikitext2"

    /// Splits a task's files into calibration and held-out evaluation material.
    ///
    /// - The evaluation split is used when it has gold labels (ARC, OBQA, BoolQ test).
    /// - Where it hides them (PIQA and WinoGrande test) or does not exist, the last
    ///   `maxEvaluation` records of the calibration split are held out and calibration draws from
    ///   the rest, so the two never overlap.
    /// - WikiText-2 (no train split): lines of the first half of `split` calibrate, the second
    ///   half is evaluated (as `premoe eval` does).
    /// - Parameters:
    ///   - count: calibration records, drawn without replacement with `seed`.
    /// - Throws: `PreMoeError.invalidData` for unreadable files, `SEAPError.invalidSetting` when no
    ///   file exists.
    public static func load(task: String, directory: URL, split: String, calibrationSplit: String, maxEvaluation: Int,
                            count: Int = defaultCount, seed: UInt64 = defaultSeed) throws -> SEAPTaskData {
        let dir = directory.appendingPathComponent(task)
        let evalURL = dir.appendingPathComponent("\(split).jsonl")
        let calURL = dir.appendingPathComponent("\(calibrationSplit).jsonl")
        let fm = FileManager.default
        if task == genericTask || !fm.fileExists(atPath: calURL.path) {
            guard fm.fileExists(atPath: evalURL.path) else { throw SEAPError.invalidSetting("\(evalURL.path) does not exist") }
            let all = try CalibrationData.read(evalURL)
            let queries = try TaskQueries.read(evalURL)
            let half = all.count / 2
            let picked = draw(half, count: count, seed: seed)
            return SEAPTaskData(task: task, calibration: picked.map { all[$0] },
                                calibrationQueries: Array(queries.prefix(queries.count / 2)).indexedDraw(count: count, seed: seed),
                                evaluationFile: evalURL, evaluationRows: half..<min(all.count, half + maxEvaluation),
                                note: "\(task): calibrated on \(picked.count) lines of the first half of \(split), evaluated on the second half")
        }
        let calTexts = try CalibrationData.read(calURL)
        let calQueries = try TaskQueries.read(calURL)
        guard calTexts.count == calQueries.count else {
            throw SEAPError.invalidSetting("\(calURL.path): \(calTexts.count) texts but \(calQueries.count) queries")
        }
        let labelled = try fm.fileExists(atPath: evalURL.path) && hasLabels(task: task, url: evalURL)
        let pool: Int, evalFile: URL, rows: Range<Int>, note: String
        if labelled {
            pool = calTexts.count
            evalFile = evalURL
            rows = 0..<maxEvaluation
            note = "\(task): calibrated on \(calibrationSplit), evaluated on the first \(maxEvaluation) items of \(split)"
        } else {
            let held = min(maxEvaluation, calTexts.count / 2)
            pool = calTexts.count - held
            evalFile = calURL
            rows = pool..<calTexts.count
            note = "\(task): \(split) has no labels; evaluated on the last \(held) items of \(calibrationSplit), calibrated on the rest"
        }
        let picked = draw(pool, count: count, seed: seed)
        return SEAPTaskData(task: task, calibration: picked.map { calTexts[$0] }, calibrationQueries: picked.map { calQueries[$0] },
                            evaluationFile: evalFile, evaluationRows: rows, note: note)
    }

    /// Whether the first record of a task file carries a gold label.
    static func hasLabels(task: String, url: URL) throws -> Bool {
        guard let data = FileManager.default.contents(atPath: url.path),
              let line = data.split(separator: 0x0A).first,
              let row = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any]
        else { return false }
        if let label = row["label"] as? Int { return label >= 0 }
        if let answer = row["answer"] as? String { return !answer.isEmpty }
        return true
    }

    /// `count` distinct indices of `0..<n` (all when `count ≥ n`), drawn with `seed`, ascending.
    public static func draw(_ n: Int, count: Int, seed: UInt64) -> [Int] {
        var indices = Array(0..<max(0, n))
        var rng = SplitMix64(seed: seed)
        let k = min(count, indices.count)
        for i in 0..<k {
            let j = i + Int(rng.next() % UInt64(indices.count - i))
            indices.swapAt(i, j)
        }
        return Array(indices.prefix(k)).sorted()
    }
}

extension Array {
    /// `SEAPData.draw` applied to this array.
    func indexedDraw(count: Int, seed: UInt64) -> [Element] {
        SEAPData.draw(self.count, count: count, seed: seed).map { self[$0] }
    }
}

/// Collects SEAP's activation statistics.
public enum SEAPProfiler {
    /// Runs every text alone (no padding, no attention across texts; METHODS §6.1) through the
    /// dense model, layer by layer for all texts at once, with `ActivationStats` attached: every
    /// token position feeds the statistics.
    /// - Parameters:
    ///   - window: texts longer than this are cut to it.
    /// - Throws: `SEAPError.invalidSetting` without text, `ModelError` from the model.
    public static func collect(model: DecoderModel, tokenizer: Tokenizer, texts: [String], window: Int = 512,
                               sites: [ActivationSite] = [.attentionOutputInput, .downInput]) throws -> (stats: ActivationStats, tokens: Int) {
        let longest = max(1, min(window, model.spec.maxPositions))
        let sequences = texts.map { Array(tokenizer.encode($0).prefix(longest)) }.filter { !$0.isEmpty }
        guard !sequences.isEmpty else { throw SEAPError.invalidSetting("no calibration text") }
        return (try collect(model: model, sequences: sequences, sites: sites), sequences.reduce(0) { $0 + $1.count })
    }

    /// Tokens one layer-by-layer pass holds at most (whole sequences; a longer one goes alone).
    /// The quantized prefill kernels read every activation row once per weight row, so a pass of
    /// tens of thousands of rows streams them from memory instead of cache: measured on
    /// SmolLM2-135M Q4_1, 3,691 WikiText-2 tokens in one pass took 453 s on a loaded 2-core machine.
    public static let tokensPerPass = 256

    /// As `collect(model:tokenizer:texts:)` from token ids: the sequences in passes of about
    /// `tokensPerPass` tokens, each sequence whole (its attention sees only itself either way).
    public static func collect(model: DecoderModel, sequences: [[Int]],
                               sites: [ActivationSite] = [.attentionOutputInput, .downInput]) throws -> ActivationStats {
        let stats = ActivationStats(sites: sites)
        let previous = model.observer
        model.observer = stats
        defer { model.observer = previous }
        var start = 0
        while start < sequences.count {
            var end = start + 1, tokens = sequences[start].count
            while end < sequences.count && tokens + sequences[end].count <= tokensPerPass {
                tokens += sequences[end].count
                end += 1
            }
            let batch = try model.beginLayerwise(Array(sequences[start..<end]))
            for _ in 0..<model.spec.layerCount { try model.advance(batch) }
            start = end
        }
        return stats
    }
}
