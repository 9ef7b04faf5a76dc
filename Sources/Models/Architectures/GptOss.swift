// Mirrors transformers' modeling_gpt_oss.py (5.24), the architecture of OpenAI's gpt-oss-20b and
// gpt-oss-120b: grouped-query attention with q/k/v/o biases and a learned per-head sink logit,
// `layer_types` alternating sliding-window and full attention, YaRN RoPE (half-split), and a MoE
// block in every layer: a router with a bias that takes the top-k logits and softmaxes over them,
// experts with biases and a clamped SwiGLU, gate and up interleaved in one fused projection.
import Foundation
import Kernels

/// `config.json` of `gpt_oss` checkpoints.
public struct GptOssConfiguration: Decodable, Sendable {
    public var base: BaseConfiguration
    /// `num_local_experts`.
    public var expertCount: Int
    /// `num_experts_per_tok` (the original release also writes `experts_per_token`).
    public var topK: Int
    /// `layer_types`: `sliding_attention` or `full_attention` per layer; transformers' default
    /// alternates, sliding first.
    public var layerTypes: [String]
    /// `swiglu_alpha` (1.702 when absent, as gpt-oss's own config omits it).
    public var swigluAlpha: Float
    /// `swiglu_limit` (7.0 by default).
    public var swigluLimit: Float

    enum CodingKeys: String, CodingKey {
        case numLocalExperts = "num_local_experts"
        case topK = "num_experts_per_tok"
        case expertsPerToken = "experts_per_token"
        case layerTypes = "layer_types"
        case swigluAlpha = "swiglu_alpha"
        case swigluLimit = "swiglu_limit"
    }

