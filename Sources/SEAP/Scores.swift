import Foundation
import Kernels
import Models

/// Per input column of a projection weight `W [out, in]`: the squared L2 norm `Σ_i W_ij²` and the
/// L1 norm `Σ_i |W_ij|` (METHODS §6.1), from the stored (possibly quantized) values.
public struct ColumnNorms: Sendable, Equatable {
    public var squaredL2: [Double]
    public var l1: [Double]

    public init(squaredL2: [Double], l1: [Double]) {
        self.squaredL2 = squaredL2
        self.l1 = l1
    }

    /// Column norms of `weight` (`[out, in]`), dequantizing one row at a time.
    public init(_ weight: Tensor) {
        let rows = weight.shape[0], cols = weight.rowLength
        var sq = [Double](repeating: 0, count: cols)
        var l1 = [Double](repeating: 0, count: cols)
        var row = [Float](repeating: 0, count: cols)
        for r in 0..<rows {
            row.withUnsafeMutableBufferPointer { convertToFloat(weight, offset: r * cols, into: $0.baseAddress!, count: cols) }
            for j in 0..<cols {
                let v = Double(row[j])
                sq[j] += v * v
                l1[j] += abs(v)
            }
        }
        self.init(squaredL2: sq, l1: l1)
    }
}

/// The importance scores of SEAP and its baselines (METHODS §6.2), one name each.
public enum ScoreMethod: String, Sendable, CaseIterable, Codable {
    /// SEAP's default `s_F`: `Var[X_j] · ‖W_:,j‖²` (activation fluctuation × squared column norm).
    case wifv
    /// The official code's WIFN: `sqrt(E[X_j²]) · ‖W_:,j‖²`.
    case wifn
    /// Structured WandA (`s_W`): `‖X_j‖₂ · Σ_i |W_ij|`, with `‖X_j‖₂ = sqrt(n · E[X_j²])`.
    case wanda
    /// FLAP's fluctuation metric (the WIFV formula) with FLAP's bias compensation; calibrated on
    /// generic text, not the task (the baseline, `SEAPProfile.baselineTask`).
    case flap
    /// Seeded uniform random scores.
    case random

    /// Whether the baseline is task-agnostic (calibrated on generic text rather than the task).
    public var isTaskAgnostic: Bool { self == .wanda || self == .flap || self == .random }

    /// Whether pruning adds FLAP's bias compensation by default: FLAP by definition, and SEAP's
    /// own scores, where it lowered perplexity on validation text at 20% and 50% (docs/SEAP.md,
    /// "Bias compensation"). WandA and random stay as their definitions have them.
    public var compensatesBias: Bool { self == .flap || self == .wifv || self == .wifn }
}

/// An importance score for the input channels of one projection: one value per channel, higher
/// is more important. Heads score as the mean of their channels (`headScores`).
public protocol ImportanceScore: Sendable {
    var method: ScoreMethod { get }
    /// - Parameters:
    ///   - moments: the projection input's statistics.
    ///   - columns: the projection weight's column norms.
    ///   - stream: which projection (seeds `random` differently per layer and site).
    func channelScores(moments: ChannelMoments, columns: ColumnNorms, stream: UInt64) -> [Double]
}

extension ImportanceScore {
    /// Per head, the mean of its `headDim` channel scores (METHODS §6.2: mean, not sum; same ranking).
    public func headScores(moments: ChannelMoments, columns: ColumnNorms, headDim: Int, stream: UInt64) -> [Double] {
        let s = channelScores(moments: moments, columns: columns, stream: stream)
        return stride(from: 0, to: s.count, by: headDim).map { start in
            s[start..<min(s.count, start + headDim)].reduce(0, +) / Double(headDim)
        }
    }
}

/// The five scores behind `ImportanceScore`.
public struct ChannelScore: ImportanceScore {
    public let method: ScoreMethod
    /// Seed of `random`.
    public let seed: UInt64

    public init(_ method: ScoreMethod, seed: UInt64 = 42) {
        self.method = method
        self.seed = seed
    }

    public func channelScores(moments: ChannelMoments, columns: ColumnNorms, stream: UInt64) -> [Double] {
        precondition(moments.channels == columns.squaredL2.count, "statistics and weight columns disagree")
        switch method {
        case .wifv, .flap:
            return zip(moments.variance, columns.squaredL2).map { $0 * $1 }
        case .wifn:
            return zip(moments.meanSquare, columns.squaredL2).map { $0.squareRoot() * $1 }
        case .wanda:
            let n = Double(moments.count)
            return zip(moments.meanSquare, columns.l1).map { (n * $0).squareRoot() * $1 }
        case .random:
            var rng = SplitMix64(seed: seed &+ stream &* 0x9E37_79B9_7F4A_7C15)
            return (0..<moments.channels).map { _ in rng.nextUnit() }
        }
    }
}

