import Foundation
import Kernels
import Models

/// What one layer keeps: query heads and FFN channels by checkpoint index, plus FLAP's bias
/// compensation when it was asked for.
public struct LayerMask: Codable, Sendable, Equatable {
    /// Query heads kept, ascending checkpoint indices.
    public var keptHeads: [Int]
    /// FFN intermediate channels kept, ascending.
    public var keptChannels: [Int]
    /// `W_o[:, R] · μ_R` over the pruned o_proj input channels `R`, `[hidden]`, added to the
    /// output projection's bias (created when the family has none); nil without compensation.
    public var outputBiasShift: [Float]?
    /// `W_down[:, R] · μ_R` over the pruned channels, `[hidden]`, added to down_proj's bias.
    public var downBiasShift: [Float]?

    enum CodingKeys: String, CodingKey {
        case keptHeads = "kept_heads"
        case keptChannels = "kept_channels"
        case outputBiasShift = "output_bias_shift"
        case downBiasShift = "down_bias_shift"
    }

    public init(keptHeads: [Int], keptChannels: [Int], outputBiasShift: [Float]? = nil, downBiasShift: [Float]? = nil) {
        self.keptHeads = keptHeads
        self.keptChannels = keptChannels
        self.outputBiasShift = outputBiasShift
        self.downBiasShift = downBiasShift
    }

    /// KV heads kept under SEAP's GQA rule: a KV head stays while any of its query heads does.
    public func keptKVHeads(groupSize: Int) -> [Int] {
        Array(Set(keptHeads.map { $0 / groupSize })).sorted()
    }

    /// Kept query heads per kept KV head, in order (`Attention.queryGroups`).
    public func queryGroups(groupSize: Int) -> [Int] {
        keptKVHeads(groupSize: groupSize).map { g in keptHeads.filter { $0 / groupSize == g }.count }
    }
}

/// A SEAP pruning mask: per layer, the heads and channels a task (or the generic mask) keeps.
/// Plain JSON, versioned; applies to any load of the same model (HF or GGUF).
public struct SEAPMask: Codable, Sendable, Equatable {
    public static let currentVersion = 1
    public var version = currentVersion
    /// Task the statistics came from, or `generic`.
    public var task: String
    public var score: ScoreMethod
    public var schedule: SparsitySchedule
    /// Target fraction of heads and channels pruned (over the schedule's layers); of the FFN
    /// channels alone when `headPruning` is `.keep`.
    public var sparsity: Double
    /// What the mask did to attention heads (absent in files written before the option: `.prune`).
    public var headPruning: HeadPruning?
    /// The unpruned model's shape, checked when applied.
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var intermediateSizes: [Int]
    public var layers: [LayerMask]

    enum CodingKeys: String, CodingKey {
        case version, task, score, schedule, sparsity, layers
        case headCount = "head_count"
        case kvHeadCount = "kv_head_count"
        case headDim = "head_dim"
        case intermediateSizes = "intermediate_sizes"
        case headPruning = "head_pruning"
    }

    public init(task: String, score: ScoreMethod, schedule: SparsitySchedule, sparsity: Double, headCount: Int,
                kvHeadCount: Int, headDim: Int, intermediateSizes: [Int], layers: [LayerMask], headPruning: HeadPruning? = nil) {
        self.task = task
        self.score = score
        self.schedule = schedule
        self.sparsity = sparsity
        self.headPruning = headPruning
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDim = headDim
        self.intermediateSizes = intermediateSizes
        self.layers = layers
    }

    /// Query heads per KV head in the unpruned model.
    public var groupSize: Int { headCount / max(1, kvHeadCount) }

    /// Fraction of heads and of channels pruned over the whole model.
    public var prunedFractions: (heads: Double, channels: Double) {
        let heads = layers.reduce(0) { $0 + $1.keptHeads.count }
        let channels = layers.reduce(0) { $0 + $1.keptChannels.count }
        return (1 - Double(heads) / Double(headCount * layers.count),
                1 - Double(channels) / Double(intermediateSizes.reduce(0, +)))
    }

