import Kernels

/// Options for loading a model.
public struct LoadOptions: Sendable {
    /// Kernel threads.
    public var threads: Int
    /// Per MoE layer, the original indices of the routed experts to load, in router-row order;
    /// layers not listed load every expert. nil loads everything.
    public var keptExperts: [Int: [Int]]?
    /// Read routed experts into memory (only their bytes) instead of memory-mapping the files.
    public var copyExperts: Bool
    /// Load routed experts at all. Without them the model can still run up to a router
    /// (`forward(_:cache:stopAfterRouterOf:)`), which is how retrieval avoids expert I/O.
    public var loadExperts: Bool
    /// How quantized (GGUF block) weights are multiplied: `.exact` (the parity path) or `.int8`
    /// (8-bit activations, faster; see `QuantizedArithmetic`).
    public var quantizedArithmetic: QuantizedArithmetic

    public init(threads: Int = 0, keptExperts: [Int: [Int]]? = nil, copyExperts: Bool = false, loadExperts: Bool = true,
                quantizedArithmetic: QuantizedArithmetic = .exact) {
        self.threads = threads
        self.keptExperts = keptExperts
        self.copyExperts = copyExperts
        self.loadExperts = loadExperts
        self.quantizedArithmetic = quantizedArithmetic
    }
}

/// How a Hugging Face decoder checkpoint names its tensors. The common parts (embeddings,
/// attention, norms) are shared by every family here; the fields are what differs.
public struct HFDecoderLayout: Sendable {
    /// Prefixes tried for the MoE block, in order (`mlp`; Mixtral writes `block_sparse_moe`,
    /// but its fused save writes `mlp`).
    public var moeBlockNames: [String] = ["mlp"]
    /// Per-expert projection names: gate, up, down (Mixtral: w1, w3, w2).
    public var expertProjections: (gate: String, up: String, down: String) = ("gate_proj", "up_proj", "down_proj")
    /// Shared expert module name (`shared_expert` in Qwen2-MoE, `shared_experts` in DeepSeek).
    public var sharedExpert: String = "shared_expert"
    /// Sigmoid gate on the shared expert.
    public var sharedExpertGate: String = "shared_expert_gate"
    /// Layers a checkpoint may store after `num_hidden_layers` that the model never runs
    /// (DeepSeek's multi-token-prediction layers, `num_nextn_predict_layers`). Their tensors,
    /// `model.layers.{L}.…` for `L` in `layerCount ..< layerCount + extraLayerCount`, are
    /// ignored rather than reported as unexpected (transformers ignores `model.layers.61.*`).
    public var extraLayerCount: Int = 0
    /// The router module inside the MoE block (`gate`; gpt-oss writes `router`).
    public var routerName: String = "gate"

    public init() {}

    /// The tensors of `names` that loading ignores on purpose (see `extraLayerCount`), sorted.
    public func ignoredTensors(_ names: [String], layerCount: Int) -> [String] {
        names.filter { isIgnored($0, layerCount: layerCount) }.sorted()
    }

    func isIgnored(_ name: String, layerCount: Int) -> Bool {
        if name.hasSuffix("rotary_emb.inv_freq") { return true }  // a buffer some exporters write
        guard extraLayerCount > 0, name.hasPrefix("model.layers.") else { return false }
        let rest = name.dropFirst("model.layers.".count)
        guard let dot = rest.firstIndex(of: "."), let l = Int(rest[..<dot]) else { return false }
        return l >= layerCount && l < layerCount + extraLayerCount
    }

