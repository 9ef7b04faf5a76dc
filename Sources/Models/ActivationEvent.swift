/// Which projection input an `ActivationEvent` carries (METHODS §6.1): the four inputs SEAP's
/// hooks record in every block of a dense model.
public enum ActivationSite: String, Sendable, CaseIterable, Codable {
    /// Input of `q_proj`/`k_proj`/`v_proj`: the normalised hidden state, `[tokens, hidden]`.
    case attentionInput = "attn_in"
    /// Input of `o_proj`: the concatenated head outputs, `[tokens, heads · headDim]`.
    case attentionOutputInput = "o_proj_in"
    /// Input of `gate_proj`/`up_proj`: the normalised hidden state, `[tokens, hidden]`.
    case feedForwardInput = "mlp_in"
    /// Input of `down_proj`: `silu(x W_gateᵀ) ⊙ (x W_upᵀ)`, `[tokens, intermediate]`.
    case downInput = "down_proj_in"
}

/// Activations of one projection input of one layer for a batch of tokens, seen by a
/// `RouterObserver` whose `wantsActivations` is true. Only dense feed-forward layers report the
/// FFN sites (a MoE block has no single down projection).
public struct ActivationEvent {
    public let layer: Int
    public let site: ActivationSite
    public let tokenCount: Int
    /// Values per token (the projection's input width in this model, pruned or not).
    public let width: Int
    /// `[tokenCount, width]`, row-major, f32; valid only during the call.
    public let values: UnsafePointer<Float>
}
