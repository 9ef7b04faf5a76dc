import Dispatch
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
    /// Raw router logits `[tokenCount, expertCount]` (no selection bias, no softmax; gpt-oss's
    /// router includes its own linear bias, as transformers' `router_logits` do), f32.
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

/// Hook for profilers: attach to a model and see every routing decision (and, when asked, the
/// dense activations of `ActivationEvent`) without editing model code. Calls come from the
/// forward pass, synchronously, one layer after another.
public protocol RouterObserver: AnyObject {
    func routerDidRoute(_ event: RouterEvent)
    /// Whether `expertDidCompute` should be called (costs a little per expert).
    var wantsExpertOutputs: Bool { get }
    func expertDidCompute(_ event: ExpertOutputEvent)
    /// Whether `activationDidCompute` should be called (SEAP's activation statistics).
    var wantsActivations: Bool { get }
    /// One projection input of one layer for a batch of tokens (`ActivationEvent`).
    func activationDidCompute(_ event: ActivationEvent)
}

extension RouterObserver {
    public var wantsExpertOutputs: Bool { false }
    public func expertDidCompute(_ event: ExpertOutputEvent) {}
    public var wantsActivations: Bool { false }
    public func activationDidCompute(_ event: ActivationEvent) {}
    /// Routing decisions are optional for observers that only want activations.
    public func routerDidRoute(_ event: RouterEvent) {}
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
    /// `[heldExperts]` bias added to the scores for selection only (DeepSeek-V3's
    /// `e_score_correction_bias`), in router-row order; observers still see raw logits.
    public let selectionBias: [Float]?
    /// The routing rule for the experts held: group limits only when every expert is held.
    public let rule: RoutingRule
    /// Group of each router row (from its original index) when `rule` is group-limited.
    let groups: [Int]?

    public init(spec: MoESpec, router: Linear, experts: [GatedMLP], expertIDs: [Int], shared: GatedMLP?, sharedGate: Tensor?,
                selectionBias: [Float]? = nil) {
        precondition(router.outFeatures == expertIDs.count && (experts.isEmpty || experts.count == expertIDs.count),
                     "router rows, experts and ids disagree")
        precondition(selectionBias == nil || selectionBias!.count == expertIDs.count, "selection bias and router rows disagree")
        self.spec = spec
        self.router = router
        self.experts = experts
        self.expertIDs = expertIDs
        self.shared = shared
        self.sharedGate = sharedGate
        self.selectionBias = selectionBias
        rule = spec.routingRule(heldExperts: expertIDs.count)
        groups = Routing.groups(expertIDs: expertIDs, expertCount: spec.expertCount, rule: rule)
    }

    /// Bytes of routed-expert storage held.
    public var expertBytes: Int { experts.reduce(0) { $0 + $1.byteCount } }

    /// Computes router logits and the routing of `tokens` rows (the shared `Routing.route`) and
    /// reports them to `observer`.
    /// - Returns: chosen router rows and weights, both `[tokens, k]`, and `k`.
    func routeBatch(_ x: UnsafePointer<Float>, tokens: Int, layer: Int, observer: RouterObserver?,
                    workspace: Workspace, pool: ThreadPool) -> (selected: [Int], weights: [Float], k: Int) {
        let held = router.outFeatures
        let k = min(rule.topK, held)
        let logits = workspace.buffer(.routerLogits, tokens * held)
        router.apply(x, tokens: tokens, into: logits, pool: pool)
        let scratch = workspace.buffer(.routerProbs, Routing.scratchCount(count: held, rule: rule))
        var selected = [Int](repeating: 0, count: tokens * k)
        var weights = [Float](repeating: 0, count: tokens * k)
        selected.withUnsafeMutableBufferPointer { sel in
            weights.withUnsafeMutableBufferPointer { w in
                (selectionBias ?? []).withUnsafeBufferPointer { bias in
                    (groups ?? []).withUnsafeBufferPointer { groups in
                        for t in 0..<tokens {
                            Routing.route(logits: logits + t * held, count: held, rule: rule,
                                          bias: selectionBias == nil ? nil : bias.baseAddress,
                                          groups: self.groups == nil ? nil : groups.baseAddress, scratch: scratch,
                                          selected: sel.baseAddress! + t * k, weights: w.baseAddress! + t * k)
                        }
                    }
                }
                observer?.routerDidRoute(RouterEvent(
                    layer: layer, tokenCount: tokens, expertCount: held, expertIDs: expertIDs,
                    logits: logits, selected: sel.baseAddress!, weights: w.baseAddress!, topK: k))
            }
        }
        return (selected, weights, k)
    }

