import AsyncHTTPClient
import Foundation
import Models
import PreMoe
import Runtime
@testable import Server
import Testing
import TestSupport

/// What a single-request generation (`premoe run` / `generate`: a pruned load with the same
/// experts, `Generator.generate`) makes for a chat prompt.
extension AdmissionOutcome {
    var isWait: Bool {
        if case .wait = self { return true }
        return false
    }
}

private func reference(task: String, prompt: String, temperature: Float, seed: UInt64, maxTokens: Int) throws
    -> GenerationResult
{
    let store = PatternStore(directory: try DemoStore.store())
    let spec = try ModelLoader.spec(at: DemoStore.model)
    var kept: [Int: [Int]] = [:]
    if task == "full" {
        for l in spec.moeLayers { kept[l] = Array(0..<(spec.moe(l)?.expertCount ?? 0)) }
    } else {
        let pattern = try store.load(task)
        let backbone = try Reconstruction.loadBackbone(DemoStore.model, threads: 2)
        kept = try PruningPlan.make(patterns: [pattern], budget: .fraction(0.5),
                                    sizes: ModelSizes.measure(backbone.checkpoint, spec: spec), allocation: .routingMass).keptExperts
    }
    let loaded = try Reconstruction.load(DemoStore.model, plan: PruningPlan(keptExperts: kept), threads: 2)
    let tokenizer = try #require(loaded.tokenizer)
    let template = try #require(tokenizer.chatTemplate)
    let ids = tokenizer.encode(template.format([.init(role: "user", content: prompt)]))
    return try Generator(model: loaded.model, tokenizer: tokenizer).generate(
        promptIDs: ids, parameters: GenerationParameters(maxTokens: maxTokens, temperature: temperature, seed: seed,
                                                         eosTokenIDs: loaded.eosTokenIDs))
}

@Suite(.serialized) struct EngineTests {
    /// Streams running side by side (mixed tasks, sampled, prompts of different lengths) decode
    /// in shared batched forward passes, and each equals a single-request generation with the
    /// same experts and seed, token for token (the batched pass gives every row the logits its
    /// sequence gets alone, bit for bit: `BatchedForwardTests`): on the shared server (threads
    /// split as measured), and on servers that always split kernels or always split sequences.
    @Test func concurrentStreamsEqualSingleRequestGeneration() async throws {
        let cases: [(task: String, prompt: String, seed: Int)] = [
            ("gsm8k", "Sam has 5 pens and loses 2. How many are left?", 11),
            ("boolq", "Is the moon made of cheese?", 12),
            ("full", "Tell me a story about a cat.", 13),
            ("gsm8k", "What is 7 times 8?", 14),
            ("boolq", "Does water boil at 100 degrees Celsius at sea level, and does it freeze at zero?", 15),
            ("full", "Hi", 16),
            ("gsm8k", "A train travels 60 miles in 1.5 hours. What is its average speed in miles per hour?", 17),
            ("boolq", "Can a penguin fly?", 18),
        ]
        let expected = try cases.map {
            try reference(task: $0.task, prompt: $0.prompt, temperature: 0.8, seed: UInt64($0.seed), maxTokens: 12).text
        }
        for split in [BatchSplit.auto, .kernels, .sequences] {
            let s = split == .auto ? try await SharedServer.instance.get() : try await RunningServer.start { $0.batchSplit = split }
            let before = s.server.engine.snapshot
            let replies = try await withThrowingTaskGroup(of: (Int, RunningServer.Reply).self) { group in
                for (i, c) in cases.enumerated() {
                    group.addTask {
                        let body = RunningServer.chat(c.prompt, ["temperature": 0.8, "seed": c.seed, "max_tokens": 12, "stream": true,
                                                                 "premoe": ["task": c.task]])
                        return (i, try await s.post("/v1/chat/completions", body))
                    }
                }
                var out: [Int: RunningServer.Reply] = [:]
                for try await (i, r) in group { out[i] = r }
                return out
            }
            let after = s.server.engine.snapshot
            if split != .auto { await s.stop() }
            // Several sequences advanced in one forward pass (the streams overlap for 12 tokens each).
            #expect(after.largestBatch > 1, "\(split): largest batch \(after.largestBatch)")
            #expect(after.batchedSequences - before.batchedSequences > after.batchedSteps - before.batchedSteps)
            // The time split accounts for every row: each request's prompt once, every other row a
            // decode row (in a pass with a prompt or in a decode-only pass).
            let (t0, t1) = (before.time, after.time)
            let decodeRows = (t1.decodeRows - t0.decodeRows) + (t1.promptStepDecodeRows - t0.promptStepDecodeRows)
            #expect(after.batchedSequences - before.batchedSequences == (t1.prompts - t0.prompts) + decodeRows)
            #expect(t1.prompts - t0.prompts >= cases.count)
            #expect((t1.promptSteps - t0.promptSteps) + (t1.decodeSteps - t0.decodeSteps) == after.batchedSteps - before.batchedSteps)
            #expect(t1.promptTokens - t0.promptTokens >= cases.count * 5)
            #expect(t1.promptStepSeconds > t0.promptStepSeconds && t1.samplingSeconds > t0.samplingSeconds)
            let splitSteps = t1.sequenceSplitSteps - t0.sequenceSplitSteps
            switch split {
            case .kernels: #expect(splitSteps == 0)
            case .sequences: #expect(splitSteps > 0, "no step split its sequences")
            case .auto: break
            }
            for (i, c) in cases.enumerated() {
                let reply = try #require(replies[i])
                #expect(reply.headers.first(name: "x-premoe-task") == c.task)
                #expect(reply.streamedText == expected[i], "\(split): case \(i) (\(c.task))")
            }
        }
    }

