import Foundation
import Kernels

/// The feed-forward half of a decoder layer.
public enum FeedForward: @unchecked Sendable {
    case dense(GatedMLP)
    case moe(MoEBlock)
}

/// The attention half of a decoder layer.
public enum LayerAttention: @unchecked Sendable {
    /// Grouped-query attention (every family but DeepSeek).
    case grouped(Attention)
    /// Multi-head latent attention (DeepSeek-V2/V3).
    case latent(MLAttention)

    /// The projection weights.
    public var weights: [Tensor] {
        switch self {
        case .grouped(let a): return a.weights
        case .latent(let a): return a.weights
        }
    }

    /// Bytes of weight storage.
    public var byteCount: Int {
        switch self {
        case .grouped(let a): return a.byteCount
        case .latent(let a): return a.byteCount
        }
    }
}

/// One transformer block: pre-norm attention and pre-norm feed-forward, both residual.
public struct DecoderLayer: @unchecked Sendable {
    public let inputNorm: [Float]
    public let attention: LayerAttention
    public let postAttentionNorm: [Float]
    public var feedForward: FeedForward

    public init(inputNorm: [Float], attention: LayerAttention, postAttentionNorm: [Float], feedForward: FeedForward) {
        self.inputNorm = inputNorm
        self.attention = attention
        self.postAttentionNorm = postAttentionNorm
        self.feedForward = feedForward
    }
}

/// Which positions' logits a forward pass returns.
public enum LogitsMode: Sendable {
    /// One row per input token, `[tokens, vocab]`.
    case all
    /// Only the last token's row, `[vocab]`.
    case last
    /// None (fills the cache only).
    case none
}

/// One sequence of a batched forward pass (`DecoderModel.forward(batch:)`).
public struct BatchEntry {
    /// New token ids: one while decoding, several for a prompt (or a chunk of one).
    public var tokens: [Int]
    /// The sequence's KV cache; the tokens go at the positions after those it holds.
    public var cache: KVCache
    /// Per MoE layer, the block this sequence routes through: its own experts behind its own
    /// router rows (a per-request view of the layer, sharing the backbone's shared expert).
    /// Layers not listed use the model's own block.
    public var moe: [Int: MoEBlock]
    /// Which of its rows' logits to return.
    public var logits: LogitsMode

    public init(tokens: [Int], cache: KVCache, moe: [Int: MoEBlock] = [:], logits: LogitsMode = .last) {
        self.tokens = tokens
        self.cache = cache
        self.moe = moe
        self.logits = logits
    }
}

/// What one forward pass computes with: its scratch, its threads and who watches it.
struct ForwardPass {
    let workspace: Workspace
    let pool: ThreadPool
    let profiler: ForwardProfiler?
    let observer: RouterObserver?
}

/// How `DecoderModel.forward(batch:lanes:)` deals a batch's sequences to lanes.
public enum BatchLanes {
    /// The most a lane may hold over an even share of the batch's tokens before the batch is
    /// not split (one long prompt beside a few decode rows would leave the other lanes idle).
    public static let tolerance = 1.5

    /// Deals sequences of `tokenCounts` tokens to at most `lanes` lanes, largest first, each to
    /// the least loaded lane (ties to the lower lane); each lane lists its sequences in batch
    /// order, and empty lanes are dropped. One lane (every index) when `lanes < 2`, when there
    /// are fewer than two sequences, or when the fullest lane would hold more than `tolerance`
    /// times an even share.
    public static func deal(tokenCounts: [Int], lanes: Int) -> [[Int]] {
        let all = [Array(tokenCounts.indices)]
        let lanes = min(lanes, tokenCounts.count)
        guard lanes > 1 else { return all }
        var load = [Int](repeating: 0, count: lanes)
        var members = [[Int]](repeating: [], count: lanes)
        for i in tokenCounts.indices.sorted(by: { (tokenCounts[$0], $1) > (tokenCounts[$1], $0) }) {
            let lane = load.indices.min { (load[$0], $0) < (load[$1], $1) }!
            load[lane] += tokenCounts[i]
            members[lane].append(i)
        }
        let total = tokenCounts.reduce(0, +)
        guard Double(load.max()!) <= tolerance * Double(total) / Double(lanes) else { return all }
        return members.filter { !$0.isEmpty }.map { $0.sorted() }
    }
}

