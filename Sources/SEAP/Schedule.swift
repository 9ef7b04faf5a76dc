import Foundation

/// How the target sparsity is spread over the layers (METHODS §6.3).
public enum SparsitySchedule: String, Sendable, CaseIterable, Codable {
    /// Every layer prunes the same ratio of its heads and channels (UL).
    case uniform
    /// SEAP's logistic schedule (LB): first and last layers protected, deeper layers pruned more.
    case logistic
    /// FLAP's global adaptive allocation (AL): robust-standardised scores pooled over layers.
    case adaptive
}

/// SEAP's logistic layer schedule: `ρ_ℓ = Λ / (1 + exp(−k (x_ℓ − x0)))` on the unprotected
/// layers, `Λ` found by bisection so that they average the target, then clamped to [0, 1].
public struct LogisticSchedule: Sendable, Equatable {
    /// Protected leading and trailing layers (`m`, `n`; METHODS: 2 and 2).
    public var protectedFirst = 2
    public var protectedLast = 2
    /// Steepness `k` (the quick-start's command-line default 0.8).
    public var steepness = 0.8
    /// Midpoint `x0`.
    public var midpoint = 0.3

    public init(protectedFirst: Int = 2, protectedLast: Int = 2, steepness: Double = 0.8, midpoint: Double = 0.3) {
        self.protectedFirst = protectedFirst
        self.protectedLast = protectedLast
        self.steepness = steepness
        self.midpoint = midpoint
    }

    /// Per-layer ratios for `layers` layers averaging `sparsity` over the unprotected ones.
    ///
    /// A model too shallow for the protection (fewer than two unprotected layers) protects fewer
    /// layers, one from each end at a time, so a two-layer test model still prunes.
    /// - Returns: `Λ` and `ρ_ℓ` for `ℓ = 0..<layers` (0-based; METHODS numbers them from 1).
    public func ratios(layers: Int, sparsity: Double) -> (lambda: Double, ratios: [Double]) {
        var m = protectedFirst, n = protectedLast
        while layers - m - n < 2 && (m > 0 || n > 0) {
            if m >= n { m -= 1 } else { n -= 1 }
        }
        let free = layers - m - n
        guard free > 0 else { return (0, [Double](repeating: 0, count: layers)) }
        let xs: [Double] = (0..<free).map { free == 1 ? 0 : Double($0) / Double(free - 1) }
        let shape = xs.map { 1 / (1 + exp(-steepness * ($0 - midpoint))) }
        let meanShape = shape.reduce(0, +) / Double(free)
        // Bisection on [0, 2] (≤ 100 steps, tolerance 1e-4), as the official code does.
        var lo = 0.0, hi = 2.0, lambda = 1.0
        for _ in 0..<100 {
            lambda = (lo + hi) / 2
            let mean = lambda * meanShape
            if abs(mean - sparsity) < 1e-4 { break }
            if mean < sparsity { lo = lambda } else { hi = lambda }
        }
        var ratios = [Double](repeating: 0, count: layers)
        for i in 0..<free { ratios[m + i] = min(1, max(0, lambda * shape[i])) }
        return (lambda, ratios)
    }
}

/// What a mask does to attention heads (docs/SEAP.md, "Attention heads").
///
/// SmolLM2-135M has 9 query heads in 3 KV groups: at 20% a layer loses one or two whole heads.
/// At equal weight bytes the two rules measured alike on validation text (docs/SEAP.md).
public enum HeadPruning: String, Sendable, CaseIterable, Codable {
    /// Query heads pruned at the layer's ratio, as FFN channels are (SEAP on multi-head models;
    /// the GQA rule of docs/SEAP.md decides which KV heads go).
    case prune
    /// Attention untouched; the sparsity is that of the FFN channels alone (the official SEAP
    /// code on grouped-query models).
    case keep
}

/// How many heads and channels each layer prunes.
public struct LayerPruneCounts: Sendable, Equatable {
    public var heads: Int
    public var channels: Int

    public init(heads: Int, channels: Int) {
        self.heads = heads
        self.channels = channels
    }
}

