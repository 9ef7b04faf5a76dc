import Foundation
import Models
import SEAP
import Testing
import TestSupport

/// Naive two-pass population statistics of `[rows, channels]` values.
func naiveMoments(_ values: [Float], channels: Int) -> (mean: [Double], variance: [Double], meanSquare: [Double]) {
    let rows = values.count / channels
    var mean = [Double](repeating: 0, count: channels), variance = mean, square = mean
    for r in 0..<rows { for j in 0..<channels { mean[j] += Double(values[r * channels + j]) / Double(rows) } }
    for r in 0..<rows {
        for j in 0..<channels {
            let v = Double(values[r * channels + j])
            variance[j] += (v - mean[j]) * (v - mean[j]) / Double(rows)
            square[j] += v * v / Double(rows)
        }
    }
    return (mean, variance, square)
}

func maxAbsDifference(_ a: [Double], _ b: [Double]) -> Double {
    guard a.count == b.count else { return .infinity }
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}

@Suite struct ChannelMomentsTests {
    @Test(arguments: [[1], [1, 1, 1], [7, 1, 33], [100], [3, 0, 17, 2]])
    func streamedEqualsTwoPass(batches: [Int]) {
        var rng = TestRandom(seed: 11)
        let channels = 5
        var moments = ChannelMoments(channels: channels)
        var all: [Float] = []
        for rows in batches {
            // An offset far from zero: the naive one-pass E[x²] − mean² would lose digits here.
            let batch = (0..<(rows * channels)).map { _ in 1000 + rng.float() }
            all += batch
            batch.withUnsafeBufferPointer { moments.add($0.baseAddress!, rows: rows) }
        }
        let naive = naiveMoments(all, channels: channels)
        #expect(moments.count == all.count / channels)
        #expect(maxAbsDifference(moments.mean, naive.mean) < 1e-9)
        #expect(maxAbsDifference(moments.variance, naive.variance) < 1e-9)
        #expect(maxAbsDifference(moments.meanSquare, naive.meanSquare) < 1e-6)
    }

    @Test func mergeOfHalvesEqualsWhole() {
        var rng = TestRandom(seed: 3)
        let values = rng.floats(40 * 3)
        var whole = ChannelMoments(channels: 3), a = ChannelMoments(channels: 3), b = ChannelMoments(channels: 3)
        values.withUnsafeBufferPointer { p in
            whole.add(p.baseAddress!, rows: 40)
            a.add(p.baseAddress!, rows: 13)
            b.add(p.baseAddress! + 13 * 3, rows: 27)
        }
        a.merge(b)
        #expect(a.count == whole.count)
        #expect(maxAbsDifference(a.mean, whole.mean) < 1e-12)
        #expect(maxAbsDifference(a.variance, whole.variance) < 1e-12)
    }

    @Test func emptyHasZeroVariance() {
        let m = ChannelMoments(channels: 2)
        #expect(m.variance == [0, 0])
        #expect(m.count == 0)
    }
}

/// `Tests/Fixtures/seap/llama_stats.json` (scripts/make_seap_fixture.py, transformers float32).
struct TorchStats: Decodable {
    struct Site: Decodable {
        let count: Int
        let mean: [Double]
        let variance: [Double]
        let mean_square: [Double]
        let wifv: [Double]
        let wifv_heads: [Double]?
    }
    struct Layer: Decodable {
        let o_proj_in: Site
        let down_proj_in: Site
    }
    let sequences: [[Int]]
    let layers: [Layer]
}

/// Relative to the largest reference magnitude (the statistics of a float32 forward pass,
/// summed in another order than PyTorch's: observed ~1e-6).
func relativeError(_ actual: [Double], _ expected: [Double]) -> Double {
    guard actual.count == expected.count, !actual.contains(where: \.isNaN) else { return .infinity }
    let scale = max(expected.map(abs).max() ?? 0, 1e-30)
    return maxAbsDifference(actual, expected) / scale
}

@Suite struct ActivationStatsTests {
    static let tolerance = 1e-4

    @Test func matchesTransformersHooksOnTinyLlama() throws {
        let reference = try Fixtures.json(TorchStats.self, "seap/llama_stats.json")
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let stats = try SEAPProfiler.collect(model: model, sequences: reference.sequences)
        let norms = try WeightNorms(model)
        let wifv = try ChannelScore(.wifv).scores(norms: norms, stats: stats, headDim: model.spec.headDim)
        for (l, layer) in reference.layers.enumerated() {
            for (site, ref) in [(ActivationSite.attentionOutputInput, layer.o_proj_in), (.downInput, layer.down_proj_in)] {
                let m = try stats.require(site, layer: l)
                #expect(m.count == ref.count)
                #expect(relativeError(m.mean, ref.mean) < Self.tolerance, "layer \(l) \(site) mean")
                #expect(relativeError(m.variance, ref.variance) < Self.tolerance, "layer \(l) \(site) variance")
                #expect(relativeError(m.meanSquare, ref.mean_square) < Self.tolerance, "layer \(l) \(site) E[x²]")
            }
            #expect(relativeError(wifv.channels[l], layer.down_proj_in.wifv) < Self.tolerance)
            #expect(relativeError(wifv.heads[l], try #require(layer.o_proj_in.wifv_heads)) < Self.tolerance)
        }
    }

    @Test func layerwiseAndPerSequenceForwardAgree() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let sequences = [[1, 5, 9, 200], [7, 7, 3]]
        let layerwise = try SEAPProfiler.collect(model: model, sequences: sequences)
        let perSequence = ActivationStats()
        model.observer = perSequence
        defer { model.observer = nil }
        for s in sequences { try model.forward(s, cache: model.makeCache(), logits: .none) }
        for l in 0..<model.spec.layerCount {
            for site in [ActivationSite.attentionOutputInput, .downInput] {
                let a = try layerwise.require(site, layer: l), b = try perSequence.require(site, layer: l)
                #expect(relativeError(a.variance, b.variance) < 1e-6)
            }
        }
    }

    /// The trace keeps what the statistics summarise: same rows, same moments.
    @Test func traceHoldsTheRowsTheStatisticsSee() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let tokens = [1, 5, 9, 200, 7]
        let trace = try ActivationTrace.record(model: model, tokens: tokens)
        let stats = try SEAPProfiler.collect(model: model, sequences: [tokens], sites: ActivationSite.allCases)
        #expect(model.observer == nil)
        for l in 0..<model.spec.layerCount {
            for site in ActivationSite.allCases {
                let values = try #require(trace.values[l]?[site]), width = try #require(trace.widths[l]?[site])
                #expect(values.count == tokens.count * width)
                var m = ChannelMoments(channels: width)
                values.withUnsafeBufferPointer { m.add($0.baseAddress!, rows: tokens.count) }
                #expect(relativeError(m.mean, try stats.require(site, layer: l).mean) < 1e-12, "layer \(l) \(site)")
            }
        }
    }

    @Test func roundTripsThroughJSON() throws {
        let model = try ModelLoader.load(Fixtures.url("models/llama")).model
        let stats = try SEAPProfiler.collect(model: model, sequences: [[1, 2, 3]])
        let decoded = try JSONDecoder().decode(ActivationStats.self, from: JSONEncoder().encode(stats))
        #expect(decoded.moments == stats.moments)
    }

    @Test func missingLayerIsAnError() {
        #expect(throws: SEAPError.self) { try ActivationStats().require(.downInput, layer: 0) }
    }
}