    /// Builds the model from `source`, checking every tensor against `spec`.
    /// - Throws: `ModelError.weightProblems` listing every missing, misshaped or unused tensor.
    func build(spec: DecoderSpec, source: TensorSource, options: LoadOptions, directory: String) throws -> DecoderModel {
        let binder = WeightBinder(source: source)
        let h = spec.hiddenSize
        let embedding = binder.tensor("model.embed_tokens.weight", shape: [spec.vocabularySize, h])

        func linear(_ name: String, out: Int, in inFeatures: Int, bias: Bool = false) -> Linear {
            Linear(weight: binder.tensor("\(name).weight", shape: [out, inFeatures]),
                   bias: bias ? binder.floats("\(name).bias", count: out) : nil)
        }
        func mlp(_ prefix: String, intermediate: Int, names: (gate: String, up: String, down: String) = ("gate_proj", "up_proj", "down_proj")) -> GatedMLP {
            GatedMLP(gate: linear("\(prefix).\(names.gate)", out: intermediate, in: h),
                     up: linear("\(prefix).\(names.up)", out: intermediate, in: h),
                     down: linear("\(prefix).\(names.down)", out: h, in: intermediate))
        }

        var layers: [DecoderLayer] = []
        for l in 0..<spec.layerCount {
            let p = "model.layers.\(l)"
            let a = "\(p).self_attn"
            let attention: LayerAttention
            if let mla = spec.mla {
                attention = .latent(bindMLA(mla, spec: spec, prefix: a, binder: binder))
            } else {
                attention = .grouped(groupedAttention(spec: spec, layer: l, prefix: a, binder: binder, linear: linear))
            }
            let feedForward: FeedForward
            switch spec.feedForward[l] {
            case .dense(let intermediate):
                let m = "\(p).mlp"
                feedForward = .dense(GatedMLP(gate: linear("\(m).gate_proj", out: intermediate, in: h),
                                              up: linear("\(m).up_proj", out: intermediate, in: h),
                                              down: linear("\(m).down_proj", out: h, in: intermediate, bias: spec.downBias)))
            case .moe(let moe):
                feedForward = .moe(buildMoE(moe, layer: l, prefix: p, binder: binder, options: options, mlp: mlp))
            }
            layers.append(DecoderLayer(
                inputNorm: binder.floats("\(p).input_layernorm.weight", count: h),
                attention: attention,
                postAttentionNorm: binder.floats("\(p).post_attention_layernorm.weight", count: h),
                feedForward: feedForward))
        }
        let finalNorm = binder.floats("model.norm.weight", count: h)
        let lmHead: Tensor
        if spec.tieWordEmbeddings {
            lmHead = embedding
            binder.skip("lm_head.weight")  // some tied checkpoints still carry a copy
        } else {
            lmHead = binder.tensor("lm_head.weight", shape: [spec.vocabularySize, h])
        }
        // Buffers some exporters write that the model recomputes, and layers it never runs.
        try binder.finish(directory: directory) { isIgnored($0, layerCount: spec.layerCount) }
        let threads = options.threads > 0 ? options.threads : ProcessInfoThreads.default
        return DecoderModel(spec: spec, embedding: embedding, layers: layers, finalNorm: finalNorm, lmHead: lmHead,
                            pool: ThreadPool(threads: threads, quantizedArithmetic: options.quantizedArithmetic))
    }

    /// Binds layer `a`'s grouped-query attention (`….self_attn.{q,k,v,o}_proj`, optional q/k norms,
    /// gpt-oss's `sinks` and per-layer window).
    private func groupedAttention(spec: DecoderSpec, layer l: Int, prefix a: String, binder: WeightBinder,
                                  linear: (String, Int, Int, Bool) -> Linear) -> Attention {
        let h = spec.hiddenSize
        let heads = spec.layerHeadCounts?[l] ?? spec.headCount
        let qWidth = heads * spec.headDim
        let kvWidth = (spec.layerKVHeadCounts?[l] ?? spec.kvHeadCount) * spec.headDim
        let (qNorm, kNorm): ([Float]?, [Float]?)
        switch spec.qkNorm {
        case .none: (qNorm, kNorm) = (nil, nil)
        case .perHead:
            (qNorm, kNorm) = (binder.floats("\(a).q_norm.weight", count: spec.headDim),
                              binder.floats("\(a).k_norm.weight", count: spec.headDim))
        case .wholeProjection:
            (qNorm, kNorm) = (binder.floats("\(a).q_norm.weight", count: qWidth),
                              binder.floats("\(a).k_norm.weight", count: kvWidth))
        }
        return Attention(
            q: linear("\(a).q_proj", qWidth, h, spec.qkvBias),
            k: linear("\(a).k_proj", kvWidth, h, spec.qkvBias),
            v: linear("\(a).v_proj", kvWidth, h, spec.qkvBias),
            o: linear("\(a).o_proj", h, qWidth, spec.outputBias),
            qNorm: qNorm, kNorm: kNorm, window: spec.layerWindows?[l] ?? 0,
            sinks: spec.attentionSinks ? binder.floats("\(a).sinks", count: heads) : nil)
    }

