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
    /// Per layer, a sliding window attended inside the kernel, 0 for full attention (gpt-oss's
    /// `layer_types`); such models run any context up to `maxPositions`. nil: none.
    public var layerWindows: [Int]? = nil
    /// Attention has per-head sink logits (`self_attn.sinks`, gpt-oss).
    public var attentionSinks: Bool = false
    /// Per layer, the query head count when layers differ (a pruned GGUF's
    /// `attention.head_count` array); each is at most `headCount`. nil: every layer has `headCount`.
    public var layerHeadCounts: [Int]? = nil
    /// Per layer, the KV head count when layers differ; each is at most `kvHeadCount` and divides
    /// the layer's query heads. nil: every layer has `kvHeadCount`.
    public var layerKVHeadCounts: [Int]? = nil
    /// The MLP down projection carries a bias (a pruned GGUF's bias compensation,
    /// `blk.L.ffn_down.bias`). Dense layers only.
    public var downBias: Bool = false
    public var tieWordEmbeddings: Bool
    /// Per layer: dense MLP or MoE block.
    public var feedForward: [FeedForwardSpec]
    /// Multi-head latent attention (DeepSeek-V2/V3) instead of grouped-query attention. With it,
    /// `headDim` is the q/k head width (`nope + rope`), `kvHeadCount == headCount`, and `rope`
    /// covers the `rope` dims only.
    public var mla: MLASpec? = nil

    /// Floats per position of one layer's cached keys: `kvHeads · headDim`, or for MLA the
    /// expanded per-head keys `heads · (nope + rope)`.
    public var cacheKeyWidth: Int { mla.map { headCount * $0.qkHeadDim } ?? kvHeadCount * headDim }
    /// Floats per position of one layer's cached values: `kvHeads · headDim`, or for MLA
    /// `heads · vHeadDim`.
    public var cacheValueWidth: Int { mla.map { headCount * $0.vHeadDim } ?? kvHeadCount * headDim }

    /// Indices of the layers whose feed-forward is a MoE block.
    public var moeLayers: [Int] {
        feedForward.indices.filter { if case .moe = feedForward[$0] { return true } else { return false } }
    }

    /// The MoE parameters of layer `layer`, or nil for a dense layer or an index outside the
    /// model (a tensor name like DeepSeek's `model.layers.61.*` multi-token-prediction layer).
    public func moe(_ layer: Int) -> MoESpec? {
        guard feedForward.indices.contains(layer) else { return nil }
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

/// Multi-head latent attention shapes (DeepSeek-V2/V3, transformers' `DeepseekV3Attention`).
public struct MLASpec: Sendable, Equatable {
    /// Rank of the query compression (`q_a_proj` → `q_a_layernorm` → `q_b_proj`); nil means a
    /// plain `q_proj` (DeepSeek-V2-Lite, the V2 fixture).
    public var qLoRARank: Int?
    /// Width of the compressed key/value latent (`kv_lora_rank`).
    public var kvLoRARank: Int
    /// Per-head q/k dims without position (`qk_nope_head_dim`).
    public var qkNopeHeadDim: Int
    /// Per-head q/k dims with RoPE (`qk_rope_head_dim`); the key part is shared by all heads.
    public var qkRopeHeadDim: Int
    /// Per-head value dims (`v_head_dim`).
    public var vHeadDim: Int
    /// q_a_proj, kv_a_proj_with_mqa and o_proj carry biases (`attention_bias`).
    public var attentionBias: Bool

    /// `nope + rope`: the width of one query or key head.
    public var qkHeadDim: Int { qkNopeHeadDim + qkRopeHeadDim }
}

/// How a router turns logits into chosen experts and weights (see `Routing`).
public enum RoutingFunction: String, Sendable, Codable {
    /// softmax over all experts, top-k, optionally renormalised (Qwen, Mixtral, OLMoE, DeepSeek-V2).
    case softmax
    /// sigmoid per expert, top-k, optionally renormalised (DeepSeek-V3/R1).
    case sigmoid
    /// top-k of the raw logits, then softmax over the k chosen (gpt-oss's `GptOssTopKRouter`).
    case topKSoftmax
}

/// Group-limited selection: the experts are split into `groupCount` equal runs of consecutive
/// checkpoint indices, only the `keptGroups` best groups compete, then top-k inside them.
public struct GroupLimit: Sendable, Equatable {
    /// How a group is ranked.
    public enum Ranking: String, Sendable {
        /// Its largest score (DeepSeek-V2 `topk_method: group_limited_greedy`).
        case max
        /// The sum of its two largest selection scores (DeepSeek-V3 `noaux_tc`).
        case topTwoSum
    }
    public var groupCount: Int
    public var keptGroups: Int
    public var ranking: Ranking

    public init(groupCount: Int, keptGroups: Int, ranking: Ranking) {
        self.groupCount = groupCount
        self.keptGroups = keptGroups
        self.ranking = ranking
    }
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
    /// Multiplier on the routed experts' weights (`routed_scaling_factor`; DeepSeek).
    public var routedScalingFactor: Float = 1
    /// Group-limited selection over the checkpoint's experts (DeepSeek). Dropped once a block
    /// holds fewer experts than the checkpoint (METHODS §8.5).
    public var groupLimit: GroupLimit? = nil
    /// The router has a per-expert bias added to the scores for selection only
    /// (`gate.e_score_correction_bias`, DeepSeek-V3); the weights use the unbiased scores.
    public var selectionBias: Bool = false
    /// How each routed expert combines gate and up (gpt-oss clamps them).
    public var expertActivation: GatedActivation = .silu
    /// The router and the routed experts carry biases (gpt-oss: `router.bias`,
    /// `experts.gate_up_proj_bias`, `experts.down_proj_bias`).
    public var biases: Bool = false
}
