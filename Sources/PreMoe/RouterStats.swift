import Foundation
import Kernels
import Models

/// What `RouterStats` accumulates beyond the always-collected counts; set from the scorer.
public struct StatsOptions: Sendable, Equatable {
    /// `k'` of the TCESS marker (METHODS §1.2): top-k' of the raw logits per token. Code default 1.
    public var markerTopK: Int
    /// `r` of the TCESS marker: keep an entry only if its softmax over the top-k' set is ≥ r;
    /// -1 turns the filter off (code default).
    public var markerThreshold: Float
    /// `c` of the probability-weighted TCESS (METHODS §1.1): softmax over the top-c logits.
    public var probabilityTopK: Int
    /// `r` of the probability-weighted TCESS; -1 = off.
    public var probabilityThreshold: Float
    /// Collect REAP's Σ gate · ‖expert output‖ (costs a norm per routed token and expert).
    public var expertOutputs: Bool

    public init(markerTopK: Int = 1, markerThreshold: Float = -1, probabilityTopK: Int = 1,
                probabilityThreshold: Float = -1, expertOutputs: Bool = false) {
        self.markerTopK = markerTopK
        self.markerThreshold = markerThreshold
        self.probabilityTopK = probabilityTopK
        self.probabilityThreshold = probabilityThreshold
        self.expertOutputs = expertOutputs
    }
}

/// Sums over the calibration tokens of one MoE layer, indexed by **original** expert index.
/// Sums are kept in Double so the result does not depend on batch boundaries (to ~1e-16); the
/// per-token values themselves are the fp32 router logits.
public struct LayerStats: Sendable, Equatable {
    public let layer: Int
    /// Routed experts of the checkpoint (length of every vector below).
    public let expertCount: Int
    /// Tokens routed by this layer (`n_T`).
    public var tokenCount = 0
    /// How often the model's own router chose each expert (its top-k).
    public var selectionCounts: [Int]
    /// Σ_t m_{t,e}: the official code's TCESS markers (raw logit if e is in the top-k' of the raw
    /// logits and passes the r filter, else 0).
    public var markerSums: [Double]
    /// Σ_t softmax(z_t)_e over all held experts (router probability mass).
    public var probabilityMass: [Double]
    /// Σ_t p̃_{t,e} · 1[e ∈ top-c] · 1[p̃ ≥ r], p̃ = softmax over the top-c logits (METHODS §1.1).
    public var topProbabilitySums: [Double]
    /// REAP: Σ over tokens routed to e of gate · ‖f_e(x)‖₂.
    public var reapSums: [Double]
    /// REAP: tokens routed to e whose output was observed.
    public var reapCounts: [Int]

    public init(layer: Int, expertCount: Int) {
        self.layer = layer
        self.expertCount = expertCount
        selectionCounts = [Int](repeating: 0, count: expertCount)
        markerSums = [Double](repeating: 0, count: expertCount)
        probabilityMass = [Double](repeating: 0, count: expertCount)
        topProbabilitySums = [Double](repeating: 0, count: expertCount)
        reapSums = [Double](repeating: 0, count: expertCount)
        reapCounts = [Int](repeating: 0, count: expertCount)
    }
}

/// A `RouterObserver` that accumulates, per MoE layer and original expert index, everything the
/// scorers need. Attach it to `DecoderModel.observer` while running calibration data.
public final class RouterStats: RouterObserver {
    public let options: StatsOptions
    /// Accumulated statistics by layer index.
    public private(set) var layers: [Int: LayerStats] = [:]
    /// Only these layers are recorded (nil = every MoE layer).
    public let onlyLayers: Set<Int>?
    private let expertCounts: [Int: Int]

    /// - Parameters:
    ///   - spec: the model's spec (gives each MoE layer's original expert count).
    ///   - options: what to collect.
    ///   - onlyLayers: restrict recording (retrieval only needs the first MoE layer).
    public init(spec: DecoderSpec, options: StatsOptions, onlyLayers: Set<Int>? = nil) {
        self.options = options
        self.onlyLayers = onlyLayers
        var counts: [Int: Int] = [:]
        for l in spec.moeLayers where onlyLayers?.contains(l) ?? true {
            let e = spec.moe(l)?.expertCount ?? 0
            counts[l] = e
            layers[l] = LayerStats(layer: l, expertCount: e)
        }
        expertCounts = counts
    }

    public var wantsExpertOutputs: Bool { options.expertOutputs }

    public func routerDidRoute(_ event: RouterEvent) {
        accumulate(layer: event.layer, tokens: event.tokenCount, held: event.expertCount, expertIDs: event.expertIDs,
                   logits: event.logits, selected: event.selected, topK: event.topK)
    }

