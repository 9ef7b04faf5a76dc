import Foundation
import Models
import PreMoe
import Runtime

/// Why a request cannot be admitted now.
enum AdmissionOutcome {
    /// Its experts are resident (loaded now where missing) and its KV cache is reserved.
    case admitted(hits: Int, misses: Int, bytesLoaded: Int)
    /// Not before a running request ends and releases what it pins.
    case wait
}

/// The one model's routed experts under a memory budget: backbone + resident experts + the KV
/// caches of running requests never exceed `budget`. A request pins the experts it routes among
/// while it runs; missing ones are loaded alone (delta loading), and the least recently used
/// experts that no running request pins are evicted to make room. Every method runs on the
/// engine's thread. The model's layers are never replaced while requests are served (loading
/// builds its blocks apart), so retrieval probes on other threads may read them meanwhile.
final class ExpertResidency {
    /// One resident expert.
    private struct Entry {
        var mlp: GatedMLP
        var bytes: Int
        var lastUse: UInt64
        var pins: Int
    }

    private struct Key: Hashable {
        var layer: Int
        var expert: Int
    }

    let loaded: LoadedModel
    /// Bytes that may be resident in all (nil: no limit, only accounting).
    let budget: Int?
    /// Bytes of everything that is not a routed expert (held once, always).
    let backboneBytes: Int
    /// Storage bytes of each expert by layer, from the checkpoint's headers.
    let expertSizes: [Int: [Int]]
    /// Each MoE layer's block as the backbone load built it: full router, shared expert, no
    /// routed expert. They stay installed in the model for retrieval probes (which need the
    /// unpruned first router); requests' views are cut from them.
    let backboneBlocks: [Int: MoEBlock]

    private var resident: [Key: Entry] = [:]
    private var clock: UInt64 = 0
    private var routerSlices: [String: [Int: Linear]] = [:]
    /// Bytes of resident experts.
    private(set) var expertBytes = 0
    /// Bytes reserved for the KV caches of running requests.
    private(set) var cacheBytes = 0
    /// Totals since start, for /metrics and the load test.
    private(set) var hits = 0
    private(set) var misses = 0
    private(set) var bytesLoaded = 0
    private(set) var evictions = 0
    /// Highest `accountedBytes` seen.
    private(set) var peakAccountedBytes = 0

    /// - Parameters:
    ///   - loaded: a backbone-only load (`Reconstruction.loadBackbone`).
    ///   - budget: the byte limit, nil for none.
    /// - Throws: `ServerError.budgetTooSmall` when the backbone alone exceeds the budget.
    init(loaded: LoadedModel, budget: Int?, sizes: ModelSizes) throws {
        self.loaded = loaded
        self.budget = budget
        backboneBytes = loaded.model.weightBytes.backbone
        expertSizes = sizes.expertBytes
        var blocks: [Int: MoEBlock] = [:]
        for l in loaded.model.spec.moeLayers {
            if case .moe(let block) = loaded.model.layers[l].feedForward { blocks[l] = block }
        }
        backboneBlocks = blocks
        if let budget, backboneBytes > budget {
            throw ServerError.budgetTooSmall(
                "the backbone alone takes \(formatBytes(backboneBytes)) (\(backboneBytes) bytes), over --budget \(formatBytes(budget))")
        }
        peakAccountedBytes = backboneBytes
    }

    /// Backbone + resident experts + reserved KV caches.
    var accountedBytes: Int { backboneBytes + expertBytes + cacheBytes }
    /// Experts resident now.
    var residentCount: Int { resident.count }

    /// Bytes one request needs on its own: backbone, its experts, its KV cache.
    func bytesAlone(experts: [Int: [Int]], cacheBytes cache: Int) -> (experts: Int, total: Int) {
        let e = experts.reduce(0) { sum, item in sum + item.value.reduce(0) { $0 + size(item.key, $1) } }
        return (e, backboneBytes + e + cache)
    }

    private func size(_ layer: Int, _ expert: Int) -> Int {
        guard let sizes = expertSizes[layer], sizes.indices.contains(expert) else { return 0 }
        return sizes[expert]
    }

