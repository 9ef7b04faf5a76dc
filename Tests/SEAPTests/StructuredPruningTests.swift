import Foundation
import Kernels
import Models
@testable import SEAP
import Testing
import TestSupport

/// Logits of a prompt (all rows) and of three decode steps through the cache.
func logitsTrace(_ model: DecoderModel, prompt: [Int] = [3, 17, 250, 9, 44, 120]) throws -> [Float] {
    let cache = model.makeCache()
    var out = try model.forward(prompt, cache: cache, logits: .all)
    for t in [5, 77, 301] { out += try model.forward([t], cache: cache, logits: .last) }
    return out
}

/// Tiny-fixture masks that exercise the GQA rule: layer 0 keeps heads 0, 2, 3 (KV groups of 1
/// and 2 query heads), layer 1 keeps heads 2, 3 only (KV head 0 dropped).
func gqaMask(_ spec: DecoderSpec, seed: UInt64 = 9, shifts: Bool = false) -> SEAPMask {
    var rng = TestRandom(seed: seed)
    let inter = spec.feedForward.map { ff -> Int in if case .dense(let i) = ff { return i } else { return 0 } }
    let heads: [[Int]] = [[0, 2, 3], [2, 3]]
    let layers = (0..<spec.layerCount).map { l -> LayerMask in
        let channels = SEAPData.draw(inter[l], count: inter[l] / 2 + l * 7, seed: seed + UInt64(l))
        return LayerMask(keptHeads: heads[l % 2], keptChannels: channels,
                         outputBiasShift: shifts ? rng.floats(spec.hiddenSize, -0.1, 0.1) : nil,
                         downBiasShift: shifts ? rng.floats(spec.hiddenSize, -0.1, 0.1) : nil)
    }
    return SEAPMask(task: "test", score: .random, schedule: .uniform, sparsity: 0.5, headCount: spec.headCount,
                    kvHeadCount: spec.kvHeadCount, headDim: spec.headDim, intermediateSizes: inter, layers: layers)
}

@Suite struct StructuredPruningTests {
    /// Pruned (removed) and soft-masked (zeroed) models sum in different orders; observed ~1e-6.
    static let tolerance: Float = 1e-4

    @Test(arguments: ["llama", "qwen2", "qwen3"])
    func removingEqualsSoftMask(fixture: String) throws {
        let model = try ModelLoader.load(Fixtures.url("models/\(fixture)")).model
        for shifts in [false, true] {
            let mask = gqaMask(model.spec, shifts: shifts)
            let pruned = try StructuredPruning.prune(model, mask: mask, storage: .float32)
            let soft = try StructuredPruning.softMasked(model, mask: mask)
            let error = maxRelativeError(try logitsTrace(pruned), try logitsTrace(soft))
            #expect(error < Self.tolerance, "\(fixture) shifts \(shifts): \(error)")
            // The pruned model is really smaller, and the dense one really differs.
            #expect(pruned.weightBytes.backbone < model.weightBytes.backbone)
            #expect(maxRelativeError(try logitsTrace(model), try logitsTrace(soft)) > 1e-3)
        }
    }

    @Test func prunedLayersHaveTheMaskShapes() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let mask = gqaMask(model.spec)
        let pruned = try StructuredPruning.prune(model, mask: mask, storage: .float32)
        guard case .grouped(let a0) = pruned.layers[0].attention, case .grouped(let a1) = pruned.layers[1].attention,
              case .dense(let mlp1) = pruned.layers[1].feedForward
        else { Issue.record("unexpected layer kinds"); return }
        #expect(a0.headCount(headDim: 16) == 3 && a0.kvHeadCount(headDim: 16) == 2 && a0.queryGroups == [1, 2])
        #expect(a1.headCount(headDim: 16) == 2 && a1.kvHeadCount(headDim: 16) == 1 && a1.queryGroups == nil)
        #expect(mlp1.intermediateSize == mask.layers[1].keptChannels.count)
        if case .dense(let width) = pruned.spec.feedForward[1] { #expect(width == mlp1.intermediateSize) }
    }