/// A decoder-only transformer (dense or MoE) that runs on the CPU from stored weights.
/// One forward pass at a time per model (it owns its scratch buffers).
public final class DecoderModel: @unchecked Sendable {
    public let spec: DecoderSpec
    /// `[vocab, hidden]`.
    public let embedding: Tensor
    public private(set) var layers: [DecoderLayer]
    public let finalNorm: [Float]
    /// `[vocab, hidden]`; the embedding itself when tied.
    public let lmHead: Tensor
    /// Receives every routing decision while set.
    public var observer: RouterObserver?
    /// Threads used by the kernels (and, through them, the quantized arithmetic).
    public var pool: ThreadPool
    /// Receives the wall time of each part of every forward pass while set (`bench --profile`).
    public var profiler: ForwardProfiler?
    let workspace = Workspace()
    /// Scratch of the second and later lanes of `forward(batch:lanes:)` (the first uses `workspace`).
    private var laneWorkspaces: [Workspace] = []

    /// This model's own scratch, threads, profiler and observer: what a forward pass uses
    /// unless it is one lane of a batch split over the threads.
    var ownPass: ForwardPass { ForwardPass(workspace: workspace, pool: pool, profiler: profiler, observer: observer) }

    public init(spec: DecoderSpec, embedding: Tensor, layers: [DecoderLayer], finalNorm: [Float], lmHead: Tensor,
                pool: ThreadPool = ThreadPool(threads: ProcessInfo.processInfo.activeProcessorCount)) {
        self.spec = spec
        self.embedding = embedding
        self.layers = layers
        self.finalNorm = finalNorm
        self.lmHead = lmHead
        self.pool = pool
    }

    /// An empty KV cache sized for this model, first holding `capacity` positions capped at
    /// `maxPositions` (a context can never be longer; the cache grows by doubling up to it).
    public func makeCache(capacity: Int = 256) -> KVCache {
        KVCache(layers: spec.layerCount, keyWidth: spec.cacheKeyWidth, valueWidth: spec.cacheValueWidth,
                initialCapacity: min(max(1, capacity), spec.maxPositions), maxCapacity: spec.maxPositions)
    }

    /// Replaces layer `index`'s feed-forward (used when experts are pruned or loaded later).
    public func setFeedForward(_ feedForward: FeedForward, layer index: Int) {
        layers[index].feedForward = feedForward
    }

    /// Runs `tokens` at the positions after those already in `cache`, appending to it.
    /// - Parameters:
    ///   - tokens: token ids, each in `0..<vocabularySize`.
    ///   - cache: the sequence's KV cache.
    ///   - logits: which rows of logits to return.
    ///   - stopAfterRouterOf: if set, stop once that MoE layer's router has routed (the observer
    ///     has seen it) without running any expert; returns no logits and leaves the cache
    ///     unadvanced. This is how retrieval computes a signature before any expert is loaded.
    /// - Returns: logits `[tokens, vocab]` (`.all`), `[vocab]` (`.last`) or `[]`.
    /// - Throws: `ModelError` for empty input, ids out of range or a context too long.
    @discardableResult
    public func forward(_ tokens: [Int], cache: KVCache, logits mode: LogitsMode = .last,
                        stopAfterRouterOf stopLayer: Int? = nil) throws -> [Float] {
        try run([BatchEntry(tokens: tokens, cache: cache, logits: mode)], stopAfterRouterOf: stopLayer, pass: ownPass)[0]
    }

    /// `tokens` on a fresh cache up to the router of MoE layer `layer` (`forward`'s
    /// `stopAfterRouterOf`: no expert runs), every routing reported to `observer` rather than to
    /// the model's own. This is a retrieval probe's work.
    /// - Parameter alone: run on the calling thread with scratch of its own, so that the probe
    ///   may run while another thread runs a forward pass of this model (both only read the
    ///   weights; nothing may replace a layer meanwhile). Otherwise the model's threads and
    ///   scratch run it, as `forward` does.
    /// - Throws: as `forward`.
    public func route(_ tokens: [Int], upTo layer: Int, observer: RouterObserver, alone: Bool = false) throws {
        let pass = alone
            ? ForwardPass(workspace: Workspace(), pool: pool.serialCompanion, profiler: nil, observer: observer)
            : ForwardPass(workspace: workspace, pool: pool, profiler: profiler, observer: observer)
        _ = try run([BatchEntry(tokens: tokens, cache: makeCache(capacity: tokens.count), logits: .none)],
                    stopAfterRouterOf: layer, pass: pass)
    }

    /// One forward pass over several sequences at once, each with its own cache, positions and
    /// (for MoE layers) its own experts: every projection, dense MLP, shared expert and the
    /// output head runs once over the rows of all sequences, attention runs per sequence on its
    /// own cache, and an expert that several sequences chose runs once on all their rows. A
    /// sequence's logits are the ones `forward(_:cache:logits:)` gives it alone with its blocks
    /// installed (every kernel computes a row the same way whatever the other rows are).
    /// - Parameter batch: the sequences; each cache at most once.
    /// - Returns: each entry's logits, in order, as its `logits` mode asks.
    /// - Throws: `ModelError` for an empty entry, ids out of range or a context too long (before
    ///   any work), or for experts that are not loaded.
    public func forward(batch: [BatchEntry]) throws -> [[Float]] {
        try run(batch, stopAfterRouterOf: nil, pass: ownPass)
    }