/// Turns a schedule into per-layer counts.
public enum ScheduleAllocation {
    /// Counts for every layer.
    /// - Parameters:
    ///   - scores: the layers' head and channel scores (used by `adaptive` only).
    ///   - headDim: a head's width (its cost under `adaptive` is `(4/3) · headDim` channels,
    ///     METHODS §6.3).
    ///   - heads: `.keep` prunes no head (and `adaptive` then pools channels only).
    /// - Returns: per layer, heads and channels to prune, each leaving at least one.
    public static func counts(_ schedule: SparsitySchedule, sparsity: Double, scores: LayerScores, headDim: Int,
                              logistic: LogisticSchedule = LogisticSchedule(), heads: HeadPruning = .prune) -> [LayerPruneCounts] {
        let layers = scores.heads.count
        func clamp(_ c: LayerPruneCounts, _ l: Int) -> LayerPruneCounts {
            LayerPruneCounts(heads: heads == .keep ? 0 : min(max(0, c.heads), scores.heads[l].count - 1),
                             channels: min(max(0, c.channels), scores.channels[l].count - 1))
        }
        let ratios: [Double]
        switch schedule {
        case .uniform:
            ratios = [Double](repeating: sparsity, count: layers)
        case .logistic:
            ratios = logistic.ratios(layers: layers, sparsity: sparsity).ratios
        case .adaptive:
            let pooled = heads == .keep ? LayerScores(heads: scores.heads.map { _ in [] }, channels: scores.channels) : scores
            return adaptive(sparsity: sparsity, scores: pooled, headDim: headDim).enumerated().map { clamp($1, $0) }
        }
        return (0..<layers).map { l in
            clamp(LayerPruneCounts(heads: Int((ratios[l] * Double(scores.heads[l].count)).rounded(.down)),
                                   channels: Int((ratios[l] * Double(scores.channels[l].count)).rounded(.down))), l)
        }
    }

    /// FLAP's AL: per layer, head scores and channel scores are robust-standardised separately
    /// (`(s − median) / (IQR + 1e-9)`, clipped to ±3), all units are pooled, sorted by score
    /// (ties: heads before channels, lower layer, lower index), and kept until their cost reaches
    /// `(1 − sparsity)` of the total; the rest is pruned.
    static func adaptive(sparsity: Double, scores: LayerScores, headDim: Int) -> [LayerPruneCounts] {
        struct Unit { var score: Double; var layer: Int; var isHead: Bool; var index: Int }
        var units: [Unit] = []
        let headCost = 4.0 / 3.0 * Double(headDim)
        var total = 0.0
        for l in scores.heads.indices {
            for (h, s) in standardise(scores.heads[l]).enumerated() { units.append(Unit(score: s, layer: l, isHead: true, index: h)) }
            for (j, s) in standardise(scores.channels[l]).enumerated() { units.append(Unit(score: s, layer: l, isHead: false, index: j)) }
            total += Double(scores.heads[l].count) * headCost + Double(scores.channels[l].count)
        }
        units.sort { a, b in
            if a.score != b.score { return a.score > b.score }
            if a.isHead != b.isHead { return a.isHead }
            return (a.layer, a.index) < (b.layer, b.index)
        }
        var counts = scores.heads.indices.map {
            LayerPruneCounts(heads: scores.heads[$0].count, channels: scores.channels[$0].count)
        }
        var kept = 0.0
        let budget = (1 - sparsity) * total
        for u in units {
            let cost = u.isHead ? headCost : 1
            if kept + cost <= budget + 1e-9 {
                kept += cost
                if u.isHead { counts[u.layer].heads -= 1 } else { counts[u.layer].channels -= 1 }
            }
        }
        // `counts` now holds the units left over: those are the pruned ones.
        return counts
    }

    /// `(s − median) / (IQR + 1e-9)`, clipped to ±3 (quantiles by linear interpolation, as numpy).
    static func standardise(_ s: [Double]) -> [Double] {
        guard !s.isEmpty else { return [] }
        let sorted = s.sorted()
        func quantile(_ q: Double) -> Double {
            let pos = q * Double(sorted.count - 1)
            let i = Int(pos.rounded(.down)), f = pos - Double(i)
            return i + 1 < sorted.count ? sorted[i] + f * (sorted[i + 1] - sorted[i]) : sorted[i]
        }
        let median = quantile(0.5), iqr = quantile(0.75) - quantile(0.25)
        return s.map { min(3, max(-3, ($0 - median) / (iqr + 1e-9))) }
    }
}
