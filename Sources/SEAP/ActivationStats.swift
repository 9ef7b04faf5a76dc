import Foundation
import Models

/// Streaming per-channel moments of one activation (METHODS §6.1): count, mean and the sum of
/// squared deviations `m2`, merged batch by batch with Chan et al.'s parallel update (each batch
/// is summarised two-pass in Double first). The variance is the exact population variance of
/// every value seen, whatever the batch boundaries; `E[x²] = var + mean²`.
public struct ChannelMoments: Codable, Sendable, Equatable {
    /// Values seen per channel.
    public private(set) var count: Int
    /// `[channels]`.
    public private(set) var mean: [Double]
    /// `[channels]`: Σ (x − mean)².
    public private(set) var m2: [Double]

    /// Empty moments of `channels` channels.
    public init(channels: Int) {
        count = 0
        mean = [Double](repeating: 0, count: channels)
        m2 = [Double](repeating: 0, count: channels)
    }

    public var channels: Int { mean.count }

    /// Population variance per channel (0 before any value).
    public var variance: [Double] { count > 0 ? m2.map { max(0, $0 / Double(count)) } : m2.map { _ in 0 } }

    /// Mean of squares per channel.
    public var meanSquare: [Double] { zip(variance, mean).map { $0 + $1 * $1 } }

    /// Adds `rows` rows of `values` (`[rows, channels]`, row-major).
    public mutating func add(_ values: UnsafePointer<Float>, rows: Int) {
        guard rows > 0 else { return }
        let c = channels
        var batchMean = [Double](repeating: 0, count: c)
        var batchM2 = [Double](repeating: 0, count: c)
        for r in 0..<rows {
            let row = values + r * c
            for j in 0..<c { batchMean[j] += Double(row[j]) }
        }
        let inv = 1 / Double(rows)
        for j in 0..<c { batchMean[j] *= inv }
        for r in 0..<rows {
            let row = values + r * c
            for j in 0..<c {
                let d = Double(row[j]) - batchMean[j]
                batchM2[j] += d * d
            }
        }
        merge(count: rows, mean: batchMean, m2: batchM2)
    }

    /// Merges other moments of the same channels (Chan's update).
    /// - Precondition: same channel count (a programmer error otherwise).
    public mutating func merge(_ other: ChannelMoments) {
        merge(count: other.count, mean: other.mean, m2: other.m2)
    }

    private mutating func merge(count nb: Int, mean mb: [Double], m2 m2b: [Double]) {
        precondition(mb.count == channels, "merging moments of \(mb.count) channels into \(channels)")
        guard nb > 0 else { return }
        let na = Double(count), n = Double(count + nb), b = Double(nb)
        for j in 0..<channels {
            let delta = mb[j] - mean[j]
            mean[j] += delta * b / n
            m2[j] += m2b[j] + delta * delta * na * b / n
        }
        count += nb
    }
}

/// A `RouterObserver` that collects `ChannelMoments` of projection inputs per layer (SEAP's
/// activation statistics). Attach it to `DecoderModel.observer` while running calibration text;
/// every token position of every text feeds it.
public final class ActivationStats: RouterObserver, Codable {
    /// Sites recorded.
    public let sites: [ActivationSite]
    /// site → layer → moments.
    public private(set) var moments: [ActivationSite: [Int: ChannelMoments]] = [:]

    /// - Parameter sites: what to record (default: the two SEAP scores use, o_proj's and
    ///   down_proj's inputs).
    public init(sites: [ActivationSite] = [.attentionOutputInput, .downInput]) {
        self.sites = sites
    }

    public var wantsActivations: Bool { true }

    public func activationDidCompute(_ event: ActivationEvent) {
        guard sites.contains(event.site) else { return }
        var m = moments[event.site]?[event.layer] ?? ChannelMoments(channels: event.width)
        guard m.channels == event.width else { return }
        m.add(event.values, rows: event.tokenCount)
        moments[event.site, default: [:]][event.layer] = m
    }

