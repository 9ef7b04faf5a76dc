import Foundation

/// Fields every decoder family in `config.json` shares, decoded with the same defaults
/// transformers uses. Architecture configs embed it and add their own fields.
public struct BaseConfiguration: Decodable, Sendable {
    public var modelType: String
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var vocabularySize: Int
    public var intermediateSize: Int
    public var rmsNormEps: Float
    public var maxPositions: Int
    public var tieWordEmbeddings: Bool
    public var attentionBias: Bool
    public var hiddenAct: String
    public var rope: RoPEParameters
    public var slidingWindow: Int?
    public var useSlidingWindow: Bool

    enum CodingKeys: String, CodingKey {
        case modelType = "model_type"
        case hiddenSize = "hidden_size"
        case layerCount = "num_hidden_layers"
        case headCount = "num_attention_heads"
        case kvHeadCount = "num_key_value_heads"
        case headDim = "head_dim"
        case vocabularySize = "vocab_size"
        case intermediateSize = "intermediate_size"
        case rmsNormEps = "rms_norm_eps"
        case maxPositions = "max_position_embeddings"
        case tieWordEmbeddings = "tie_word_embeddings"
        case attentionBias = "attention_bias"
        case hiddenAct = "hidden_act"
        case slidingWindow = "sliding_window"
        case useSlidingWindow = "use_sliding_window"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        modelType = try c.decodeIfPresent(String.self, forKey: .modelType) ?? ""
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        layerCount = try c.decode(Int.self, forKey: .layerCount)
        headCount = try c.decode(Int.self, forKey: .headCount)
        // transformers: a missing or null num_key_value_heads means multi-head attention.
        kvHeadCount = try c.decodeIfPresent(Int.self, forKey: .kvHeadCount) ?? headCount
        // A null head_dim (Llama, Mixtral) means hidden_size / heads.
        headDim = try c.decodeIfPresent(Int.self, forKey: .headDim) ?? (headCount > 0 ? hiddenSize / headCount : 0)
        vocabularySize = try c.decode(Int.self, forKey: .vocabularySize)
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? 0
        rmsNormEps = Float(try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-6)
        maxPositions = try c.decodeIfPresent(Int.self, forKey: .maxPositions) ?? 2048
        tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? false
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        slidingWindow = try c.decodeIfPresent(Int.self, forKey: .slidingWindow)
        useSlidingWindow = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow) ?? false
        rope = try RoPEParameters(from: decoder)
    }

    /// Checks invariants shared by all families.
    /// - Throws: `ModelError.invalidConfig` naming the field, or `.unsupportedFeature`.
    public func validate(file: String) throws {
        func positive(_ value: Int, _ field: String) throws {
            if value <= 0 { throw ModelError.invalidConfig(field: field, reason: "must be positive, got \(value)", file: file) }
        }
        try positive(hiddenSize, "hidden_size")
        try positive(layerCount, "num_hidden_layers")
        try positive(headCount, "num_attention_heads")
        try positive(kvHeadCount, "num_key_value_heads")
        try positive(headDim, "head_dim")
        try positive(vocabularySize, "vocab_size")
        if headCount % kvHeadCount != 0 {
            throw ModelError.invalidConfig(
                field: "num_key_value_heads",
                reason: "\(kvHeadCount) does not divide num_attention_heads \(headCount)", file: file)
        }
        if hiddenAct != "silu" && hiddenAct != "swish" {
            throw ModelError.unsupportedFeature("hidden_act '\(hiddenAct)' (only silu is implemented)", file: file)
        }
        if rmsNormEps <= 0 || !rmsNormEps.isFinite {
            throw ModelError.invalidConfig(field: "rms_norm_eps", reason: "must be a positive number", file: file)
        }
    }

    /// The sliding window to enforce, or nil. Families whose `sliding_window` only applies
    /// with `use_sliding_window` pass `gated: true`.
    func effectiveSlidingWindow(gated: Bool) -> Int? {
        if gated { return useSlidingWindow ? slidingWindow : nil }
        return slidingWindow
    }

    /// Builds the shared parts of a `DecoderSpec`; the caller fills in `feedForward` and extras.
    func makeSpec(file: String, qkvBias: Bool, outputBias: Bool, qkNorm: QKNorm, slidingWindow: Int?,
                  feedForward: [FeedForwardSpec]) throws -> DecoderSpec {
        try validate(file: file)
        let rope = try self.rope.resolve(headDim: headDim, maxPositions: maxPositions, file: file)
        return DecoderSpec(
            modelType: modelType, hiddenSize: hiddenSize, layerCount: layerCount, vocabularySize: vocabularySize,
            headCount: headCount, kvHeadCount: kvHeadCount, headDim: headDim, rmsNormEps: rmsNormEps, rope: rope,
            attentionScale: 1 / Float(headDim).squareRoot(), qkvBias: qkvBias, outputBias: outputBias,
            qkNorm: qkNorm, clipQKV: nil, maxPositions: maxPositions, slidingWindow: slidingWindow,
            tieWordEmbeddings: tieWordEmbeddings, feedForward: feedForward)
    }
}

