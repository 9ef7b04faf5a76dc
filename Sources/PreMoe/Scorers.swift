import Foundation
import Kernels
import Models

/// A scorer's name and parameters, as stored in a pattern (`{"name": "tcess", "parameters": {"k": 1, "r": -1}}`).
public struct ScorerDescriptor: Codable, Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var parameters: [String: Double]

    public init(name: String, parameters: [String: Double] = [:]) {
        self.name = name
        self.parameters = parameters
    }

    public var description: String {
        parameters.isEmpty ? name
            : name + "(" + parameters.keys.sorted().map { "\($0)=\(Self.format(parameters[$0]!))" }.joined(separator: ", ") + ")"
    }

    static func format(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x) }
}

/// Turns a layer's router statistics into one importance score per original expert (higher =
/// more important). Ranking everywhere sorts by (score descending, index ascending).
public protocol ExpertScorer: Sendable {
    /// Name and parameters, recorded in patterns.
    var descriptor: ScorerDescriptor { get }
    /// What `RouterStats` must collect for this scorer.
    var statsOptions: StatsOptions { get }
    /// Scores `[expertCount]` from a layer's statistics.
    func scores(_ stats: LayerStats) -> [Double]
}

extension ExpertScorer {
    /// The scorer whose first-MoE-layer vector is the retrieval signature. It must be computable
    /// from the router alone (no expert runs): TCESS and its variants and frequency are; REAP
    /// (needs expert outputs) and random (ignores the data) fall back to the reference TCESS.
    public var signatureScorer: ExpertScorer {
        switch descriptor.name {
        case "reap", "random": return TCESSScorer()
        default: return self
        }
    }
}

/// The official code's TCESS (METHODS §1.2): `S_e = (1/n) Σ_t m_{t,e}`, `m` = the raw logit
/// when `e` is among the top-`k` raw logits (and its softmax over that set is ≥ `r`, unless
/// `r = -1`), else 0. Defaults `k = 1`, `r = -1`, as hard-coded in the code. Scores can be
/// negative: an expert never chosen scores 0 and outranks one chosen only with negative logits.
public struct TCESSScorer: ExpertScorer {
    public var k: Int
    public var r: Float
    public init(k: Int = 1, r: Float = -1) {
        self.k = k
        self.r = r
    }
    public var descriptor: ScorerDescriptor { ScorerDescriptor(name: "tcess", parameters: ["k": Double(k), "r": Double(r)]) }
    public var statsOptions: StatsOptions { StatsOptions(markerTopK: k, markerThreshold: r) }
    public func scores(_ stats: LayerStats) -> [Double] {
        let n = Double(max(stats.tokenCount, 1))
        return stats.markerSums.map { $0 / n }
    }
}

/// The probability-weighted TCESS (METHODS §1.1): the expected softmax-over-top-`k` confidence
/// with which each expert is selected, counting only confidences ≥ `r`. `k` defaults to the
/// model's top-k (with `k = 1` every selection would count 1 and this would be top-1 frequency).
public struct TCESSProbScorer: ExpertScorer {
    public var k: Int
    public var r: Float
    public init(k: Int, r: Float = -1) {
        self.k = k
        self.r = r
    }
    public var descriptor: ScorerDescriptor {
        ScorerDescriptor(name: "tcess-prob", parameters: ["k": Double(k), "r": Double(r)])
    }
    public var statsOptions: StatsOptions { StatsOptions(probabilityTopK: k, probabilityThreshold: r) }
    public func scores(_ stats: LayerStats) -> [Double] {
        let n = Double(max(stats.tokenCount, 1))
        return stats.topProbabilitySums.map { $0 / n }
    }
}

/// Selection frequency: the share of tokens whose top-k (the model's own routing) includes the
/// expert. Divided by the token count so that signatures of short queries compare with patterns.
public struct FrequencyScorer: ExpertScorer {
    public init() {}
    public var descriptor: ScorerDescriptor { ScorerDescriptor(name: "frequency") }
    public var statsOptions: StatsOptions { StatsOptions() }
    public func scores(_ stats: LayerStats) -> [Double] {
        let n = Double(max(stats.tokenCount, 1))
        return stats.selectionCounts.map { Double($0) / n }
    }
}

