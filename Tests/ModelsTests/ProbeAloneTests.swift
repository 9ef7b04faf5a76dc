import Foundation
import Models
import Testing
import TestSupport

/// What lets a server probe and load beside its engine: a retrieval probe that runs alone
/// (`DecoderModel.route(_:upTo:observer:alone:)`) on other threads while this thread runs
/// batched forward passes of the same model routes exactly as a probe run on its own, and
/// experts read apart (`LoadedModel.readExperts`) leave the model's layers as they were.
@Suite struct ProbeAloneTests {
    /// Collects the router logits and inputs of every routing event.
    final class Recorder: RouterObserver {
        var values: [Float] = []
        func routerDidRoute(_ event: RouterEvent) {
            values += UnsafeBufferPointer(start: event.logits, count: event.tokenCount * event.expertCount)
            values += UnsafeBufferPointer(start: event.input, count: event.tokenCount * event.hiddenSize)
        }
    }

    /// Results of the probing threads, each query's runs in one slot.
    final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var runs: [[[Float]]]
        init(queries: Int) { runs = Array(repeating: [], count: queries) }
        func add(_ values: [Float], query: Int) { lock.withLock { runs[query].append(values) } }
        var all: [[[Float]]] { lock.withLock { runs } }
    }

    @Test(arguments: ["qwen3_moe", "deepseek_v2"])
    func probesBesideForwardPassesRouteAsAlone(_ name: String) throws {
        let model = try ModelLoader.load(Fixtures.url("models/\(name)"), options: LoadOptions(threads: 2)).model
        let first = try #require(model.spec.moeLayers.first)
        var random = TestRandom(seed: 5)
        let vocab = model.spec.vocabularySize
        func tokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int(random.next() % UInt64(vocab)) } }
        let queries = (0..<4).map { tokens(4 + 5 * $0) }
        let expected = try queries.map { query in
            let recorder = Recorder()
            try model.route(query, upTo: first, observer: recorder)
            return recorder.values
        }
        #expect(expected.allSatisfy { !$0.isEmpty })

        // Threads of their own (a dispatch queue could wait behind this test's busy thread).
        let results = Results(queries: queries.count)
        let done = DispatchSemaphore(value: 0)
        let rounds = 6
        for (q, query) in queries.enumerated() {
            Thread {
                for _ in 0..<rounds {
                    let recorder = Recorder()
                    do {
                        try model.route(query, upTo: first, observer: recorder, alone: true)
                        results.add(recorder.values, query: q)
                    } catch {
                        results.add([], query: q)
                    }
                }
                done.signal()
            }.start()
        }
        // Meanwhile: batched decode steps of four sequences on the model's own threads and scratch.
        var steps = 0, finished = 0
        while finished < queries.count {
            let caches = (0..<4).map { _ in model.makeCache(capacity: 8) }
            for _ in 0..<4 {
                _ = try model.forward(batch: caches.map { BatchEntry(tokens: tokens(1), cache: $0) })
                steps += 1
            }
            while done.wait(timeout: .now()) == .success { finished += 1 }
        }
        #expect(steps >= 4)
        for (q, runs) in results.all.enumerated() {
            #expect(runs.count == rounds)
            #expect(runs.allSatisfy { $0 == expected[q] }, "query \(q)")
        }
    }

    /// `readExperts` builds the blocks `loadExperts` installs (the same logits once installed,
    /// bit for bit) and changes nothing in the model it reads for.
    @Test func readExpertsLeavesTheModelAsItWas() throws {
        let dir = Fixtures.url("models/qwen3_moe")
        let reading = try ModelLoader.load(dir, options: LoadOptions(threads: 1, loadExperts: false))
        let spec = reading.model.spec
        let experts = try #require(spec.moe(spec.moeLayers[0])).expertCount
        var kept: [Int: [Int]] = [:]
        for (i, l) in spec.moeLayers.enumerated() { kept[l] = [(i + 3) % experts, i % experts, (i + 5) % experts].sorted() }
        func shape(_ model: DecoderModel) -> [[Int]] {
            spec.moeLayers.map { l in
                guard case .moe(let block) = model.layers[l].feedForward else { return [] }
                return [block.router.outFeatures] + block.expertIDs
            }
        }
        let before = shape(reading.model)
        let blocks = try reading.readExperts(kept: kept, copy: true)
        #expect(shape(reading.model) == before)
        #expect(Set(blocks.keys) == Set(spec.moeLayers))

        let installing = try ModelLoader.load(dir, options: LoadOptions(threads: 1, loadExperts: false))
        try installing.loadExperts(kept: kept, copy: true)
        for (l, block) in blocks { reading.model.setFeedForward(.moe(block), layer: l) }
        #expect(shape(reading.model) == shape(installing.model))
        let tokens = [3, 17, 4, 9, 1]
        let read = try reading.model.forward(tokens, cache: reading.model.makeCache(), logits: .all)
        let installed = try installing.model.forward(tokens, cache: installing.model.makeCache(), logits: .all)
        #expect(read == installed)
    }
}