    /// Builds a mask: the schedule's counts, then in each layer the lowest-scoring heads and
    /// channels pruned (ties: the higher index goes first), at least one of each kept.
    /// - Parameters:
    ///   - scores: per-layer scores (a task's, or a combination for the generic mask).
    ///   - heads: `.keep` leaves attention whole (the sparsity is then the FFN channels').
    ///   - channelMultiple: kept FFN widths are rounded to a multiple of this (the quantization
    ///     block of down_proj, so its cut rows requantize to whole blocks and llama.cpp accepts them).
    ///   - spec: the unpruned model's spec.
    ///   - biasMeans: o_proj and down_proj input means per layer, for FLAP's bias compensation
    ///     (nil: none); `model` must then be given for the weights.
    /// - Throws: `SEAPError.invalidSetting` for a sparsity outside [0, 1), `.unsupported` for a
    ///   model SEAP cannot prune.
    public static func make(task: String, score: ScoreMethod, schedule: SparsitySchedule, sparsity: Double,
                            scores: LayerScores, spec: DecoderSpec, logistic: LogisticSchedule = LogisticSchedule(),
                            biasMeans: (output: [[Double]], down: [[Double]])? = nil, model: DecoderModel? = nil,
                            channelMultiple: Int = 1, heads: HeadPruning = .prune) throws -> SEAPMask {
        guard sparsity >= 0, sparsity < 1 else { throw SEAPError.invalidSetting("sparsity \(sparsity) is not in [0, 1)") }
        guard spec.mla == nil, spec.moeLayers.isEmpty else { throw SEAPError.unsupported("SEAP prunes dense grouped-attention models") }
        guard spec.qkNorm != .wholeProjection else {
            throw SEAPError.unsupported("q/k norms over the whole projection (OLMoE) cannot lose heads")
        }
        let counts = ScheduleAllocation.counts(schedule, sparsity: sparsity, scores: scores, headDim: spec.headDim, logistic: logistic,
                                               heads: heads)
        var layers: [LayerMask] = []
        for l in scores.heads.indices {
            let keptHeads = keep(scores.heads[l], pruning: counts[l].heads)
            let keptChannels = keep(scores.channels[l], pruning: roundedPruning(counts[l].channels, of: scores.channels[l].count,
                                                                                multiple: channelMultiple))
            var mask = LayerMask(keptHeads: keptHeads, keptChannels: keptChannels)
            if let biasMeans, let model {
                let (attention, mlp) = try SEAPModelCheck.denseParts(model.layers[l], index: l)
                let keptO = Set(keptHeads.flatMap { h in (h * spec.headDim)..<((h + 1) * spec.headDim) })
                mask.outputBiasShift = biasShift(attention.o.weight, means: biasMeans.output[l], kept: keptO)
                mask.downBiasShift = biasShift(mlp.down.weight, means: biasMeans.down[l], kept: Set(keptChannels))
            }
            layers.append(mask)
        }
        let sizes = spec.feedForward.map { ff -> Int in if case .dense(let i) = ff { return i } else { return 0 } }
        return SEAPMask(task: task, score: score, schedule: schedule, sparsity: sparsity, headCount: spec.headCount,
                        kvHeadCount: spec.kvHeadCount, headDim: spec.headDim, intermediateSizes: sizes, layers: layers,
                        headPruning: heads)
    }

    /// Channels to prune so that the kept width is a multiple of `multiple` (nearest, at least
    /// one multiple; unchanged when the full width is not a multiple itself).
    static func roundedPruning(_ pruned: Int, of width: Int, multiple: Int) -> Int {
        guard multiple > 1, width % multiple == 0, pruned > 0 else { return pruned }
        let kept = max(multiple, Int((Double(width - pruned) / Double(multiple)).rounded()) * multiple)
        return width - kept
    }

    /// Indices kept after pruning the `count` lowest of `scores`, ascending.
    static func keep(_ scores: [Double], pruning count: Int) -> [Int] {
        let order = scores.indices.sorted { (scores[$0], -$0) < (scores[$1], -$1) }
        return Array(order.dropFirst(count)).sorted()
    }

    /// `Σ_{j ∉ kept} W[:, j] · μ_j`, `[out]`.
    static func biasShift(_ weight: Tensor, means: [Double], kept: Set<Int>) -> [Float] {
        let rows = weight.shape[0], cols = weight.rowLength
        var row = [Float](repeating: 0, count: cols)
        var out = [Float](repeating: 0, count: rows)
        let pruned = (0..<cols).filter { !kept.contains($0) }
        for r in 0..<rows {
            row.withUnsafeMutableBufferPointer { convertToFloat(weight, offset: r * cols, into: $0.baseAddress!, count: cols) }
            var s = 0.0
            for j in pruned { s += Double(row[j]) * means[j] }
            out[r] = Float(s)
        }
        return out
    }

    /// Checks that the mask fits `spec` (same shape as the model it was made for).
    /// - Throws: `SEAPError.invalidFile` naming the first mismatch.
    public func check(against spec: DecoderSpec) throws {
        let sizes = spec.feedForward.map { ff -> Int in if case .dense(let i) = ff { return i } else { return 0 } }
        guard headCount == spec.headCount, kvHeadCount == spec.kvHeadCount, headDim == spec.headDim,
              intermediateSizes == sizes, layers.count == spec.layerCount
        else {
            throw SEAPError.invalidFile("the mask was made for heads \(headCount)/\(kvHeadCount)×\(headDim), "
                + "\(layers.count) layers; the model has \(spec.headCount)/\(spec.kvHeadCount)×\(spec.headDim), \(spec.layerCount)")
        }
        for (l, layer) in layers.enumerated() {
            guard !layer.keptHeads.isEmpty, !layer.keptChannels.isEmpty,
                  layer.keptHeads == Array(Set(layer.keptHeads)).sorted(), layer.keptChannels == Array(Set(layer.keptChannels)).sorted(),
                  layer.keptHeads.allSatisfy({ (0..<headCount).contains($0) }),
                  layer.keptChannels.allSatisfy({ (0..<intermediateSizes[l]).contains($0) })
            else {
                throw SEAPError.invalidFile("layer \(l): kept heads and channels must be non-empty, ascending, unique and in range")
            }
            for shift in [layer.outputBiasShift, layer.downBiasShift].compactMap({ $0 }) where shift.count != spec.hiddenSize {
                throw SEAPError.invalidFile("layer \(l): a bias shift of \(shift.count) values for hidden size \(spec.hiddenSize)")
            }
        }
    }

    /// Reads a mask file.
    /// - Throws: `SEAPError.invalidFile` with the decoding error.
    public static func read(_ url: URL) throws -> SEAPMask {
        do {
            let mask = try JSONDecoder().decode(SEAPMask.self, from: Data(contentsOf: url))
            guard mask.version == currentVersion else { throw SEAPError.invalidFile("\(url.path): version \(mask.version)") }
            return mask
        } catch let error as SEAPError {
            throw error
        } catch {
            throw SEAPError.invalidFile("\(url.path): \(error)")
        }
    }

    /// Writes the mask as JSON (atomically).
    public func write(to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(self).write(to: url, options: .atomic)
    }
}
