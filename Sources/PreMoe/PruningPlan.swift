import Foundation
import Models

/// How many routed experts to keep per MoE layer.
public enum ExpertBudget: Equatable, Sendable, CustomStringConvertible {
    /// Exactly this many per layer (capped at the layer's expert count).
    case count(Int)
    /// This fraction of each layer's experts, rounded to the nearest integer (halves up), at least 1.
    case fraction(Double)
    /// The largest N such that backbone + the kept experts at their storage size fit in these bytes.
    case bytes(Int)

    /// Parses `--keep`: `32` (count) or `50%` (fraction).
    /// - Throws: `PreMoeError.invalidBudget`.
    public init(keep text: String) throws {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("%") {
            guard let p = Double(t.dropLast()), p > 0, p <= 100 else {
                throw PreMoeError.invalidBudget("--keep \(text): a percentage must be in (0, 100]")
            }
            self = .fraction(p / 100)
        } else {
            guard let n = Int(t), n >= 1 else {
                throw PreMoeError.invalidBudget("--keep \(text): expected a count ≥ 1 (e.g. 32) or a percentage (e.g. 50%)")
            }
            self = .count(n)
        }
    }

    /// Parses `--budget`: bytes with an optional unit, `6GiB`, `6GB`, `512MiB`, `1.5G` (G = GiB), `1000000`.
    /// - Throws: `PreMoeError.invalidBudget`.
    public init(budget text: String) throws {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [
            ("TiB", 1_099_511_627_776), ("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024),
            ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("kB", 1e3),
            ("T", 1_099_511_627_776), ("G", 1_073_741_824), ("M", 1_048_576), ("K", 1024), ("B", 1),
        ]
        var number = t
        var scale: Double = 1
        for (suffix, value) in units where t.hasSuffix(suffix) {
            number = String(t.dropLast(suffix.count)).trimmingCharacters(in: .whitespaces)
            scale = value
            break
        }
        guard let x = Double(number), x > 0, (x * scale).isFinite, x * scale < 9e18 else {
            throw PreMoeError.invalidBudget("--budget \(text): expected a size such as 6GiB, 512MiB or 1000000")
        }
        self = .bytes(Int(x * scale))
    }

    public var description: String {
        switch self {
        case .count(let n): return "\(n)"
        case .fraction(let f): return "\(ScorerDescriptor.format(f * 100))%"
        case .bytes(let b): return "\(b) bytes"
        }
    }
}

/// How a budget is spread over the MoE layers.
public enum LayerAllocation: String, Sendable, CaseIterable, Codable {
    /// The same N in every layer (the paper, METHODS §1.3, §8.4). Exports need it: Hugging Face
    /// configs and GGUF metadata hold one expert count for all layers.
    case uniform
    /// The same total, spread so that the smallest share of routing probability mass kept in
    /// any layer is as large as possible: layers whose routing is spread thin (the first MoE
    /// layer, typically) get more experts, concentrated ones fewer. Needs patterns with
    /// `routing_mass`.
    case routingMass = "routing-mass"
    /// The same total, each next expert given to the layer where it adds the most routing mass
    /// (the largest total kept mass over all layers; an alternative measured against `routingMass`).
    case routingMassTotal = "routing-mass-total"
    /// The whole recipe (score set and allocation) the task's profile chose for the nearest keep
    /// level by loss on held-out calibration items (`TaskPattern.recipeSelection`); a pattern
    /// without a selection, or several patterns (a generalist), use TCESS with `routingMass`.
    case selected
}

/// Kept experts per MoE layer, derived from pattern scores and a budget (never stored by hand).
/// Every layer keeps its own top-N by its own score, in rank order: slot i of the pruned layer
/// holds the expert of rank i. N is the same in every layer with `.uniform` allocation and
/// varies by layer with `.routingMass`. Indices are original checkpoint indices.
public struct PruningPlan: Equatable, Sendable {
    /// Layer → kept original expert indices, best first.
    public var keptExperts: [Int: [Int]]
    /// N, the experts kept per MoE layer (the mean, rounded, when layers differ).
    public var expertsPerLayer: Int
    /// The tasks whose scores made the plan.
    public var tasks: [String]
    /// Notes worth showing a user (negative-score rankings, METHODS §8.2).
    public var warnings: [String]
    /// The recipe that made the plan (`tcess/routing-mass`, …); nil for explicit kept lists.
    public var recipe: String?

    /// A plan from explicit kept lists (tests, fixed exports); `make` derives plans from patterns.
    public init(keptExperts: [Int: [Int]], expertsPerLayer: Int? = nil, tasks: [String] = [], warnings: [String] = []) {
        self.keptExperts = keptExperts
        self.expertsPerLayer = expertsPerLayer
            ?? (keptExperts.isEmpty ? 0 : Int((Double(keptExperts.values.reduce(0) { $0 + $1.count })
                / Double(keptExperts.count)).rounded()))
        self.tasks = tasks
        self.warnings = warnings
    }

