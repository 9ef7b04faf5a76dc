// The one routing function every MoE block calls. Mirrors the routers of transformers'
// modeling_qwen3_moe.py / modeling_mixtral.py / modeling_olmoe.py (softmax top-k),
// modeling_deepseek_v2.py (softmax, `group_limited_greedy`, routed scaling) and
// modeling_deepseek_v3.py (sigmoid, correction bias for selection, group top-2 sums).
import Foundation
import Kernels

/// What the shared routing function needs to know about one MoE block.
public struct RoutingRule: Sendable, Equatable {
    /// How logits become per-expert scores.
    public var function: RoutingFunction
    /// Experts chosen per token (clamped to the experts held).
    public var topK: Int
    /// Renormalise the chosen experts' weights to sum to 1.
    public var normalize: Bool
    /// Multiplier on the final weights (`routed_scaling_factor`).
    public var scalingFactor: Float
    /// Group-limited selection, or nil to compete over every expert.
    public var groupLimit: GroupLimit?

    public init(function: RoutingFunction, topK: Int, normalize: Bool, scalingFactor: Float = 1,
                groupLimit: GroupLimit? = nil) {
        self.function = function
        self.topK = topK
        self.normalize = normalize
        self.scalingFactor = scalingFactor
        self.groupLimit = groupLimit
    }
}

extension MoESpec {
    /// The routing rule of a block that holds `heldExperts` of the checkpoint's `expertCount`.
    /// A pruned block drops the group limit: its groups no longer exist (METHODS §8.5, as the
    /// PreMoe code does). A block holding every expert keeps it, in any row order.
    public func routingRule(heldExperts: Int) -> RoutingRule {
        RoutingRule(function: routing, topK: topK, normalize: normTopKProb, scalingFactor: routedScalingFactor,
                    groupLimit: heldExperts == expertCount ? groupLimit : nil)
    }
}

/// Routing: scores, optional correction bias and group limit, top-k, weights.
///
/// Ranking everywhere (experts and groups) is the one of `Kernels.topK`: larger first, NaN after
/// every number, `-0 == +0`, ties to the lower index (router row; group number). That makes every
/// answer unique and independent of thread count or algorithm.
public enum Routing {
    /// Floats of scratch `route` needs for `count` router rows.
    public static func scratchCount(count: Int, rule: RoutingRule) -> Int {
        2 * count + (rule.groupLimit?.groupCount ?? 0)
    }

    /// The group of each router row for a block holding experts `expertIDs` (original indices)
    /// of a checkpoint with `expertCount` experts: `id / (expertCount / groupCount)`.
    /// - Returns: nil when `rule` has no group limit.
    public static func groups(expertIDs: [Int], expertCount: Int, rule: RoutingRule) -> [Int]? {
        guard let limit = rule.groupLimit else { return nil }
        let size = max(1, expertCount / limit.groupCount)
        return expertIDs.map { $0 / size }
    }

    /// Routes one token.
    ///
    /// 1. scores `s` = softmax(logits) or sigmoid(logits), or the logits themselves (`topKSoftmax`,
    ///    whose weights are the softmax over the k chosen logits);
    /// 2. selection values `c = s + bias` (bias only for selection, DeepSeek-V3);
    /// 3. with a group limit, groups are ranked by their max `c` (V2) or the sum of their two
    ///    largest `c` (V3); rows outside the `keptGroups` best get `c = -inf` (sigmoid, V3) or
    ///    `c = 0` (softmax, V2 masks the probabilities themselves);
    /// 4. the `topK` largest `c` are chosen, best first;
    /// 5. weights are the chosen rows' unbiased `s` (a softmax row masked to 0 weighs 0),
    ///    renormalised if `rule.normalize` (softmax: by their sum when it is > 0; sigmoid: by
    ///    `sum + 1e-20`, as transformers does), then times `rule.scalingFactor`.
    ///
    /// - Parameters:
    ///   - logits: `[count]` raw router logits (not modified).
    ///   - bias: `[count]` selection bias, or nil.
    ///   - groups: `[count]` group of each row, or nil for `row / (count / groupCount)`.
    ///   - scratch: at least `scratchCount(count:rule:)` floats.
    ///   - selected: `[min(topK, count)]` chosen rows, best first.
    ///   - weights: `[min(topK, count)]` their weights.
    public static func route(
        logits: UnsafePointer<Float>, count: Int, rule: RoutingRule, bias: UnsafePointer<Float>?,
        groups: UnsafePointer<Int>?, scratch: UnsafeMutablePointer<Float>,
        selected: UnsafeMutablePointer<Int>, weights: UnsafeMutablePointer<Float>
    ) {
        let scores = scratch
        scores.update(from: logits, count: count)
        switch rule.function {
        case .softmax:
            softmax(scores, count: count)
        case .sigmoid:
            for i in 0..<count { scores[i] = 1 / (1 + Foundation.exp(-scores[i])) }
        case .topKSoftmax:
            break  // ranked by the logits themselves; the softmax comes after the choice
        }
        var choice = UnsafePointer(scores)
        let masked = scratch + count
        if bias != nil || rule.groupLimit != nil {
            for i in 0..<count { masked[i] = scores[i] + (bias?[i] ?? 0) }
            choice = UnsafePointer(masked)
        }
        if let limit = rule.groupLimit, limit.keptGroups < limit.groupCount {
            let g = limit.groupCount
            let groupScores = scratch + 2 * count
            let size = max(1, count / g)
            func group(_ i: Int) -> Int { groups?[i] ?? min(i / size, g - 1) }
            rankGroups(masked, count: count, groupCount: g, ranking: limit.ranking, group: group, into: groupScores)
            let keep = topK(groupScores, count: g, k: limit.keptGroups)
            // From here groupScores[g] is 1 for a group that competes, 0 otherwise.
            for j in 0..<g { groupScores[j] = 0 }
            for j in keep { groupScores[j] = 1 }
            let fill: Float = rule.function == .sigmoid ? -.infinity : 0
            for i in 0..<count where groupScores[group(i)] == 0 { masked[i] = fill }
            // V2 takes its weights from the masked probabilities: a masked row weighs 0.
            if rule.function == .softmax {
                for i in 0..<count where groupScores[group(i)] == 0 { scores[i] = 0 }
            }
        }
        let top = topK(choice, count: count, k: min(rule.topK, count))
        var sum: Float = 0
        for (j, e) in top.enumerated() {
            selected[j] = e
            weights[j] = scores[e]
            sum += scores[e]
        }
        if rule.function == .topKSoftmax {
            softmax(weights, count: top.count)
        } else if rule.normalize {
            switch rule.function {
            case .softmax:
                if sum > 0 { for j in 0..<top.count { weights[j] /= sum } }
            case .sigmoid:
                let denominator = sum + 1e-20
                for j in 0..<top.count { weights[j] /= denominator }
            case .topKSoftmax:
                break
            }
        }
        if rule.scalingFactor != 1 {
            for j in 0..<top.count { weights[j] *= rule.scalingFactor }
        }
    }

