import Foundation
import Kernels
import Models
@testable import Runtime
import Testing
import TestSupport

private struct GreedyGolden: Decodable {
    struct Greedy: Decodable {
        let prompt_ids: [Int]
        let tokens: [Int]
    }
    let greedy: Greedy
}

@Suite struct SamplerTests {
    @Test func argmaxTakesTheLowerIDOnTiesAndSkipsNaN() {
        #expect(Sampler.argmax([1, 3, 3, 2]) == 1)
        #expect(Sampler.argmax([.nan, 0.5, 0.5]) == 1)
        #expect(Sampler.argmax([-1, -2]) == 0)
    }

    @Test func argmaxOfLongRowsIsTheFirstLargestNumber() {
        var rng = SplitMix64(seed: 3)
        for count in [15, 16, 17, 33, 100, 8192] {
            for trial in 0..<12 {
                var row = (0..<count).map { _ in Float(rng.nextUnit() * 4 - 2).rounded() }  // many ties
                if trial % 3 == 0 { for j in stride(from: trial % 5, to: count, by: 5) { row[j] = .nan } }
                if trial == 4 { row = row.map { $0.isNaN ? $0 : -.infinity } }
                if trial == 5 { row = [Float](repeating: .nan, count: count) }
                if trial == 7 { row[count - 1] = 9 }  // the largest in the scalar tail or the last lane
                let expected = row.indices.filter { !row[$0].isNaN }.min { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }
                #expect(Sampler.argmax(row) == expected, "count \(count) trial \(trial)")
            }
        }
    }

    @Test func samplingWeightsAreTheExponentialsOfTheScaledLogits() {
        var rng = SplitMix64(seed: 8)
        for count in [1, 7, 8, 9, 8192] {
            var logits = (0..<count).map { _ in Float(rng.nextUnit() * 40 - 30) }
            logits[count / 2] = .nan
            let maxLogit = logits.filter { !$0.isNaN }.max() ?? 0
            for temperature: Float in [0.1, 0.7, 3] {
                let (weights, total) = logits.withUnsafeBufferPointer {
                    Sampler.weights($0.baseAddress!, count: count, maxLogit: maxLogit, temperature: temperature)
                }
                var sum = 0.0
                for (i, v) in logits.enumerated() {
                    let expected = v.isNaN ? 0 : Foundation.exp(Double((v - maxLogit) / temperature))
                    #expect(abs(Double(weights[i]) - expected) <= 4e-7 * expected + 1e-37, "\(i) of \(count), T \(temperature)")
                    sum += Double(weights[i])
                }
                #expect(abs(total - sum) <= 1e-12 * sum)
            }
        }
    }

    @Test func temperatureZeroIsGreedy() {
        var sampler = Sampler(temperature: 0, seed: 7)
        #expect(sampler.sample([0.1, 2, 1.9]) == 1)
    }

    @Test func sameSeedSameSamples() {
        let logits: [Float] = (0..<50).map { Float(sin(Double($0))) }
        var a = Sampler(temperature: 1, seed: 42)
        var b = Sampler(temperature: 1, seed: 42)
        var c = Sampler(temperature: 1, seed: 43)
        let sa = (0..<100).map { _ in a.sample(logits) }
        let sb = (0..<100).map { _ in b.sample(logits) }
        let sc = (0..<100).map { _ in c.sample(logits) }
        #expect(sa == sb)
        #expect(sa != sc)
        #expect(Set(sa).count > 5, "sampling at temperature 1 should spread over tokens")
    }

    @Test func topKOneAndTinyTopPAreGreedy() {
        let logits: [Float] = [0.3, 1.2, 1.1, -4, 0]
        var k1 = Sampler(temperature: 5, topK: 1, seed: 1)
        var p0 = Sampler(temperature: 5, topP: 1e-6, seed: 1)
        for _ in 0..<20 {
            #expect(k1.sample(logits) == 1)
            #expect(p0.sample(logits) == 1)
        }
    }