    /// `y = MoE(x)` for `tokens` rows of normalised hidden states `x`.
    /// - Throws: `ModelError.expertsNotLoaded` on a backbone-only model (`loadExperts: false`).
    func apply(
        _ x: UnsafePointer<Float>, tokens: Int, hidden: Int, layer: Int, into y: UnsafeMutablePointer<Float>,
        observer: RouterObserver?, workspace: Workspace, pool: ThreadPool, profiler: ForwardProfiler? = nil
    ) throws {
        guard !experts.isEmpty else { throw ModelError.expertsNotLoaded(layer: layer) }
        let held = experts.count
        let (selected, weights, k) = profiled(profiler, "router") {
            routeBatch(x, tokens: tokens, layer: layer, observer: observer, workspace: workspace, pool: pool)
        }
        let expertsStart = profiler == nil ? 0 : DispatchTime.now().uptimeNanoseconds

        // Group tokens by expert so each expert runs one matmul over all its tokens: a counting
        // sort of the (token, choice) assignments by expert, tokens ascending within an expert.
        let assignments = tokens * k
        let offsets = workspace.ints(.expertOffsets, held + 1)
        let routedTokens = workspace.ints(.routedTokens, assignments)
        let routedWeights = workspace.buffer(.routedWeights, assignments)
        let active = workspace.ints(.activeExperts, held)
        offsets.initialize(repeating: 0, count: held + 1)
        for a in 0..<assignments { offsets[selected[a] + 1] += 1 }
        var activeCount = 0
        var maxInner = 0
        for e in 0..<held {
            if offsets[e + 1] > 0 {
                active[activeCount] = e
                activeCount += 1
                maxInner = max(maxInner, experts[e].intermediateSize)
            }
            offsets[e + 1] += offsets[e]
        }
        for a in 0..<assignments {  // fill, using offsets[e] as the cursor of expert e ...
            let e = selected[a]
            routedTokens[offsets[e]] = a / k
            routedWeights[offsets[e]] = weights[a]
            offsets[e] += 1
        }
        for e in stride(from: held, to: 0, by: -1) { offsets[e] = offsets[e - 1] }  // ... then shift back
        offsets[0] = 0

        // Each expert's tokens get their own slice of the input, output and scratch buffers, so
        // experts can run at the same time. With enough experts for every thread, each expert
        // runs single-threaded and threads take whole experts (no hand-off per matmul, and no
        // small matmul split in pieces); otherwise each matmul is split by rows. Either way every
        // expert output is the same, and the weighted sum below runs in expert order.
        let input = workspace.buffer(.expertInput, assignments * hidden)
        let output = workspace.buffer(.expertOutput, assignments * hidden)
        let scratch = workspace.buffer(.expertScratch, 2 * assignments * maxInner)
        let threads = pool.threadCount
        let acrossExperts = threads > 1 && (activeCount >= 2 * threads || activeCount % threads == 0)
        let expertPool = acrossExperts ? pool.serialCompanion : pool
        let runExpert = { (index: Int) in
            let e = active[index]
            let lo = offsets[e]
            let n = offsets[e + 1] - lo
            var source = x
            if n != tokens {  // n == tokens: every token, in order; use x as it is
                let rows = input + lo * hidden
                for r in 0..<n {
                    (rows + r * hidden).update(from: x + routedTokens[lo + r] * hidden, count: hidden)
                }
                source = UnsafePointer(rows)
            }
            experts[e].apply(source, tokens: n, into: output + lo * hidden, scratch: scratch + lo * 2 * maxInner,
                             pool: expertPool)
        }
        if acrossExperts {
            pool.forEachTask(activeCount, runExpert)
        } else {
            for index in 0..<activeCount { runExpert(index) }
        }

        y.initialize(repeating: 0, count: tokens * hidden)
        let wantsOutputs = observer?.wantsExpertOutputs ?? false
        for index in 0..<activeCount {
            let e = active[index]
            let lo = offsets[e]
            let n = offsets[e + 1] - lo
            if wantsOutputs {
                observer?.expertDidCompute(ExpertOutputEvent(
                    layer: layer, expertID: expertIDs[e], tokens: Array(UnsafeBufferPointer(start: routedTokens + lo, count: n)),
                    weights: Array(UnsafeBufferPointer(start: routedWeights + lo, count: n)),
                    outputs: output + lo * hidden, hidden: hidden))
            }
            for r in 0..<n {
                axpy(routedWeights[lo + r], output + (lo + r) * hidden, y + routedTokens[lo + r] * hidden, count: hidden)
            }
        }

        if let profiler {
            profiler.add(Double(DispatchTime.now().uptimeNanoseconds - expertsStart) / 1e9,
                         to: "routed experts \(experts[active[0]].typeLabel)")
        }

        if let shared {
            let sharedStart = profiler == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            defer {
                if let profiler {
                    profiler.add(Double(DispatchTime.now().uptimeNanoseconds - sharedStart) / 1e9,
                                 to: "shared expert \(shared.typeLabel)")
                }
            }
            let out = workspace.buffer(.sharedOutput, tokens * hidden)
            let scratch = workspace.buffer(.mlpScratch, 2 * tokens * shared.intermediateSize)
            shared.apply(x, tokens: tokens, into: out, scratch: scratch, pool: pool)
            var gates = [Float](repeating: 1, count: tokens)
            if let sharedGate {
                let gateRow = Linear(weight: sharedGate.reshaped([1, hidden]))
                gates.withUnsafeMutableBufferPointer { g in
                    gateRow.apply(x, tokens: tokens, into: g.baseAddress!, pool: pool.serialCompanion)
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
