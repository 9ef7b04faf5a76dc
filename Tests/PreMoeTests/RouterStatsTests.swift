import Foundation
import Models
@testable import PreMoe
import Testing
import TestSupport

@Suite struct RouterStatsTests {
    /// One hand-made layer: 2 tokens × 4 experts held in permuted order (rows → original ids).
    func accumulate(_ options: StatsOptions, ids: [Int] = [2, 0, 3, 1]) throws -> LayerStats {
        let spec = try ModelLoader.spec(at: fixtureDirectory("qwen3_moe"))  // MoE layers 0, 1 with 8 experts
        let stats = RouterStats(spec: spec, options: options, onlyLayers: [0])
        let logits: [Float] = [
            -1.0, 2.0, 0.5, 2.0,  // token 0: rows 1 and 3 tie at 2.0 → row 1 first (lower row)
            -3.0, -2.0, -0.5, -4.0,  // token 1: every logit negative, row 2 largest
        ]
        let selected = [1, 3, 2, 1]  // what the model's top-2 chose (rows)
        stats.accumulate(layer: 0, tokens: 2, held: 4, expertIDs: ids, logits: logits, selected: selected, topK: 2)
        stats.accumulate(layer: 1, tokens: 2, held: 4, expertIDs: ids, logits: logits, selected: selected, topK: 2)
        #expect(stats.layers[1] == nil, "layers outside onlyLayers are ignored")
        return try #require(stats.layers[0])
    }

    @Test func tcessMarkersAreRawTopOneLogitsAtOriginalIndices() throws {
        let s = try accumulate(StatsOptions())
        #expect(s.tokenCount == 2)
        // Token 0 → row 1 = expert 0 (2.0, wins the tie with row 3); token 1 → row 2 = expert 3 (−0.5).
        #expect(s.markerSums == [2.0, 0, 0, -0.5, 0, 0, 0, 0])
        let scores = TCESSScorer().scores(s)
        #expect(scores == [1.0, 0, 0, -0.25, 0, 0, 0, 0])
        // An expert never chosen (0) outranks one chosen with negative logits (code behaviour).
        #expect(Scorers.ranking(scores) == [0, 1, 2, 4, 5, 6, 7, 3])
    }

    @Test func selectionCountsAndProbabilityMass() throws {
        let s = try accumulate(StatsOptions())
        // Selected rows 1,3 (experts 0,1) and 2,1 (experts 3,0).
        #expect(s.selectionCounts == [2, 1, 0, 1, 0, 0, 0, 0])
        #expect(abs(s.probabilityMass.reduce(0, +) - 2) < 1e-6)
        #expect(FrequencyScorer().scores(s) == [1.0, 0.5, 0, 0.5, 0, 0, 0, 0])
    }

    @Test func markerThresholdFiltersOnTopSetSoftmax() throws {
        // k' = 2, r = 0.6: token 0 top-2 = rows 1, 3 (2.0, 2.0) → 0.5 each, both filtered out;
        // token 1 top-2 = rows 2 (−0.5), 1 (−2.0) → 0.818, 0.182: only row 2 (expert 3) kept.
        let s = try accumulate(StatsOptions(markerTopK: 2, markerThreshold: 0.6))
        #expect(s.markerSums == [0, 0, 0, -0.5, 0, 0, 0, 0])
        // r = -1: both top-2 entries of both tokens count with their raw logits.
        let all = try accumulate(StatsOptions(markerTopK: 2))
        #expect(all.markerSums == [2.0 - 2.0, 2.0, 0, -0.5, 0, 0, 0, 0])
    }

    @Test func probabilityWeightedTCESS() throws {
        let s = try accumulate(StatsOptions(probabilityTopK: 2))
        let p = Double(Float(1) / (1 + Float(Foundation.exp(-1.5))))  // softmax of (−0.5, −2.0)
        #expect(abs(s.topProbabilitySums[0] - (0.5 + (1 - p))) < 1e-6)
        #expect(abs(s.topProbabilitySums[1] - 0.5) < 1e-6)
        #expect(abs(s.topProbabilitySums[3] - p) < 1e-6)
        let filtered = try accumulate(StatsOptions(probabilityTopK: 2, probabilityThreshold: 0.6))
        #expect(filtered.topProbabilitySums[0] == 0 && filtered.topProbabilitySums[1] == 0)
        #expect(abs(filtered.topProbabilitySums[3] - p) < 1e-6)
        #expect(abs(TCESSProbScorer(k: 2).scores(s)[3] - p / 2) < 1e-6)
    }

