import Kernels

/// What a `RouterObserver` sees each time a MoE block routes a batch of tokens.
public struct RouterEvent {
    /// Layer index in the model.
    public let layer: Int
    /// Tokens in this batch.
    public let tokenCount: Int
    /// Router rows (= experts held by this block, possibly a pruned subset).
    public let expertCount: Int
    /// Original checkpoint index of each router row.
    public let expertIDs: [Int]
    /// Raw router logits `[tokenCount, expertCount]` (no bias, no softmax), f32.
    public let logits: UnsafePointer<Float>
    /// Chosen router rows per token, `[tokenCount, topK]`, best first.
    public let selected: UnsafePointer<Int>
    /// Routing weights of the chosen rows, `[tokenCount, topK]`.
    public let weights: UnsafePointer<Float>
    public let topK: Int
}

/// A routed expert's output for the tokens routed to it (only when an observer asks for it).
public struct ExpertOutputEvent {
    public let layer: Int
    /// Original checkpoint index of the expert.
    public let expertID: Int
    /// Positions within the batch of the routed tokens.
    public let tokens: [Int]
    /// Their routing weights.
    public let weights: [Float]
    /// Expert outputs before weighting, `[tokens.count, hidden]`.
    public let outputs: UnsafePointer<Float>
    public let hidden: Int
}

/// Hook for profilers: attach to a model and see every routing decision without editing model
/// code. Calls come from the forward pass, synchronously, one layer after another.
public protocol RouterObserver: AnyObject {
    func routerDidRoute(_ event: RouterEvent)
    /// Whether `expertDidCompute` should be called (costs a little per expert).
    var wantsExpertOutputs: Bool { get }
    func expertDidCompute(_ event: ExpertOutputEvent)
}

extension RouterObserver {
    public var wantsExpertOutputs: Bool { false }
    public func expertDidCompute(_ event: ExpertOutputEvent) {}
}

/// A MoE block: router, the routed experts this model holds (all, or a kept subset), and
/// optional shared expert. Mirrors transformers' `Qwen3MoeSparseMoeBlock` and relatives.
public struct MoEBlock: @unchecked Sendable {
    public let spec: MoESpec
    /// Router `[heldExperts, hidden]`: row `i` scores `experts[i]`.
    public let router: Linear
    /// Routed experts held, in router-row order.
    public let experts: [GatedMLP]
    /// Original checkpoint index of each held expert (identity for an unpruned model).
    public let expertIDs: [Int]
    public let shared: GatedMLP?
    /// `[hidden]` weight of the sigmoid gate on the shared expert (Qwen2-MoE).
    public let sharedGate: Tensor?

    public init(spec: MoESpec, router: Linear, experts: [GatedMLP], expertIDs: [Int], shared: GatedMLP?, sharedGate: Tensor?) {
        precondition(router.outFeatures == expertIDs.count && (experts.isEmpty || experts.count == expertIDs.count),
                     "router rows, experts and ids disagree")
        self.spec = spec
        self.router = router
        self.experts = experts
        self.expertIDs = expertIDs
        self.shared = shared
        self.sharedGate = sharedGate
    }

    /// Bytes of routed-expert storage held.
    public var expertBytes: Int { experts.reduce(0) { $0 + $1.byteCount } }

    /// Top-k among held experts: softmax over all held logits, pick the k largest, renormalise if
    /// the model does. Writes `selected` and `weights` `[topK]` for one token.
    static func route(
        logits: UnsafePointer<Float>, count: Int, topK: Int, normalize: Bool,
        probs: UnsafeMutablePointer<Float>, selected: UnsafeMutablePointer<Int>, weights: UnsafeMutablePointer<Float>
    ) {
        probs.update(from: logits, count: count)
        softmax(probs, count: count)
        let top = Kernels.topK(probs, count: count, k: topK)
        var sum: Float = 0
        for (j, e) in top.enumerated() {
            selected[j] = e
            weights[j] = probs[e]
            sum += probs[e]
        }
        if normalize && sum > 0 {
            for j in 0..<top.count { weights[j] /= sum }
        }
    }