    /// Rebuilds `model`'s MoE blocks with the routed experts `kept` lists (layers not listed
    /// keep every expert), reading them from `source`. Backbone tensors already held are reused;
    /// only router rows, shared experts and the kept experts are bound again.
    /// - Throws: `ModelError.weightProblems` if an expert tensor is missing or misshaped.
    func loadExperts(into model: DecoderModel, source: TensorSource, kept: [Int: [Int]], copy: Bool,
                     directory: String) throws {
        let binder = WeightBinder(source: source)
        let options = LoadOptions(keptExperts: kept, copyExperts: copy, loadExperts: true)
        let h = model.spec.hiddenSize
        func mlp(_ prefix: String, intermediate: Int, names: (gate: String, up: String, down: String)) -> GatedMLP {
            GatedMLP(gate: Linear(weight: binder.tensor("\(prefix).\(names.gate).weight", shape: [intermediate, h])),
                     up: Linear(weight: binder.tensor("\(prefix).\(names.up).weight", shape: [intermediate, h])),
                     down: Linear(weight: binder.tensor("\(prefix).\(names.down).weight", shape: [h, intermediate])))
        }
        var blocks: [(Int, MoEBlock)] = []
        for l in model.spec.moeLayers {
            guard let moe = model.spec.moe(l) else { continue }
            blocks.append((l, buildMoE(moe, layer: l, prefix: "model.layers.\(l)", binder: binder, options: options, mlp: mlp)))
        }
        if !binder.problems.isEmpty { throw ModelError.weightProblems(binder.problems, directory: directory) }
        for (l, block) in blocks { model.setFeedForward(.moe(block), layer: l) }
    }

