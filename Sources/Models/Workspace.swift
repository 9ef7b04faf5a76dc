/// Per-model scratch buffers, allocated on first use and reused across forward calls, so decode
/// allocates nothing per token once warm. One forward pass at a time per workspace.
final class Workspace {
    enum Slot: Int, CaseIterable {
        case residual, normed, attentionQ, attentionOut, blockOut, mlpScratch
        case routerLogits, routerProbs, expertInput, expertOutput, expertScratch, sharedOutput, logits
        /// MLA's q latent, kv latent and expanded k_nope/v (`MLAttention.scratchCount`).
        case latentScratch
        case routedWeights
        /// Query heads of one KV group, packed, and their outputs (pruned GQA layers).
        case groupScratch
        /// New keys and values of several sequences before each goes to its own cache.
        case attentionK, attentionV
    }

    private var pointers: [UnsafeMutablePointer<Float>?] = Array(repeating: nil, count: Slot.allCases.count)
    private var capacities: [Int] = Array(repeating: 0, count: Slot.allCases.count)

    /// A buffer of at least `count` floats for `slot` (contents unspecified).
    func buffer(_ slot: Slot, _ count: Int) -> UnsafeMutablePointer<Float> {
        let i = slot.rawValue
        if capacities[i] < count || pointers[i] == nil {
            pointers[i]?.deallocate()
            let capacity = max(count, 16)
            pointers[i] = .allocate(capacity: capacity)
            capacities[i] = capacity
        }
        return pointers[i]!
    }

    /// Integer scratch (MoE token grouping).
    enum IntSlot: Int, CaseIterable {
        case expertOffsets, routedTokens, activeExperts
    }

    private var intPointers: [UnsafeMutablePointer<Int>?] = Array(repeating: nil, count: IntSlot.allCases.count)
    private var intCapacities: [Int] = Array(repeating: 0, count: IntSlot.allCases.count)

    /// A buffer of at least `count` integers for `slot` (contents unspecified).
    func ints(_ slot: IntSlot, _ count: Int) -> UnsafeMutablePointer<Int> {
        let i = slot.rawValue
        if intCapacities[i] < count || intPointers[i] == nil {
            intPointers[i]?.deallocate()
            let capacity = max(count, 16)
            intPointers[i] = .allocate(capacity: capacity)
            intCapacities[i] = capacity
        }
        return intPointers[i]!
    }

    deinit {
        pointers.forEach { $0?.deallocate() }
        intPointers.forEach { $0?.deallocate() }
    }
}
