import Foundation
import Models
import PreMoe
import Testing

@Suite struct RecipeSelectionTests {
    /// Two layers of 8 experts where TCESS and REAP disagree completely: TCESS prefers the low
    /// indices, REAP the high ones, so every recipe keeps a different set.
    func disagreeingPattern(layers: [Int] = [0, 1]) -> TaskPattern {
        var p = makePattern(task: "t", scores: Dictionary(uniqueKeysWithValues: layers.map { ($0, (0..<8).map { Double(8 - $0) }) }))
        p.scorerScores = ["reap": Dictionary(uniqueKeysWithValues: layers.map { (String($0), (0..<8).map { Double($0) + 1 }) }),
                          "frequency": Dictionary(uniqueKeysWithValues: layers.map { (String($0), [1, 0, 1, 0, 1, 0, 1, 0]) })]
        p.routingMass = Dictionary(uniqueKeysWithValues: layers.map { (String($0), Array(repeating: 0.125, count: 8)) })
        return p
    }

    /// A loss read from the experts the model routes among now: 1 plus a tenth for every
    /// preferred expert a MoE layer does not hold (the full model holds them all).
    func loss(_ model: DecoderModel, preferring preferred: Set<Int>) -> Double {
        var missing = 0
        for l in model.spec.moeLayers {
            guard case .moe(let block) = model.layers[l].feedForward else { continue }
            missing += preferred.subtracting(block.expertIDs).count
        }
        return 1 + Double(missing) / 10
    }

