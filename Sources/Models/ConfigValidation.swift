import Foundation

/// Upper bounds on the sizes a `config.json` (or GGUF metadata) may declare. They are far above
/// every released model (DeepSeek-V3: hidden 7168, 61 layers, 256 experts, vocabulary 129280;
/// Llama 3.1 405B: hidden 16384, 126 layers) and far below what would overflow a byte count, so
/// a corrupt or hostile number is refused before anything is allocated from it.
public enum ConfigLimits {
    public static let hiddenSize = 1 << 17
    public static let layers = 1 << 12
    public static let heads = 1 << 12
    public static let headDim = 1 << 13
    public static let vocabularySize = 1 << 24
    public static let intermediateSize = 1 << 20
    public static let experts = 1 << 14
    public static let positions = 1 << 26
    /// Largest finite RoPE base, scaling factor or multiplier accepted.
    public static let ropeValue = 1e12
}

extension BaseConfiguration {
    /// Checks every size the shared fields declare (range, then the products the forward pass
    /// and the weight binder compute), before anything is allocated from them.
    /// - Throws: `ModelError.invalidConfig` naming the field, the value and the allowed range.
    func validateSizes(file: String) throws {
        try checkRange(hiddenSize, "hidden_size", 1...ConfigLimits.hiddenSize, file: file)
        try checkRange(layerCount, "num_hidden_layers", 1...ConfigLimits.layers, file: file)
        try checkRange(headCount, "num_attention_heads", 1...ConfigLimits.heads, file: file)
        try checkRange(kvHeadCount, "num_key_value_heads", 1...ConfigLimits.heads, file: file)
        try checkRange(headDim, "head_dim", 1...ConfigLimits.headDim, file: file)
        try checkRange(vocabularySize, "vocab_size", 1...ConfigLimits.vocabularySize, file: file)
        try checkRange(intermediateSize, "intermediate_size", 0...ConfigLimits.intermediateSize, file: file)
        try checkRange(maxPositions, "max_position_embeddings", 1...ConfigLimits.positions, file: file)
        try rope.validate(file: file)
    }
}

extension RoPEParameters {
    /// Checks the RoPE numbers: a positive finite base, a rotary fraction in (0, 1], and positive
    /// finite scaling factors (a factor of 0 or a negative base turns every logit into NaN).
    /// - Throws: `ModelError.invalidConfig` naming the field.
    func validate(file: String) throws {
        func positive(_ value: Double?, _ field: String) throws {
            guard let value else { return }
            guard value.isFinite, value > 0, value <= ConfigLimits.ropeValue else {
                throw ModelError.invalidConfig(
                    field: field, reason: "must be a finite number in (0, \(ConfigLimits.ropeValue)], got \(value)", file: file)
            }
        }
        try positive(theta, "rope_theta")
        guard partialRotaryFactor.isFinite, partialRotaryFactor > 0, partialRotaryFactor <= 1 else {
            throw ModelError.invalidConfig(
                field: "partial_rotary_factor", reason: "must be in (0, 1], got \(partialRotaryFactor)", file: file)
        }
        try positive(factor, "rope_parameters.factor")
        try positive(lowFreqFactor, "rope_parameters.low_freq_factor")
        try positive(highFreqFactor, "rope_parameters.high_freq_factor")
        try positive(attentionFactor, "rope_parameters.attention_factor")
        for (value, field) in [(betaFast, "beta_fast"), (betaSlow, "beta_slow"), (mscale, "mscale"), (mscaleAllDim, "mscale_all_dim")] {
            if let value, !value.isFinite || abs(value) > ConfigLimits.ropeValue {
                throw ModelError.invalidConfig(field: "rope_parameters.\(field)", reason: "must be finite, got \(value)", file: file)
            }
        }
        if let low = lowFreqFactor, let high = highFreqFactor, type == "llama3", low == high {
            throw ModelError.invalidConfig(field: "rope_parameters.high_freq_factor",
                                           reason: "must differ from low_freq_factor (\(low))", file: file)
        }
        if let originalMaxPositions {
            try checkRange(originalMaxPositions, "original_max_position_embeddings", 1...ConfigLimits.positions, file: file)
        }
    }
}

