import Foundation
@testable import Models
import Testing
import TestSupport

/// Exact tests of the shared routing function: every expectation is an exact value.
@Suite struct RoutingTests {
    static let softmaxTop2 = RoutingRule(function: .softmax, topK: 2, normalize: false)
    static let v3 = RoutingRule(function: .sigmoid, topK: 2, normalize: true, scalingFactor: 2.5,
                                groupLimit: GroupLimit(groupCount: 2, keptGroups: 1, ranking: .topTwoSum))

    func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }

    @Test func softmaxTopKMatchesTheDefinition() {
        let logits: [Float] = [0.5, -1, 2, 1.25, 2, -3]
        let (selected, weights) = Routing.route(logits: logits, rule: Self.softmaxTop2)
        // 2 appears twice: the tie goes to the lower index.
        #expect(selected == [2, 4])
        let m = logits.max()!
        let e = logits.map { Foundation.exp($0 - m) }
        let sum = e.reduce(0, +)
        #expect(abs(weights[0] - e[2] / sum) <= 1e-6 && weights[0] == weights[1])
        var renorm = Self.softmaxTop2
        renorm.normalize = true
        #expect(Routing.route(logits: logits, rule: renorm).weights == [0.5, 0.5])
    }

    @Test(arguments: [RoutingFunction.softmax, .sigmoid])
    func allEqualRowsPickTheLowestIndices(_ function: RoutingFunction) {
        let rule = RoutingRule(function: function, topK: 3, normalize: true)
        let (selected, weights) = Routing.route(logits: [Float](repeating: 0.75, count: 6), rule: rule)
        #expect(selected == [0, 1, 2])
        #expect(weights == [Float](repeating: weights[0], count: 3))
        #expect(abs(weights[0] - 1 / 3) <= 1e-7)
    }

    @Test func plusAndMinusZeroAreEqual() {
        let rule = RoutingRule(function: .sigmoid, topK: 1, normalize: false)
        #expect(Routing.route(logits: [-0.0, 0.0, -1], rule: rule).selected == [0])
        #expect(Routing.route(logits: [0.0, -0.0, -1], rule: rule).selected == [0])
        // A bias of -0 changes nothing either.
        #expect(Routing.route(logits: [-1, 0.0, -0.0], rule: rule, bias: [0, -0.0, 0]).selected == [1])
    }

    @Test func nanRanksLast() {
        let rule = RoutingRule(function: .sigmoid, topK: 2, normalize: false)
        let (selected, weights) = Routing.route(logits: [.nan, -5, 3, .nan], rule: rule)
        #expect(selected == [2, 1])
        #expect(weights == [sigmoid(3), sigmoid(-5)])
        // NaN in a softmax row poisons every probability (as torch does): all tie, lowest indices.
        let poisoned = Routing.route(logits: [1, .nan, 3], rule: Self.softmaxTop2)
        #expect(poisoned.selected == [0, 1])
        #expect(poisoned.weights.allSatisfy { $0.isNaN })
        // A NaN bias entry drops that expert to the end.
        #expect(Routing.route(logits: [3, 0, 0], rule: RoutingRule(function: .sigmoid, topK: 1, normalize: false),
                              bias: [.nan, 0, 0]).selected == [1])
    }

    @Test func biasChangesSelectionButNotWeights() {
        let rule = RoutingRule(function: .sigmoid, topK: 1, normalize: false, scalingFactor: 2.5)
        let logits: [Float] = [2, 1.9, 0, 0]
        #expect(Routing.route(logits: logits, rule: rule).selected == [0])
        let (selected, weights) = Routing.route(logits: logits, rule: rule, bias: [0, 0.5, 0, 0])
        #expect(selected == [1])
        #expect(weights == [sigmoid(1.9) * 2.5])  // the unbiased score
        var normalized = rule
        normalized.normalize = true
        let s = sigmoid(1.9)
        #expect(Routing.route(logits: logits, rule: normalized, bias: [0, 0.5, 0, 0]).weights == [s / (s + 1e-20) * 2.5])
    }

    @Test func topTwoSumGroupsChangeSelection() {
        // Group 0 holds the single best expert; group 1 has the better top-2 sum and wins.
        let logits: [Float] = [3, -3, -3, -3, 2, 2, -3, -3]
        var flat = Self.v3
        flat.groupLimit = nil
        #expect(Routing.route(logits: logits, rule: flat).selected == [0, 4])
        let (selected, weights) = Routing.route(logits: logits, rule: Self.v3)
        #expect(selected == [4, 5])
        let s = sigmoid(2)
        #expect(weights == [s / (s + s + 1e-20) * 2.5, s / (s + s + 1e-20) * 2.5])
        // Keeping both groups is the same as no limit.
        var both = Self.v3
        both.groupLimit?.keptGroups = 2
        #expect(Routing.route(logits: logits, rule: both).selected == [0, 4])
    }

    @Test func groupsRankOnBiasedScores() {
        // Unbiased, group 0 wins (sum of top-2); the bias lifts group 1.
        let logits: [Float] = [2, 2, -1, -1, 1, 1, -1, -1]
        #expect(Routing.route(logits: logits, rule: Self.v3).selected == [0, 1])
        #expect(Routing.route(logits: logits, rule: Self.v3, bias: [0, 0, 0, 0, 0.3, 0.3, 0, 0]).selected == [4, 5])
    }

    @Test func groupTiesGoToTheLowerGroup() {
        let logits: [Float] = [1, 0, 0, 0, 0, 0, 0, 1]
        #expect(Routing.route(logits: logits, rule: Self.v3).selected == [0, 1])
    }

    @Test func allNaNGroupRanksLast() {
        let logits: [Float] = [.nan, .nan, .nan, .nan, -4, -4, -4, -4]
        #expect(Routing.route(logits: logits, rule: Self.v3).selected == [4, 5])
    }

    @Test func maxGroupsOfV2MaskProbabilitiesToZero() {
        // 4 groups of 2, keep 1, ranked by max probability.
        let rule = RoutingRule(function: .softmax, topK: 2, normalize: false, scalingFactor: 16,
                               groupLimit: GroupLimit(groupCount: 4, keptGroups: 1, ranking: .max))
        let logits: [Float] = [3, 2.9, 2.95, 0, 0, 0, 0, 0]
        var flat = rule
        flat.groupLimit = nil
        #expect(Routing.route(logits: logits, rule: flat).selected == [0, 2])
        let (selected, weights) = Routing.route(logits: logits, rule: rule)
        #expect(selected == [0, 1])
        let m: Float = 3
        let e = logits.map { Foundation.exp($0 - m) }
        let sum = e.reduce(0, +)
        #expect(abs(weights[0] - e[0] / sum * 16) <= 1e-5 && abs(weights[1] - e[1] / sum * 16) <= 1e-5)
        // Asking for more experts than the kept groups hold: masked rows tie at 0, weigh 0.
        var wide = rule
        wide.topK = 3
        let (s3, w3) = Routing.route(logits: logits, rule: wide)
        #expect(s3 == [0, 1, 2] && w3[2] == 0)
    }

    @Test func sigmoidMaskedRowsKeepTheirUnbiasedScoreWhenForced() {
        // topK 3 with one kept group of 2: the third choice comes from a masked (-inf) group,
        // the lowest index there, weighted by its unbiased score as transformers gathers it.
        var rule = Self.v3
        rule.topK = 3
        rule.normalize = false
        rule.scalingFactor = 1
        rule.groupLimit = GroupLimit(groupCount: 4, keptGroups: 1, ranking: .topTwoSum)
        let logits: [Float] = [0, 0, 1, 1, 0, 0, 0, 0]
        let (selected, weights) = Routing.route(logits: logits, rule: rule)
        #expect(selected == [2, 3, 0])
        #expect(weights == [sigmoid(1), sigmoid(1), sigmoid(0)])
    }

    @Test func prunedBlocksDropTheGroupLimit() {
        let spec = MoESpec(expertCount: 8, topK: 2, expertIntermediateSize: 4, normTopKProb: true, routing: .sigmoid,
                           sharedIntermediateSize: nil, sharedExpertGate: false, routedScalingFactor: 2.5,
                           groupLimit: Self.v3.groupLimit, selectionBias: true)
        #expect(spec.routingRule(heldExperts: 8) == Self.v3)
        var pruned = Self.v3
        pruned.groupLimit = nil
        #expect(spec.routingRule(heldExperts: 6) == pruned)
    }

    @Test func groupsFollowOriginalIndicesInAnyRowOrder() {
        let logits: [Float] = [3, -3, -3, -3, 2, 2, -3, -3]
        let bias: [Float] = [0, 0.1, 0, 0.2, 0, 0.05, 0.3, 0]
        let order = Array((0..<8).reversed())
        let groups = Routing.groups(expertIDs: order, expertCount: 8, rule: Self.v3)
        #expect(groups == [1, 1, 1, 1, 0, 0, 0, 0])
        let permuted = Routing.route(logits: order.map { logits[$0] }, rule: Self.v3,
                                     bias: order.map { bias[$0] }, groups: groups)
        let plain = Routing.route(logits: logits, rule: Self.v3, bias: bias)
        #expect(permuted.selected.map { order[$0] } == plain.selected)
        #expect(permuted.weights == plain.weights)
    }

    /// Straight transcription of transformers' `DeepseekV3TopkRouter.forward` for one row.
    func referenceV3(_ logits: [Float], _ bias: [Float], groups: Int, kept: Int, k: Int, scale: Float) -> [Int: Float] {
        let s = logits.map(sigmoid)
        let c = zip(s, bias).map { $0 + $1 }
        let size = logits.count / groups
        let groupScores = (0..<groups).map { g -> Float in
            let sorted = c[(g * size)..<((g + 1) * size)].sorted(by: >)
            return sorted[0] + sorted[1]
        }
        let keptGroups = Set((0..<groups).sorted { groupScores[$0] > groupScores[$1] }.prefix(kept))
        let masked = c.indices.map { keptGroups.contains($0 / size) ? c[$0] : -.infinity }
        let top = masked.indices.sorted { masked[$0] > masked[$1] }.prefix(k)
        let sum = top.reduce(Float(0)) { $0 + s[$1] } + 1e-20
        return Dictionary(uniqueKeysWithValues: top.map { ($0, s[$0] / sum * scale) })
    }

    @Test func randomRowsMatchTheTransformersFormula() {
        var rng = TestRandom(seed: 7)
        let rule = RoutingRule(function: .sigmoid, topK: 8, normalize: true, scalingFactor: 2.5,
                               groupLimit: GroupLimit(groupCount: 8, keptGroups: 4, ranking: .topTwoSum))
        for _ in 0..<200 {
            let logits = (0..<64).map { _ in rng.float(-3, 3) }
            let bias = (0..<64).map { _ in rng.float(-0.1, 0.1) }
            let (selected, weights) = Routing.route(logits: logits, rule: rule, bias: bias)
            let expected = referenceV3(logits, bias, groups: 8, kept: 4, k: 8, scale: 2.5)
            #expect(Set(selected) == Set(expected.keys))
            for (e, w) in zip(selected, weights) { #expect(w == expected[e]) }
        }
    }
}