    /// Group scores: per group, the max (V2) or the sum of the two largest values (V3), ranked
    /// NaN-last like everything else (a group whose values are all NaN scores NaN; a group of
    /// one scores its only value).
    private static func rankGroups(
        _ values: UnsafePointer<Float>, count: Int, groupCount: Int, ranking: GroupLimit.Ranking,
        group: (Int) -> Int, into out: UnsafeMutablePointer<Float>
    ) {
        // Per group: best and second best (NaN = none yet, which also ranks last).
        let second = UnsafeMutablePointer<Float>.allocate(capacity: groupCount)
        defer { second.deallocate() }
        for g in 0..<groupCount {
            out[g] = .nan
            second[g] = .nan
        }
        @inline(__always) func better(_ a: Float, _ b: Float) -> Bool { !a.isNaN && (b.isNaN || a > b) }
        for i in 0..<count {
            let g = group(i)
            let v = values[i]
            if better(v, out[g]) {
                second[g] = out[g]
                out[g] = v
            } else if better(v, second[g]) {
                second[g] = v
            }
        }
        if ranking == .topTwoSum {
            for g in 0..<groupCount where !second[g].isNaN { out[g] += second[g] }
        }
    }

    /// Array form of `route`, for tests and tools.
    /// - Returns: chosen rows (best first) and their weights.
    public static func route(logits: [Float], rule: RoutingRule, bias: [Float]? = nil,
                             groups: [Int]? = nil) -> (selected: [Int], weights: [Float]) {
        precondition(bias == nil || bias!.count == logits.count, "bias length")
        precondition(groups == nil || groups!.count == logits.count, "groups length")
        guard !logits.isEmpty else { return ([], []) }
        let k = min(rule.topK, logits.count)
        var selected = [Int](repeating: 0, count: k)
        var weights = [Float](repeating: 0, count: k)
        var scratch = [Float](repeating: 0, count: scratchCount(count: logits.count, rule: rule))
        logits.withUnsafeBufferPointer { l in
            selected.withUnsafeMutableBufferPointer { s in
                weights.withUnsafeMutableBufferPointer { w in
                    scratch.withUnsafeMutableBufferPointer { sc in
                        func run(_ b: UnsafePointer<Float>?, _ g: UnsafePointer<Int>?) {
                            route(logits: l.baseAddress!, count: logits.count, rule: rule, bias: b, groups: g,
                                  scratch: sc.baseAddress!, selected: s.baseAddress!, weights: w.baseAddress!)
                        }
                        switch (bias, groups) {
                        case (nil, nil): run(nil, nil)
                        case (let b?, nil): b.withUnsafeBufferPointer { run($0.baseAddress!, nil) }
                        case (nil, let g?): g.withUnsafeBufferPointer { run(nil, $0.baseAddress!) }
                        case (let b?, let g?):
                            b.withUnsafeBufferPointer { bp in g.withUnsafeBufferPointer { run(bp.baseAddress!, $0.baseAddress!) } }
                        }
                    }
                }
            }
        }
        return (selected, weights)
    }
}