    /// Combined per-layer scores of several patterns (a generalist). With one pattern its scores
    /// as they are. With several, each task's layer vector is first divided by the sum of its
    /// absolute values (so every task has the same total |score| mass per layer whatever its
    /// scorer's scale or sign, and raw-logit TCESS with negative entries keeps its sign
    /// pattern), then the tasks are summed with equal weights 1/T. An all-zero vector stays zero.
    public static func combinedScores(_ patterns: [TaskPattern]) -> [Int: [Double]] {
        guard patterns.count > 1 else { return patterns.first?.scores ?? [:] }
        var combined: [Int: [Double]] = [:]
        let weight = 1 / Double(patterns.count)
        for pattern in patterns {
            for (l, scores) in pattern.scores {
                let mass = scores.reduce(0) { $0 + abs($1) }
                var acc = combined[l] ?? [Double](repeating: 0, count: scores.count)
                guard acc.count == scores.count else { continue }
                if mass > 0 { for e in scores.indices { acc[e] += weight * scores[e] / mass } }
                combined[l] = acc
            }
        }
        return combined
    }

    /// Builds a plan.
    /// - Parameters:
    ///   - patterns: one task, or several for a generalist (all of the same model).
    ///   - budget: count, fraction or bytes.
    ///   - sizes: storage sizes (needed for `.bytes`; also used by the byte estimate).
    ///   - allocation: the same N per layer, or per-layer counts by routing mass (same total
    ///     experts for a count or fraction; same byte limit for bytes).
    ///   - minimumPerLayer: the least a layer keeps under `.routingMass` (the model's top-k, so
    ///     a token still finds k experts).
    ///   - scoreSet: rank by this stored score set (`TaskPattern.scores(named:)`) instead of the
    ///     patterns' own scorer; ignored by `.selected`, which uses the chosen recipe's.
    /// - Throws: `PreMoeError.invalidBudget` when even one expert per layer does not fit, or the
    ///   patterns disagree on the model, or `.routingMass` lacks the patterns' routing mass, or a
    ///   pattern lacks `scoreSet`.
    public static func make(patterns: [TaskPattern], budget: ExpertBudget, sizes: ModelSizes? = nil,
                            allocation: LayerAllocation = .uniform, minimumPerLayer: Int = 1,
                            scoreSet: String? = nil) throws -> PruningPlan {
        guard let first = patterns.first else { throw PreMoeError.invalidBudget("no pattern given") }
        for p in patterns where p.modelFingerprint != first.modelFingerprint {
            throw PreMoeError.invalidBudget("patterns '\(first.task)' and '\(p.task)' were made for different models")
        }
        if allocation == .selected {
            // The level: the uniform count this budget gives, as a fraction of the layer's experts.
            let probe = try make(patterns: patterns, budget: budget, sizes: sizes, allocation: .uniform)
            let keep = Double(probe.expertsPerLayer) / Double(max(1, first.expertCount))
            let recipe = patterns.count == 1 ? first.selectedRecipe(keep: keep) : nil
            return try make(patterns: patterns, budget: budget, sizes: sizes, allocation: recipe?.allocation ?? .routingMass,
                            minimumPerLayer: minimumPerLayer, scoreSet: recipe?.scores)
        }
        let scores: [Int: [Double]]
        if let scoreSet {
            let sets = try patterns.map { p -> TaskPattern in
                guard let set = p.scores(named: scoreSet) else {
                    throw PreMoeError.invalidBudget("pattern '\(p.task)' holds no '\(scoreSet)' scores; profile it again")
                }
                var copy = p
                copy.layers = Dictionary(uniqueKeysWithValues: set.map { (String($0.key), $0.value) })
                return copy
            }
            scores = combinedScores(sets)
        } else {
            scores = combinedScores(patterns)
        }
        let layers = scores.keys.sorted()
        let maxExperts = layers.map { scores[$0]!.count }.min() ?? 0
        guard maxExperts > 0 else { throw PreMoeError.invalidBudget("the patterns hold no scores") }
        let rankings = Dictionary(uniqueKeysWithValues: layers.map { ($0, Scorers.ranking(scores[$0]!)) })
        func keep(_ n: Int) -> [Int: [Int]] {
            Dictionary(uniqueKeysWithValues: layers.map { ($0, Array(rankings[$0]!.prefix(n))) })
        }
        let n: Int
        switch budget {
        case .count(let c):
            n = min(max(1, c), maxExperts)
        case .fraction(let f):
            n = min(max(1, Int((Double(maxExperts) * f).rounded())), maxExperts)
        case .bytes(let limit):
            guard let sizes else { throw PreMoeError.invalidBudget("a byte budget needs the model's storage sizes") }
            var best = 0
            for candidate in 1...maxExperts where sizes.bytes(keeping: keep(candidate)) <= limit { best = candidate }
            guard best > 0 else {
                throw PreMoeError.invalidBudget(
                    "\(limit) bytes cannot hold the backbone (\(sizes.backboneBytes) bytes) plus one expert per layer "
                        + "(\(sizes.bytes(keeping: keep(1))) bytes in all)")
            }
            n = best
        }
        var kept = keep(n)
        if allocation != .uniform {
            kept = try massBalanced(patterns: patterns, rankings: rankings, uniform: n, budget: budget, sizes: sizes,
                                    minimum: min(max(1, minimumPerLayer), maxExperts), total: allocation == .routingMassTotal)
        }
        var warnings: [String] = []
        for l in layers {
            let s = scores[l]!
            let keptScores = kept[l]!.map { s[$0] }
            let dropped = rankings[l]!.dropFirst(kept[l]!.count).map { s[$0] }
            if keptScores.contains(where: { $0 < 0 }) || (dropped.contains(where: { $0 < 0 }) && keptScores.contains(0)) {
                warnings.append("layer \(l): the kept set depends on negative scores (raw-logit TCESS ranks an "
                    + "expert never chosen above one chosen with negative logits; METHODS §1.2)")
            }
        }
        var plan = PruningPlan(keptExperts: kept, expertsPerLayer: allocation == .uniform ? n : nil,
                               tasks: patterns.map(\.task), warnings: warnings)
        plan.recipe = PruningRecipe(scores: scoreSet ?? first.scorer.name, allocation: allocation).description
        return plan
    }