    /// Under a budget that holds one task's experts but not two, switching tasks evicts, never
    /// overruns, and the full model (over the budget alone) gets a 503 saying what it needs.
    @Test func budgetEvictsAndRefusesWhatCannotFit() async throws {
        let probe = try await RunningServer.start()
        let residency = probe.server.engine.residency
        let selector = probe.server.engine.selector
        let one = residency.bytesAlone(experts: try selector.experts(for: "gsm8k"), cacheBytes: 0)
        let cache = GenerationSession.cacheBytes(spec: probe.server.spec, promptCount: 200, maxTokens: 8)
        await probe.stop()
        // Room for one task's experts and a few more: the other task's own experts need evictions.
        let budget = one.total + cache + one.experts / 8
        let s = try await RunningServer.start { $0.budgetBytes = budget }
        defer { Task { await s.stop() } }
        for task in ["gsm8k", "boolq", "gsm8k", "boolq"] {
            let reply = try await s.post("/v1/chat/completions", RunningServer.chat("hello there", ["max_tokens": 4, "premoe": ["task": task]]))
            #expect(reply.status == 200, "\(reply.text)")
        }
        let full = try await s.post("/v1/chat/completions", RunningServer.chat("hello", ["max_tokens": 4, "premoe": ["task": "full"]]))
        #expect(full.status == 503)
        let message = (full.json["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(message.contains("needs") && message.contains("--budget"), "\(message)")
        let health = try await s.send(.GET, "/health").json
        #expect((health["peak_accounted_bytes"] as? Int ?? .max) <= budget)
        #expect((health["expert_cache_hits"] as? Int ?? 0) > 0)
    }

    /// Delta loading and LRU eviction on the pool itself: disjoint expert sets under a budget
    /// that holds one of them evict the unpinned one, and a pinned set is never evicted.
    @Test func residencyLoadsOnlyMissingExpertsAndEvictsUnpinned() throws {
        let loaded = try Reconstruction.loadBackbone(DemoStore.model, threads: 1)
        let spec = loaded.model.spec
        let sizes = ModelSizes.measure(loaded.checkpoint, spec: spec)
        let a = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { ($0, [0, 1, 2, 3]) })
        let b = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { ($0, [2, 3, 4, 5]) })
        let probe = try ExpertResidency(loaded: loaded, budget: nil, sizes: sizes)
        let one = probe.bytesAlone(experts: a, cacheBytes: 1000)
        let residency = try ExpertResidency(loaded: loaded, budget: one.total, sizes: sizes)
        guard case .admitted(0, let missA, _) = try residency.admit(experts: a, cacheBytes: 1000) else {
            Issue.record("a did not fit")
            return
        }
        #expect(missA == 4 * spec.moeLayers.count)
        #expect(try residency.admit(experts: b, cacheBytes: 1000).isWait)  // a is pinned
        residency.release(experts: a, cacheBytes: 1000)
        guard case .admitted(let hits, let misses, _) = try residency.admit(experts: b, cacheBytes: 1000) else {
            Issue.record("b did not fit after a was released")
            return
        }
        #expect(hits == 2 * spec.moeLayers.count && misses == 2 * spec.moeLayers.count)  // only 4, 5 loaded
        #expect(residency.evictions == 2 * spec.moeLayers.count)  // 0, 1 evicted; 2, 3 kept
        #expect(residency.peakAccountedBytes <= one.total)
        // The view routes among b only, in plan order.
        let view = residency.view(task: "b", experts: b)
        #expect(view[spec.moeLayers[0]]?.expertIDs == [2, 3, 4, 5])
        #expect(view[spec.moeLayers[0]]?.router.outFeatures == 4)
    }

