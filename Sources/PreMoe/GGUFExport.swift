import Formats
import Foundation
import Kernels
import Models

/// Writes a pruned model as one GGUF file (`model.gguf`) laid out as llama.cpp's
/// `convert_hf_to_gguf.py` would have converted the pruned Hugging Face checkpoint, so
/// llama.cpp-style loaders read it (and so does `ModelLoader.load`):
///
/// - architectures: `qwen3_moe` → `qwen3moe`, `qwen2_moe` → `qwen2moe`, `olmoe` → `olmoe`,
///   `mixtral` → `llama` (q/k rows and biases permuted to GGML's interleaved RoPE, as the
///   converter does);
/// - tensor names are the inverse of `GGUFSource`'s mapping (`GGUFSource.ggufName(forHF:)`);
///   kept experts are stacked on the slowest axis in plan order (`blk.L.ffn_{gate,up,down}_exps`,
///   ne {H, I, N}), routers keep the kept rows in the same order (`ffn_gate_inp` {H, N});
///   Qwen2-MoE's `shared_expert_gate [1, H]` becomes `ffn_gate_inp_shexp` {H};
/// - tensor types follow `GGUFTypePolicy` (the converter's and `llama-quantize`'s rules): 1-D
///   tensors, norms, biases and routers are F32; without a `type` the other tensors keep the
///   source dtype (F32, F16 or BF16), bytes unchanged; with one they are converted or quantized;
/// - metadata: `general.architecture`, `general.type`, `general.name`, `general.file_type`,
///   `general.quantization_version` (quantized files), `<arch>.block_count`, `context_length`,
///   `embedding_length`, `feed_forward_length`, `attention.head_count(_kv)`,
///   `attention.key_length` / `value_length`, `attention.layer_norm_rms_epsilon`,
///   `rope.dimension_count`, `rope.freq_base`, `vocab_size`, `expert_count` (= N kept),
///   `expert_used_count`, `expert_feed_forward_length`, `expert_shared_feed_forward_length`,
///   `expert_weights_norm`; `tokenizer.ggml.*` from `tokenizer.json` (byte-level BPE only; other
///   tokenizers are left out and the file carries no tokenizer); `premoe.kept_experts.<layer>`
///   (int32 arrays of original indices in slot order), `premoe.source_fingerprint`,
///   `premoe.tasks`.
///
/// Weights are read through `ModelLoader.tensorSource(at:)`: an FP8 block-scaled checkpoint
/// (Qwen3-MoE "-FP8") is dequantized tensor by tensor with its `weight_scale_inv` grid and
/// written as F32 (no `type`) or converted from there; its scale tensors are not written.
///
/// Not supported (refused with `PreMoeError.unsupported`): other architectures (DeepSeek's MLA
/// split, dense models), fused expert tensors (`experts.gate_up_proj`), RoPE scaling.
public enum GGUFExport {
    /// HF `model_type` → GGUF `general.architecture`.
    public static let architectures = ["qwen3_moe": "qwen3moe", "qwen2_moe": "qwen2moe", "olmoe": "olmoe", "mixtral": "llama"]
    /// The file written in the output directory.
    public static let fileName = "model.gguf"

    /// Writes `out/model.gguf`.
    /// - Parameters: as `PrunedExport.write`, and
    ///   - type: the tensor types to write (`GGUFTypePolicy`); nil keeps the checkpoint's dtypes
    ///     (1-D tensors and routers still become F32, as llama.cpp needs).
    ///   - pool: threads for quantizing.
    /// - Throws: `PreMoeError.unsupported` for an architecture or checkpoint layout GGUF export
    ///   does not handle, `.invalidBudget` for a bad plan, `.io` for a non-empty output directory;
    ///   `ModelError`, `CheckpointError`, `GGUFError`.
    @discardableResult
    public static func write(modelDirectory: URL, keptExperts: [Int: [Int]], sourceFingerprint: String, tasks: [String] = [],
                             type: GGUFOutputType? = nil, pool: ThreadPool = .serial, to out: URL) throws -> ExportReport {
        try intoDirectory(out) { file in
            try writeFile(modelDirectory: modelDirectory, keptExperts: keptExperts, sourceFingerprint: sourceFingerprint,
                          tasks: tasks, type: type, pool: pool, to: file)
        }
    }

