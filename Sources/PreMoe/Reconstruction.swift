import Foundation
import Models

/// Builds pruned models: only the kept experts' bytes are read (into memory, counted by
/// `SafetensorsCheckpoint.bytesRead`), router rows are sliced to the kept experts in plan order,
/// so routing takes its top-k among the kept experts only (softmax over the kept logits, then the
/// model's own renormalisation rule; METHODS §8.5).
public enum Reconstruction {
    /// Loads a pruned model in one step.
    /// - Throws: `PreMoeError.invalidBudget` for a plan that leaves out a MoE layer (the loader
    ///   would load all of its experts), `ModelError`, `CheckpointError`.
    public static func load(_ directory: URL, plan: PruningPlan, threads: Int = 0) throws -> LoadedModel {
        _ = try PrunedExport.checkPlan(plan.keptExperts, spec: try ModelLoader.spec(at: directory), model: directory,
                                       uniform: false)
        return try ModelLoader.load(directory, options: LoadOptions(threads: threads, keptExperts: plan.keptExperts,
                                                             copyExperts: true, loadExperts: true))
    }

    /// Hints the storage to read every kept expert's rows in the background (in file order)
    /// before they are read one by one in plan order.
    static func prefetch(_ kept: [Int: [Int]], source: TensorSource, spec: DecoderSpec) {
        let keptSets = kept.mapValues(Set.init)
        var requests: [(name: String, rows: Range<Int>)] = []
        for name in source.tensorNames {
            guard let shape = source.shape(of: name) else { continue }
            switch ExpertTensorRole.classify(name, shape: shape, expertCount: { spec.moe($0)?.expertCount }) {
            case .expert(let l, let e, _, _) where keptSets[l]?.contains(e) == true:
                requests.append((name, 0..<(shape.first ?? 1)))
            case .stackedExperts(let l):
                requests += (kept[l] ?? []).map { (name, $0..<($0 + 1)) }
            default:
                continue
            }
        }
        source.prefetchRows(requests)
    }

    /// Loads a backbone only (embeddings, attention, norms, dense MLPs, routers, shared experts):
    /// enough for retrieval signatures, no routed-expert byte is read.
    public static func loadBackbone(_ directory: URL, threads: Int = 0) throws -> LoadedModel {
        try ModelLoader.load(directory, options: LoadOptions(threads: threads, loadExperts: false))
    }

    /// Fills a backbone-only model with the plan's experts (TAER's second step), after the same
    /// plan check as an export (every MoE layer listed, distinct valid indices; per-layer counts
    /// may differ).
    /// - Throws: `PreMoeError.invalidBudget` for such a plan, `ModelError.weightProblems` when
    ///   expert tensors are missing or misshaped.
    public static func equip(_ loaded: LoadedModel, plan: PruningPlan) throws {
        _ = try PrunedExport.checkPlan(plan.keptExperts, spec: loaded.model.spec, model: loaded.directory, uniform: false)
        prefetch(plan.keptExperts, source: loaded.checkpoint, spec: loaded.model.spec)
        try loaded.loadExperts(kept: plan.keptExperts, copy: true)
    }
}
