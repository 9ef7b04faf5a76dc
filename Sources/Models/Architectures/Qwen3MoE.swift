// Mirrors transformers' modeling_qwen3_moe.py and modeling_qwen2_moe.py: MoE decoders with
// softmax top-k routing; Qwen2-MoE adds a sigmoid-gated shared expert, Qwen3-MoE per-head q/k norms.
import Foundation

/// `config.json` of `qwen3_moe` and `qwen2_moe` checkpoints.
public struct QwenMoEConfiguration: Decodable, Sendable {
    public var base: BaseConfiguration
    public var expertCount: Int
    public var topK: Int
    public var moeIntermediateSize: Int
    public var normTopKProb: Bool
    public var decoderSparseStep: Int
    public var mlpOnlyLayers: [Int]
    public var sharedExpertIntermediateSize: Int?
    /// Qwen2-MoE's switch for q/k/v biases (default on).
    public var qkvBias: Bool

    enum CodingKeys: String, CodingKey {
        case numExperts = "num_experts"
        case numLocalExperts = "num_local_experts"
        case topK = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size"
        case normTopKProb = "norm_topk_prob"
        case decoderSparseStep = "decoder_sparse_step"
        case mlpOnlyLayers = "mlp_only_layers"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size"
        case qkvBias = "qkv_bias"
    }

    public init(from decoder: Decoder) throws {
        base = try BaseConfiguration(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // Real checkpoints write num_experts; transformers 5 saves Qwen3-MoE as num_local_experts.
        expertCount = try c.decodeIfPresent(Int.self, forKey: .numExperts)
            ?? c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 0
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? 0
        moeIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediateSize) ?? 0
        normTopKProb = try c.decodeIfPresent(Bool.self, forKey: .normTopKProb) ?? false
        decoderSparseStep = try c.decodeIfPresent(Int.self, forKey: .decoderSparseStep) ?? 1
        mlpOnlyLayers = try c.decodeIfPresent([Int].self, forKey: .mlpOnlyLayers) ?? []
        sharedExpertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .sharedExpertIntermediateSize)
        qkvBias = try c.decodeIfPresent(Bool.self, forKey: .qkvBias) ?? true
    }

    func makeSpec(file: String) throws -> DecoderSpec {
        let isQwen2 = base.modelType == "qwen2_moe"
        try requirePositive(expertCount, "num_experts", file: file)
        try requirePositive(topK, "num_experts_per_tok", file: file)
        try requirePositive(moeIntermediateSize, "moe_intermediate_size", file: file)
        try requirePositive(decoderSparseStep, "decoder_sparse_step", file: file)
        if topK > expertCount {
            throw ModelError.invalidConfig(field: "num_experts_per_tok",
                                           reason: "\(topK) is more than num_experts \(expertCount)", file: file)
        }
        if isQwen2 { try requirePositive(sharedExpertIntermediateSize ?? 0, "shared_expert_intermediate_size", file: file) }
        if let bad = mlpOnlyLayers.first(where: { !(0..<base.layerCount).contains($0) }) {
            throw ModelError.invalidConfig(
                field: "mlp_only_layers", reason: "layer \(bad) is outside 0..<\(base.layerCount) (num_hidden_layers)", file: file)
        }
        let moe = MoESpec(
            expertCount: expertCount, topK: topK, expertIntermediateSize: moeIntermediateSize,
            normTopKProb: normTopKProb, routing: .softmax,
            sharedIntermediateSize: isQwen2 ? sharedExpertIntermediateSize : nil, sharedExpertGate: isQwen2)
        let feedForward: [FeedForwardSpec] = (0..<base.layerCount).map { l in
            !mlpOnlyLayers.contains(l) && (l + 1) % decoderSparseStep == 0
                ? .moe(moe) : .dense(intermediateSize: base.intermediateSize)
        }
        if feedForward.contains(where: { if case .dense = $0 { return true } else { return false } }) {
            try requirePositive(base.intermediateSize, "intermediate_size", file: file)
        }
        return try base.makeSpec(
            file: file, qkvBias: isQwen2 ? qkvBias : base.attentionBias, outputBias: !isQwen2 && base.attentionBias,
            qkNorm: isQwen2 ? .none : .perHead, slidingWindow: base.effectiveSlidingWindow(gated: true),
            feedForward: feedForward)
    }
}

extension ModelRegistry {
    static let qwenMoE: [Architecture] = ["qwen3_moe", "qwen2_moe"].map { type in
        Architecture(modelType: type) { data, file in
            let config = try JSONDecoder().decode(QwenMoEConfiguration.self, from: data)
            return (try config.makeSpec(file: file), HFDecoderLayout())
        }
    }
}
