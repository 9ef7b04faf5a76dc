// Mirrors transformers' modeling_deepseek_v3.py and modeling_deepseek_v2.py (5.23): multi-head
// latent attention, dense first layers, MoE with `shared_experts`; V3 (and R1) route with
// sigmoid scores, a selection-only correction bias and group top-2 sums, V2 with softmax,
// optionally group-limited by each group's max. Both scale routed weights by
// `routed_scaling_factor`.
import Foundation

/// `config.json` of `deepseek_v2` and `deepseek_v3` checkpoints, with the defaults of
/// transformers' `DeepseekV2Config` / `DeepseekV3Config`.
public struct DeepSeekConfiguration: Decodable, Sendable {
    public var base: BaseConfiguration
    /// `n_routed_experts` (aliases `num_local_experts`, `num_experts`).
    public var expertCount: Int
    public var topK: Int
    public var moeIntermediateSize: Int
    /// `n_shared_experts`: one shared MLP of `moe_intermediate_size · n_shared_experts`.
    public var sharedExpertCount: Int
    /// `first_k_dense_replace`: layers before it use a dense MLP of `intermediate_size`.
    public var firstDenseLayers: Int
    public var routedScalingFactor: Double
    /// Read by V3 only: transformers' V2 router never renormalises.
    public var normTopKProb: Bool
    public var groupCount: Int?
    public var topKGroup: Int?
    /// V2: `greedy` or `group_limited_greedy`. V3 ignores it (`noaux_tc` is implied).
    public var topKMethod: String?
    /// Real checkpoints write it (`softmax` for V2, `sigmoid` for V3); transformers 5 saves omit it.
    public var scoringFunction: String?
    public var qLoRARank: Int?
    public var kvLoRARank: Int
    public var qkNopeHeadDim: Int
    public var qkRopeHeadDim: Int
    public var vHeadDim: Int
    /// V3: rotary pairs are `(2i, 2i+1)` (default); V2 always rotates adjacent pairs.
    public var ropeInterleave: Bool
    public var mlpBias: Bool
    /// Multi-token-prediction layers stored after the last decoder layer; not run, and their
    /// tensors are ignored (transformers ignores `model.layers.61.*` the same way).
    public var nextNPredictLayers: Int

    /// V3-style routing (sigmoid, correction bias, top-2-sum groups): DeepSeek-V3 and GLM-4.5.
    var isV3: Bool { base.modelType != "deepseek_v2" }

    enum CodingKeys: String, CodingKey {
        case nRoutedExperts = "n_routed_experts"
        case numLocalExperts = "num_local_experts"
        case numExperts = "num_experts"
        case topK = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case nSharedExperts = "n_shared_experts"
        case firstKDenseReplace = "first_k_dense_replace"
        case routedScalingFactor = "routed_scaling_factor"
        case normTopKProb = "norm_topk_prob"
        case nGroup = "n_group"
        case topKGroup = "topk_group"
        case topKMethod = "topk_method"
        case scoringFunction = "scoring_func"
        case qLoRARank = "q_lora_rank"
        case kvLoRARank = "kv_lora_rank"
        case qkNopeHeadDim = "qk_nope_head_dim"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case vHeadDim = "v_head_dim"
        case ropeInterleave = "rope_interleave"
        case mlpBias = "mlp_bias"
        case nextNPredictLayers = "num_nextn_predict_layers"
        case numMTPLayers = "num_mtp_layers"
    }

