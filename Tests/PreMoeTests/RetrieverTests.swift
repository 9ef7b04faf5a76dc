import Formats
import Foundation
import Models
import PreMoe
import Testing
import TestSupport

@Suite struct RetrieverTests {
    /// Profiles `tokens` through the full model as one calibration item and stores the pattern.
    func profile(_ name: String, task: String, tokens: [Int], scorer: ExpertScorer = TCESSScorer()) throws -> TaskPattern {
        let loaded = try loadFixture(name)
        let result = try Profiler.run(model: loaded.model, sequences: [tokens], options: scorer.statsOptions)
        #expect(result.tokens == tokens.count)
        return try Profiler.makePattern(stats: result.stats, scorer: scorer, spec: loaded.model.spec,
                                        fingerprint: try ModelFingerprint.compute(loaded), task: task)
    }

    @Test(arguments: ["qwen3_moe", "qwen3_moe_fused", "mixtral"])
    func signatureReadsNoExpertAndEqualsTheFullModelsFirstLayerScores(_ name: String) throws {
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        let query = golden.input_ids
        let other = Array(query.reversed())
        let patterns = [try profile(name, task: "same", tokens: query), try profile(name, task: "other", tokens: other),
                        try profile(name, task: "freq", tokens: other, scorer: FrequencyScorer())]
        #expect(patterns[0].signature.values == patterns[0].scores[patterns[0].signature.layer])

        let backbone = try Reconstruction.loadBackbone(fixtureDirectory(name), threads: 1)
        let checkpoint = backbone.checkpoint
        #expect(backbone.model.weightBytes.experts == 0)
        let topK = backbone.model.spec.moe(backbone.model.spec.moeLayers[0])!.topK
        let result = try Retriever(patterns: patterns, method: .centroid, modelTopK: topK).retrieve(model: backbone.model, tokens: query)
        #expect(checkpoint.bytesRead == 0, "retrieval must not read expert bytes")
        #expect(result.task == "same")
        #expect(result.distance < 1e-12)
        #expect(result.candidates.map(\.task).first == "same")
        #expect(result.candidates.count == 3)
        #expect(zip(result.candidates, result.candidates.dropFirst()).allSatisfy { $0.distance <= $1.distance })
        // The frequency pattern is compared with the query's frequency vector, not its TCESS one.
        let signatures = try Retriever.signatures(model: backbone.model, tokens: other, scorers: [FrequencyScorer()])
        #expect(signatures[FrequencyScorer().descriptor] == patterns[2].signature.values)

        var farRetriever = try Retriever(patterns: Array(patterns.dropFirst()), method: .centroid, modelTopK: topK)
        farRetriever.maxDistance = 1e-9
        let far = try farRetriever.retrieve(model: backbone.model, tokens: query)
        #expect(far.task == nil)
        #expect(far.distance > 1e-9)
        #expect(far.fallbackReason != nil)
        var cosineRetriever = try Retriever(patterns: patterns, method: .centroid, modelTopK: topK)
        cosineRetriever.metric = .cosine
        #expect(try cosineRetriever.retrieve(model: backbone.model, tokens: query).task == "same")
        #expect(throws: PreMoeError.self) { try Retriever(patterns: [], method: .centroid, modelTopK: topK) }
        // Patterns without retrieval samples cannot serve the classifier: a clear error, not a guess.
        #expect(throws: PreMoeError.self) { try Retriever(patterns: patterns, method: .classifier, modelTopK: topK) }
    }

    @Test func signatureFromPromptsOnlyComesFromABackboneOnlyPass() throws {
        let name = "qwen3_moe"
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        let full = golden.input_ids
        let prompt = Array(full.prefix(5))
        let loaded = try loadFixture(name)
        let scorer = TCESSScorer()
        let stats = try Profiler.run(model: loaded.model, sequences: [full], options: scorer.statsOptions).stats
        // The prompt pass stops at the first router: a backbone-only model suffices.
        let backbone = try Reconstruction.loadBackbone(fixtureDirectory(name), threads: 1)
        let promptRun = try Profiler.run(model: backbone.model, sequences: [prompt], options: scorer.statsOptions,
                                         untilFirstRouter: true)
        let first = try #require(loaded.model.spec.moeLayers.first)
        #expect(Set(promptRun.stats.layers.filter { $0.value.tokenCount > 0 }.keys) == [first])
        #expect(promptRun.tokens == prompt.count)
        let pattern = try Profiler.makePattern(stats: stats, scorer: scorer, spec: loaded.model.spec,
                                               fingerprint: try ModelFingerprint.compute(loaded), task: "t",
                                               signatureStats: promptRun.stats)
        // Layer scores keep the whole text; the signature is exactly the query-time vector of the prompt.
        #expect(pattern.scores[first] == scorer.scores(stats.layers[first]!))
        let query = try Retriever.signatures(model: backbone.model, tokens: prompt, scorers: [scorer])
        #expect(query[scorer.descriptor] == pattern.signature.values)
        #expect(pattern.signature.values != pattern.scores[first])
    }

    @Test func reapAndRandomPatternsUseTheTCESSSignature() throws {
        let golden = try Fixtures.json(FixtureGolden.self, "models/qwen2_moe/golden.json")
        let reap = try profile("qwen2_moe", task: "r", tokens: golden.input_ids, scorer: REAPScorer())
        let tcess = try profile("qwen2_moe", task: "t", tokens: golden.input_ids)
        #expect(reap.scorer.name == "reap")
        #expect(reap.signature.scorer == TCESSScorer().descriptor)
        #expect(reap.signature.values == tcess.signature.values)
        #expect(reap.scores.values.allSatisfy { $0.allSatisfy { $0 >= 0 } })
        #expect(reap.scores.values.contains { $0.contains { $0 > 0 } })
    }

    @Test func metrics() {
        #expect(DistanceMetric.l2.distance([0, 3], [4, 0]) == 5)
        #expect(abs(DistanceMetric.cosine.distance([1, 0], [2, 0])) < 1e-15)
        #expect(DistanceMetric.cosine.distance([1, 0], [0, 1]) == 1)
        #expect(DistanceMetric.cosine.distance([0, 0], [0, 1]) == 1)
    }

    @Test func fingerprintDependsOnConfigAndRoutersOnly() throws {
        let a = try loadFixture("qwen3_moe", options: LoadOptions(threads: 1, loadExperts: false))
        let b = try loadFixture("qwen3_moe", options: LoadOptions(threads: 1))
        let fa = try ModelFingerprint.compute(a)
        #expect(fa == (try ModelFingerprint.compute(b)))
        #expect(fa.count == 64)
        #expect(fa != (try ModelFingerprint.compute(loadFixture("qwen3_moe_bf16"))))
        #expect(fa != (try ModelFingerprint.compute(configData: a.configData + Data(" ".utf8), checkpoint: a.checkpoint,
                                                    spec: a.model.spec)))
    }
}