    public init(from decoder: Decoder) throws {
        base = try BaseConfiguration(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        expertCount = try c.decodeIfPresent(Int.self, forKey: .numLocalExperts) ?? 0
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? c.decodeIfPresent(Int.self, forKey: .expertsPerToken) ?? 0
        let count = max(0, base.layerCount)
        layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
            ?? (0..<count).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" }
        swigluAlpha = Float(try c.decodeIfPresent(Double.self, forKey: .swigluAlpha) ?? 1.702)
        swigluLimit = Float(try c.decodeIfPresent(Double.self, forKey: .swigluLimit) ?? 7.0)
    }

    /// The shared description of this model.
    func makeSpec(file: String) throws -> DecoderSpec {
        try requirePositive(expertCount, "num_local_experts", file: file)
        try requirePositive(topK, "num_experts_per_tok", file: file)
        try requirePositive(base.intermediateSize, "intermediate_size", file: file)
        if topK > expertCount {
            throw ModelError.invalidConfig(field: "num_experts_per_tok",
                                           reason: "\(topK) is more than num_local_experts \(expertCount)", file: file)
        }
        guard layerTypes.count == base.layerCount else {
            throw ModelError.invalidConfig(field: "layer_types",
                                           reason: "\(layerTypes.count) entries for \(base.layerCount) layers", file: file)
        }
        if let bad = layerTypes.first(where: { $0 != "sliding_attention" && $0 != "full_attention" }) {
            throw ModelError.unsupportedFeature("layer_types entry '\(bad)' (gpt_oss has sliding_attention and full_attention)",
                                                file: file)
        }
        let window = base.slidingWindow ?? 128
        if layerTypes.contains("sliding_attention") {
            try checkRange(window, "sliding_window", 1...ConfigLimits.positions, file: file)
        }
        guard swigluAlpha.isFinite, swigluLimit.isFinite, swigluLimit > 0 else {
            throw ModelError.invalidConfig(field: "swiglu_limit", reason: "alpha and limit must be finite, limit positive",
                                           file: file)
        }
        var moe = MoESpec(expertCount: expertCount, topK: topK, expertIntermediateSize: base.intermediateSize,
                          normTopKProb: false, routing: .topKSoftmax, sharedIntermediateSize: nil, sharedExpertGate: false)
        moe.expertActivation = .clampedSwiGLU(alpha: swigluAlpha, limit: swigluLimit)
        moe.biases = true
        var spec = try base.makeSpec(file: file, qkvBias: base.attentionBias, outputBias: base.attentionBias, qkNorm: .none,
                                     slidingWindow: nil, feedForward: Array(repeating: .moe(moe), count: base.layerCount))
        spec.layerWindows = layerTypes.map { $0 == "sliding_attention" ? window : 0 }
        spec.attentionSinks = true
        return spec
    }
}

extension ModelRegistry {
    static let gptOss = Architecture(modelType: "gpt_oss") { data, file in
        let config = try JSONDecoder().decode(GptOssConfiguration.self, from: data)
        var layout = HFDecoderLayout()
        layout.routerName = "router"
        return (try config.makeSpec(file: file), layout)
    }
}

extension HFDecoderLayout {
    /// Binds gpt-oss's routed expert `id` of MoE block `m` (`….mlp`): `experts.gate_up_proj`
    /// `[E, hidden, 2·I]` with gate in the even and up in the odd columns, `experts.down_proj`
    /// `[E, I, hidden]` (both stored input-major, as transformers holds them), and their biases
    /// `gate_up_proj_bias [E, 2·I]`, `down_proj_bias [E, hidden]`. The expert's weights are
    /// rearranged once, at load, into `[out, in]` f32 matrices (a bf16 checkpoint is widened; an
    /// MXFP4 one is dequantized by `MXFP4Source`, which shows its blocks under these names).
    func gptOssExpert(_ moe: MoESpec, id: Int, block m: String, hidden h: Int, binder: WeightBinder, copy: Bool) -> GatedMLP {
        let e = moe.expertCount
        let inter = moe.expertIntermediateSize
        let x = "\(m).experts"
        // MXFP4 experts exist only as stored blocks: each is read and dequantized, never mapped.
        let copy = copy || binder.source is MXFP4Source
        let gateUpT = binder.rows("\(x).gate_up_proj", shape: [e, h, 2 * inter], rows: id..<(id + 1), copy: copy)
        let downT = binder.rows("\(x).down_proj", shape: [e, inter, h], rows: id..<(id + 1), copy: copy)
        let gateUpBiasT = binder.rows("\(x).gate_up_proj_bias", shape: [e, 2 * inter], rows: id..<(id + 1), copy: copy)
        let downBiasT = binder.rows("\(x).down_proj_bias", shape: [e, h], rows: id..<(id + 1), copy: copy)
        let read = [gateUpT, downT, gateUpBiasT, downBiasT].allSatisfy { !WeightBinder.isPlaceholder($0) }
        // A binding problem is already recorded and loading will throw; zeros keep the shapes.
        let gateUp = read ? gateUpT.toFloatArray() : [Float](repeating: 0, count: h * 2 * inter)
        let down = read ? downT.toFloatArray() : [Float](repeating: 0, count: inter * h)
        let gateUpBias = read ? gateUpBiasT.toFloatArray() : [Float](repeating: 0, count: 2 * inter)
        let downBias = read ? downBiasT.toFloatArray() : [Float](repeating: 0, count: h)
        var gate = [Float](repeating: 0, count: inter * h)
        var up = [Float](repeating: 0, count: inter * h)
        for r in 0..<h {
            for i in 0..<inter {
                gate[i * h + r] = gateUp[r * 2 * inter + 2 * i]
                up[i * h + r] = gateUp[r * 2 * inter + 2 * i + 1]
            }
        }
        var downOut = [Float](repeating: 0, count: h * inter)
        for i in 0..<inter {
            for o in 0..<h { downOut[o * inter + i] = down[i * h + o] }
        }
        return GatedMLP(
            gate: Linear(weight: .owned(gate, shape: [inter, h]), bias: stride(from: 0, to: 2 * inter, by: 2).map { gateUpBias[$0] }),
            up: Linear(weight: .owned(up, shape: [inter, h]), bias: stride(from: 1, to: 2 * inter, by: 2).map { gateUpBias[$0] }),
            down: Linear(weight: .owned(downOut, shape: [h, inter]), bias: downBias),
            activation: moe.expertActivation)
    }

    /// Marks gpt-oss's fused expert tensors of block `m` as consumed without reading them.
    func skipGptOssExperts(block m: String, binder: WeightBinder) {
        for n in ["gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias"] { binder.skip("\(m).experts.\(n)") }
    }
}