    /// Creates `out` (new or empty) and runs `body` on `out/model.gguf`.
    /// - Throws: `PreMoeError.io` for a non-empty or uncreatable directory; what `body` throws.
    static func intoDirectory(_ out: URL, _ body: (URL) throws -> ExportReport) throws -> ExportReport {
        try PrunedExport.checkEmptyOutput(out)
        do {
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        } catch {
            throw PreMoeError.io(path: out.path, reason: "\(error)")
        }
        var report = try body(out.appendingPathComponent(fileName))
        report.outputDirectory = out.path
        return report
    }

    /// Sets the provenance keys every exported GGUF carries: `premoe.kept_experts.<layer>` (int32
    /// arrays of the source's expert indices in slot order; only when `pruned`),
    /// `premoe.source_fingerprint` and `premoe.tasks`.
    static func setProvenance(_ writer: inout GGUFWriter, keptExperts: [Int: [Int]], moeLayers: [Int], pruned: Bool,
                              sourceFingerprint: String, tasks: [String]) {
        if pruned {
            for l in moeLayers { writer.set("premoe.kept_experts.\(l)", .int32s(keptExperts[l] ?? [])) }
        }
        writer.set("premoe.source_fingerprint", .string(sourceFingerprint))
        writer.set("premoe.tasks", .strings(tasks))
    }

    /// Whether `keptExperts` drops or reorders an expert of a MoE layer of `spec` (a plan keeping
    /// every expert in order is a plain conversion).
    static func isPruning(_ keptExperts: [Int: [Int]], spec: DecoderSpec) -> Bool {
        spec.moeLayers.contains { keptExperts[$0] != Array(0..<(spec.moe($0)?.expertCount ?? 0)) }
    }

    /// Every expert of every MoE layer of `spec`: the plan of a conversion without pruning.
    public static func allExperts(_ spec: DecoderSpec) -> [Int: [Int]] {
        var plan: [Int: [Int]] = [:]
        for l in spec.moeLayers { plan[l] = Array(0..<(spec.moe(l)?.expertCount ?? 0)) }
        return plan
    }

    /// The GGUF architecture of HF `modelType`, refusing by name the families GGUF export cannot
    /// express (DeepSeek's MLA, GLM-4.5, gpt-oss, dense models): callers check this before
    /// reading any weight.
    /// - Throws: `PreMoeError.unsupported` naming the model type and the supported ones.
    public static func architecture(of modelType: String, model: URL) throws -> String {
        guard let arch = architectures[modelType] else {
            throw PreMoeError.unsupported(
                "GGUF export supports model types \(architectures.keys.sorted().joined(separator: ", ")); "
                    + "\(model.path) is '\(modelType)' (use --format safetensors)")
        }
        return arch
    }

