import Foundation
import Models
import Testing
import TestSupport

/// `DecoderModel.forward(batch:)` against one `forward` per sequence. Every kernel computes a row
/// the same way whatever the other rows of its call are (the matmul and quantized-dot contracts),
/// attention runs per sequence, and each row sums its experts in its own block's router-row
/// order, so the batched logits must equal the single ones bit for bit: the bound is 0.
@Suite struct BatchedForwardTests {
    /// Families with different attention and MoE parts: Qwen3-MoE (GQA, q/k norms), Qwen2-MoE
    /// (shared expert behind a sigmoid gate), DeepSeek-V2 (latent attention, shared experts, a
    /// dense first layer) and gpt-oss (sinks, sliding-window layers, router and expert biases);
    /// Qwen3-MoE in bf16 too (one row is a GEMV straight from bf16, several widen blocks to f32).
    static let families = ["qwen3_moe", "qwen3_moe_bf16", "qwen2_moe", "deepseek_v2", "gpt_oss"]

    /// Layer `l`'s block restricted to the router rows `rows`, in that order (what the server's
    /// per-request view holds: the experts themselves are shared with the full block).
    func view(_ block: MoEBlock, rows: [Int]) -> MoEBlock {
        MoEBlock(spec: block.spec, router: block.router.rows(rows), experts: rows.map { block.experts[$0] },
                 expertIDs: rows.map { block.expertIDs[$0] }, shared: block.shared, sharedGate: block.sharedGate,
                 selectionBias: block.selectionBias.map { b in rows.map { b[$0] } })
    }

    /// Also with the sequences dealt to the two threads (`forward(batch:lanes:)`): each lane a
    /// whole single-threaded pass with its own scratch; the deal is checked to split every step.
    @Test(arguments: families, [false, true])
    func batchEqualsOneForwardPerSequence(_ name: String, lanes: Bool) throws {
        let model = try ModelLoader.load(Fixtures.url("models/\(name)"), options: LoadOptions(threads: 2)).model
        var full: [Int: MoEBlock] = [:]
        for l in model.spec.moeLayers {
            if case .moe(let block) = model.layers[l].feedForward { full[l] = block }
        }
        let experts = try #require(full.values.first).experts.count
        #expect(experts >= 4)
        // Four sequences: the full block; the even experts; the top half in reverse order (its
        // rows sum in another order than the expert ids); every expert but the first.
        let subsets: [[Int]?] = [
            nil, Array(stride(from: 0, to: experts, by: 2)), Array((experts / 2..<experts).reversed()), Array(1..<experts),
        ]
        let views: [[Int: MoEBlock]] = subsets.map { rows in
            guard let rows else { return [:] }
            return full.mapValues { view($0, rows: rows) }
        }
        func install(_ view: [Int: MoEBlock]) {
            for (l, block) in full { model.setFeedForward(.moe(view[l] ?? block), layer: l) }
        }
        defer { install([:]) }

        var random = TestRandom(seed: 7)
        let vocab = model.spec.vocabularySize
        func tokens(_ n: Int) -> [Int] { (0..<n).map { _ in Int(random.next() % UInt64(vocab)) } }
        // Different cache lengths before the batch: 5, 9, 2 and 0 (a prompt arriving in the batch).
        let history = [tokens(5), tokens(9), tokens(2), []]
        let batched = (0..<4).map { _ in model.makeCache(capacity: 4) }
        let single = (0..<4).map { _ in model.makeCache(capacity: 4) }
        for i in 0..<4 where !history[i].isEmpty {
            install(views[i])
            try model.forward(history[i], cache: batched[i], logits: .none)
            try model.forward(history[i], cache: single[i], logits: .none)
        }
        // Two batched steps: one token, one token, a chunk of 3 (all its rows' logits), a prompt
        // of 6; then one token each.
        let steps: [[(tokens: [Int], mode: LogitsMode)]] = [
            [(tokens(1), .last), (tokens(1), .last), (tokens(3), .all), (tokens(6), .last)],
            [(tokens(1), .last), (tokens(1), .last), (tokens(1), .last), (tokens(1), .last)],
        ]
        for (s, step) in steps.enumerated() {
            install([:])
            let entries = (0..<4).map {
                BatchEntry(tokens: step[$0].tokens, cache: batched[$0], moe: views[$0], logits: step[$0].mode)
            }
            let out: [[Float]]
            if lanes {
                #expect(BatchLanes.deal(tokenCounts: step.map(\.tokens.count), lanes: model.pool.threadCount).count == 2)
                out = try model.forward(batch: entries, lanes: 2)
            } else {
                out = try model.forward(batch: entries)
            }
            for i in 0..<4 {
                install(views[i])
                let expected = try model.forward(step[i].tokens, cache: single[i], logits: step[i].mode)
                #expect(out[i].count == expected.count)
                #expect(!expected.contains { !$0.isFinite })
                let difference = zip(out[i], expected).map { abs($0 - $1) }.max() ?? .infinity
                #expect(difference == 0, "\(name) lanes \(lanes) step \(s) sequence \(i): max |Δ logit| \(difference)")
                #expect(batched[i].count == single[i].count)
            }
        }
    }