    public func expertDidCompute(_ event: ExpertOutputEvent) {
        guard options.expertOutputs, var stats = layers[event.layer], event.expertID < stats.expertCount else { return }
        for r in 0..<event.tokens.count {
            let row = event.outputs + r * event.hidden
            var sum: Double = 0
            for i in 0..<event.hidden { sum += Double(row[i]) * Double(row[i]) }
            stats.reapSums[event.expertID] += Double(event.weights[r]) * sum.squareRoot()
            stats.reapCounts[event.expertID] += 1
        }
        layers[event.layer] = stats
    }

    /// Adds one routed batch (what a `RouterEvent` carries).
    /// - Parameters:
    ///   - logits: raw router logits `[tokens, held]`.
    ///   - selected: the model's chosen router rows `[tokens, topK]`.
    ///   - expertIDs: original expert index of each router row.
    public func accumulate(layer: Int, tokens: Int, held: Int, expertIDs: [Int], logits: UnsafePointer<Float>,
                           selected: UnsafePointer<Int>, topK: Int) {
        guard var stats = layers[layer] else { return }
        let o = options
        var probs = [Float](repeating: 0, count: held)
        probs.withUnsafeMutableBufferPointer { p in
            for t in 0..<tokens {
                let z = logits + t * held
                for j in 0..<topK { stats.selectionCounts[expertIDs[selected[t * topK + j]]] += 1 }
                // Router probability mass: softmax over every held logit, as the router computes it.
                p.baseAddress!.update(from: z, count: held)
                Kernels.softmax(p.baseAddress!, count: held)
                for i in 0..<held { stats.probabilityMass[expertIDs[i]] += Double(p[i]) }
                // TCESS markers (code): raw logit of the top-k' rows, optionally filtered by r.
                let marked = Self.topSet(z, count: held, k: o.markerTopK)
                let markerProbs = o.markerThreshold == -1 ? nil : Self.softmax(z, over: marked)
                for (n, i) in marked.enumerated() where markerProbs.map({ $0[n] >= o.markerThreshold }) ?? true {
                    stats.markerSums[expertIDs[i]] += Double(z[i])
                }
                // Probability-weighted TCESS: softmax within the top-c set, filtered by r.
                let top = Self.topSet(z, count: held, k: o.probabilityTopK)
                let topProbs = Self.softmax(z, over: top)
                for (n, i) in top.enumerated() where topProbs[n] >= o.probabilityThreshold {
                    stats.topProbabilitySums[expertIDs[i]] += Double(topProbs[n])
                }
            }
        }
        stats.tokenCount += tokens
        layers[layer] = stats
    }

    /// Adds another run's sums (same model and options), as if its tokens had been routed here:
    /// every statistic is a sum over tokens, so two folds profiled apart merge exactly.
    public func merge(_ other: RouterStats) {
        for (l, o) in other.layers {
            guard var s = layers[l], s.expertCount == o.expertCount else { continue }
            s.tokenCount += o.tokenCount
            for e in 0..<s.expertCount {
                s.selectionCounts[e] += o.selectionCounts[e]
                s.markerSums[e] += o.markerSums[e]
                s.probabilityMass[e] += o.probabilityMass[e]
                s.topProbabilitySums[e] += o.topProbabilitySums[e]
                s.reapSums[e] += o.reapSums[e]
                s.reapCounts[e] += o.reapCounts[e]
            }
            layers[l] = s
        }
    }

    /// The `k` largest logits' rows (larger first; NaN last; ties to the lower row).
    static func topSet(_ z: UnsafePointer<Float>, count: Int, k: Int) -> [Int] {
        Kernels.topK(z, count: count, k: max(1, min(k, count)))
    }

    /// Softmax of `z` restricted to `rows`, in fp32 with the max subtracted.
    static func softmax(_ z: UnsafePointer<Float>, over rows: [Int]) -> [Float] {
        guard let m = rows.map({ z[$0] }).max() else { return [] }
        let e = rows.map { Foundation.exp(z[$0] - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }
}

extension StatsOptions {
    /// Options that serve every scorer of `scorers` from one pass (their marker and probability
    /// settings must agree where two scorers use the same statistic; the last one wins).
    public static func union(_ scorers: [ExpertScorer]) -> StatsOptions {
        var options = StatsOptions()
        for scorer in scorers {
            let o = scorer.statsOptions
            switch scorer.descriptor.name {
            case "tcess":
                options.markerTopK = o.markerTopK
                options.markerThreshold = o.markerThreshold
            case "tcess-prob":
                options.probabilityTopK = o.probabilityTopK
                options.probabilityThreshold = o.probabilityThreshold
            default:
                break
            }
            options.expertOutputs = options.expertOutputs || o.expertOutputs
        }
        return options
    }
}