    @Test(arguments: [(Set([4, 5, 6, 7]), "reap"), (Set([0, 1, 2, 3]), "tcess"), (Set([0, 2, 4, 6]), "frequency")])
    func theRecipeWithTheLowestValidationLossWins(preferred: Set<Int>, scores: String) throws {
        let loaded = try loadFixture("qwen3_moe")
        let model = loaded.model
        let fit = disagreeingPattern(layers: model.spec.moeLayers)
        let before = model.spec.moeLayers.map { l -> [Int] in
            guard case .moe(let b) = model.layers[l].feedForward else { return [] }
            return b.expertIDs
        }
        let compared = try RecipeSelector.compare(model: model, fit: fit, settings: RecipeSelector.Settings(keeps: [0.5])) {
            loss(model, preferring: preferred)
        }
        let level = try #require(compared.levels.first)
        #expect(level.keep == 0.5)
        #expect(PruningRecipe(name: level.chosen)?.scores == scores, "losses \(level.losses)")
        #expect(level.losses[level.chosen] == level.losses.values.min())
        #expect(compared.fullLoss == 1 && level.losses[level.chosen] == 1)
        #expect(level.losses.values.contains { $0 > 1 })
        // Every candidate was measured, and the model holds every expert again afterwards.
        #expect(Set(level.losses.keys) == Set(PruningRecipe.candidates.map(\.description)))
        let after = model.spec.moeLayers.map { l -> [Int] in
            guard case .moe(let b) = model.layers[l].feedForward else { return [] }
            return b.expertIDs
        }
        #expect(after == before)

        // The plan of a pattern holding that selection ranks by the chosen score set.
        var pattern = fit
        pattern.recipeSelection = TaskPattern.RecipeSelection(fitItems: 4, fitTokens: 40, validationItems: 1, validationTokens: 10,
                                                              fullLoss: compared.fullLoss, levels: compared.levels)
        try pattern.validate(file: "p.json")
        let plan = try PruningPlan.make(patterns: [pattern], budget: .fraction(0.5), allocation: .selected)
        #expect(plan.recipe == level.chosen)
        for l in model.spec.moeLayers { #expect(Set(plan.keptExperts[l]!).isSubset(of: preferred)) }
    }

    @Test func aTiedLossKeepsTheDefaultRecipe() throws {
        let loaded = try loadFixture("qwen3_moe")
        let fit = disagreeingPattern(layers: loaded.model.spec.moeLayers)
        let compared = try RecipeSelector.compare(model: loaded.model, fit: fit,
                                                  settings: RecipeSelector.Settings(keeps: [0.5, 0.25])) { 2.0 }
        #expect(compared.levels.map(\.keep) == [0.5, 0.25])
        #expect(compared.levels.allSatisfy { $0.chosen == "tcess/routing-mass" })
    }

    @Test func theNearestStoredLevelDecidesAndExportsPickTheBestUniformRecipe() throws {
        var p = disagreeingPattern()
        p.recipeSelection = TaskPattern.RecipeSelection(
            fitItems: 8, fitTokens: 80, validationItems: 2, validationTokens: 20, fullLoss: 1,
            levels: [.init(keep: 0.5, losses: ["reap/routing-mass": 1.1, "reap/uniform": 1.3, "tcess/uniform": 1.2],
                           chosen: "reap/routing-mass"),
                     .init(keep: 0.25, losses: ["tcess/routing-mass": 1.5, "frequency/uniform": 1.6], chosen: "tcess/routing-mass")])
        try p.validate(file: "p.json")
        #expect(p.selectedRecipe(keep: 0.5)?.description == "reap/routing-mass")
        #expect(p.selectedRecipe(keep: 0.375)?.description == "reap/routing-mass")  // ties go to the larger level
        #expect(p.selectedRecipe(keep: 0.3)?.description == "tcess/routing-mass")
        #expect(p.selectedRecipe(keep: 0.125)?.description == "tcess/routing-mass")
        #expect(p.selectedRecipe(keep: 0.5, allocations: [.uniform])?.description == "tcess/uniform")
        #expect(p.selectedRecipe(keep: 0.25, allocations: [.uniform])?.description == "frequency/uniform")
        let plan = try PruningPlan.make(patterns: [p], budget: .count(4), allocation: .selected)
        #expect(plan.keptExperts[0] == [7, 6, 5, 4] && plan.recipe == "reap/routing-mass")
        // Several patterns (a generalist) have no single selection: the default recipe.
        var q = p
        q.task = "u"
        let generalist = try PruningPlan.make(patterns: [p, q], budget: .count(4), allocation: .selected)
        #expect(generalist.recipe == "tcess/routing-mass")
        // The blend ranks by both: TCESS and REAP scaled to the same total, then added.
        let blend = try #require(p.scores(named: TaskPattern.blendName)?[0])
        let t = (0..<8).map { Double(8 - $0) / 36 }, r = (0..<8).map { (Double($0) + 1) / 36 }
        for e in 0..<8 { #expect(abs(blend[e] - (t[e] + r[e])) < 1e-12) }
        #expect(throws: PreMoeError.self) { try PruningPlan.make(patterns: [p], budget: .count(4), scoreSet: "peu") }
    }

    @Test func patternsWithoutASelectionStillLoadAndUseTheDefaultRecipe() throws {
        // A pattern file as written before recipe selection (no scorer_scores, no recipe_selection).
        let json = """
            {"version": 1, "model_fingerprint": "f00d", "model_type": "qwen3_moe", "task": "old",
             "scorer": {"name": "tcess", "parameters": {"k": 1, "r": -1}}, "token_count": 10, "expert_count": 4,
             "layers": {"0": [0.4, 0.3, 0.2, 0.1], "1": [0.1, 0.2, 0.3, 0.4]},
             "routing_mass": {"0": [0.25, 0.25, 0.25, 0.25], "1": [0.7, 0.1, 0.1, 0.1]},
             "signature": {"layer": 0, "scorer": {"name": "tcess", "parameters": {"k": 1, "r": -1}}, "values": [0.4, 0.3, 0.2, 0.1]},
             "created_at": "2026-11-30T00:00:00Z"}
            """
        let old = try JSONDecoder().decode(TaskPattern.self, from: Data(json.utf8))
        try old.validate(file: "old.json")
        #expect(old.recipeSelection == nil && old.scorerScores == nil)
        let selected = try PruningPlan.make(patterns: [old], budget: .count(2), allocation: .selected)
        let routingMass = try PruningPlan.make(patterns: [old], budget: .count(2), allocation: .routingMass)
        #expect(selected.keptExperts == routingMass.keptExperts && selected.recipe == "tcess/routing-mass")

        // The new fields survive a round trip; a selection naming a recipe it did not measure is refused.
        var new = old
        new.scorerScores = ["reap": ["0": [1, 2, 3, 4], "1": [4, 3, 2, 1]]]
        new.recipeSelection = .init(fitItems: 4, fitTokens: 8, validationItems: 1, validationTokens: 2, fullLoss: 1,
                                    levels: [.init(keep: 0.5, losses: ["reap/uniform": 1.2], chosen: "reap/uniform")])
        let decoded = try JSONDecoder().decode(TaskPattern.self, from: try JSONEncoder().encode(new))
        #expect(decoded == new)
        try decoded.validate(file: "new.json")
        var bad = new
        bad.recipeSelection!.levels[0].chosen = "tcess/uniform"
        #expect(throws: PreMoeError.self) { try bad.validate(file: "bad.json") }
        bad = new
        bad.scorerScores = ["reap": ["0": [1, 2, 3]]]
        #expect(throws: PreMoeError.self) { try bad.validate(file: "bad.json") }
    }

    @Test func profilingWithASelectionHoldsOutItemsAndStillScoresOnAllOfThem() throws {
        let loaded = try loadFixture("qwen3_moe")
        let tokenizer = try #require(loaded.tokenizer)
        let texts = (0..<10).map { "Item \($0): the weather is \($0 % 2 == 0 ? "cold and wet" : "warm and sunny") today, \($0) times." }
        let calibration = TaskCalibration(task: "w", texts: texts, queries: [])
        var settings = TaskProfiling.Settings(maxTokens: 100_000, retrievalQueries: 0)
        let plain = try TaskProfiling.profile(model: loaded.model, tokenizer: tokenizer, fingerprint: "f", calibration: calibration,
                                              scorers: [TCESSScorer()], settings: settings).patterns[0]
        #expect(plain.recipeSelection == nil && plain.scorerScores == nil)
        settings.selection = RecipeSelector.Settings(keeps: [0.5, 0.25])
        var seen: [[String]] = []
        let selected = try TaskProfiling.profile(
            model: loaded.model, tokenizer: tokenizer, fingerprint: "f", calibration: calibration, scorers: [TCESSScorer()],
            settings: settings, validationLoss: { texts in
                seen.append(texts)
                return Double(texts.count)
            }).patterns[0]
        // Items 4 and 9 validate; each of 2 levels × distinct plans, plus the full model, was scored on them.
        #expect(seen.allSatisfy { $0 == [texts[4], texts[9]] } && seen.count > 2)
        let selection = try #require(selected.recipeSelection)
        #expect(selection.validationItems == 2 && selection.fitItems == 8)
        #expect(selection.fitTokens + selection.validationTokens == plain.tokenCount)
        #expect(selection.levels.map(\.keep) == [0.5, 0.25])
        // The stored scores are made from both folds: the same as profiling everything at once.
        #expect(selected.tokenCount == plain.tokenCount)
        for (l, scores) in plain.scores {
            for (a, b) in zip(scores, selected.scores[l]!) { #expect(abs(a - b) < 1e-9) }
        }
        #expect(Set(selected.scorerScores?.keys.map { $0 } ?? []) == ["reap", "frequency"])
        try selected.validate(file: "w.json")
    }
}