extension DecoderSpec {
    /// Checks what an architecture added to the shared sizes (experts, MLA ranks, layer kinds)
    /// and that the byte counts derived from them cannot overflow, before any weight is bound.
    /// - Throws: `ModelError.invalidConfig` naming the field.
    func validateSizes(file: String) throws {
        for ff in feedForward {
            switch ff {
            case .dense(let size):
                try checkRange(size, "intermediate_size", 1...ConfigLimits.intermediateSize, file: file)
            case .moe(let moe):
                try checkRange(moe.expertCount, "num_experts", 1...ConfigLimits.experts, file: file)
                try checkRange(moe.topK, "num_experts_per_tok", 1...moe.expertCount, file: file)
                try checkRange(moe.expertIntermediateSize, "moe_intermediate_size", 1...ConfigLimits.intermediateSize, file: file)
                if let shared = moe.sharedIntermediateSize {
                    try checkRange(shared, "shared_expert_intermediate_size", 1...ConfigLimits.intermediateSize, file: file)
                }
                guard moe.routedScalingFactor.isFinite, moe.routedScalingFactor > 0 else {
                    throw ModelError.invalidConfig(field: "routed_scaling_factor",
                                                   reason: "must be a positive finite number, got \(moe.routedScalingFactor)", file: file)
                }
            }
        }
        if let mla {
            for (value, field) in [(mla.kvLoRARank, "kv_lora_rank"), (mla.qkNopeHeadDim, "qk_nope_head_dim"),
                                   (mla.qkRopeHeadDim, "qk_rope_head_dim"), (mla.vHeadDim, "v_head_dim"),
                                   (mla.qLoRARank ?? 1, "q_lora_rank")] {
                try checkRange(value, field, 0...ConfigLimits.headDim * 8, file: file)
            }
        }
        // Only a window the model enforces (Qwen writes 0 beside use_sliding_window = false).
        if let slidingWindow { try checkRange(slidingWindow, "sliding_window", 1...ConfigLimits.positions, file: file) }
        if let clipQKV, !(clipQKV.isFinite && clipQKV > 0) {
            throw ModelError.invalidConfig(field: "clip_qkv", reason: "must be a positive finite number, got \(clipQKV)", file: file)
        }
        // The largest products the loader and the forward pass form: embedding and LM head,
        // one layer's stacked experts, and a KV cache at full context.
        let widest = feedForward.map { ff -> Int in
            switch ff {
            case .dense(let size): return size
            case .moe(let moe): return moe.expertCount * moe.expertIntermediateSize
            }
        }.max() ?? 0
        let products: [(String, [Int])] = [
            ("vocab_size × hidden_size", [vocabularySize, hiddenSize, 4]),
            ("experts × moe_intermediate_size × hidden_size", [widest, hiddenSize, 3 * 4]),
            ("heads × head_dim × hidden_size", [max(headCount, kvHeadCount) * headDim, hiddenSize, 4]),
            ("max_position_embeddings × layers × KV width", [maxPositions, layerCount, cacheKeyWidth + cacheValueWidth, 4]),
        ]
        for (what, factors) in products {
            var total = 1
            for f in factors {
                let (p, overflow) = total.multipliedReportingOverflow(by: f)
                guard !overflow else {
                    throw ModelError.invalidConfig(field: what, reason: "the byte count \(factors) overflows", file: file)
                }
                total = p
            }
        }
    }
}

/// Throws unless `value` lies in `range`.
func checkRange(_ value: Int, _ field: String, _ range: ClosedRange<Int>, file: String) throws {
    guard range.contains(value) else {
        throw ModelError.invalidConfig(
            field: field, reason: "\(value) is outside \(range.lowerBound)...\(range.upperBound)", file: file)
    }
}