    /// Writes one GGUF file `file` (see `write`). A plan keeping every expert in order is a plain
    /// conversion: the file then carries no `premoe.kept_experts.*` keys.
    /// - Throws: as `write`; `PreMoeError.io` when `file` already exists.
    @discardableResult
    public static func writeFile(modelDirectory: URL, keptExperts: [Int: [Int]], sourceFingerprint: String,
                                 tasks: [String] = [], type: GGUFOutputType? = nil, pool: ThreadPool = .serial,
                                 to file: URL) throws -> ExportReport {
        try checkNewFile(file)
        let configURL = modelDirectory.appendingPathComponent("config.json")
        let config = try JSONValue(contentsOf: configURL)
        guard config.objectValue != nil else { throw PreMoeError.unsupported("\(configURL.path): not a JSON object") }
        let arch = try architecture(of: config["model_type"]?.stringValue ?? "?", model: modelDirectory)
        let spec = try ModelLoader.spec(at: modelDirectory)
        let (kept, slot) = try PrunedExport.checkPlan(keptExperts, spec: spec, model: modelDirectory)
        let moeLayers = spec.moeLayers
        let pruned = isPruning(keptExperts, spec: spec)

        func int(_ key: String) -> Int? { config[key]?.intValue }
        func required(_ key: String) throws -> Int {
            guard let v = int(key) else { throw PreMoeError.unsupported("\(configURL.path): no integer '\(key)'") }
            return v
        }
        let hidden = try required("hidden_size")
        let ffn = try required("intermediate_size")
        let layers = try required("num_hidden_layers")
        let heads = try required("num_attention_heads")
        let kvHeads = int("num_key_value_heads") ?? heads
        let headDim = int("head_dim") ?? hidden / max(1, heads)
        let rope = config["rope_parameters"] ?? config["rope_scaling"]
        if let type = rope?["rope_type"]?.stringValue ?? rope?["type"]?.stringValue, type != "default" {
            throw PreMoeError.unsupported("GGUF export: RoPE scaling '\(type)' is not supported")
        }
        if let partial = config["partial_rotary_factor"]?.doubleValue ?? rope?["partial_rotary_factor"]?.doubleValue, partial != 1 {
            throw PreMoeError.unsupported("GGUF export: partial rotary embeddings are not supported")
        }
        let theta = rope?["rope_theta"]?.doubleValue ?? config["rope_theta"]?.doubleValue ?? 10000

        // Tensors: planned from the headers and zero-copy mapped views only; each is made (stacked,
        // sliced, converted) when the writer reaches it, so memory holds about one tensor. (An FP8
        // checkpoint's tensors are dequantized when planned, so its export holds them all.)
        let checkpoint = try ModelLoader.tensorSource(at: modelDirectory)
        var tensors: [PlannedTensor] = []
        var stacks: [String: [Int: Tensor]] = [:]  // GGUF name → slot → expert tensor
        func ggufName(_ hf: String) throws -> (tensor: String, expert: Int?) {
            guard let g = GGUFSource.ggufName(forHF: hf) else {
                throw PreMoeError.unsupported("GGUF export: tensor '\(hf)' has no GGUF name (use --format safetensors)")
            }
            return g
        }
        for name in checkpoint.tensorNames {
            guard let shape = checkpoint.shape(of: name) else { continue }
            switch ExpertTensorRole.classify(name, shape: shape, expertCount: { spec.moe($0)?.expertCount }) {
            case .router(let l), .routerVector(let l):
                guard let rows = keptExperts[l] else { throw PreMoeError.invalidBudget("the plan does not list MoE layer \(l)") }
                tensors.append(.gathered(try ggufName(name).tensor, try checkpoint.tensor(name), rows: rows))
            case .stackedExperts:
                throw PreMoeError.unsupported(
                    "GGUF export: fused expert tensor '\(name)' is not supported (use --format safetensors)")
            case .expert(let l, let e, _, _):
                guard let s = slot[l]?[e] else { continue }
                let g = try ggufName(name)
                guard g.expert == e else {
                    throw PreMoeError.unsupported("GGUF export: tensor '\(name)' has no GGUF name (use --format safetensors)")
                }
                stacks[g.tensor, default: [:]][s] = try checkpoint.tensor(name)
            case .backbone:
                let g = try ggufName(name)
                guard g.expert == nil else { throw PreMoeError.unsupported("GGUF export: unexpected expert tensor '\(name)'") }
                var t = try checkpoint.tensor(name)
                if g.tensor.hasSuffix("ffn_gate_inp_shexp.weight") {
                    t = Tensor(dtype: t.dtype, shape: [t.count], data: t.data, owner: t.owner)
                }
                if arch == "llama" {
                    if name.hasSuffix("self_attn.q_proj.weight") || name.hasSuffix("self_attn.q_proj.bias") {
                        tensors.append(.gathered(g.tensor, t, rows: interleavedRoPEOrder(heads: heads, rows: t.shape[0])))
                        continue
                    } else if name.hasSuffix("self_attn.k_proj.weight") || name.hasSuffix("self_attn.k_proj.bias") {
                        tensors.append(.gathered(g.tensor, t, rows: interleavedRoPEOrder(heads: kvHeads, rows: t.shape[0])))
                        continue
                    }
                }
                tensors.append(PlannedTensor(name: g.tensor, shape: t.shape, dtype: t.dtype) { t })
            }
        }
        for (name, perSlot) in stacks {
            let experts = try (0..<kept).map { s -> Tensor in
                guard let t = perSlot[s] else { throw PreMoeError.unsupported("GGUF export: '\(name)' lacks kept expert slot \(s)") }
                return t
            }
            tensors.append(try .stacked(name, experts))
        }
        tensors.sort { order($0.name) < order($1.name) }

        // Tensor types (llama.cpp's rules, GGUFTypePolicy).
        let policy = GGUFTypePolicy(type: type, layerCount: layers, expertCount: kept,
                                    tiedEmbeddings: !tensors.contains { $0.name == "output.weight" })
        var notes: [String] = []
        if arch == "olmoe" && kvHeads != heads {
            notes.append("llama.cpp's OLMoE sizes attn_k_norm by the full width (it assumes as many KV heads as heads); "
                + "with \(kvHeads) KV heads for \(heads) heads this file loads in premoe but not in llama.cpp")
        }
        let targets = tensors.map { entry -> DType in
            let (target, note) = policy.target(for: entry.name, shape: entry.shape, source: entry.dtype)
            if let note { notes.append(note) }
            return target
        }

        // Metadata, in the converter's order: general.*, architecture keys, tokenizer.
        var writer = GGUFWriter()
        let a = arch
        writer.set("general.architecture", .string(arch))
        writer.set("general.type", .string("model"))
        writer.set("general.name", .string(modelDirectory.lastPathComponent + (pruned ? "-premoe-\(kept)" : "")))
        if let type {
            writer.set("general.file_type", .uint32(type.fileType))
            if type.isQuantized { writer.set("general.quantization_version", .uint32(2)) }
        } else if let i = tensors.firstIndex(where: { $0.name == "token_embd.weight" }),
            let fileType = ["F32": 0, "F16": 1, "BF16": 32][targets[i].rawValue] {
            writer.set("general.file_type", .uint32(UInt32(fileType)))
        }
        func u32(_ key: String, _ v: Int) { writer.set("\(a).\(key)", .uint32(UInt32(v))) }
        u32("block_count", layers)
        u32("context_length", int("max_position_embeddings") ?? 2048)
        u32("embedding_length", hidden)
        u32("feed_forward_length", ffn)
        u32("attention.head_count", heads)
        u32("attention.head_count_kv", kvHeads)
        u32("attention.key_length", headDim)
        u32("attention.value_length", headDim)
        writer.set("\(a).attention.layer_norm_rms_epsilon", .float32(Float(config["rms_norm_eps"]?.doubleValue ?? 1e-6)))
        u32("rope.dimension_count", headDim)
        writer.set("\(a).rope.freq_base", .float32(Float(theta)))
        if let vocab = int("vocab_size") { u32("vocab_size", vocab) }
        u32("expert_count", kept)
        u32("expert_used_count", min(try required("num_experts_per_tok"), kept))
        u32("expert_feed_forward_length", int("moe_intermediate_size") ?? ffn)
        if let shared = int("shared_expert_intermediate_size"), shared > 0 { u32("expert_shared_feed_forward_length", shared) }
        if let norm = config["norm_topk_prob"]?.boolValue { writer.set("\(a).expert_weights_norm", .bool(norm)) }
        try tokenizerMetadata(modelDirectory: modelDirectory, config: config, into: &writer)
        setProvenance(&writer, keptExperts: keptExperts, moeLayers: moeLayers, pruned: pruned,
                      sourceFingerprint: sourceFingerprint, tasks: tasks)

        var tensorBytes = 0
        for (planned, target) in zip(tensors, targets) {
            guard let ggml = GGMLType(target) else {
                throw PreMoeError.unsupported("GGUF export: dtype \(target) of '\(planned.name)' has no GGML type")
            }
            tensorBytes += target.byteCount(elements: planned.shape.reduce(1, *))
            try writer.add(planned.name, type: ggml, dimensions: Array(planned.shape.reversed())) {
                let source = try planned.make()
                let converted = source.converted(to: target, pool: pool)
                if converted.owner !== source.owner { source.releasePages() }
                return converted
            }
        }
        try writer.write(to: file)
        return ExportReport(outputDirectory: file.deletingLastPathComponent().path, files: [file.lastPathComponent],
                            tensorCount: tensors.count, tensorBytes: tensorBytes, expertsPerLayer: kept, notes: notes)
    }

