import Foundation
import Models
import PreMoe
import Testing
import TestSupport

@Suite struct LayerwiseProfilingTests {
    /// Several sequences of different lengths, one longer than the window.
    func sequences(vocab: Int) -> [[Int]] {
        var random = TestRandom(seed: 11)
        return [5, 17, 3, 40, 9].map { n in (0..<n).map { _ in Int(random.next() % UInt64(vocab)) } }
    }

    @Test(arguments: ["qwen3_moe", "qwen2_moe", "mixtral", "olmoe", "deepseek_v2", "deepseek_v3"])
    func layerwiseStatisticsEqualThePerSequenceForwardPass(_ name: String) throws {
        let loaded = try loadFixture(name)
        let model = loaded.model
        let input = sequences(vocab: model.spec.vocabularySize)
        let options = StatsOptions(markerTopK: 2, probabilityTopK: 2, expertOutputs: true)
        let reference = try Profiler.run(model: model, sequences: input, options: options, maxTokens: 60, window: 16)
        // A budget of one layer plus about 20 tokens of activations forces several groups.
        let resident = model.embedding.byteCount
            + (0...model.spec.moeLayers.last!).map { model.weightBytes(layer: $0) }.max()!
        let budget = resident + 3 * 20 * model.spec.hiddenSize * MemoryLayout<Float>.size
        for memory in [1 << 30, budget] {
            let layerwise = try Profiler.runLayerwise(model: model, sequences: input, options: options, maxTokens: 60,
                                                      window: 16, memoryBytes: memory, releaseWeights: true)
            #expect(layerwise.tokens == reference.tokens && layerwise.sequences == reference.sequences)
            for l in model.spec.moeLayers {
                let a = try #require(reference.stats.layers[l]), b = try #require(layerwise.stats.layers[l])
                #expect(a.tokenCount == b.tokenCount && a.selectionCounts == b.selectionCounts, "layer \(l)")
                for (x, y) in [(a.markerSums, b.markerSums), (a.probabilityMass, b.probabilityMass),
                               (a.topProbabilitySums, b.topProbabilitySums), (a.reapSums, b.reapSums)] {
                    #expect(maxRelativeError(y.map { Float($0) }, x.map { Float($0) }) < 1e-5, "layer \(l)")
                }
            }
        }
        // The model still answers as before after its pages were dropped.
        let logits = try model.forward(input[1], cache: model.makeCache(), logits: .last)
        #expect(logits.allSatisfy { $0.isFinite })
    }

    @Test func aWindowLargerThanTheMemoryBudgetIsAClearError() throws {
        let loaded = try loadFixture("qwen3_moe")
        let input = sequences(vocab: loaded.model.spec.vocabularySize)
        #expect {
            try Profiler.runLayerwise(model: loaded.model, sequences: input, options: StatsOptions(), window: 16, memoryBytes: 1000)
        } throws: { error in
            "\(error)".contains("in all") && "\(error)".contains("--memory")
        }
    }
}