    /// `forward(batch:)` with the sequences dealt into up to `lanes` groups (at most the pool's
    /// threads) that run at the same time, each group a whole single-threaded pass on one thread
    /// with its own scratch: one hand-off between threads per step instead of one per kernel
    /// call. The same logits, bit for bit (a sequence's rows never depend on the other rows or on
    /// the thread count). Faster when the step's weights sit in cache and hand-offs dominate
    /// (small models, cores shared with other work); slower when each lane must read the
    /// weights from memory again. A batch that does not deal evenly (`BatchLanes.deal`), a
    /// single lane, or an attached observer or profiler runs as `forward(batch:)`.
    /// - Throws: as `forward(batch:)`, before any work (also `ModelError.expertsNotLoaded`).
    public func forward(batch: [BatchEntry], lanes: Int) throws -> [[Float]] {
        let groups = BatchLanes.deal(tokenCounts: batch.map(\.tokens.count), lanes: min(lanes, pool.threadCount))
        guard groups.count > 1, observer == nil, profiler == nil else { return try forward(batch: batch) }
        try validate(batch)
        // A lane that failed half-way would leave the others' caches advanced: check what can
        // fail before any work.
        for (l, layer) in layers.enumerated() {
            guard case .moe(let installed) = layer.feedForward else { continue }
            for entry in batch where (entry.moe[l] ?? installed).experts.isEmpty { throw ModelError.expertsNotLoaded(layer: l) }
        }
        while laneWorkspaces.count < groups.count - 1 { laneWorkspaces.append(Workspace()) }
        let passes = groups.indices.map {
            ForwardPass(workspace: $0 == 0 ? workspace : laneWorkspaces[$0 - 1], pool: pool.serialCompanion,
                        profiler: nil, observer: nil)
        }
        var results = [Result<[[Float]], Error>?](repeating: nil, count: groups.count)
        results.withUnsafeMutableBufferPointer { results in
            pool.forEachTask(groups.count) { g in
                results[g] = Result { try run(groups[g].map { batch[$0] }, stopAfterRouterOf: nil, pass: passes[g]) }
            }
        }
        var logits = [[Float]](repeating: [], count: batch.count)
        for (g, group) in groups.enumerated() {
            guard let result = results[g] else { preconditionFailure("lane \(g) did not run") }
            for (entry, rows) in zip(group, try result.get()) { logits[entry] = rows }
        }
        return logits
    }

    /// Checks one sequence's new tokens against the vocabulary and the context its cache can
    /// still take; `forward` does this before any work.
    /// - Throws: `ModelError` for empty input, ids out of range or a context too long.
    public func validate(_ tokens: [Int], cache: KVCache) throws {
        guard !tokens.isEmpty else { throw ModelError.emptyInput("no tokens to run") }
        for id in tokens where id < 0 || id >= spec.vocabularySize {
            throw ModelError.tokenOutOfRange(id: id, vocabularySize: spec.vocabularySize)
        }
        let total = cache.count + tokens.count
        if let window = spec.slidingWindow, total > window {
            throw ModelError.contextTooLong(positions: total, limit: window, reason: "sliding-window attention is not implemented")
        }
        if total > spec.maxPositions {
            throw ModelError.contextTooLong(positions: total, limit: spec.maxPositions,
                                            reason: "the model's max_position_embeddings")
        }
    }

    /// Checks every entry of a batch (`validate(_:cache:)`); a cache twice is a programming error.
    private func validate(_ entries: [BatchEntry]) throws {
        for entry in entries { try validate(entry.tokens, cache: entry.cache) }
        precondition(Set(entries.map { ObjectIdentifier($0.cache) }).count == entries.count,
                     "a cache appears twice in one batch")
    }