    /// The moments of one site and layer.
    /// - Throws: `SEAPError.missingStatistics` when nothing was recorded there.
    public func require(_ site: ActivationSite, layer: Int) throws -> ChannelMoments {
        guard let m = moments[site]?[layer], m.count > 0 else {
            throw SEAPError.missingStatistics("no \(site.rawValue) activations recorded for layer \(layer)")
        }
        return m
    }

    /// Merges another run's statistics (same sites) into this one.
    public func merge(_ other: ActivationStats) {
        for (site, layers) in other.moments {
            for (l, m) in layers {
                if var mine = moments[site]?[l] { mine.merge(m); moments[site]![l] = mine } else { moments[site, default: [:]][l] = m }
            }
        }
    }

    enum CodingKeys: String, CodingKey { case sites, moments }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sites = try c.decode([ActivationSite].self, forKey: .sites)
        let raw = try c.decode([String: [String: ChannelMoments]].self, forKey: .moments)
        for (siteName, layers) in raw {
            guard let site = ActivationSite(rawValue: siteName) else {
                throw SEAPError.invalidFile("unknown activation site '\(siteName)'")
            }
            for (key, m) in layers {
                guard let l = Int(key) else { throw SEAPError.invalidFile("layer key '\(key)' is not an integer") }
                moments[site, default: [:]][l] = m
            }
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sites, forKey: .sites)
        var raw: [String: [String: ChannelMoments]] = [:]
        for (site, layers) in moments {
            raw[site.rawValue] = Dictionary(uniqueKeysWithValues: layers.map { (String($0.key), $0.value) })
        }
        try c.encode(raw, forKey: .moments)
    }
}

/// Errors of SEAP profiling, scoring, pruning and export.
public enum SEAPError: Error, CustomStringConvertible {
    /// Statistics a score needs were not collected.
    case missingStatistics(String)
    /// A sparsity, schedule or score that cannot be used.
    case invalidSetting(String)
    /// The model cannot be pruned this way (MoE, latent attention, ...).
    case unsupported(String)
    /// A mask or profile file that does not fit.
    case invalidFile(String)

    public var description: String {
        switch self {
        case .missingStatistics(let s): return "missing activation statistics: \(s)"
        case .invalidSetting(let s): return "invalid SEAP setting: \(s)"
        case .unsupported(let s): return "SEAP: \(s)"
        case .invalidFile(let s): return "invalid SEAP file: \(s)"
        }
    }
}

/// A `RouterObserver` that keeps every row of the four projection inputs of every layer, as
/// computed (one sequence; for comparing this engine's intermediate values with another's, e.g.
/// llama.cpp's eval callback in `scripts/llama_prompt_logits.cpp`).
public final class ActivationTrace: RouterObserver {
    /// layer → site → `[tokens, width]` row-major values, in the order the forward pass computed them.
    public private(set) var values: [Int: [ActivationSite: [Float]]] = [:]
    /// layer → site → width.
    public private(set) var widths: [Int: [ActivationSite: Int]] = [:]

    public init() {}

    public var wantsActivations: Bool { true }

    public func activationDidCompute(_ event: ActivationEvent) {
        values[event.layer, default: [:]][event.site, default: []]
            .append(contentsOf: UnsafeBufferPointer(start: event.values, count: event.tokenCount * event.width))
        widths[event.layer, default: [:]][event.site] = event.width
    }

    /// Runs `tokens` through `model` as one sequence (the layer-by-layer pass the profiler uses)
    /// and returns what each layer's projections received.
    /// - Throws: `ModelError` from the model.
    public static func record(model: DecoderModel, tokens: [Int]) throws -> ActivationTrace {
        let trace = ActivationTrace()
        let previous = model.observer
        model.observer = trace
        defer { model.observer = previous }
        let batch = try model.beginLayerwise([tokens])
        for _ in 0..<model.spec.layerCount { try model.advance(batch) }
        return trace
    }
}