    /// A full queue answers 429 with Retry-After; a client that goes away frees its slot.
    @Test func fullQueueIs429AndDisconnectCancels() async throws {
        let s = try await RunningServer.start {
            $0.maxConcurrency = 1
            $0.maxQueue = 0
        }
        defer { Task { await s.stop() } }
        let long = RunningServer.chat("Write forever.", ["max_tokens": 300, "stream": true, "premoe": ["ignore_eos": true]])
        let first = Task { try await s.post("/v1/chat/completions", long) }
        try await waitFor(s) { ($0["running"] as? Int) == 1 }
        let second = try await s.post("/v1/chat/completions", RunningServer.chat("hi", ["max_tokens": 1]))
        #expect(second.status == 429)
        #expect(second.headers.first(name: "retry-after") == "1")
        #expect((second.json["error"] as? [String: Any])?["type"] as? String == "rate_limit_error")
        first.cancel()
        try await waitFor(s) { ($0["running"] as? Int) == 0 && ($0["queued"] as? Int) == 0 }
        let metrics = try await s.send(.GET, "/metrics").text
        #expect(metrics.contains("premoe_requests_cancelled_total 1"))
        #expect(try await s.post("/v1/chat/completions", RunningServer.chat("hi", ["max_tokens": 1])).status == 200)
    }

    @Test func apiKeyIsRequiredWhenSet() async throws {
        let s = try await RunningServer.start { $0.apiKey = "sekrit-key" }
        defer { Task { await s.stop() } }
        let none = try await s.send(.GET, "/v1/models")
        #expect(none.status == 401)
        #expect((none.json["error"] as? [String: Any])?["type"] as? String == "authentication_error")
        #expect(try await s.send(.GET, "/v1/models", headers: [("Authorization", "Bearer sekrit-kez")]).status == 401)
        #expect(try await s.send(.GET, "/v1/models", headers: [("Authorization", "Bearer sekrit-key")]).status == 200)
        #expect(try await s.send(.GET, "/health").status == 200)
        #expect(PreMoeServer.constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
        #expect(!PreMoeServer.constantTimeEquals(Array("abcd".utf8), Array("abc".utf8)))
        #expect(!PreMoeServer.constantTimeEquals([], Array("abc".utf8)))
    }

    /// Shutdown stops taking requests, cancels a stream past the grace period and returns.
    @Test func gracefulShutdownEndsInFlightStreams() async throws {
        let s = try await RunningServer.start { $0.shutdownGraceSeconds = 0.3 }
        let long = RunningServer.chat("Write forever.", ["max_tokens": 300, "stream": true, "premoe": ["ignore_eos": true]])
        let stream = Task { try await s.post("/v1/chat/completions", long) }
        try await waitFor(s) { ($0["running"] as? Int) == 1 }
        let start = Date()
        await s.stop()
        #expect(Date().timeIntervalSince(start) < 10)
        let reply = try? await stream.value
        if let reply {  // the stream ended with an error event instead of 300 tokens
            #expect(reply.text.contains("shutting_down"), "\(reply.text.suffix(300))")
        }
    }

