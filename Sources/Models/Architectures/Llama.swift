// Mirrors transformers' modeling_llama.py, modeling_qwen2.py and modeling_qwen3.py: the dense
// decoders, which differ only by switches (biases, per-head q/k norms).
import Foundation

/// `config.json` of `llama`, `qwen2` and `qwen3` checkpoints.
public struct DenseDecoderConfiguration: Decodable, Sendable {
    public var base: BaseConfiguration
    public var mlpBias: Bool

    enum CodingKeys: String, CodingKey {
        case mlpBias = "mlp_bias"
    }

    public init(from decoder: Decoder) throws {
        base = try BaseConfiguration(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
    }

    /// The shared description of this model.
    func makeSpec(file: String) throws -> DecoderSpec {
        if mlpBias { throw ModelError.unsupportedFeature("mlp_bias = true", file: file) }
        let type = base.modelType
        try requirePositive(base.intermediateSize, "intermediate_size", file: file)
        let dense = Array(repeating: FeedForwardSpec.dense(intermediateSize: base.intermediateSize), count: base.layerCount)
        return try base.makeSpec(
            file: file,
            qkvBias: type == "qwen2" || base.attentionBias,  // Qwen2 always has q/k/v biases
            outputBias: type != "qwen2" && base.attentionBias,
            qkNorm: type == "qwen3" ? .perHead : .none,
            slidingWindow: type == "llama" ? nil : base.effectiveSlidingWindow(gated: true),
            feedForward: dense)
    }
}

func requirePositive(_ value: Int, _ field: String, file: String) throws {
    if value <= 0 { throw ModelError.invalidConfig(field: field, reason: "must be positive, got \(value)", file: file) }
}

extension ModelRegistry {
    static let dense: [Architecture] = ["llama", "qwen2", "qwen3"].map { type in
        Architecture(modelType: type) { data, file in
            let config = try JSONDecoder().decode(DenseDecoderConfiguration.self, from: data)
            return (try config.makeSpec(file: file), HFDecoderLayout())
        }
    }
}