/// RoPE settings from `config.json`: transformers 5 writes `rope_parameters` (with `rope_theta`
/// inside); 4.x checkpoints have top-level `rope_theta` and `rope_scaling`. Both are read.
public struct RoPEParameters: Decodable, Sendable {
    public var theta: Double
    public var type: String
    public var factor: Double?
    public var lowFreqFactor: Double?
    public var highFreqFactor: Double?
    public var originalMaxPositions: Int?
    public var attentionFactor: Double?
    public var betaFast: Double?
    public var betaSlow: Double?
    public var mscale: Double?
    public var mscaleAllDim: Double?
    public var truncate: Bool
    public var partialRotaryFactor: Double

    enum TopKeys: String, CodingKey {
        case ropeTheta = "rope_theta"
        case ropeScaling = "rope_scaling"
        case ropeParameters = "rope_parameters"
        case partialRotaryFactor = "partial_rotary_factor"
        case modelType = "model_type"
        case originalMaxPositions = "original_max_position_embeddings"
    }

    enum ParameterKeys: String, CodingKey {
        case ropeTheta = "rope_theta"
        case ropeType = "rope_type"
        case type
        case factor
        case lowFreqFactor = "low_freq_factor"
        case highFreqFactor = "high_freq_factor"
        case originalMaxPositions = "original_max_position_embeddings"
        case attentionFactor = "attention_factor"
        case betaFast = "beta_fast"
        case betaSlow = "beta_slow"
        case mscale
        case mscaleAllDim = "mscale_all_dim"
        case truncate
        case partialRotaryFactor = "partial_rotary_factor"
    }

    public init(from decoder: Decoder) throws {
        let top = try decoder.container(keyedBy: TopKeys.self)
        let modelType = try top.decodeIfPresent(String.self, forKey: .modelType) ?? ""
        // transformers' default base is 10000, except Mixtral's config class (1e6).
        let familyDefault = modelType == "mixtral" ? 1_000_000.0 : 10_000.0
        var theta = try top.decodeIfPresent(Double.self, forKey: .ropeTheta)
        var partial = try top.decodeIfPresent(Double.self, forKey: .partialRotaryFactor)
        type = "default"
        truncate = true
        let key: TopKeys? =
            (try? top.decodeNil(forKey: .ropeParameters)) == false ? .ropeParameters
            : (try? top.decodeNil(forKey: .ropeScaling)) == false ? .ropeScaling : nil
        if let key {
            let p = try top.nestedContainer(keyedBy: ParameterKeys.self, forKey: key)
            theta = try p.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? theta
            type = try p.decodeIfPresent(String.self, forKey: .ropeType)
                ?? p.decodeIfPresent(String.self, forKey: .type) ?? "default"
            factor = try p.decodeIfPresent(Double.self, forKey: .factor)
            lowFreqFactor = try p.decodeIfPresent(Double.self, forKey: .lowFreqFactor)
            highFreqFactor = try p.decodeIfPresent(Double.self, forKey: .highFreqFactor)
            originalMaxPositions = try p.decodeIfPresent(Int.self, forKey: .originalMaxPositions)
            attentionFactor = try p.decodeIfPresent(Double.self, forKey: .attentionFactor)
            betaFast = try p.decodeIfPresent(Double.self, forKey: .betaFast)
            betaSlow = try p.decodeIfPresent(Double.self, forKey: .betaSlow)
            mscale = try p.decodeIfPresent(Double.self, forKey: .mscale)
            mscaleAllDim = try p.decodeIfPresent(Double.self, forKey: .mscaleAllDim)
            truncate = try p.decodeIfPresent(Bool.self, forKey: .truncate) ?? true
            partial = try p.decodeIfPresent(Double.self, forKey: .partialRotaryFactor) ?? partial
        }
        // A top-level original_max_position_embeddings takes priority (transformers does the same).
        if let topOriginal = try top.decodeIfPresent(Int.self, forKey: .originalMaxPositions) {
            originalMaxPositions = topOriginal
        }
        self.theta = theta ?? familyDefault
        partialRotaryFactor = partial ?? 1
    }