    /// The forward pass behind both `forward`s: the entries' rows one after another,
    /// `[Σ tokens, hidden]`.
    private func run(_ entries: [BatchEntry], stopAfterRouterOf stopLayer: Int?, pass: ForwardPass) throws -> [[Float]] {
        guard !entries.isEmpty else { return [] }
        let (workspace, pool, profiler) = (pass.workspace, pass.pool, pass.profiler)
        try validate(entries)
        var sequences: [SequenceRows] = []
        var positions: [Int] = []
        for entry in entries {
            sequences.append(SequenceRows(rows: positions.count..<(positions.count + entry.tokens.count), cache: entry.cache))
            positions.append(contentsOf: entry.cache.count..<(entry.cache.count + entry.tokens.count))
        }
        let n = positions.count
        let h = spec.hiddenSize
        let x = workspace.buffer(.residual, n * h)
        profiled(profiler, "embedding") {
            var t = 0
            for entry in entries {
                for id in entry.tokens {
                    convertToFloat(embedding, offset: id * h, into: x + t * h, count: h)
                    t += 1
                }
            }
        }
        for entry in entries { entry.cache.reserve(entry.tokens.count) }
        let ownBlocks = entries.allSatisfy(\.moe.isEmpty)
        try positions.withUnsafeBufferPointer { positions in
            for l in layers.indices {
                attentionHalf(l, x: x, tokens: n, sequences: sequences, cacheLayer: l, positions: positions.baseAddress!,
                              pass: pass)
                var views: [RoutedRows]?
                if !ownBlocks, case .moe(let installed) = layers[l].feedForward {
                    views = zip(sequences, entries).map { RoutedRows(rows: $0.rows, block: $1.moe[l] ?? installed) }
                }
                try feedForwardHalf(l, x: x, tokens: n, views: views, routeOnly: l == stopLayer, pass: pass)
                if l == stopLayer { return }
            }
        }
        if stopLayer != nil { return entries.map { _ in [] } }
        for entry in entries { entry.cache.advance(entry.tokens.count) }

        // The rows whose logits are wanted, normalised into one block for one head matmul.
        var wanted: [Range<Int>] = []
        for s in sequences {
            switch entries[wanted.count].logits {
            case .none: wanted.append(s.rows.upperBound..<s.rows.upperBound)
            case .all: wanted.append(s.rows)
            case .last: wanted.append((s.rows.upperBound - 1)..<s.rows.upperBound)
            }
        }
        let count = wanted.reduce(0) { $0 + $1.count }
        guard count > 0 else { return entries.map { _ in [] } }
        let vocab = spec.vocabularySize
        let normed = workspace.buffer(.normed, count * h)
        finalNorm.withUnsafeBufferPointer { w in
            var row = 0
            for rows in wanted where !rows.isEmpty {
                rmsNorm(x + rows.lowerBound * h, weight: w.baseAddress!, rows: rows.count, dim: h, eps: spec.rmsNormEps,
                        into: normed + row * h)
                row += rows.count
            }
        }
        if entries.count == 1 {
            var result = [Float](repeating: 0, count: count * vocab)
            profiled(profiler, "output head \(lmHead.dtype.rawValue)") {
                result.withUnsafeMutableBufferPointer { out in
                    matmul(normed, tokens: count, weight: lmHead, into: out.baseAddress!, pool: pool)
                }
            }
            return [result]
        }
        // Several sequences: the head writes scratch, each sequence's rows are copied out once.
        let result = workspace.buffer(.logits, count * vocab)
        profiled(profiler, "output head \(lmHead.dtype.rawValue)") {
            matmul(normed, tokens: count, weight: lmHead, into: result, pool: pool)
        }
        var split: [[Float]] = []
        var row = 0
        for rows in wanted {
            split.append(Array(UnsafeBufferPointer(start: result + row * vocab, count: rows.count * vocab)))
            row += rows.count
        }
        return split
    }

    /// Bytes of weights held, split into routed experts and everything else.
    public var weightBytes: (backbone: Int, experts: Int) { totals(\.byteCount, perFloat: 4) }

    /// Parameters held, split the same way (quantized blocks count their elements, not bytes).
    public var parameterCounts: (backbone: Int, experts: Int) { totals(\.count, perFloat: 1) }

    /// Sums `measure` over every stored weight; small f32 arrays (norms, biases) count
    /// `perFloat` each.
    private func totals(_ measure: (Tensor) -> Int, perFloat: Int) -> (backbone: Int, experts: Int) {
        func sum(_ tensors: [Tensor]) -> Int { tensors.reduce(0) { $0 + measure($1) } }
        var backbone = measure(embedding) + (spec.tieWordEmbeddings ? 0 : measure(lmHead)) + finalNorm.count * perFloat
        var experts = 0
        for layer in layers {
            backbone += sum(layer.attention.weights) + (layer.inputNorm.count + layer.postAttentionNorm.count) * perFloat
            switch layer.feedForward {
            case .dense(let mlp): backbone += sum(mlp.weights)
            case .moe(let block):
                experts += block.experts.reduce(0) { $0 + sum($1.weights) + $1.biasCount * perFloat }
                backbone += measure(block.router.weight) + (block.router.bias?.count ?? 0) * perFloat
                    + sum(block.shared?.weights ?? [])
                    + (block.sharedGate.map(measure) ?? 0) + (block.selectionBias?.count ?? 0) * perFloat
            }
        }
        return (backbone, experts)
    }
}

