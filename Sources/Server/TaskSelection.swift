import Foundation
import Models
import PreMoe

/// What a request runs with: a stored task's pattern, the generalist of all stored tasks, or the
/// full model, and why.
public struct TaskChoice: Sendable, Equatable {
    /// A stored task's name, `generalist` or `full` (reported as `x-premoe-task`).
    public var task: String
    /// `retrieved`, `forced` or `fallback`.
    public var decision: String
    /// Why the query fell back, when it did.
    public var fallbackReason: String?
    /// Per MoE layer, the original expert indices the request routes among, in router-row order.
    public var experts: [Int: [Int]]
}

/// Per-request task selection (TAER): the first user turn goes through the existing `Retriever`
/// (backbone up to the first MoE router, no expert needed); a request may force a task or the
/// full model. Plans are derived once per task and cached. Safe to call from several threads
/// at once, beside the engine's forward passes (`choose` probes alone).
public final class TaskSelector: @unchecked Sendable {
    /// Names a request may force besides the stored tasks.
    public static let fullName = "full"
    public static let generalistName = "generalist"

    /// What a query that no stored task fits runs with.
    public enum Fallback: String, Sendable { case full, generalist }

    let spec: DecoderSpec
    let patterns: [TaskPattern]
    let retriever: Retriever?
    let budget: ExpertBudget
    let allocation: LayerAllocation
    let fallback: Fallback
    let sizes: ModelSizes
    /// Guarded by `lock`.
    private var plans: [String: [Int: [Int]]] = [:]
    private let lock = NSLock()

    /// - Parameters:
    ///   - patterns: the store's patterns for this model (empty: every request runs the full model).
    ///   - retriever: matcher over `patterns` (nil when there are none).
    ///   - budget: experts a task keeps (as `premoe run --keep/--budget`).
    public init(spec: DecoderSpec, patterns: [TaskPattern], retriever: Retriever?, budget: ExpertBudget,
         allocation: LayerAllocation, fallback: Fallback, sizes: ModelSizes) {
        self.spec = spec
        self.patterns = patterns
        self.retriever = retriever
        self.budget = budget
        self.allocation = allocation
        self.fallback = fallback
        self.sizes = sizes
    }

    /// Every name `premoe.task` accepts.
    public var taskNames: [String] {
        patterns.map(\.task).sorted() + (patterns.isEmpty ? [] : [Self.generalistName]) + [Self.fullName]
    }

    /// The experts of a task name (stored task, `generalist` or `full`), planned once.
    /// - Throws: `PreMoeError.invalidBudget` when the keep budget cannot be planned.
    public func experts(for task: String) throws -> [Int: [Int]] {
        lock.lock()
        defer { lock.unlock() }
        if let plan = plans[task] { return plan }
        var kept: [Int: [Int]] = [:]
        if task == Self.fullName {
            for l in spec.moeLayers { kept[l] = Array(0..<(spec.moe(l)?.expertCount ?? 0)) }
        } else {
            let chosen = task == Self.generalistName ? patterns : patterns.filter { $0.task == task }
            kept = try PruningPlan.make(patterns: chosen, budget: budget, sizes: sizes, allocation: allocation).keptExperts
        }
        plans[task] = kept
        return kept
    }

    /// Chooses for one request, on the calling thread (the probe runs alone: it may overlap the
    /// engine's steps).
    /// - Parameters:
    ///   - model: the shared model with every MoE layer's full router installed (and no layer
    ///     replaced while requests are served).
    ///   - query: the first user turn's token ids (nil when there is none: the fallback).
    ///   - forced: `premoe.task` of the request (already checked against `taskNames`).
    /// - Throws: model errors from the probe, `PreMoeError` from planning.
    func choose(model: DecoderModel, query: [Int]?, forced: String?) throws -> TaskChoice {
        if let forced {
            return TaskChoice(task: forced, decision: "forced", fallbackReason: nil, experts: try experts(for: forced))
        }
        var reason = "no pattern store for this model"
        if let retriever {
            if let query, !query.isEmpty {
                let ids = Array(query.prefix(spec.maxPositions))
                let result = try retriever.retrieve(model: model, tokens: ids, alone: true)
                if let task = result.task {
                    return TaskChoice(task: task, decision: "retrieved", fallbackReason: nil, experts: try experts(for: task))
                }
                reason = result.fallbackReason ?? "no stored task fits"
            } else {
                reason = "the request has no user turn"
            }
        }
        let name = fallback == .generalist && !patterns.isEmpty ? Self.generalistName : Self.fullName
        return TaskChoice(task: name, decision: "fallback", fallbackReason: reason, experts: try experts(for: name))
    }
}