    public init(from decoder: Decoder) throws {
        base = try BaseConfiguration(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let v3 = base.modelType != "deepseek_v2"
        /// A key that may be absent (class default) or explicitly null (nil).
        func nullable(_ key: CodingKeys, default value: Int?) throws -> Int? {
            c.contains(key) ? try c.decodeIfPresent(Int.self, forKey: key) : value
        }
        expertCount = try c.decodeIfPresent(Int.self, forKey: .nRoutedExperts)
            ?? c.decodeIfPresent(Int.self, forKey: .numLocalExperts)
            ?? c.decodeIfPresent(Int.self, forKey: .numExperts) ?? (v3 ? 256 : 64)
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? (v3 ? 8 : 0)
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? (v3 ? 2048 : 1407)
        sharedExpertCount = try c.decodeIfPresent(Int.self, forKey: .nSharedExperts) ?? (v3 ? 1 : 2)
        firstDenseLayers = try c.decodeIfPresent(Int.self, forKey: .firstKDenseReplace) ?? (v3 ? 3 : 0)
        routedScalingFactor = try c.decodeIfPresent(Double.self, forKey: .routedScalingFactor) ?? (v3 ? 2.5 : 1)
        normTopKProb = try c.decodeIfPresent(Bool.self, forKey: .normTopKProb) ?? v3
        groupCount = try nullable(.nGroup, default: v3 ? 8 : nil)
        topKGroup = try nullable(.topKGroup, default: v3 ? 4 : nil)
        topKMethod = try c.decodeIfPresent(String.self, forKey: .topKMethod) ?? (v3 ? nil : "greedy")
        scoringFunction = try c.decodeIfPresent(String.self, forKey: .scoringFunction)
        qLoRARank = try nullable(.qLoRARank, default: 1536)
        kvLoRARank = try c.decodeIfPresent(Int.self, forKey: .kvLoRARank) ?? 512
        qkNopeHeadDim = try c.decodeIfPresent(Int.self, forKey: .qkNopeHeadDim) ?? 128
        qkRopeHeadDim = try c.decodeIfPresent(Int.self, forKey: .qkRopeHeadDim) ?? 64
        vHeadDim = try c.decodeIfPresent(Int.self, forKey: .vHeadDim) ?? 128
        ropeInterleave = v3 ? try c.decodeIfPresent(Bool.self, forKey: .ropeInterleave) ?? true : true
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        nextNPredictLayers = try c.decodeIfPresent(Int.self, forKey: .nextNPredictLayers)
            ?? c.decodeIfPresent(Int.self, forKey: .numMTPLayers) ?? 0
    }

    /// The MoE block of layers `firstDenseLayers...`.
    func moeSpec(file: String) throws -> MoESpec {
        try requirePositive(expertCount, "n_routed_experts", file: file)
        try requirePositive(moeIntermediateSize, "moe_intermediate_size", file: file)
        if topK <= 0 || topK > expertCount {
            throw ModelError.invalidConfig(field: "num_experts_per_tok", reason: "must be in 1...\(expertCount), got \(topK)", file: file)
        }
        if sharedExpertCount < 0 {
            throw ModelError.invalidConfig(field: "n_shared_experts", reason: "must not be negative", file: file)
        }
        let expected = isV3 ? "sigmoid" : "softmax"
        if let scoringFunction, scoringFunction != expected {
            throw ModelError.unsupportedFeature("scoring_func '\(scoringFunction)' for \(base.modelType) (only \(expected))", file: file)
        }
        var limit: GroupLimit?
        if isV3 {
            // transformers always applies the group limit; one group (or none) keeps every expert.
            if let groups = groupCount, groups > 1 {
                limit = try groupLimit(groups: groups, ranking: .topTwoSum, file: file)
            }
        } else {
            switch topKMethod ?? "greedy" {
            case "greedy":
                break
            case "group_limited_greedy":
                guard let groups = groupCount else {
                    throw ModelError.invalidConfig(field: "n_group", reason: "required for topk_method group_limited_greedy", file: file)
                }
                limit = try groupLimit(groups: groups, ranking: .max, file: file)
            case let other:
                throw ModelError.unsupportedFeature("topk_method '\(other)' for deepseek_v2 (greedy, group_limited_greedy)", file: file)
            }
        }
        return MoESpec(
            expertCount: expertCount, topK: topK, expertIntermediateSize: moeIntermediateSize,
            normTopKProb: isV3 && normTopKProb, routing: isV3 ? .sigmoid : .softmax,
            sharedIntermediateSize: sharedExpertCount > 0 ? moeIntermediateSize * sharedExpertCount : nil,
            sharedExpertGate: false, routedScalingFactor: Float(routedScalingFactor), groupLimit: limit,
            selectionBias: isV3)
    }

    private func groupLimit(groups: Int, ranking: GroupLimit.Ranking, file: String) throws -> GroupLimit {
        try requirePositive(groups, "n_group", file: file)
        if expertCount % groups != 0 {
            throw ModelError.invalidConfig(field: "n_group", reason: "\(groups) does not divide n_routed_experts \(expertCount)", file: file)
        }
        if ranking == .topTwoSum && expertCount / groups < 2 {
            throw ModelError.invalidConfig(field: "n_group", reason: "groups need at least 2 experts (ranked by their top-2 sum)", file: file)
        }
        guard let kept = topKGroup, kept >= 1, kept <= groups else {
            throw ModelError.invalidConfig(field: "topk_group", reason: "must be in 1...\(groups), got \(topKGroup.map(String.init) ?? "null")", file: file)
        }
        return GroupLimit(groupCount: groups, keptGroups: kept, ranking: ranking)
    }

    /// The softmax scale of MLA: `1/sqrt(nope + rope)`, times `mscale(factor, mscale_all_dim)²`
    /// when the RoPE type is not `default` and `mscale_all_dim` is set (transformers'
    /// `yarn_apply_mscale`).
    var attentionScale: Float {
        var scale = 1 / Double(qkNopeHeadDim + qkRopeHeadDim).squareRoot()
        if base.rope.type != "default", let all = base.rope.mscaleAllDim, all != 0 {
            let factor = base.rope.factor ?? 1
            let m = factor <= 1 ? 1 : 0.1 * all * log(factor) + 1
            scale *= m * m
        }
        return Float(scale)
    }

    /// The shared description of this model.
    func makeSpec(file: String) throws -> DecoderSpec {
        if mlpBias { throw ModelError.unsupportedFeature("mlp_bias = true", file: file) }
        try requirePositive(kvLoRARank, "kv_lora_rank", file: file)
        try requirePositive(qkRopeHeadDim, "qk_rope_head_dim", file: file)
        try requirePositive(vHeadDim, "v_head_dim", file: file)
        if qkNopeHeadDim < 0 {
            throw ModelError.invalidConfig(field: "qk_nope_head_dim", reason: "must not be negative", file: file)
        }
        if qkRopeHeadDim % 2 != 0 {
            throw ModelError.invalidConfig(field: "qk_rope_head_dim", reason: "must be even, got \(qkRopeHeadDim)", file: file)
        }
        if let qLoRARank { try requirePositive(qLoRARank, "q_lora_rank", file: file) }
        try checkRange(firstDenseLayers, "first_k_dense_replace", 0...ConfigLimits.layers, file: file)
        try checkRange(nextNPredictLayers, "num_nextn_predict_layers", 0...ConfigLimits.layers, file: file)
        let moe = try moeSpec(file: file)
        let feedForward: [FeedForwardSpec] = (0..<max(0, base.layerCount)).map { l in
            l < firstDenseLayers ? .dense(intermediateSize: base.intermediateSize) : .moe(moe)
        }
        if firstDenseLayers > 0 { try requirePositive(base.intermediateSize, "intermediate_size", file: file) }
        // RoPE covers the rope dims only (transformers sets head_dim = qk_rope_head_dim);
        // every head has its own keys, so kv heads = heads.
        var rotary = base
        rotary.headDim = qkRopeHeadDim
        rotary.kvHeadCount = base.headCount
        var spec = try rotary.makeSpec(file: file, qkvBias: false, outputBias: false, qkNorm: .none,
                                       slidingWindow: nil, feedForward: feedForward)
        spec.rope.style = ropeInterleave ? .interleaved : .halfSplit
        spec.headDim = qkNopeHeadDim + qkRopeHeadDim
        spec.attentionScale = attentionScale
        spec.mla = MLASpec(qLoRARank: qLoRARank, kvLoRARank: kvLoRARank, qkNopeHeadDim: qkNopeHeadDim,
                           qkRopeHeadDim: qkRopeHeadDim, vHeadDim: vHeadDim, attentionBias: base.attentionBias)
        return spec
    }

    static let layout: HFDecoderLayout = {
        var layout = HFDecoderLayout()
        layout.sharedExpert = "shared_experts"
        return layout
    }()
}

extension HFDecoderLayout {
    /// Binds layer `prefix`'s MLA tensors (`….self_attn.*`).
    func bindMLA(_ mla: MLASpec, spec: DecoderSpec, prefix a: String, binder: WeightBinder) -> MLAttention {
        let h = spec.hiddenSize
        let heads = spec.headCount
        func linear(_ name: String, out: Int, in inFeatures: Int, bias: Bool) -> Linear {
            Linear(weight: binder.tensor("\(a).\(name).weight", shape: [out, inFeatures]),
                   bias: bias ? binder.floats("\(a).\(name).bias", count: out) : nil)
        }
        let qWidth = heads * mla.qkHeadDim
        var q: Linear?, qA: Linear?, qANorm: [Float]?, qB: Linear?
        if let rank = mla.qLoRARank {
            qA = linear("q_a_proj", out: rank, in: h, bias: mla.attentionBias)
            qANorm = binder.floats("\(a).q_a_layernorm.weight", count: rank)
            qB = linear("q_b_proj", out: qWidth, in: rank, bias: false)
        } else {
            q = linear("q_proj", out: qWidth, in: h, bias: false)
        }
        return MLAttention(
            q: q, qA: qA, qANorm: qANorm, qB: qB,
            kvA: linear("kv_a_proj_with_mqa", out: mla.kvLoRARank + mla.qkRopeHeadDim, in: h, bias: mla.attentionBias),
            kvANorm: binder.floats("\(a).kv_a_layernorm.weight", count: mla.kvLoRARank),
            kvB: linear("kv_b_proj", out: heads * (mla.qkNopeHeadDim + mla.vHeadDim), in: mla.kvLoRARank, bias: false),
            o: linear("o_proj", out: h, in: heads * mla.vHeadDim, bias: mla.attentionBias))
    }
}

extension ModelRegistry {
    static let deepSeek: [Architecture] = ["deepseek_v2", "deepseek_v3"].map { type in
        Architecture(modelType: type) { data, file in
            let config = try JSONDecoder().decode(DeepSeekConfiguration.self, from: data)
            var layout = DeepSeekConfiguration.layout
            layout.extraLayerCount = config.nextNPredictLayers
            return (try config.makeSpec(file: file), layout)
        }
    }
}
