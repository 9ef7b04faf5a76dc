// Mirrors transformers' modeling_mixtral.py: softmax top-k routing, always renormalised; experts
// named w1 (gate), w3 (up), w2 (down) under `block_sparse_moe`.
import Foundation

/// `config.json` of `mixtral` checkpoints.
public struct MixtralConfiguration: Decodable, Sendable {
    public var base: BaseConfiguration
    public var expertCount: Int
    public var topK: Int

    enum CodingKeys: String, CodingKey {
        case numLocalExperts = "num_local_experts"
        case topK = "num_experts_per_tok"
    }

    public init(from decoder: Decoder) throws {
        base = try BaseConfiguration(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        expertCount = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 8
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? 2
    }

    func makeSpec(file: String) throws -> DecoderSpec {
        try requirePositive(expertCount, "num_local_experts", file: file)
        try requirePositive(base.intermediateSize, "intermediate_size", file: file)
        if topK <= 0 || topK > expertCount {
            throw ModelError.invalidConfig(field: "num_experts_per_tok", reason: "must be in 1...\(expertCount), got \(topK)", file: file)
        }
        let moe = MoESpec(expertCount: expertCount, topK: topK, expertIntermediateSize: base.intermediateSize,
                          normTopKProb: true, routing: .softmax, sharedIntermediateSize: nil, sharedExpertGate: false)
        return try base.makeSpec(
            file: file, qkvBias: false, outputBias: false, qkNorm: .none,
            slidingWindow: base.slidingWindow, feedForward: Array(repeating: .moe(moe), count: base.layerCount))
    }

    static let layout: HFDecoderLayout = {
        var layout = HFDecoderLayout()
        layout.moeBlockNames = ["block_sparse_moe", "mlp"]  // the fused save renames to mlp
        layout.expertProjections = ("w1", "w3", "w2")
        return layout
    }()
}

extension ModelRegistry {
    static let mixtral = Architecture(modelType: "mixtral") { data, file in
        let config = try JSONDecoder().decode(MixtralConfiguration.self, from: data)
        return (try config.makeSpec(file: file), MixtralConfiguration.layout)
    }
}