    /// The sampler ranks only the head of the distribution unless the draw or the top-p cut goes
    /// past it: it must pick what ranking the whole vocabulary picks, draw for draw. The reference
    /// below ranks everything (a plain sort), sums the weights in id order as the sampler does,
    /// and walks the ranking. A short head (`headCount` 4) sends most draws past it.
    @Test func partialRankingPicksWhatAFullRankingPicks() {
        func reference(_ logits: [Float], temperature: Float, topP: Float, rng: inout SplitMix64) -> Int {
            let order = logits.indices.filter { !logits[$0].isNaN }
                .sorted { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
            let maxLogit = logits[order[0]]
            let (weights, all) = logits.withUnsafeBufferPointer {
                Sampler.weights($0.baseAddress!, count: logits.count, maxLogit: maxLogit, temperature: temperature)
            }
            func weight(_ i: Int) -> Double { Double(weights[i]) }
            var total = all
            var kept = order
            if topP < 1 {
                var cumulative = 0.0, keep = order.count
                for (i, id) in order.enumerated() {
                    cumulative += weight(id) / total
                    if cumulative >= Double(topP) { keep = i + 1; break }
                }
                kept = Array(order.prefix(keep))
                total = kept.reduce(0.0) { $0 + weight($1) }
            }
            let r = rng.nextUnit() * total
            var acc = 0.0
            for id in kept {
                acc += weight(id)
                if r < acc { return id }
            }
            return kept[kept.count - 1]
        }
        var data = SplitMix64(seed: 5)
        let settings: [(Float, Float, Int)] = [(0.7, 1, 64), (1, 0.9, 64), (5, 1, 64), (50, 0.999, 64), (0.3, 0.5, 64),
                                               (1, 1, 4), (2, 0.95, 4), (1, 0.999, 1)]
        for (temperature, topP, head) in settings {
            var logits = (0..<3000).map { _ in Float(data.nextUnit() * 12 - 6) }
            logits[17] = .nan
            logits[400] = logits[3]  // a tie
            var sampler = Sampler(temperature: temperature, topP: topP, seed: 11)
            sampler.headCount = head
            var rng = SplitMix64(seed: 11)
            var picks: Set<Int> = []
            for _ in 0..<300 {
                let pick = sampler.sample(logits)
                #expect(pick == reference(logits, temperature: temperature, topP: topP, rng: &rng),
                        "T \(temperature) top-p \(topP) head \(head)")
                picks.insert(pick ?? -1)
            }
            let ranked = logits.indices.filter { !logits[$0].isNaN }.sorted { logits[$0] > logits[$1] }
            if temperature >= 1 { #expect(!picks.isSubset(of: ranked.prefix(head)), "the draws should reach past the head") }
        }
    }

    @Test func topKRestrictsTheSupport() {
        let logits: [Float] = [3, 2.9, 2.8, -10, -10, -10]
        var sampler = Sampler(temperature: 10, topK: 3, seed: 3)
        let picks = Set((0..<200).map { _ in sampler.sample(logits) })
        #expect(picks.isSubset(of: [0, 1, 2]))
        #expect(picks.count == 3)
    }
}

@Suite struct GeneratorTests {
    @Test func greedyGenerationMatchesTheReferenceTokens() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3_moe"), options: LoadOptions(threads: 1))
        let golden = try Fixtures.json(GreedyGolden.self, "models/qwen3_moe/golden.json")
        let generator = Generator(model: loaded.model, tokenizer: loaded.tokenizer)
        var streamed = ""
        let result = try generator.generate(
            promptIDs: golden.greedy.prompt_ids,
            parameters: GenerationParameters(maxTokens: golden.greedy.tokens.count, stopAtEOS: false)
        ) { piece in
            streamed += piece
            return true
        }
        #expect(result.tokens == golden.greedy.tokens)
        #expect(result.finishReason == .length)
        #expect(streamed == result.text)
        #expect(result.text == loaded.tokenizer!.decode(result.tokens, skipSpecialTokens: true))
    }

    @Test func stopStringEndsGenerationAndIsNotIncluded() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3_moe"), options: LoadOptions(threads: 1))
        let golden = try Fixtures.json(GreedyGolden.self, "models/qwen3_moe/golden.json")
        let generator = Generator(model: loaded.model, tokenizer: loaded.tokenizer)
        let full = try generator.generate(promptIDs: golden.greedy.prompt_ids,
                                          parameters: GenerationParameters(maxTokens: 20, stopAtEOS: false))
        // Stop on a piece of text from the middle of the greedy output.
        let chars = Array(full.text)
        try #require(chars.count > 6)
        let stop = String(chars[3..<6])
        var streamed = ""
        let stopped = try generator.generate(
            promptIDs: golden.greedy.prompt_ids,
            parameters: GenerationParameters(maxTokens: 20, stop: [stop], stopAtEOS: false)
        ) { piece in
            streamed += piece
            return true
        }
        #expect(stopped.finishReason == .stop)
        #expect(!stopped.text.contains(stop))
        #expect(full.text.hasPrefix(stopped.text))
        #expect(streamed == stopped.text)
    }

    @Test func emptyPromptIsAnError() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3"), options: LoadOptions(threads: 1))
        let generator = Generator(model: loaded.model, tokenizer: loaded.tokenizer)
        #expect(throws: ModelError.self) { try generator.generate(promptIDs: [], parameters: GenerationParameters()) }
    }
}

