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
        try loaded.loadExperts(kept: plan.keptExperts, copy: true)
    }
}
