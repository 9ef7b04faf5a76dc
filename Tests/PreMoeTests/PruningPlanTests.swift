import Foundation
import PreMoe
import Testing

@Suite struct PruningPlanTests {
    let pattern = makePattern(task: "a", scores: [
        1: [0.1, 0.9, 0.5, 0.5, -0.2, 0.0, 0.3, 0.7],
        3: [0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    ])

    @Test func countKeepsEachLayersOwnTopNInRankOrder() throws {
        let plan = try PruningPlan.make(patterns: [pattern], budget: .count(3))
        #expect(plan.expertsPerLayer == 3)
        #expect(plan.keptExperts == [1: [1, 7, 2], 3: [0, 7, 6]])
        let ties = try PruningPlan.make(patterns: [pattern], budget: .count(4))
        #expect(ties.keptExperts[1] == [1, 7, 2, 3])  // 0.5 tie → lower index first
        #expect(try PruningPlan.make(patterns: [pattern], budget: .count(100)).expertsPerLayer == 8)
    }

    @Test func fractionRoundsToNearest() throws {
        #expect(try PruningPlan.make(patterns: [pattern], budget: .fraction(0.5)).expertsPerLayer == 4)
        #expect(try PruningPlan.make(patterns: [pattern], budget: .fraction(0.125)).expertsPerLayer == 1)
        #expect(try PruningPlan.make(patterns: [pattern], budget: .fraction(0.3)).expertsPerLayer == 2)  // 2.4
        #expect(try PruningPlan.make(patterns: [pattern], budget: .fraction(0.01)).expertsPerLayer == 1)
    }

    @Test func byteBudgetCountsBackbonePlusKeptExperts() throws {
        let sizes = ModelSizes(backboneBytes: 1000, expertBytes: [1: Array(repeating: 100, count: 8), 3: Array(repeating: 100, count: 8)])
        #expect(try PruningPlan.make(patterns: [pattern], budget: .bytes(1000 + 2 * 300), sizes: sizes).expertsPerLayer == 3)
        #expect(try PruningPlan.make(patterns: [pattern], budget: .bytes(1000 + 2 * 300 - 1), sizes: sizes).expertsPerLayer == 2)
        #expect(try PruningPlan.make(patterns: [pattern], budget: .bytes(1_000_000), sizes: sizes).expertsPerLayer == 8)
        #expect(throws: PreMoeError.self) { try PruningPlan.make(patterns: [pattern], budget: .bytes(1199), sizes: sizes) }
        #expect(sizes.bytes(keeping: [1: [0, 1], 3: [2]]) == 1300)
    }

    @Test func generalistNormalisesEachTaskThenAverages() throws {
        let a = makePattern(task: "a", scores: [0: [3, 1, 0, 0]])
        let b = makePattern(task: "b", scores: [0: [0, 0, 10, 30]])  // 10x the scale of a
        let combined = PruningPlan.combinedScores([a, b])[0]!
        #expect(combined == [0.375, 0.125, 0.125, 0.375])
        let plan = try PruningPlan.make(patterns: [a, b], budget: .count(2))
        #expect(plan.keptExperts[0] == [0, 3])
        #expect(plan.tasks == ["a", "b"])
        let negative = makePattern(task: "n", scores: [0: [-1, 1, 0, 0]])
        #expect(PruningPlan.combinedScores([negative, a])[0]! == [-0.25 + 0.375, 0.25 + 0.125, 0, 0])
        let other = makePattern(task: "o", scores: [0: [1, 1, 1, 1]], fingerprint: "other")
        #expect(throws: PreMoeError.self) { try PruningPlan.make(patterns: [a, other], budget: .count(1)) }
    }

    @Test func routingMassAllocationKeepsTheTotalAndFeedsTheThinnestLayer() throws {
        var p = pattern
        // Layer 1 spreads its routing evenly; layer 3 sends almost everything to experts 0 and 7.
        p.routingMass = ["1": Array(repeating: 0.125, count: 8), "3": [0.45, 0.01, 0.01, 0.01, 0.01, 0.01, 0.05, 0.45]]
        let plan = try PruningPlan.make(patterns: [p], budget: .count(4), allocation: .routingMass, minimumPerLayer: 2)
        #expect(plan.keptExperts[1]!.count + plan.keptExperts[3]!.count == 8)
        #expect(plan.keptExperts[1]!.count == 6 && plan.keptExperts[3] == [0, 7])
        // Within a layer the order is still the scorer's ranking.
        #expect(plan.keptExperts[1] == Array(try PruningPlan.make(patterns: [p], budget: .count(6)).keptExperts[1]!))
        #expect(plan.expertsPerLayer == 4)
        // The minimum per layer holds even where a layer's mass is all in fewer experts.
        let floor = try PruningPlan.make(patterns: [p], budget: .count(3), allocation: .routingMass, minimumPerLayer: 3)
        #expect(floor.keptExperts[3]!.count == 3 && floor.keptExperts[1]!.count == 3)
        // A byte budget is never exceeded.
        let sizes = ModelSizes(backboneBytes: 1000, expertBytes: [1: Array(repeating: 100, count: 8), 3: Array(repeating: 100, count: 8)])
        let bytes = try PruningPlan.make(patterns: [p], budget: .bytes(1000 + 750), sizes: sizes, allocation: .routingMass,
                                         minimumPerLayer: 2)
        #expect(sizes.bytes(keeping: bytes.keptExperts) <= 1750)
        #expect(bytes.keptExperts.values.reduce(0) { $0 + $1.count } == 7)
        // Patterns without routing mass cannot be balanced: a clear error.
        #expect(throws: PreMoeError.self) { try PruningPlan.make(patterns: [pattern], budget: .count(4), allocation: .routingMass) }
    }

    @Test func warnsWhenNegativeScoresDecide() throws {
        let plan = try PruningPlan.make(patterns: [pattern], budget: .count(8))
        #expect(plan.warnings.count == 1 && plan.warnings[0].hasPrefix("layer 1"))
        #expect(try PruningPlan.make(patterns: [pattern], budget: .count(2)).warnings.isEmpty)
    }

    @Test(arguments: [("32", ExpertBudget.count(32)), ("50%", .fraction(0.5)), ("12.5%", .fraction(0.125))])
    func parsesKeep(_ text: String, _ expected: ExpertBudget) throws {
        #expect(try ExpertBudget(keep: text) == expected)
    }

    @Test(arguments: [("6GiB", 6 << 30), ("6GB", 6_000_000_000), ("512MiB", 512 << 20), ("1.5G", 3 << 29), ("1000", 1000)])
    func parsesBudget(_ text: String, _ bytes: Int) throws {
        #expect(try ExpertBudget(budget: text) == .bytes(bytes))
    }

    @Test(arguments: ["0", "-3", "0%", "150%", "x", "3.5"])
    func rejectsBadKeep(_ text: String) {
        #expect(throws: PreMoeError.self) { try ExpertBudget(keep: text) }
    }
}