@Suite struct RepetitionPenaltyTests {
    private struct Reference: Decodable {
        struct Case: Decodable {
            let model: String
            let prompt_ids: [Int]
            let repetition_penalty: Float
            let tokens: [Int]
        }
        let cases: [Case]
    }

    @Test func penaltyDividesPositiveAndMultipliesNegativeLogitsOncePerToken() {
        var logits: [Float] = [2, -2, 3, 0.5]
        Sampler.penalizeRepetitions(&logits, history: [0, 1, 1, 1, 9], penalty: 2)
        #expect(logits == [1, -4, 3, 0.5])
        var unchanged: [Float] = [2, -2]
        Sampler.penalizeRepetitions(&unchanged, history: [0, 1], penalty: 1)
        #expect(unchanged == [2, -2])
    }

    @Test func greedyWithPenaltyMatchesTransformers() throws {
        let reference = try Fixtures.json(Reference.self, "generation/repetition_penalty.json")
        for c in reference.cases {
            let loaded = try ModelLoader.load(Fixtures.url(c.model), options: LoadOptions(threads: 1))
            let result = try Generator(model: loaded.model, tokenizer: loaded.tokenizer).generate(
                promptIDs: c.prompt_ids,
                parameters: GenerationParameters(maxTokens: c.tokens.count, repetitionPenalty: c.repetition_penalty,
                                                 stopAtEOS: false))
            #expect(result.tokens == c.tokens, "\(c.model) penalty \(c.repetition_penalty)")
        }
    }
}

/// Generation bounded by the model's context, and rows of logits with nothing to choose.
@Suite struct GenerationLimitTests {
    @Test func nanOnlyRowHasNoSampleAtAnyTemperature() {
        let row = [Float](repeating: .nan, count: 5)
        var hot = Sampler(temperature: 0.8, topK: 3, topP: 0.9, seed: 1)
        var greedy = Sampler(temperature: 0)
        #expect(hot.sample(row) == nil)
        #expect(greedy.sample(row) == nil)
        #expect(Sampler.argmax([]) == nil)
        #expect(Sampler.argmax([-.infinity, -.infinity]) == 0)
    }

    @Test func maxTokensIsCappedByTheContextNotAllocated() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3"), options: LoadOptions(threads: 1))
        let limit = loaded.model.spec.maxPositions
        let prompt = [1, 2, 3]
        let result = try Generator(model: loaded.model, tokenizer: loaded.tokenizer).generate(
            promptIDs: prompt, parameters: GenerationParameters(maxTokens: 100_000_000_000, stopAtEOS: false))
        #expect(result.tokens.count == limit - prompt.count + 1)
        #expect(result.finishReason == .length)
        #expect(Generator.maxNewTokens(promptCount: 3, maxTokens: .max, maxPositions: limit) == limit - 2)
    }

    @Test func promptLongerThanTheContextFailsBeforeAnyWork() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3"), options: LoadOptions(threads: 1))
        let limit = loaded.model.spec.maxPositions
        let prompt = [Int](repeating: 5, count: limit * 50)
        let start = Date()
        do {
            _ = try Generator(model: loaded.model, tokenizer: loaded.tokenizer).generate(
                promptIDs: prompt, parameters: GenerationParameters(maxTokens: 10))
            Issue.record("a prompt of \(prompt.count) tokens was accepted by a \(limit)-position model")
        } catch let error as ModelError {
            guard case .contextTooLong(let positions, let reported, _) = error else {
                Issue.record("expected contextTooLong, got \(error)")
                return
            }
            #expect(positions == prompt.count && reported == limit)
            #expect("\(error)".contains("max_position_embeddings"))
        }
        #expect(Date().timeIntervalSince(start) < 5)
    }

    @Test func forwardPastTheContextIsRefused() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3"), options: LoadOptions(threads: 1))
        let model = loaded.model
        let cache = model.makeCache(capacity: 1_000_000_000)
        try model.forward([Int](repeating: 1, count: model.spec.maxPositions), cache: cache, logits: .none)
        #expect(throws: ModelError.self) { try model.forward([1], cache: cache, logits: .none) }
    }
}