/// REAP (METHODS §7): mean over the tokens routed to the expert of gate × ‖expert output‖₂, with
/// the gate the model's routing weight (renormalised over the top-k when the model does).
/// Experts never routed score 0.
public struct REAPScorer: ExpertScorer {
    public init() {}
    public var descriptor: ScorerDescriptor { ScorerDescriptor(name: "reap") }
    public var statsOptions: StatsOptions { StatsOptions(expertOutputs: true) }
    public func scores(_ stats: LayerStats) -> [Double] {
        zip(stats.reapSums, stats.reapCounts).map { $1 > 0 ? $0 / Double($1) : 0 }
    }
}

/// Random scores from a seeded generator (SplitMix64 of seed and layer), the floor every real
/// scorer must beat. Independent of the data.
public struct RandomScorer: ExpertScorer {
    public var seed: UInt64
    public init(seed: UInt64 = 0) { self.seed = seed }
    public var descriptor: ScorerDescriptor { ScorerDescriptor(name: "random", parameters: ["seed": Double(seed)]) }
    public var statsOptions: StatsOptions { StatsOptions() }
    public func scores(_ stats: LayerStats) -> [Double] {
        var rng = SplitMix64(seed: seed &+ 0x9E37_79B9_7F4A_7C15 &* UInt64(stats.layer + 1))
        return (0..<stats.expertCount).map { _ in rng.nextUnit() }
    }
}

/// Builds scorers by name.
public enum Scorers {
    /// Names accepted by `make`.
    public static let names = ["tcess", "tcess-prob", "frequency", "reap", "random"]
    /// Largest `k` accepted (far above any model's expert count; keeps the conversion exact).
    public static let maxK = 1 << 20

    /// A scorer from its name and parameters (`k`, `r` for the TCESS family; `seed` for random).
    /// - Parameters:
    ///   - modelTopK: the model's top-k, the default `k` of `tcess-prob`.
    /// - Throws: `PreMoeError.invalidScorer` for an unknown name or an out-of-range parameter.
    public static func make(_ name: String, parameters: [String: Double] = [:], modelTopK: Int) throws -> ExpertScorer {
        let known: Set<String>
        switch name {
        case "tcess", "tcess-prob": known = ["k", "r"]
        case "random": known = ["seed"]
        case "frequency", "reap": known = []
        default: throw PreMoeError.invalidScorer("unknown scorer '\(name)'; known: \(names.joined(separator: ", "))")
        }
        if let extra = parameters.keys.first(where: { !known.contains($0) }) {
            throw PreMoeError.invalidScorer("scorer '\(name)' has no parameter '\(extra)'")
        }
        // Checked before any conversion: Int(Double) traps on NaN, infinities and values past Int.
        let k = try parameters["k"].map { value -> Int in
            guard value.isFinite, value == value.rounded(), value >= 1, value <= Double(maxK) else {
                throw PreMoeError.invalidScorer("scorer '\(name)': k must be an integer in 1...\(maxK), got \(value)")
            }
            return Int(value)
        }
        let rValue = parameters["r"] ?? -1
        guard rValue.isFinite, abs(rValue) <= 1e6 else {
            throw PreMoeError.invalidScorer("scorer '\(name)': r must be a finite number in -1e6...1e6, got \(rValue)")
        }
        let r = Float(rValue)
        switch name {
        case "tcess": return TCESSScorer(k: k ?? 1, r: r)
        case "tcess-prob": return TCESSProbScorer(k: k ?? max(1, modelTopK), r: r)
        case "frequency": return FrequencyScorer()
        case "reap": return REAPScorer()
        default:
            let seed = parameters["seed"] ?? 0
            guard seed >= 0, seed == seed.rounded(), seed < 9e15 else {
                throw PreMoeError.invalidScorer("scorer 'random': seed must be an integer in 0..<9e15, got \(seed)")
            }
            return RandomScorer(seed: UInt64(seed))
        }
    }

    /// The scorer a pattern records.
    public static func make(_ descriptor: ScorerDescriptor, modelTopK: Int) throws -> ExpertScorer {
        try make(descriptor.name, parameters: descriptor.parameters, modelTopK: modelTopK)
    }

    /// Expert indices ranked by (score descending, index ascending); NaN ranks last.
    public static func ranking(_ scores: [Double]) -> [Int] {
        scores.indices.sorted { a, b in
            let x = scores[a], y = scores[b]
            if x.isNaN != y.isNaN { return y.isNaN }
            if !x.isNaN && x != y { return x > y }
            return a < b
        }
    }
}