    /// - Throws: `PreMoeError.io` when `file` already exists.
    static func checkNewFile(_ file: URL) throws {
        guard !FileManager.default.fileExists(atPath: file.path) else {
            throw PreMoeError.io(path: file.path, reason: "the output file already exists")
        }
    }

    /// Row order taking Hugging Face's half-split RoPE rows to GGML's interleaved ones, per head
    /// (the converter's `permute`): new row `2i + j` of a head is old row `j · d/2 + i`.
    static func interleavedRoPEOrder(heads: Int, rows: Int) -> [Int] {
        let d = rows / max(1, heads)
        let half = d / 2
        var order: [Int] = []
        order.reserveCapacity(rows)
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 { order.append(h * d + j * half + i) }
            }
        }
        return order
    }

    /// Tensors of one shape and dtype stacked on a new slowest axis.
    static func stack(_ tensors: [Tensor], name: String) throws -> Tensor {
        try checkStackable(tensors, name: name)
        let first = tensors[0]
        let bytes = first.byteCount
        let buffer = TensorBuffer(byteCount: tensors.count * bytes)
        for (i, t) in tensors.enumerated() {
            buffer.pointer.advanced(by: i * bytes).copyMemory(from: t.data, byteCount: bytes)
        }
        return Tensor(dtype: first.dtype, shape: [tensors.count] + first.shape, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }

    /// - Throws: `PreMoeError.unsupported` unless `tensors` is non-empty and all of one shape and dtype.
    static func checkStackable(_ tensors: [Tensor], name: String) throws {
        guard let first = tensors.first else { throw PreMoeError.unsupported("GGUF export: '\(name)' has no expert") }
        guard tensors.allSatisfy({ $0.shape == first.shape && $0.dtype == first.dtype }) else {
            throw PreMoeError.unsupported("GGUF export: the experts of '\(name)' differ in shape or dtype")
        }
    }

    /// The converter's order: globals first (embeddings), blocks by number, output last.
    static func order(_ name: String) -> (Int, Int, String) {
        let parts = name.split(separator: ".")
        if parts.first == "blk", parts.count > 1, let l = Int(parts[1]) { return (1, l, name) }
        return (name.hasPrefix("token_embd") ? 0 : 2, 0, name)
    }
}