    @Test func randomScorerIsSeededAndPerLayer() {
        let a = LayerStats(layer: 3, expertCount: 16)
        let b = LayerStats(layer: 4, expertCount: 16)
        #expect(RandomScorer(seed: 7).scores(a) == RandomScorer(seed: 7).scores(a))
        #expect(RandomScorer(seed: 7).scores(a) != RandomScorer(seed: 8).scores(a))
        #expect(RandomScorer(seed: 7).scores(a) != RandomScorer(seed: 7).scores(b))
        #expect(RandomScorer(seed: 7).scores(a).allSatisfy { $0 >= 0 && $0 < 1 })
    }

    @Test func rankingBreaksTiesByIndexAndPutsNaNLast() {
        #expect(Scorers.ranking([1, 3, 3, .nan, 1, -0.0, 0]) == [1, 2, 0, 4, 5, 6, 3])
    }

    @Test func scorerFactory() throws {
        #expect(try Scorers.make("tcess", modelTopK: 8).descriptor == ScorerDescriptor(name: "tcess", parameters: ["k": 1, "r": -1]))
        #expect(try Scorers.make("tcess-prob", modelTopK: 8).descriptor.parameters["k"] == 8)
        #expect(try Scorers.make("random", parameters: ["seed": 3], modelTopK: 2).descriptor.parameters == ["seed": 3])
        #expect(throws: PreMoeError.self) { try Scorers.make("nope", modelTopK: 2) }
        #expect(throws: PreMoeError.self) { try Scorers.make("tcess", parameters: ["k": 0], modelTopK: 2) }
        #expect(throws: PreMoeError.self) { try Scorers.make("frequency", parameters: ["k": 1], modelTopK: 2) }
        #expect(try Scorers.make("reap", modelTopK: 2).signatureScorer.descriptor.name == "tcess")
        #expect(try Scorers.make("frequency", modelTopK: 2).signatureScorer.descriptor.name == "frequency")
    }

    /// The observer on a real model agrees with sums recomputed from the raw router events,
    /// including REAP's gate × ‖output‖ from the expert outputs.
    @Test(arguments: ["qwen3_moe", "qwen2_moe"])
    func observerOnModelMatchesRecomputation(_ name: String) throws {
        let loaded = try loadFixture(name)
        let model = loaded.model
        let stats = RouterStats(spec: model.spec, options: StatsOptions(expertOutputs: true))
        let log = EventLog(wantsOutputs: true)
        model.observer = TeeObserver([stats, log])
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        try model.forward(golden.input_ids, cache: model.makeCache(), logits: .none)
        try model.forward(Array(golden.input_ids.prefix(5)), cache: model.makeCache(), logits: .none)
        model.observer = nil
        for l in model.spec.moeLayers {
            let s = try #require(stats.layers[l])
            let e = s.expertCount
            var markers = [Double](repeating: 0, count: e)
            var counts = [Int](repeating: 0, count: e)
            var tokens = 0
            for ev in log.events where ev.layer == l {
                tokens += ev.tokens
                for t in 0..<ev.tokens {
                    let row = Array(ev.logits[(t * ev.held)..<((t + 1) * ev.held)])
                    let best = row.indices.max { (row[$0], -$0) < (row[$1], -$1) }!
                    markers[ev.ids[best]] += Double(row[best])
                    for j in 0..<ev.topK { counts[ev.ids[ev.selected[t * ev.topK + j]]] += 1 }
                }
            }
            #expect(s.tokenCount == golden.input_ids.count + 5)
            #expect(tokens == s.tokenCount)
            #expect(counts == s.selectionCounts)
            #expect(zip(markers, s.markerSums).allSatisfy { abs($0 - $1) < 1e-9 })
            var reap = [Double](repeating: 0, count: e)
            var reapCounts = [Int](repeating: 0, count: e)
            for o in log.outputs where o.layer == l {
                for (w, norm) in zip(o.weights, o.norms) { reap[o.expert] += Double(w) * norm }
                reapCounts[o.expert] += o.weights.count
            }
            #expect(reapCounts == s.selectionCounts)
            #expect(zip(reap, s.reapSums).allSatisfy { abs($0 - $1) < 1e-9 * max(1, abs($0)) })
        }
    }
}
