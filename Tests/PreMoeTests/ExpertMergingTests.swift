import Foundation
import Kernels
import Models
@testable import PreMoe
import Testing
import TestSupport

@Suite struct ExpertMergingTests {
    func tensor(_ values: [Float], _ shape: [Int]) -> Tensor { Tensor.owned(values, shape: shape) }

    /// A random expert with `neurons` intermediate neurons over `hidden` inputs.
    func expert(neurons: Int, hidden: Int, random: inout TestRandom) -> GatedMLP {
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in random.float(-1, 1) } }
        return GatedMLP(gate: Linear(weight: tensor(values(neurons * hidden), [neurons, hidden])),
                        up: Linear(weight: tensor(values(neurons * hidden), [neurons, hidden])),
                        down: Linear(weight: tensor(values(hidden * neurons), [hidden, neurons])))
    }

    /// The same expert with its neurons renumbered: `permuted` neuron `i` is `e`'s neuron `p[i]`.
    func permuted(_ e: GatedMLP, _ p: [Int]) -> GatedMLP {
        let n = e.gate.outFeatures, h = e.gate.inFeatures
        let g = e.gate.weight.toFloatArray(), u = e.up.weight.toFloatArray(), d = e.down.weight.toFloatArray()
        var g2 = g, u2 = u, d2 = d
        for i in 0..<n {
            for k in 0..<h {
                g2[i * h + k] = g[p[i] * h + k]
                u2[i * h + k] = u[p[i] * h + k]
                d2[k * n + i] = d[k * n + p[i]]
            }
        }
        return GatedMLP(gate: Linear(weight: tensor(g2, [n, h])), up: Linear(weight: tensor(u2, [n, h])),
                        down: Linear(weight: tensor(d2, [h, n])))
    }

    @Test func alignmentUndoesARenumberingOfNeurons() {
        var random = TestRandom(seed: 11)
        let a = expert(neurons: 12, hidden: 8, random: &random)
        var p = Array(0..<12)
        for i in stride(from: 11, to: 0, by: -1) { p.swapAt(i, Int(random.next() % UInt64(i + 1))) }
        let b = permuted(a, p)
        // b's neuron j is a's neuron p[j], so a's neuron i matches b's neuron p⁻¹[i].
        var inverse = [Int](repeating: 0, count: 12)
        for (j, i) in p.enumerated() { inverse[i] = j }
        #expect(ExpertMerging.align(.init(a), .init(b)) == inverse)
        // Merging an expert with a renumbered copy of itself gives it back, whatever the weights.
        let merged = ExpertMerging.mergeGroup([a, b], weights: [3, 1])
        #expect(maxRelativeError(merged.gate.weight.toFloatArray(), a.gate.weight.toFloatArray()) < 1e-6)
        #expect(maxRelativeError(merged.up.weight.toFloatArray(), a.up.weight.toFloatArray()) < 1e-6)
        #expect(maxRelativeError(merged.down.weight.toFloatArray(), a.down.weight.toFloatArray()) < 1e-6)
    }

    @Test func mergedWeightsAreTheFrequencyWeightedAverage() {
        var random = TestRandom(seed: 12)
        let a = expert(neurons: 4, hidden: 3, random: &random)
        let b = expert(neurons: 4, hidden: 3, random: &random)
        let match = ExpertMerging.align(.init(a), .init(b))
        #expect(Set(match) == Set(0..<4), "the matching is one to one")
        let merged = ExpertMerging.mergeGroup([a, b], weights: [3, 1]).gate.weight.toFloatArray()
        let ga = a.gate.weight.toFloatArray(), gb = b.gate.weight.toFloatArray()
        for i in 0..<4 {
            for k in 0..<3 {
                #expect(abs(merged[i * 3 + k] - (0.75 * ga[i * 3 + k] + 0.25 * gb[match[i] * 3 + k])) < 1e-6)
            }
        }
        // A dropped expert the task never routes to leaves the kept one as it was.
        let unchanged = ExpertMerging.mergeGroup([a, b], weights: [5, 0]).up.weight.toFloatArray()
        #expect(unchanged == a.up.weight.toFloatArray())
    }

    @Test func droppedExpertsJoinTheKeptExpertWithTheClosestRouterRow() {
        // Rows: 0 = x, 1 = y, 2 ≈ x, 3 ≈ y, 4 ≈ -x (cosine picks y over the opposite direction).
        let router = tensor([1, 0, 0, 1, 0.9, 0.1, 0.1, 0.9, -1, 0.2], [5, 2])
        #expect(ExpertMerging.groups(router: router, kept: [1, 0]) == [[1, 3, 4], [0, 2]])
    }

    /// On a real fixture: keeping every expert changes nothing; keeping half gives a model that
    /// runs, differs from dropping, and refuses bad input.
    @Test func pruneMergingOnAFixtureModel() throws {
        let loaded = try loadFixture("qwen3_moe")
        let model = loaded.model
        let tokens = [3, 17, 42, 5, 9]
        let full = try model.forward(tokens, cache: model.makeCache(capacity: 8), logits: .last)
        let layer = try #require(model.spec.moeLayers.first)
        let experts = try #require(model.spec.moe(layer)).expertCount
        let weights = Dictionary(uniqueKeysWithValues: model.spec.moeLayers.map { ($0, (0..<experts).map { Double($0 + 1) }) })
        let everything = Dictionary(uniqueKeysWithValues: model.spec.moeLayers.map { ($0, Array(0..<experts)) })
        let half = Dictionary(uniqueKeysWithValues: model.spec.moeLayers.map { ($0, Array(stride(from: 0, to: experts, by: 2))) })

        let same = try model.withKeptExperts(everything) { () throws -> [Float] in
            try model.pruneMerging(everything, weights: weights)
            return try model.forward(tokens, cache: model.makeCache(capacity: 8), logits: .last)
        }
        #expect(same == full)
        let dropped = try model.withKeptExperts(half) { try model.forward(tokens, cache: model.makeCache(capacity: 8), logits: .last) }
        let merged = try model.withKeptExperts(everything) { () throws -> [Float] in
            try model.pruneMerging(half, weights: weights)
            return try model.forward(tokens, cache: model.makeCache(capacity: 8), logits: .last)
        }
        #expect(merged.allSatisfy(\.isFinite) && merged != dropped && merged != full)
        // A pruned block cannot be merged: the dropped experts are gone.
        #expect(throws: PreMoeError.self) {
            try model.withKeptExperts(half) { try model.pruneMerging(half, weights: weights) }
        }
        #expect(throws: PreMoeError.self) {
            try model.withKeptExperts(everything) { try model.pruneMerging(half, weights: [layer: [1, 2]]) }
        }
        #expect(try model.forward(tokens, cache: model.makeCache(capacity: 8), logits: .last) == full, "the model is restored")
    }
}