    /// Per-layer counts that keep the smallest per-layer share of routing mass as large as
    /// possible: start every layer at `minimum`, then repeatedly give one more expert (the next
    /// in that layer's ranking) to the layer whose kept share is lowest, until the uniform plan's
    /// total count is reached (count/fraction budgets) or no further expert fits (bytes).
    static func massBalanced(patterns: [TaskPattern], rankings: [Int: [Int]], uniform n: Int, budget: ExpertBudget,
                             sizes: ModelSizes?, minimum: Int, total byGain: Bool = false) throws -> [Int: [Int]] {
        let layers = rankings.keys.sorted()
        var mass: [Int: [Double]] = [:]
        for pattern in patterns {
            let byLayer = pattern.routingMassByLayer
            for l in layers {
                guard let m = byLayer[l], m.count == rankings[l]!.count else {
                    throw PreMoeError.invalidBudget("pattern '\(pattern.task)' has no routing mass for layer \(l); "
                        + "profile it again or use the uniform allocation")
                }
                var acc = mass[l] ?? [Double](repeating: 0, count: m.count)
                for e in m.indices { acc[e] += m[e] / Double(patterns.count) }
                mass[l] = acc
            }
        }
        var count = Dictionary(uniqueKeysWithValues: layers.map { ($0, minimum) })
        var share = Dictionary(uniqueKeysWithValues: layers.map { l in
            (l, rankings[l]!.prefix(minimum).reduce(0.0) { $0 + mass[l]![$1] })
        })
        var bytes = sizes.map { s in
            s.bytes(keeping: Dictionary(uniqueKeysWithValues: layers.map { ($0, Array(rankings[$0]!.prefix(minimum))) }))
        } ?? 0
        let total = n * layers.count
        var full = Set<Int>()
        while true {
            if case .bytes = budget {} else if count.values.reduce(0, +) >= total { break }
            let open = layers.filter { !full.contains($0) && count[$0]! < rankings[$0]!.count }
            // Maximin: the layer with the lowest kept share; total: the layer whose next expert adds most.
            func gain(_ l: Int) -> Double { mass[l]![rankings[l]![count[l]!]] }
            guard let l = byGain
                ? open.max(by: { (gain($0), -$0) < (gain($1), -$1) })
                : open.min(by: { (share[$0]!, $0) < (share[$1]!, $1) })
            else { break }
            let next = rankings[l]![count[l]!]
            if case .bytes(let limit) = budget, let sizes {
                let extra = sizes.expertBytes[l].map { $0.indices.contains(next) ? $0[next] : 0 } ?? 0
                guard bytes + extra <= limit else {
                    full.insert(l)
                    continue
                }
                bytes += extra
            }
            count[l]! += 1
            share[l]! += mass[l]![next]
        }
        return Dictionary(uniqueKeysWithValues: layers.map { ($0, Array(rankings[$0]!.prefix(count[$0]!))) })
    }

    /// The plan's `[String: [Int]]` form for JSON output and configs.
    public var keptExpertsJSON: [String: [Int]] {
        Dictionary(uniqueKeysWithValues: keptExperts.map { (String($0.key), $0.value) })
    }
}
