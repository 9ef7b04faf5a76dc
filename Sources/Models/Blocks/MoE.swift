import Dispatch
import Foundation
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
    /// The router's input `[tokenCount, hiddenSize]`: the layer's normalised hidden states, f32.
    public let input: UnsafePointer<Float>
    public let hiddenSize: Int
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
    /// Identity of each held expert's storage (its gate weight's address), in router-row order:
    /// the key under which a batch over several views of one model runs an expert once.
    let expertStorage: [UnsafeRawPointer]

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
        expertStorage = experts.map(\.gate.weight.data)
    }

    /// This block routing among some of its router rows only, in the given order, as a pruned
    /// load builds it: router rows, expert ids and selection bias sliced alike; shared expert kept.
    /// - Parameters:
    ///   - rows: router rows (indices into `expertIDs`) to keep.
    ///   - experts: the kept experts' weights, in the same order.
    ///   - router: the sliced router when the caller already holds it (default `router.rows(rows)`).
    public func keeping(rows: [Int], experts: [GatedMLP], router sliced: Linear? = nil) -> MoEBlock {
        MoEBlock(spec: spec, router: sliced ?? router.rows(rows), experts: experts, expertIDs: rows.map { expertIDs[$0] },
                 shared: shared, sharedGate: sharedGate, selectionBias: selectionBias.map { b in rows.map { b[$0] } })
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
                    logits: logits, selected: sel.baseAddress!, weights: w.baseAddress!, topK: k,
                    input: x, hiddenSize: router.inFeatures))
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
        try Self.apply([RoutedRows(rows: 0..<tokens, block: self)], x, tokens: tokens, hidden: hidden, layer: layer,
                       into: y, observer: observer, workspace: workspace, pool: pool, profiler: profiler)
    }

    /// `y = MoE(x)` for the rows of several sequences, each routed by its own block (its own
    /// router rows and bias among its own experts, a per-request view of one layer). Every row's
    /// choices are mapped to the experts' storage, so an expert that several blocks hold runs
    /// once on all the rows that chose it; each row then sums its experts' outputs in its own
    /// block's router-row order, so a row's result is the one its block alone gives it.
    /// - Parameters:
    ///   - groups: the blocks and their rows of `x` (in order, covering `0..<tokens`). They must
    ///     share the layer's shared expert (views of one backbone).
    /// - Throws: `ModelError.expertsNotLoaded` when a block holds no routed expert.
    static func apply(
        _ groups: [RoutedRows], _ x: UnsafePointer<Float>, tokens: Int, hidden: Int, layer: Int,
        into y: UnsafeMutablePointer<Float>, observer: RouterObserver?, workspace: Workspace, pool: ThreadPool,
        profiler: ForwardProfiler? = nil
    ) throws {
        guard let first = groups.first?.block else { return }
        for group in groups where group.block.experts.isEmpty { throw ModelError.expertsNotLoaded(layer: layer) }
        precondition(groups.allSatisfy { $0.block.shared?.gate.weight.data == first.shared?.gate.weight.data },
                     "the blocks of one batch must share the layer's shared expert")

        // Route every group; map each choice (a router row of its block) to a slot: one per
        // distinct expert storage across the groups (a lone block's slots are its rows).
        var choiceStart = [Int](repeating: 0, count: tokens + 1)  // token t's choices: choiceStart[t]..<[t + 1]
        var choiceRow: [Int] = []  // router row in the token's own block
        choiceRow.reserveCapacity(tokens * first.rule.topK)
        var choiceWeight: [Float] = []
        var choiceSlot: [Int] = []
        var slots: [GatedMLP] = []
        var slotIDs: [Int] = []
        var slotOfStorage: [UnsafeRawPointer: Int] = [:]
        // Views of one task hold the same experts: each distinct list is mapped once per layer.
        var mapped: [(storage: [UnsafeRawPointer], rowSlot: [Int])] = []
        let routeStart = profiler == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        for group in groups {
            let block = group.block
            let (selected, weights, k) = block.routeBatch(x + group.rows.lowerBound * hidden, tokens: group.rows.count,
                                                          layer: layer, observer: observer, workspace: workspace, pool: pool)
            let rowSlot: [Int]
            if groups.count == 1 {
                slots = block.experts
                slotIDs = block.expertIDs
                rowSlot = Array(block.experts.indices)
            } else if let known = mapped.first(where: { $0.storage == block.expertStorage }) {
                rowSlot = known.rowSlot
            } else {
                var fresh = [Int](repeating: 0, count: block.experts.count)
                for (row, storage) in block.expertStorage.enumerated() {
                    if let slot = slotOfStorage[storage] {
                        fresh[row] = slot
                    } else {
                        fresh[row] = slots.count
                        slotOfStorage[storage] = slots.count
                        slots.append(block.experts[row])
                        slotIDs.append(block.expertIDs[row])
                    }
                }
                mapped.append((block.expertStorage, fresh))
                rowSlot = fresh
            }
            for (i, t) in group.rows.enumerated() {
                for j in 0..<k {
                    choiceRow.append(selected[i * k + j])
                    choiceWeight.append(weights[i * k + j])
                    choiceSlot.append(rowSlot[selected[i * k + j]])
                }
                choiceStart[t + 1] = choiceRow.count
            }
        }
        if let profiler { profiler.add(Double(DispatchTime.now().uptimeNanoseconds - routeStart) / 1e9, to: "router") }
        let expertsStart = profiler == nil ? 0 : DispatchTime.now().uptimeNanoseconds

        // Group tokens by slot so each expert runs one matmul over all its tokens: a counting
        // sort of the choices by slot, tokens ascending within a slot. `position[c]` is where
        // choice c's row landed.
        let held = slots.count
        let assignments = choiceRow.count
        let offsets = workspace.ints(.expertOffsets, held + 1)
        let routedTokens = workspace.ints(.routedTokens, assignments)
        let routedWeights = workspace.buffer(.routedWeights, assignments)
        let active = workspace.ints(.activeExperts, held)
        var position = [Int](repeating: 0, count: assignments)
        offsets.initialize(repeating: 0, count: held + 1)
        for slot in choiceSlot { offsets[slot + 1] += 1 }
        var activeCount = 0
        var maxInner = 0
        for e in 0..<held {
            if offsets[e + 1] > 0 {
                active[activeCount] = e
                activeCount += 1
                maxInner = max(maxInner, slots[e].intermediateSize)
            }
            offsets[e + 1] += offsets[e]
        }
        for t in 0..<tokens {  // fill, using offsets[e] as the cursor of slot e ...
            for c in choiceStart[t]..<choiceStart[t + 1] {
                let e = choiceSlot[c]
                routedTokens[offsets[e]] = t
                routedWeights[offsets[e]] = choiceWeight[c]
                position[c] = offsets[e]
                offsets[e] += 1
            }
        }
        for e in stride(from: held, to: 0, by: -1) { offsets[e] = offsets[e - 1] }  // ... then shift back
        offsets[0] = 0

        // Each expert's tokens get their own slice of the input, output and scratch buffers, so
        // experts can run at the same time. With enough experts for every thread, each expert
        // runs single-threaded and threads take whole experts (no hand-off per matmul, and no
        // small matmul split in pieces); otherwise each matmul is split by rows. Either way every
        // expert output is the same (a row's result does not depend on the other rows).
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
            slots[e].apply(source, tokens: n, into: output + lo * hidden, scratch: scratch + lo * 2 * maxInner,
                           pool: expertPool)
        }
        if acrossExperts {
            pool.forEachTask(activeCount, runExpert)
        } else {
            for index in 0..<activeCount { runExpert(index) }
        }

        if let observer, observer.wantsExpertOutputs {
            for index in 0..<activeCount {
                let e = active[index]
                let lo = offsets[e]
                let n = offsets[e + 1] - lo
                observer.expertDidCompute(ExpertOutputEvent(
                    layer: layer, expertID: slotIDs[e], tokens: Array(UnsafeBufferPointer(start: routedTokens + lo, count: n)),
                    weights: Array(UnsafeBufferPointer(start: routedWeights + lo, count: n)),
                    outputs: output + lo * hidden, hidden: hidden))
            }
        }
        // Each token sums its experts' weighted outputs in its block's router-row order.
        y.initialize(repeating: 0, count: tokens * hidden)
        var order: [Int] = []
        for t in 0..<tokens {
            order.removeAll(keepingCapacity: true)
            order.append(contentsOf: choiceStart[t]..<choiceStart[t + 1])
            order.sort { choiceRow[$0] < choiceRow[$1] }
            for c in order {
                axpy(choiceWeight[c], output + position[c] * hidden, y + t * hidden, count: hidden)
            }
        }

        if let profiler {
            profiler.add(Double(DispatchTime.now().uptimeNanoseconds - expertsStart) / 1e9,
                         to: "routed experts \(slots[active[0]].typeLabel)")
        }

        if let shared = first.shared {
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
            if let sharedGate = first.sharedGate {
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

/// One sequence's rows in a forward pass over several sequences and the MoE block (the
/// sequence's view of the layer: its router rows and experts) that routes them.
struct RoutedRows {
    let rows: Range<Int>
    let block: MoEBlock
}
