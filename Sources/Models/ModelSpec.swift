import Foundation

/// The architecture-independent description of a decoder-only transformer that the shared
/// forward pass runs. Every architecture's configuration struct produces one of these, so the
/// forward pass never knows which family or file format a model came from.
public struct DecoderSpec: Sendable {
    /// The checkpoint's `model_type` (or GGUF architecture), for display and fingerprints.
    public var modelType: String
    public var hiddenSize: Int
    public var layerCount: Int
    public var vocabularySize: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var rope: RoPESpec
    /// Multiplier on `q·k`; `1/sqrt(headDim)` for every family here.
    public var attentionScale: Float
    /// q/k/v projections carry biases (Qwen2, Llama with `attention_bias`).
    public var qkvBias: Bool
    /// The output projection carries a bias (Llama with `attention_bias`).
    public var outputBias: Bool
    public var qkNorm: QKNorm
    /// OLMoE's optional clamp of q, k and v to `[-clip, clip]`.
    public var clipQKV: Float?
    /// Largest context the checkpoint supports (`max_position_embeddings`).
    public var maxPositions: Int
    /// Sliding-window size if the model uses one; longer contexts are refused.
    public var slidingWindow: Int?
    public var tieWordEmbeddings: Bool
    /// Per layer: dense MLP or MoE block.
    public var feedForward: [FeedForwardSpec]

    /// Indices of the layers whose feed-forward is a MoE block.
    public var moeLayers: [Int] {
        feedForward.indices.filter { if case .moe = feedForward[$0] { return true } else { return false } }
    }

    /// The MoE parameters of layer `layer`, or nil for a dense layer.
    public func moe(_ layer: Int) -> MoESpec? {
        if case .moe(let spec) = feedForward[layer] { return spec }
        return nil
    }
}

/// How q and k are normalised before RoPE.
public enum QKNorm: Sendable, Equatable {
    case none
    /// RMSNorm of each head over `headDim` (Qwen3, Qwen3-MoE).
    case perHead
    /// RMSNorm over the whole projection, `heads · headDim` (OLMoE).
    case wholeProjection
}

/// Rotary embedding parameters after applying the checkpoint's scaling rule.
public struct RoPESpec: Sendable {
    /// `rotaryDim / 2` inverse frequencies.
    public var invFreq: [Float]
    /// Dims of each head that rotate (the rest pass through).
    public var rotaryDim: Int
    /// Multiplier on cos/sin (YaRN's attention factor; 1 otherwise).
    public var attentionScaling: Float
    public var style: RoPEStyleSpec
}

/// Pair layout of rotary dims (mirrors `Kernels.RoPEStyle` without importing it in public API users).
public enum RoPEStyleSpec: Sendable { case halfSplit, interleaved }

/// The feed-forward part of one layer.
public enum FeedForwardSpec: Sendable {
    /// A SwiGLU MLP with this intermediate size.
    case dense(intermediateSize: Int)
    case moe(MoESpec)
}

/// How a router turns logits into chosen experts and weights.
public enum RoutingFunction: String, Sendable, Codable {
    /// softmax over all experts, top-k, optionally renormalised (Qwen, Mixtral, OLMoE).
    case softmax
}

/// One MoE block's shape and routing rule.
public struct MoESpec: Sendable {
    /// Routed experts in the checkpoint.
    public var expertCount: Int
    /// Experts chosen per token.
    public var topK: Int
    /// Intermediate size of each routed expert.
    public var expertIntermediateSize: Int
    /// Renormalise the chosen experts' weights to sum to 1.
    public var normTopKProb: Bool
    public var routing: RoutingFunction
    /// Intermediate size of the always-on shared expert(s), if any.
    public var sharedIntermediateSize: Int?
    /// The shared expert's output is scaled by `sigmoid(x · w)` (Qwen2-MoE).
    public var sharedExpertGate: Bool
}
