// Mirrors transformers' modeling_glm4_moe.py (5.24), the architecture of GLM-4.5 and GLM-4.5-Air:
// Llama-style grouped-query attention (q/k/v biases, optional per-head q/k norms, RoPE on the first
// `partial_rotary_factor` of each head, half-split), dense first layers, and DeepSeek-V3's MoE
// (sigmoid router with a selection-only correction bias and top-2-sum groups, shared experts,
// `routed_scaling_factor`). Its multi-token-prediction layers are ignored as DeepSeek's are.
import Foundation

/// `config.json` of `glm4_moe` checkpoints. The MoE keys are DeepSeek-V3's and are read by
/// `DeepSeekConfiguration` (one routing description for both families).
public struct GLM4MoEConfiguration: Decodable, Sendable {
    /// The shared base fields and the MoE keys (`n_routed_experts`, `n_group`, `topk_group`,
    /// `first_k_dense_replace`, `n_shared_experts`, `routed_scaling_factor`, `norm_topk_prob`,
    /// `num_nextn_predict_layers`).
    public var moe: DeepSeekConfiguration
    /// `use_qk_norm`: RMSNorm over each head of q and k before RoPE (GLM-4.5 ships it off).
    public var useQKNorm: Bool

    enum CodingKeys: String, CodingKey {
        case useQKNorm = "use_qk_norm"
    }

    public init(from decoder: Decoder) throws {
        moe = try DeepSeekConfiguration(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        useQKNorm = try c.decodeIfPresent(Bool.self, forKey: .useQKNorm) ?? false
    }

    /// The shared description of this model.
    func makeSpec(file: String) throws -> DecoderSpec {
        let base = moe.base
        try checkRange(moe.firstDenseLayers, "first_k_dense_replace", 0...ConfigLimits.layers, file: file)
        try checkRange(moe.nextNPredictLayers, "num_nextn_predict_layers", 0...ConfigLimits.layers, file: file)
        let block = try moe.moeSpec(file: file)
        let feedForward: [FeedForwardSpec] = (0..<max(0, base.layerCount)).map { l in
            l < moe.firstDenseLayers ? .dense(intermediateSize: base.intermediateSize) : .moe(block)
        }
        if moe.firstDenseLayers > 0 { try requirePositive(base.intermediateSize, "intermediate_size", file: file) }
        // q/k/v carry `attention_bias`; o_proj never has a bias in GLM-4.5.
        return try base.makeSpec(file: file, qkvBias: base.attentionBias, outputBias: false,
                                 qkNorm: useQKNorm ? .perHead : .none, slidingWindow: nil, feedForward: feedForward)
    }
}

extension ModelRegistry {
    static let glm4MoE = Architecture(modelType: "glm4_moe") { data, file in
        let config = try JSONDecoder().decode(GLM4MoEConfiguration.self, from: data)
        var layout = DeepSeekConfiguration.layout
        layout.extraLayerCount = config.moe.nextNPredictLayers
        return (try config.makeSpec(file: file), layout)
    }
}
