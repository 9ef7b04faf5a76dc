import Foundation
@testable import SEAP
import Testing
import TestSupport

@Suite struct ScheduleTests {
    /// METHODS §6.3's reference values for L = 32, k = 0.8, x0 = 0.3.
    @Test(arguments: [
        (0.2, 0.3708, 0.163, 0.236, 0.175),
        (0.5, 0.9270, 0.408, 0.590, 0.4375),
    ])
    func logisticMatchesReference(target: Double, lambda: Double, first: Double, last: Double, wholeMean: Double) {
        let (l, ratios) = LogisticSchedule().ratios(layers: 32, sparsity: target)
        #expect(abs(l - lambda) < 2e-4)
        #expect(ratios[0] == 0 && ratios[1] == 0 && ratios[30] == 0 && ratios[31] == 0)
        #expect(abs(ratios[2] - first) < 1e-3)
        #expect(abs(ratios[29] - last) < 1e-3)
        #expect(abs(ratios.reduce(0, +) / 32 - wholeMean) < 1e-3)
        let unprotected = ratios[2...29]
        #expect(abs(unprotected.reduce(0, +) / 28 - target) < 1e-4)
        #expect(zip(unprotected.dropLast(), unprotected.dropFirst()).allSatisfy { $0 < $1 }, "deeper layers prune more")
    }

    @Test func shallowModelsProtectFewerLayers() {
        let (_, ratios) = LogisticSchedule().ratios(layers: 2, sparsity: 0.5)
        #expect(ratios.count == 2)
        #expect(abs(ratios.reduce(0, +) / 2 - 0.5) < 1e-3)
    }

    static func scores(layers: Int, heads: Int, channels: Int, seed: UInt64) -> LayerScores {
        var rng = TestRandom(seed: seed)
        return LayerScores(heads: (0..<layers).map { _ in (0..<heads).map { _ in Double(rng.float(0, 1)) } },
                           channels: (0..<layers).map { _ in (0..<channels).map { _ in Double(rng.float(0, 1)) } })
    }

    @Test func uniformPrunesFloorOfTheRatio() {
        let counts = ScheduleAllocation.counts(.uniform, sparsity: 0.5, scores: Self.scores(layers: 3, heads: 9, channels: 101, seed: 1), headDim: 64)
        #expect(counts.allSatisfy { $0 == LayerPruneCounts(heads: 4, channels: 50) })
    }

    @Test func adaptiveMeetsTheCostBudget() {
        let s = Self.scores(layers: 4, heads: 8, channels: 64, seed: 2)
        let counts = ScheduleAllocation.counts(.adaptive, sparsity: 0.3, scores: s, headDim: 8)
        let headCost = 4.0 / 3.0 * 8
        let total = 4 * (8 * headCost + 64)
        let pruned = counts.reduce(0.0) { $0 + Double($1.heads) * headCost + Double($1.channels) }
        #expect(abs(pruned / total - 0.3) < 0.05)
        #expect(Set(counts.map(\.channels)).count > 1, "the adaptive schedule should not be uniform on random scores")
    }

    /// `.keep` prunes no head under every schedule and the channels as `.prune` would (uniform,
    /// logistic), or the whole budget from channels (adaptive).
    @Test(arguments: SparsitySchedule.allCases)
    func keepingHeadsPrunesChannelsOnly(schedule: SparsitySchedule) {
        let s = Self.scores(layers: 8, heads: 9, channels: 96, seed: 3)
        let pruning = ScheduleAllocation.counts(schedule, sparsity: 0.4, scores: s, headDim: 8)
        let keeping = ScheduleAllocation.counts(schedule, sparsity: 0.4, scores: s, headDim: 8, heads: .keep)
        #expect(pruning.contains { $0.heads > 0 }, "the default prunes heads")
        #expect(keeping.allSatisfy { $0.heads == 0 })
        if schedule == .adaptive {
            let fraction = Double(keeping.reduce(0) { $0 + $1.channels }) / Double(8 * 96)
            #expect(abs(fraction - 0.4) < 0.01, "channels carry the whole budget: \(fraction)")
        } else {
            #expect(keeping.map(\.channels) == pruning.map(\.channels))
        }
    }

    @Test func everyLayerKeepsOneHeadAndChannel() {
        let counts = ScheduleAllocation.counts(.uniform, sparsity: 0.99, scores: Self.scores(layers: 2, heads: 2, channels: 3, seed: 5), headDim: 4)
        #expect(counts.allSatisfy { $0.heads == 1 && $0.channels == 2 })
    }
}

@Suite struct ChannelRoundingTests {
    @Test(arguments: [(700, 1536, 32, 704), (0, 1536, 32, 0), (1530, 1536, 32, 1504), (50, 100, 32, 50), (10, 64, 1, 10)])
    func keptWidthIsAWholeNumberOfBlocks(pruned: Int, width: Int, multiple: Int, expected: Int) {
        #expect(SEAPMask.roundedPruning(pruned, of: width, multiple: multiple) == expected)
    }
}