    @Test func keepingEverythingIsTheDenseModel() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        var mask = gqaMask(model.spec)
        for l in mask.layers.indices {
            mask.layers[l] = LayerMask(keptHeads: Array(0..<4), keptChannels: Array(0..<128))
        }
        let pruned = try StructuredPruning.prune(model, mask: mask)
        #expect(try logitsTrace(pruned) == (try logitsTrace(model)))
    }

    @Test func wholeQuantizedBlocksAreCopiedByteForByte() throws {
        var rng = TestRandom(seed: 4)
        let plain = Tensor.owned(rng.floats(3 * 128), shape: [3, 128])
        let q = plain.converted(to: .q4_1)
        let kept = Array(32..<64) + Array(96..<128)
        let gathered = try StructuredPruning.gatherColumns(q, kept, storage: .float16)
        #expect(gathered.dtype == .q4_1 && gathered.shape == [3, 64])
        let full = q.toFloatArray(), part = gathered.toFloatArray()
        for r in 0..<3 { for (i, j) in kept.enumerated() { #expect(part[r * 64 + i] == full[r * 128 + j]) } }
    }

    @Test(arguments: [PrunedStorage.requantize, .float16, .float32])
    func cutBlocksFollowTheStorage(storage: PrunedStorage) throws {
        var rng = TestRandom(seed: 5)
        let q = Tensor.owned(rng.floats(2 * 64), shape: [2, 64]).converted(to: .q4_1)
        let kept = Array(stride(from: 0, to: 64, by: 2))  // 32 columns, every block cut
        let gathered = try StructuredPruning.gatherColumns(q, kept, storage: storage)
        let expected: DType = storage == .requantize ? .q4_1 : storage == .float16 ? .float16 : .float32
        #expect(gathered.dtype == expected)
        let full = q.toFloatArray(), part = gathered.toFloatArray()
        let error = maxRelativeError(part, (0..<2).flatMap { r in kept.map { full[r * 64 + $0] } })
        #expect(error <= (storage == .requantize ? 0.1 : storage == .float16 ? 1e-3 : 0))
    }

    @Test func maskThatDoesNotFitIsRefused() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        var mask = gqaMask(model.spec)
        mask.layers[0].keptHeads = [0, 9]
        #expect(throws: SEAPError.self) { try StructuredPruning.prune(model, mask: mask) }
        mask = gqaMask(model.spec)
        mask.layers[1].keptChannels = []
        #expect(throws: SEAPError.self) { try StructuredPruning.prune(model, mask: mask) }
        mask = gqaMask(model.spec)
        mask.intermediateSizes = [64, 64]
        #expect(throws: SEAPError.self) { try StructuredPruning.prune(model, mask: mask) }
    }

    @Test func maskRoundTripsThroughJSON() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let mask = gqaMask(model.spec, shifts: true)
        let url = try Fixtures.temporaryDirectory().appendingPathComponent("mask.json")
        try mask.write(to: url)
        #expect(try SEAPMask.read(url) == mask)
    }

    @Test func gqaRuleKeepsAKVHeadWhileAnyQueryHeadStays() {
        let m = LayerMask(keptHeads: [1, 2, 7, 8], keptChannels: [0])
        #expect(m.keptKVHeads(groupSize: 3) == [0, 2])
        #expect(m.queryGroups(groupSize: 3) == [2, 2])
        #expect(LayerMask(keptHeads: [0, 4, 5], keptChannels: [0]).queryGroups(groupSize: 3) == [1, 2])
    }
}

@Suite struct MaskMakingTests {
    @Test func lowestScoresArePrunedAndTiesGoToTheHigherIndex() {
        #expect(SEAPMask.keep([0.5, 0.1, 0.9, 0.1], pruning: 1) == [0, 1, 2])
        #expect(SEAPMask.keep([0.5, 0.1, 0.9, 0.1], pruning: 2) == [0, 2])
    }

