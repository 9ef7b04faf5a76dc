import Foundation

extension DecoderModel {
    /// Routes every token of every MoE layer to `k` experts instead of the checkpoint's top-k
    /// (the paper's "a/b" configurations, e.g. 4/64: fewer experts per token on top of fewer
    /// experts per layer), or restores the checkpoint's top-k with nil. Applies to the blocks
    /// held now: loading experts again rebuilds them with the checkpoint's top-k.
    /// - Parameter k: experts per token, 1 ≤ k ≤ the checkpoint's top-k.
    /// - Throws: `ModelError.invalidConfig` for a k outside that range.
    public func overrideRoutedTopK(_ k: Int?) throws {
        for l in spec.moeLayers {
            guard case .moe(let block) = layers[l].feedForward, let original = spec.moe(l) else { continue }
            let topK = k ?? original.topK
            guard topK >= 1, topK <= original.topK else {
                throw ModelError.invalidConfig(
                    field: "top-k", reason: "\(topK) experts per token: expected 1 … \(original.topK) (the checkpoint's top-k)", file: "--top-k")
            }
            var moe = block.spec
            moe.topK = topK
            setFeedForward(.moe(MoEBlock(spec: moe, router: block.router, experts: block.experts, expertIDs: block.expertIDs,
                                         shared: block.shared, sharedGate: block.sharedGate,
                                         selectionBias: block.selectionBias)), layer: l)
        }
    }

    /// Experts each token is routed to in the first MoE layer as the model runs now.
    public var routedTopK: Int? {
        guard let first = spec.moeLayers.first, case .moe(let block) = layers[first].feedForward else { return nil }
        return block.spec.topK
    }
}