    private func waitFor(_ s: RunningServer, _ condition: ([String: Any]) -> Bool) async throws {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if condition(try await s.send(.GET, "/health").json) { return }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        Issue.record("condition not reached within 30 s")
    }
}

/// `SplitChooser`: fixed modes never measure; `auto` measures both ways, runs the faster one
/// and tries the other every `exploreEvery`-th step (`exploreEveryFar`-th when it is far
/// slower); steps with a prompt follow without
/// teaching; an interrupted step moves a mean by at most `outlier` times it.
@Suite struct SplitChooserTests {
    @Test func fixedModesAndSingleThreads() {
        var kernels = SplitChooser(mode: .kernels, threads: 2)
        var sequences = SplitChooser(mode: .sequences, threads: 4)
        var one = SplitChooser(mode: .auto, threads: 1)
        #expect(kernels.lanes(sequences: 8, prompt: false) == 1)
        #expect(sequences.lanes(sequences: 8, prompt: false) == 4)
        #expect(sequences.lanes(sequences: 1, prompt: false) == 1)
        #expect(one.lanes(sequences: 8, prompt: false) == 1)
        kernels.record(sequences: 8, prompt: false, lanes: 1, seconds: 1, tokens: 8)
        #expect(kernels.measurements.isEmpty)
    }

    @Test func autoRunsTheFasterWayAndExplores() {
        var chooser = SplitChooser(mode: .auto, threads: 2)
        let cost = [1: 1.1e-3, 2: 1e-3]  // sequences a little faster
        var choices: [Int] = []
        for _ in 0..<(2 * SplitChooser.warmup + 4 * SplitChooser.exploreEvery) {
            let lanes = chooser.lanes(sequences: 16, prompt: false)
            choices.append(lanes)
            chooser.record(sequences: 16, prompt: false, lanes: lanes, seconds: cost[lanes]! * 16, tokens: 16)
        }
        // Warm-up alternates until each way has its samples, then sequences win.
        #expect(choices.prefix(2 * SplitChooser.warmup).filter { $0 == 1 }.count == SplitChooser.warmup)
        #expect(chooser.preferred(sequences: 16) == .sequences)
        let after = choices.dropFirst(2 * SplitChooser.warmup)
        #expect(after.filter { $0 == 1 }.count == 4, "kernels explored once every \(SplitChooser.exploreEvery) steps")
        let m = chooser.measurements[16]!
        #expect(abs(m.kernels - 1.1e-3 * 1000) < 1e-9 && abs(m.sequences - 1e-3 * 1000) < 1e-9)
        // A prompt step follows the decode steps' choice and is not recorded.
        #expect(chooser.lanes(sequences: 16, prompt: true) == 2)
        chooser.record(sequences: 16, prompt: true, lanes: 2, seconds: 100, tokens: 16)
        #expect(chooser.measurements[16]!.sequences == m.sequences)
        // Before any decode step of a shape, a prompt step splits kernels.
        #expect(chooser.lanes(sequences: 5, prompt: true) == 1)
        // Conditions change: sequences become slow; capped samples still move the mean over,
        // and the far slower way is then tried only every `exploreEveryFar`-th step.
        choices = []
        for _ in 0..<(8 * SplitChooser.exploreEveryFar) {
            let lanes = chooser.lanes(sequences: 16, prompt: false)
            choices.append(lanes)
            chooser.record(sequences: 16, prompt: false, lanes: lanes, seconds: (lanes == 2 ? 50e-3 : 1.1e-3) * 16, tokens: 16)
        }
        #expect(chooser.preferred(sequences: 16) == .kernels)
        #expect(chooser.measurements[16]!.sequences <= 50 + 1e-9)
        let late = choices.suffix(4 * SplitChooser.exploreEveryFar)
        #expect(late.filter { $0 == 2 }.count == 4, "sequences explored once every \(SplitChooser.exploreEveryFar) steps")
    }
}