    @Test(arguments: ScoreMethod.allCases)
    func everyScoreMakesAMaskOfTheTargetSparsity(method: ScoreMethod) throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let stats = try SEAPProfiler.collect(model: model, sequences: [[1, 2, 3, 4, 5, 6], [9, 8, 7]])
        var profile = SEAPProfile(spec: model.spec)
        profile.tasks = ["wikitext2": stats, "t": stats]
        let mask = try SEAPMasks.make(method: method, task: "t", sparsity: 0.5, schedule: .uniform, profile: profile,
                                      model: model, norms: try WeightNorms(model))
        #expect(mask.layers.allSatisfy { $0.keptHeads.count == 2 && $0.keptChannels.count == 64 })
        // Compensated by default: FLAP, and SEAP's own scores (wifv, wifn); not WandA or random.
        #expect((mask.layers[0].outputBiasShift != nil) == [.flap, .wifv, .wifn].contains(method))
        let pruned = try StructuredPruning.prune(model, mask: mask)
        #expect(try logitsTrace(pruned).allSatisfy(\.isFinite))
    }

    @Test func keepingHeadsLeavesAttentionWhole() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let stats = try SEAPProfiler.collect(model: model, sequences: [[1, 2, 3, 4, 5, 6], [9, 8, 7]])
        var profile = SEAPProfile(spec: model.spec)
        profile.tasks = ["t": stats]
        let norms = try WeightNorms(model)
        let heads = try SEAPMasks.make(method: .wifv, task: "t", sparsity: 0.5, schedule: .uniform, profile: profile,
                                       model: model, norms: norms)
        let channels = try SEAPMasks.make(method: .wifv, task: "t", sparsity: 0.5, schedule: .uniform, profile: profile,
                                          model: model, norms: norms, heads: .keep)
        #expect(heads.prunedFractions.heads > 0)
        #expect(channels.prunedFractions.heads == 0 && channels.headPruning == .keep)
        #expect(channels.layers.map(\.keptChannels) == heads.layers.map(\.keptChannels))
        let decoded = try JSONDecoder().decode(SEAPMask.self, from: JSONEncoder().encode(channels))
        #expect(decoded == channels)
        let pruned = try StructuredPruning.prune(model, mask: channels)
        #expect(pruned.weightBytes.backbone < model.weightBytes.backbone)
        #expect(pruned.weightBytes.backbone > (try StructuredPruning.prune(model, mask: heads)).weightBytes.backbone)
    }

    @Test func wifvKeepsTheHighestFluctuationChannels() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let stats = try SEAPProfiler.collect(model: model, sequences: [[1, 2, 3, 4, 5, 6, 100, 200]])
        let scores = try ChannelScore(.wifv).scores(model: model, stats: stats)
        var profile = SEAPProfile(spec: model.spec)
        profile.tasks = ["t": stats]
        let mask = try SEAPMasks.make(method: .wifv, task: "t", sparsity: 0.25, schedule: .uniform, profile: profile,
                                      model: model, norms: try WeightNorms(model))
        for l in 0..<2 {
            let kept = Set(mask.layers[l].keptChannels)
            let minKept = kept.map { scores.channels[l][$0] }.min()!
            let maxPruned = (0..<128).filter { !kept.contains($0) }.map { scores.channels[l][$0] }.max()!
            #expect(minKept >= maxPruned)
        }
    }

    @Test func genericMaskWeightsWikiTextThree() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let a = try SEAPProfiler.collect(model: model, sequences: [[1, 2, 3, 4, 5, 6]])
        let b = try SEAPProfiler.collect(model: model, sequences: [[300, 301, 7, 90]])
        var profile = SEAPProfile(spec: model.spec)
        profile.tasks = ["wikitext2": a, "t": b]
        let norms = try WeightNorms(model)
        let generic = try SEAPMasks.make(method: .wifv, task: "generic", sparsity: 0.5, schedule: .uniform, profile: profile,
                                         model: model, norms: norms)
        let sa = try ChannelScore(.wifv).scores(norms: norms, stats: a, headDim: 16)
        let sb = try ChannelScore(.wifv).scores(norms: norms, stats: b, headDim: 16)
        let combined = LayerScores.weightedSum([(3, sa), (2, sb)])
        #expect(generic.layers[0].keptChannels == SEAPMask.keep(combined.channels[0], pruning: 64))
        // SEAP compensates by default; the generic mask with its tasks' means, weighted 3 : 2.
        guard case .dense(let mlp) = model.layers[0].feedForward else { Issue.record("a dense layer"); return }
        let mean = zip(try a.require(.downInput, layer: 0).mean, try b.require(.downInput, layer: 0).mean).map { 0.6 * $0 + 0.4 * $1 }
        let expected = SEAPMask.biasShift(mlp.down.weight, means: mean, kept: Set(generic.layers[0].keptChannels))
        let shift = try #require(generic.layers[0].downBiasShift)
        #expect(zip(shift, expected).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) })
        let plain = try SEAPMasks.make(method: .wifv, task: "generic", sparsity: 0.5, schedule: .uniform, profile: profile,
                                       model: model, norms: norms, biasCompensation: false)
        #expect(plain.layers[0].downBiasShift == nil && plain.layers[0].outputBiasShift == nil)
        #expect(plain.layers[0].keptChannels == generic.layers[0].keptChannels)
    }
}

@Suite struct QuantizedRowTests {
    /// Every column is cut out of its block (even columns of a Q4_1 matrix): each storage gives
    /// its type, f32 the exact values, and Q8_0 a smaller error than requantizing to Q4_1.
    @Test func cutColumnsAreStoredAsAsked() throws {
        var rng = TestRandom(seed: 9)
        let q = Tensor.owned(rng.floats(8 * 128), shape: [8, 128]).converted(to: .q4_1)
        let kept = (0..<128).filter { $0 % 2 == 0 }
        let full = q.toFloatArray()
        let exact = (0..<8).flatMap { r in kept.map { full[r * 128 + $0] } }
        func maxError(_ t: Tensor) -> Float { zip(t.toFloatArray(), exact).map { abs($0 - $1) }.max()! }
        let types: [(PrunedStorage, DType)] = [(.requantize, .q4_1), (.q8_0, .q8_0), (.float16, .float16), (.float32, .float32)]
        var errors: [PrunedStorage: Float] = [:]
        for (storage, dtype) in types {
            let t = try StructuredPruning.gatherColumns(q, kept, storage: storage)
            #expect(t.dtype == dtype && t.shape == [8, 64], "\(storage)")
            errors[storage] = maxError(t)
        }
        #expect(errors[.float32] == 0)
        #expect(errors[.q8_0]! < errors[.requantize]! / 4, "\(errors)")
        #expect(errors[.requantize]! > 0)
    }

    @Test func quantizedRowsAreGatheredWhole() {
        var rng = TestRandom(seed: 8)
        let plain = Tensor.owned(rng.floats(4 * 64), shape: [4, 64])
        let q = plain.converted(to: .q4_1)
        let rows = gatherRows(q, [3, 1])
        #expect(rows.dtype == .q4_1 && rows.shape == [2, 64])
        let full = q.toFloatArray(), part = rows.toFloatArray()
        #expect(Array(part[0..<64]) == Array(full[192..<256]))
        #expect(Array(part[64..<128]) == Array(full[64..<128]))
    }
}