/// Per-layer head and channel scores of one task for one score.
public struct LayerScores: Sendable, Equatable {
    /// `[layers][heads]`: query heads in checkpoint order.
    public var heads: [[Double]]
    /// `[layers][intermediate]`.
    public var channels: [[Double]]

    public init(heads: [[Double]], channels: [[Double]]) {
        self.heads = heads
        self.channels = channels
    }

    /// `Σ weight_i · scores_i` (the generic mask's combination, METHODS §6.5).
    public static func weightedSum(_ parts: [(Double, LayerScores)]) -> LayerScores {
        precondition(!parts.isEmpty, "nothing to combine")
        var out = parts[0].1
        for l in out.heads.indices { out.heads[l] = out.heads[l].map { _ in 0 } }
        for l in out.channels.indices { out.channels[l] = out.channels[l].map { _ in 0 } }
        for (w, s) in parts {
            for l in out.heads.indices { for h in out.heads[l].indices { out.heads[l][h] += w * s.heads[l][h] } }
            for l in out.channels.indices { for j in out.channels[l].indices { out.channels[l][j] += w * s.channels[l][j] } }
        }
        return out
    }
}

extension ChannelScore {
    /// Scores every layer of a dense grouped-attention model from `stats`.
    /// - Throws: `SEAPError.unsupported` for MoE or latent-attention layers,
    ///   `.missingStatistics` when a layer's o_proj or down_proj input was not recorded.
    public func scores(model: DecoderModel, stats: ActivationStats) throws -> LayerScores {
        let norms = try WeightNorms(model)
        return try scores(norms: norms, stats: stats, headDim: model.spec.headDim)
    }

    /// As `scores(model:stats:)` with the column norms computed once (`WeightNorms`).
    public func scores(norms: WeightNorms, stats: ActivationStats, headDim: Int) throws -> LayerScores {
        var heads: [[Double]] = [], channels: [[Double]] = []
        for l in norms.output.indices {
            let o = try stats.require(.attentionOutputInput, layer: l)
            let d = try stats.require(.downInput, layer: l)
            guard o.channels == norms.output[l].squaredL2.count, d.channels == norms.down[l].squaredL2.count else {
                throw SEAPError.invalidFile("layer \(l): statistics of \(o.channels)/\(d.channels) channels for a model of "
                    + "\(norms.output[l].squaredL2.count)/\(norms.down[l].squaredL2.count)")
            }
            heads.append(headScores(moments: o, columns: norms.output[l], headDim: headDim, stream: UInt64(2 * l)))
            channels.append(channelScores(moments: d, columns: norms.down[l], stream: UInt64(2 * l + 1)))
        }
        return LayerScores(heads: heads, channels: channels)
    }
}

/// Column norms of every layer's o_proj and down_proj (computed once per model).
public struct WeightNorms: Sendable {
    public var output: [ColumnNorms]
    public var down: [ColumnNorms]

    /// - Throws: `SEAPError.unsupported` for a model with MoE or latent-attention layers.
    public init(_ model: DecoderModel) throws {
        var output: [ColumnNorms] = [], down: [ColumnNorms] = []
        for (l, layer) in model.layers.enumerated() {
            let (attention, mlp) = try SEAPModelCheck.denseParts(layer, index: l)
            output.append(ColumnNorms(attention.o.weight))
            down.append(ColumnNorms(mlp.down.weight))
        }
        self.output = output
        self.down = down
    }
}

/// What SEAP needs of a model: grouped attention and a dense MLP in every layer.
public enum SEAPModelCheck {
    /// Layer `index`'s attention and MLP.
    /// - Throws: `SEAPError.unsupported` for latent attention or a MoE block.
    public static func denseParts(_ layer: DecoderLayer, index: Int) throws -> (Attention, GatedMLP) {
        guard case .grouped(let attention) = layer.attention else {
            throw SEAPError.unsupported("layer \(index) uses latent attention; SEAP prunes grouped-query attention")
        }
        guard case .dense(let mlp) = layer.feedForward else {
            throw SEAPError.unsupported("layer \(index) is a MoE block; SEAP prunes dense models (use PreMoe for MoE)")
        }
        return (attention, mlp)
    }
}