    /// Makes `experts` resident and reserves `cache` bytes, evicting unpinned experts by least
    /// recent use; pins the experts on success.
    /// - Throws: model and checkpoint errors from loading.
    func admit(experts: [Int: [Int]], cacheBytes cache: Int) throws -> AdmissionOutcome {
        let wanted = Set(experts.flatMap { l, ids in ids.map { Key(layer: l, expert: $0) } })
        let missing = wanted.filter { resident[$0] == nil }
        let missingBytes = missing.reduce(0) { $0 + size($1.layer, $1.expert) }
        if let budget {
            var need = accountedBytes + missingBytes + cache - budget
            if need > 0 {
                let victims = resident.filter { $0.value.pins == 0 && !wanted.contains($0.key) }
                    .sorted { $0.value.lastUse < $1.value.lastUse }
                let freeable = victims.reduce(0) { $0 + $1.value.bytes }
                guard freeable >= need else { return .wait }
                for (key, entry) in victims where need > 0 {
                    resident[key] = nil
                    expertBytes -= entry.bytes
                    need -= entry.bytes
                    evictions += 1
                }
                ProcessMemory.returnFreedMemory()
            }
        }
        var loadedBytes = 0
        if !missing.isEmpty {
            loadedBytes = try load(missing)
        }
        clock += 1
        for key in wanted {
            resident[key]?.lastUse = clock
            resident[key]?.pins += 1
        }
        cacheBytes += cache
        hits += wanted.count - missing.count
        misses += missing.count
        bytesLoaded += loadedBytes
        peakAccountedBytes = max(peakAccountedBytes, accountedBytes)
        return .admitted(hits: wanted.count - missing.count, misses: missing.count, bytesLoaded: loadedBytes)
    }

    /// Unpins a finished (or cancelled) request's experts and frees its KV reservation; the
    /// experts stay resident until evicted.
    func release(experts: [Int: [Int]], cacheBytes cache: Int) {
        for (l, ids) in experts {
            for e in ids { resident[Key(layer: l, expert: e)]?.pins -= 1 }
        }
        cacheBytes -= cache
    }

    /// Reads only the missing experts: the loader builds every MoE block with just them (each
    /// layer listed, so none loads in full), apart from the model, and they are taken from
    /// there into the pool.
    private func load(_ missing: Set<Key>) throws -> Int {
        var kept: [Int: [Int]] = [:]
        for l in loaded.model.spec.moeLayers { kept[l] = [] }
        for key in missing { kept[key.layer, default: []].append(key.expert) }
        for l in kept.keys { kept[l]?.sort() }
        let before = loaded.checkpoint.bytesRead
        for (l, block) in try loaded.readExperts(kept: kept, copy: true) {
            for (id, mlp) in zip(block.expertIDs, block.experts) {
                let bytes = mlp.byteCount
                resident[Key(layer: l, expert: id)] = Entry(mlp: mlp, bytes: bytes, lastUse: clock, pins: 0)
                expertBytes += bytes
            }
        }
        let read = loaded.checkpoint.bytesRead - before
        return read > 0 ? read : missing.reduce(0) { $0 + size($1.layer, $1.expert) }
    }

    /// The MoE blocks a request runs with: per layer, its experts (resident, pinned) in plan
    /// order behind the router rows of those experts in the same order, as a pruned load
    /// (`Reconstruction.load`) builds them. Router slices are cached per task.
    func view(task: String, experts: [Int: [Int]]) -> [Int: MoEBlock] {
        var routers = routerSlices[task] ?? [:]
        var blocks: [Int: MoEBlock] = [:]
        for (l, ids) in experts {
            guard let base = backboneBlocks[l] else { continue }
            let router: Linear
            if let cached = routers[l] {
                router = cached
            } else {
                router = base.router.rows(ids)
                routers[l] = router
            }
            let mlps = ids.compactMap { resident[Key(layer: l, expert: $0)]?.mlp }
            precondition(mlps.count == ids.count, "a view was asked for experts that are not resident")
            // The backbone's router holds every expert, so its row of expert `id` is `id`.
            blocks[l] = base.keeping(rows: ids, experts: mlps, router: router)
        }
        routerSlices[task] = routers
        return blocks
    }

}