    /// Bad entries are refused before any work, naming the problem; a batch of none is empty.
    @Test func badEntriesThrowBeforeAnyWork() throws {
        let model = try ModelLoader.load(Fixtures.url("models/qwen3_moe"), options: LoadOptions(threads: 1)).model
        let good = model.makeCache()
        let other = model.makeCache()
        #expect(try model.forward(batch: []).isEmpty)
        #expect(throws: ModelError.self) {
            try model.forward(batch: [BatchEntry(tokens: [1], cache: good), BatchEntry(tokens: [], cache: other)])
        }
        #expect(throws: ModelError.self) {
            try model.forward(batch: [BatchEntry(tokens: [1], cache: good),
                                      BatchEntry(tokens: [model.spec.vocabularySize], cache: other)])
        }
        #expect(good.count == 0 && other.count == 0)
    }

    /// Split into lanes, what can fail is still refused before any lane runs: a bad entry, and
    /// a view of a MoE layer that holds no expert (a lane failing half-way would leave the
    /// other lanes' caches advanced).
    @Test func lanesThrowBeforeAnyWork() throws {
        let model = try ModelLoader.load(Fixtures.url("models/qwen3_moe"), options: LoadOptions(threads: 2)).model
        let caches = (0..<4).map { _ in model.makeCache() }
        let l = try #require(model.spec.moeLayers.first)
        guard case .moe(let block) = model.layers[l].feedForward else { throw ModelError.expertsNotLoaded(layer: l) }
        let empty = MoEBlock(spec: block.spec, router: block.router, experts: [], expertIDs: block.expertIDs,
                             shared: block.shared, sharedGate: block.sharedGate, selectionBias: block.selectionBias)
        var entries = caches.map { BatchEntry(tokens: [1], cache: $0) }
        entries[3].moe = [l: empty]
        #expect(BatchLanes.deal(tokenCounts: [1, 1, 1, 1], lanes: 2).count == 2)
        let error = #expect(throws: ModelError.self) { try model.forward(batch: entries, lanes: 2) }
        guard case .expertsNotLoaded(let layer) = error else {
            Issue.record("expected expertsNotLoaded, got \(String(describing: error))")
            return
        }
        #expect(layer == l)
        entries[3].moe = [:]
        entries[2].tokens = [model.spec.vocabularySize]
        #expect(throws: ModelError.self) { try model.forward(batch: entries, lanes: 2) }
        #expect(caches.allSatisfy { $0.count == 0 })
        entries[2].tokens = [2]
        #expect(try model.forward(batch: entries, lanes: 2).count == 4)
        #expect(caches.allSatisfy { $0.count == 1 })
    }

    /// How sequences are dealt to lanes: largest first to the least loaded lane, each lane in
    /// batch order; no split when one lane would hold over 1.5 even shares, or with one lane or
    /// one sequence; every sequence in exactly one lane.
    @Test func lanesDealEvenlyOrNotAtAll() {
        #expect(BatchLanes.deal(tokenCounts: [1, 1, 1, 1], lanes: 2) == [[0, 2], [1, 3]])
        #expect(BatchLanes.deal(tokenCounts: [1, 1, 3, 6], lanes: 2) == [[3], [0, 1, 2]])
        #expect(BatchLanes.deal(tokenCounts: [100, 1, 1, 1], lanes: 2) == [[0, 1, 2, 3]])
        #expect(BatchLanes.deal(tokenCounts: [1, 1, 1], lanes: 1) == [[0, 1, 2]])
        #expect(BatchLanes.deal(tokenCounts: [5], lanes: 2) == [[0]])
        #expect(BatchLanes.deal(tokenCounts: [2, 2], lanes: 4) == [[0], [1]])
        #expect(BatchLanes.deal(tokenCounts: [], lanes: 2) == [[]])
        var random = TestRandom(seed: 3)
        for _ in 0..<200 {
            let counts = (0..<Int(random.next() % 20 + 1)).map { _ in Int(random.next() % 40) + 1 }
            let lanes = Int(random.next() % 4) + 1
            let dealt = BatchLanes.deal(tokenCounts: counts, lanes: lanes)
            #expect(dealt.flatMap { $0 }.sorted() == Array(counts.indices))
            #expect(dealt.allSatisfy { $0 == $0.sorted() && !$0.isEmpty })
            #expect(dealt.count <= max(1, min(lanes, counts.count)))
            if dealt.count > 1 {
                let most = dealt.map { $0.reduce(0) { $0 + counts[$1] } }.max()!
                #expect(Double(most) <= BatchLanes.tolerance * Double(counts.reduce(0, +)) / Double(min(lanes, counts.count)))
            }
        }
    }
}