    /// Binds one MoE block: router, the routed experts to hold (per-expert or fused layout),
    /// shared expert and its gate.
    private func buildMoE(
        _ moe: MoESpec, layer l: Int, prefix p: String, binder: WeightBinder, options: LoadOptions,
        mlp: (String, Int, (gate: String, up: String, down: String)) -> GatedMLP
    ) -> MoEBlock {
        let h = binder.source.shape(of: "model.embed_tokens.weight")?.last ?? 0
        let block = moeBlockNames.first { binder.contains("\(p).\($0).\(routerName).weight") } ?? moeBlockNames[0]
        let m = "\(p).\(block)"
        let e = moe.expertCount
        let inter = moe.expertIntermediateSize
        let routerFull = binder.tensor("\(m).\(routerName).weight", shape: [e, h])
        let kept = options.keptExperts?[l] ?? Array(0..<e)
        let fused = binder.contains("\(m).experts.gate_up_proj")
        var experts: [GatedMLP] = []
        let keptSet = Set(kept)
        if moe.biases {  // gpt-oss: fused, input-major, gate/up interleaved, with biases
            if options.loadExperts {
                experts = kept.map { gptOssExpert(moe, id: $0, block: m, hidden: h, binder: binder, copy: options.copyExperts) }
            } else {
                skipGptOssExperts(block: m, binder: binder)
            }
        } else if fused {
            let gateUpShape = [e, 2 * inter, h]
            let downShape = [e, h, inter]
            if options.loadExperts {
                for id in kept {
                    let gateUp = binder.rows("\(m).experts.gate_up_proj", shape: gateUpShape, rows: id..<(id + 1), copy: options.copyExperts)
                        .reshaped([2 * inter, h])
                    let down = binder.rows("\(m).experts.down_proj", shape: downShape, rows: id..<(id + 1), copy: options.copyExperts)
                        .reshaped([h, inter])
                    experts.append(GatedMLP(gate: Linear(weight: gateUp.rows(0..<inter)),
                                            up: Linear(weight: gateUp.rows(inter..<(2 * inter))),
                                            down: Linear(weight: down)))
                }
            } else {
                binder.skip("\(m).experts.gate_up_proj")
                binder.skip("\(m).experts.down_proj")
            }
        } else {
            let names = expertProjections
            for id in 0..<e {
                let x = "\(m).experts.\(id)"
                guard options.loadExperts && keptSet.contains(id) else {
                    for n in [names.gate, names.up, names.down] { binder.skip("\(x).\(n).weight") }
                    continue
                }
            }
            if options.loadExperts {
                for id in kept {
                    let x = "\(m).experts.\(id)"
                    let c = options.copyExperts
                    experts.append(GatedMLP(
                        gate: Linear(weight: binder.tensor("\(x).\(names.gate).weight", shape: [inter, h], copy: c)),
                        up: Linear(weight: binder.tensor("\(x).\(names.up).weight", shape: [inter, h], copy: c)),
                        down: Linear(weight: binder.tensor("\(x).\(names.down).weight", shape: [h, inter], copy: c))))
                }
            }
        }
        // gpt-oss's router bias follows the router rows (sliced and ordered like them).
        let routerBias = moe.biases ? binder.floats("\(m).\(routerName).bias", count: e) : nil
        let router = Linear(weight: routerFull, bias: routerBias).rows(kept)
        // DeepSeek-V3's selection bias follows the router rows (sliced and ordered like them).
        let selectionBias = moe.selectionBias
            ? binder.floats("\(m).gate.e_score_correction_bias", count: e).indexed(kept) : nil
        var shared: GatedMLP?
        var sharedGate: Tensor?
        if let sharedSize = moe.sharedIntermediateSize {
            shared = mlp("\(m).\(sharedExpert)", sharedSize, ("gate_proj", "up_proj", "down_proj"))
            if moe.sharedExpertGate {
                sharedGate = binder.tensor("\(m).\(sharedExpertGate).weight", shape: [1, h]).reshaped([h])
            }
        }
        return MoEBlock(spec: moe, router: router, experts: experts, expertIDs: kept, shared: shared, sharedGate: sharedGate,
                        selectionBias: selectionBias)
    }
}

extension Array {
    /// The elements at `indices`, in that order.
    func indexed(_ indices: [Int]) -> [Element] { indices.map { self[$0] } }
}

/// A new owned tensor holding slices `indices` of axis 0 of `tensor` (rows of a matrix, entries
/// of a vector, experts of a stacked tensor), same dtype, in that order. Used to slice routers
/// (and their biases) to kept experts.
public func gatherRows(_ tensor: Tensor, _ indices: [Int]) -> Tensor {
    // Per element for float types, per block for quantized ones (a row holds whole blocks).
    let rowBytes = tensor.dtype.byteCount(elements: tensor.rowLength)
    let buffer = TensorBuffer(byteCount: indices.count * rowBytes)
    for (i, r) in indices.enumerated() {
        buffer.pointer.advanced(by: i * rowBytes).copyMemory(from: tensor.data + r * rowBytes, byteCount: rowBytes)
    }
    var shape = tensor.shape
    shape[0] = indices.count
    return Tensor(dtype: tensor.dtype, shape: shape, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
}

import Foundation

enum ProcessInfoThreads {
    static var `default`: Int { ProcessInfo.processInfo.activeProcessorCount }
}
