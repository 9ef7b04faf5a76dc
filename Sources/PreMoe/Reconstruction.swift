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

    /// The reads that binding `kept`'s experts asks for: every kept per-expert tensor whole, one
    /// row (expert) of each stacked tensor.
    static func expertReads(_ kept: [Int: [Int]], source: TensorSource, spec: DecoderSpec) -> [(name: String, rows: Range<Int>)] {
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
        return requests
    }

    /// Reads in flight while loading experts. Measured on the development VM's virtio disk, busy
    /// with other builds (604 MB of scattered experts, cold cache): one buffered read at a time
    /// 84 MB/s; `O_DIRECT` with 4 in flight 240 MB/s, 8 → 329, 16 → 322.
    public static let readConcurrency = 8

    /// Loads a backbone only (embeddings, attention, norms, dense MLPs, routers, shared experts):
    /// enough for retrieval signatures, no routed-expert byte is read.
    public static func loadBackbone(_ directory: URL, threads: Int = 0) throws -> LoadedModel {
        try ModelLoader.load(directory, options: LoadOptions(threads: threads, loadExperts: false))
    }

    /// Fills a backbone-only model with the plan's experts (TAER's second step), after the same
    /// plan check as an export (every MoE layer listed, distinct valid indices; per-layer counts
    /// may differ).
    /// The kept experts are read all at once, `readConcurrency` reads in flight, straight into
    /// their buffers past the page cache (`direct`, for ranges the cache does not already hold),
    /// then bound into the blocks.
    /// - Parameter direct: bypass the page cache for uncached ranges.
    /// - Returns: seconds reading the experts and seconds building the blocks from them.
    /// - Throws: `PreMoeError.invalidBudget` for such a plan, `ModelError.weightProblems` when
    ///   expert tensors are missing or misshaped, `CheckpointError` when a read fails.
    @discardableResult
    public static func equip(_ loaded: LoadedModel, plan: PruningPlan, direct: Bool = true) throws
        -> (readSeconds: Double, bindSeconds: Double) {
        _ = try PrunedExport.checkPlan(plan.keptExperts, spec: loaded.model.spec, model: loaded.directory, uniform: false)
        let reads = expertReads(plan.keptExperts, source: loaded.checkpoint, spec: loaded.model.spec)
        return try loaded.loadExperts(kept: plan.keptExperts, reading: reads, concurrency: readConcurrency, direct: direct)
    }
}