    /// Computes router logits and the routing of `tokens` rows and reports them to `observer`.
    /// - Returns: chosen router rows and weights, both `[tokens, k]`, and `k`.
    func routeBatch(_ x: UnsafePointer<Float>, tokens: Int, layer: Int, observer: RouterObserver?,
                    workspace: Workspace, pool: ThreadPool) -> (selected: [Int], weights: [Float], k: Int) {
        let held = router.outFeatures
        let k = min(spec.topK, held)
        let logits = workspace.buffer(.routerLogits, tokens * held)
        router.apply(x, tokens: tokens, into: logits, pool: pool)
        let probs = workspace.buffer(.routerProbs, held)
        var selected = [Int](repeating: 0, count: tokens * k)
        var weights = [Float](repeating: 0, count: tokens * k)
        selected.withUnsafeMutableBufferPointer { sel in
            weights.withUnsafeMutableBufferPointer { w in
                for t in 0..<tokens {
                    Self.route(logits: logits + t * held, count: held, topK: k, normalize: spec.normTopKProb,
                               probs: probs, selected: sel.baseAddress! + t * k, weights: w.baseAddress! + t * k)
                }
                observer?.routerDidRoute(RouterEvent(
                    layer: layer, tokenCount: tokens, expertCount: held, expertIDs: expertIDs,
                    logits: logits, selected: sel.baseAddress!, weights: w.baseAddress!, topK: k))
            }
        }
        return (selected, weights, k)
    }

    /// `y = MoE(x)` for `tokens` rows of normalised hidden states `x`.
    func apply(
        _ x: UnsafePointer<Float>, tokens: Int, hidden: Int, layer: Int, into y: UnsafeMutablePointer<Float>,
        observer: RouterObserver?, workspace: Workspace, pool: ThreadPool
    ) {
        precondition(!experts.isEmpty, "layer \(layer): routed experts are not loaded")
        let held = experts.count
        let (selected, weights, k) = routeBatch(x, tokens: tokens, layer: layer, observer: observer,
                                                workspace: workspace, pool: pool)

        // Group tokens by expert so each expert runs one matmul over all its tokens.
        var routedTokens = [[Int]](repeating: [], count: held)
        var routedWeights = [[Float]](repeating: [], count: held)
        for t in 0..<tokens {
            for j in 0..<k {
                routedTokens[selected[t * k + j]].append(t)
                routedWeights[selected[t * k + j]].append(weights[t * k + j])
            }
        }

        for i in 0..<(tokens * hidden) { y[i] = 0 }
        let wantsOutputs = observer?.wantsExpertOutputs ?? false
        for e in 0..<held where !routedTokens[e].isEmpty {
            let rows = routedTokens[e]
            let n = rows.count
            let expert = experts[e]
            let input = workspace.buffer(.expertInput, n * hidden)
            let output = workspace.buffer(.expertOutput, n * hidden)
            let scratch = workspace.buffer(.expertScratch, 2 * n * expert.intermediateSize)
            for (r, t) in rows.enumerated() {
                (input + r * hidden).update(from: x + t * hidden, count: hidden)
            }
            expert.apply(input, tokens: n, into: output, scratch: scratch, pool: pool)
            if wantsOutputs {
                observer?.expertDidCompute(ExpertOutputEvent(
                    layer: layer, expertID: expertIDs[e], tokens: rows, weights: routedWeights[e],
                    outputs: output, hidden: hidden))
            }
            for (r, t) in rows.enumerated() {
                axpy(routedWeights[e][r], output + r * hidden, y + t * hidden, count: hidden)
            }
        }

        if let shared {
            let out = workspace.buffer(.sharedOutput, tokens * hidden)
            let scratch = workspace.buffer(.mlpScratch, 2 * tokens * shared.intermediateSize)
            shared.apply(x, tokens: tokens, into: out, scratch: scratch, pool: pool)
            var gates = [Float](repeating: 1, count: tokens)
            if let sharedGate {
                let gateRow = Linear(weight: sharedGate.reshaped([1, hidden]))
                gates.withUnsafeMutableBufferPointer { g in
                    gateRow.apply(x, tokens: tokens, into: g.baseAddress!, pool: .serial)
                    for t in 0..<tokens { g[t] = 1 / (1 + Foundation.exp(-g[t])) }
                }
            }
            for t in 0..<tokens {
                axpy(gates[t], out + t * hidden, y + t * hidden, count: hidden)
            }
        }
    }
}

import Foundation
