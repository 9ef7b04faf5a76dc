// Mirrors transformers' modeling_olmoe.py: softmax top-k routing (not renormalised by default),
// q/k RMSNorm over the whole projection, optional clamp of q/k/v.
import Foundation

/// `config.json` of `olmoe` checkpoints.
public struct OLMoEConfiguration: Decodable, Sendable {
    public var base: BaseConfiguration
    public var expertCount: Int
    public var topK: Int
    public var normTopKProb: Bool
    public var clipQKV: Double?

    enum CodingKeys: String, CodingKey {
        case numExperts = "num_experts"
        case topK = "num_experts_per_tok"
        case normTopKProb = "norm_topk_prob"
        case clipQKV = "clip_qkv"
    }

    public init(from decoder: Decoder) throws {
        base = try BaseConfiguration(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        expertCount = try c.decodeIfPresent(Int.self, forKey: .numExperts) ?? 64
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? 8
        normTopKProb = try c.decodeIfPresent(Bool.self, forKey: .normTopKProb) ?? false
        clipQKV = try c.decodeIfPresent(Double.self, forKey: .clipQKV)
    }

    func makeSpec(file: String) throws -> DecoderSpec {
        try requirePositive(expertCount, "num_experts", file: file)
        try requirePositive(base.intermediateSize, "intermediate_size", file: file)
        if topK <= 0 || topK > expertCount {
            throw ModelError.invalidConfig(field: "num_experts_per_tok", reason: "must be in 1...\(expertCount), got \(topK)", file: file)
        }
        let moe = MoESpec(expertCount: expertCount, topK: topK, expertIntermediateSize: base.intermediateSize,
                          normTopKProb: normTopKProb, routing: .softmax, sharedIntermediateSize: nil, sharedExpertGate: false)
        var spec = try base.makeSpec(
            file: file, qkvBias: base.attentionBias, outputBias: base.attentionBias, qkNorm: .wholeProjection,
            slidingWindow: nil, feedForward: Array(repeating: .moe(moe), count: base.layerCount))
        spec.clipQKV = clipQKV.map { Float($0) }
        return spec
    }
}

extension ModelRegistry {
    static let olmoe = Architecture(modelType: "olmoe") { data, file in
        let config = try JSONDecoder().decode(OLMoEConfiguration.self, from: data)
        return (try config.makeSpec(file: file), HFDecoderLayout())
    }
}