    /// Computes the inverse frequencies the way transformers' `ROPE_INIT_FUNCTIONS` do.
    /// - Throws: `ModelError.unsupportedFeature` for RoPE kinds not implemented.
    public func resolve(headDim: Int, maxPositions: Int, file: String) throws -> RoPESpec {
        let dim = Int(Double(headDim) * partialRotaryFactor)
        guard dim >= 2, dim <= headDim else {
            throw ModelError.invalidConfig(field: "partial_rotary_factor", reason: "gives \(dim) rotary dims of \(headDim)", file: file)
        }
        // base ** (arange(0, dim, 2) / dim), in float32 like the reference.
        let base = Float(theta)
        let exponents = stride(from: 0, to: dim, by: 2).map { Float($0) / Float(dim) }
        let posFreqs = exponents.map { pow(base, $0) }
        var invFreq = posFreqs.map { 1 / $0 }
        var scaling: Float = 1
        func require(_ value: Double?, _ name: String) throws -> Double {
            guard let value else {
                throw ModelError.invalidConfig(field: "rope_parameters.\(name)", reason: "required for rope_type '\(type)'", file: file)
            }
            return value
        }
        switch type {
        case "default":
            break
        case "linear":
            let factor = Float(try require(factor, "factor"))
            invFreq = invFreq.map { $0 / factor }
        case "llama3":
            let factor = Float(try require(factor, "factor"))
            let low = Float(try require(lowFreqFactor, "low_freq_factor"))
            let high = Float(try require(highFreqFactor, "high_freq_factor"))
            let original = Float(originalMaxPositions ?? maxPositions)
            let lowFreqWavelen = original / low
            let highFreqWavelen = original / high
            invFreq = invFreq.map { f in
                let wavelen = 2 * Float.pi / f
                let scaled = wavelen > lowFreqWavelen ? f / factor : f
                let isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen)
                guard isMedium else { return scaled }
                let smooth = (original / wavelen - low) / (high - low)
                return (1 - smooth) * scaled / factor + smooth * scaled
            }
        case "yarn":
            let original = Double(originalMaxPositions ?? maxPositions)
            let factor = self.factor ?? Double(maxPositions) / original
            func mscaleOf(_ scale: Double, _ m: Double = 1) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
            if let attentionFactor {
                scaling = Float(attentionFactor)
            } else if let mscale, let mscaleAllDim, mscale != 0, mscaleAllDim != 0 {
                scaling = Float(mscaleOf(factor, mscale) / mscaleOf(factor, mscaleAllDim))
            } else {
                scaling = Float(mscaleOf(factor))
            }
            let betaFast = (self.betaFast ?? 0) == 0 ? 32 : self.betaFast!
            let betaSlow = (self.betaSlow ?? 0) == 0 ? 1 : self.betaSlow!
            func correctionDim(_ rotations: Double) -> Double {
                Double(dim) * log(original / (rotations * 2 * Double.pi)) / (2 * log(theta))
            }
            var low = correctionDim(betaFast)
            var high = correctionDim(betaSlow)
            if truncate {
                low = low.rounded(.down)
                high = high.rounded(.up)
            }
            low = max(low, 0)
            high = min(high, Double(dim - 1))
            if low == high { high += 0.001 }
            let lowF = Float(low)
            let highF = Float(high)
            let factorF = Float(factor)
            invFreq = (0..<(dim / 2)).map { i in
                let ramp = min(max((Float(i) - lowF) / (highF - lowF), 0), 1)
                let extrapolationFactor = 1 - ramp
                let interpolation = 1 / (factorF * posFreqs[i])
                let extrapolation = 1 / posFreqs[i]
                return interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor
            }
        default:
            throw ModelError.unsupportedFeature(
                "rope_type '\(type)' (implemented: default, linear, llama3, yarn)", file: file)
        }
        return RoPESpec(invFreq: invFreq, rotaryDim: dim, attentionScaling: scaling, style: .halfSplit)
    }
}