/// A tensor of a GGUF export, known by name, shape (slowest axis first) and dtype before any of
/// its bytes are read; `make` builds it (from mapped views) when the writer reaches it, and
/// releases the mapped pages it copied from.
struct PlannedTensor {
    let name: String
    let shape: [Int]
    let dtype: DType
    let make: () throws -> Tensor

    init(name: String, shape: [Int], dtype: DType, make: @escaping () throws -> Tensor) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.make = make
    }

    /// Slices `rows` of `source`'s slowest axis, in that order (routers, RoPE permutations).
    static func gathered(_ name: String, _ source: Tensor, rows: [Int]) -> PlannedTensor {
        PlannedTensor(name: name, shape: [rows.count] + source.shape.dropFirst(), dtype: source.dtype) {
            defer { source.releasePages() }
            return gatherRows(source, rows)
        }
    }

    /// `experts` stacked on a new slowest axis (one expert stack in memory at a time).
    /// - Throws: `PreMoeError.unsupported` when they are empty or differ in shape or dtype.
    static func stacked(_ name: String, _ experts: [Tensor]) throws -> PlannedTensor {
        try GGUFExport.checkStackable(experts, name: name)
        return PlannedTensor(name: name, shape: [experts.count] + experts[0].shape, dtype: experts[0].dtype) {
            defer { experts.forEach { $0.releasePages() } }
            return try GGUFExport.stack(experts, name: name)
        }
    }
}
