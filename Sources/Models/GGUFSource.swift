// GGUF checkpoints (llama.cpp's convert_hf_to_gguf.py output) presented to the Hugging Face
// loader: `GGUFSource` renames tensors to HF names (zero-copy; stacked experts become per-expert
// row slices), `GGUFModelConfig` turns GGUF metadata into the `config.json` the registry already
// decodes, so `HFDecoderLayout.build` and the architecture code never know the format.
import Formats
import Foundation
import Kernels
import Tokenization

/// A GGUF file under Hugging Face tensor names and shapes.
///
/// Mapping (layer L, `m` = `mlp`, or `block_sparse_moe` for Mixtral):
/// `token_embd` → `model.embed_tokens`, `output_norm` → `model.norm`, `output` → `lm_head`,
/// `blk.L.attn_norm` → `input_layernorm`, `ffn_norm` → `post_attention_layernorm`,
/// `attn_{q,k,v,output}` → `self_attn.{q,k,v,o}_proj` (weights and biases),
/// `attn_{q,k}_norm` → `self_attn.{q,k}_norm`, `ffn_{gate,up,down}` → `mlp.{gate,up,down}_proj`,
/// `ffn_gate_inp` → `m.gate`, `ffn_{gate,up,down}_exps` {H, I, E} → `m.experts.N.{gate,up,down}_proj`
/// (Mixtral `w1`, `w3`, `w2`), one zero-copy slice per expert (experts are the slowest axis, so
/// each is contiguous); `ffn_*_shexp` → `mlp.shared_expert.*`, `ffn_gate_inp_shexp` {H} →
/// `mlp.shared_expert_gate` `[1, H]`. Old Mixtral files' per-expert `ffn_gate.N` map the same way.
/// Unknown names are kept as they are, so strict loading reports them. Shapes are GGML `ne`
/// reversed (slowest first), as HF writes them.
public final class GGUFSource: TensorSource {
    /// The file.
    public let file: GGUFFile

    struct Binding {
        let gguf: String
        /// Index on the slowest axis of a stacked expert tensor.
        let expert: Int?
        /// HF shape presented.
        let shape: [Int]
    }

    private let bindings: [String: Binding]
    public let tensorNames: [String]

    /// Maps `file`'s tensors.
    /// - Parameters:
    ///   - file: an opened GGUF file.
    ///   - mixtralNames: name experts and router as Mixtral does (`block_sparse_moe`, w1/w3/w2).
    ///   - hidden: GGUF tensors consumed elsewhere (e.g. `rope_freqs.weight` by the config).
    public init(file: GGUFFile, mixtralNames: Bool = false, hidden: Set<String> = []) {
        self.file = file
        let moe = mixtralNames ? "block_sparse_moe" : "mlp"
        let projection: [String: String] = mixtralNames
            ? ["gate": "w1", "up": "w3", "down": "w2"] : ["gate": "gate_proj", "up": "up_proj", "down": "down_proj"]
        var bindings: [String: Binding] = [:]
        for info in file.tensorInfos where !hidden.contains(info.name) {
            for (name, binding) in Self.map(info, moe: moe, projection: projection) { bindings[name] = binding }
        }
        self.bindings = bindings
        tensorNames = bindings.keys.sorted()
    }

    static let global = ["token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"]
    static let perLayer = [
        "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
        "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
        "ffn_gate_shexp": "mlp.shared_expert.gate_proj", "ffn_up_shexp": "mlp.shared_expert.up_proj",
        "ffn_down_shexp": "mlp.shared_expert.down_proj",
    ]

    /// The inverse of `map`: the GGUF tensor behind Hugging Face tensor `name`, from the same
    /// name tables. `expert` is the routed expert's index when `name` is one expert of a stacked
    /// `blk.L.ffn_{gate,up,down}_exps` tensor (HF `….{mlp | block_sparse_moe}.experts.E.{gate_proj |
    /// up_proj | down_proj | w1 | w3 | w2}.weight`). Nil for a name with no GGUF counterpart (fused
    /// expert tensors, MLA projections, ...).
    public static func ggufName(forHF name: String) -> (tensor: String, expert: Int?)? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard let suffix = parts.last, suffix == "weight" || suffix == "bias" else { return nil }
        let stem = parts.dropLast().joined(separator: ".")
        if let g = global.first(where: { $0.value == stem })?.key { return ("\(g).\(suffix)", nil) }
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        let b = "blk.\(layer)"
        let local = parts[3..<(parts.count - 1)].joined(separator: ".")
        if let g = perLayer.first(where: { $0.value == local })?.key { return ("\(b).\(g).\(suffix)", nil) }
        let block = parts[3]
        guard block == "mlp" || block == "block_sparse_moe" else { return nil }
        let rest = Array(parts[4..<(parts.count - 1)])
        switch rest.count {
        case 1 where rest[0] == "gate": return ("\(b).ffn_gate_inp.\(suffix)", nil)
        case 1 where rest[0] == "shared_expert_gate" && block == "mlp": return ("\(b).ffn_gate_inp_shexp.\(suffix)", nil)
        case 3 where rest[0] == "experts":
            guard let e = Int(rest[1]) else { return nil }
            let projections = ["gate_proj": "gate", "up_proj": "up", "down_proj": "down", "w1": "gate", "w3": "up", "w2": "down"]
            guard let kind = projections[rest[2]] else { return nil }
            return ("\(b).ffn_\(kind)_exps.\(suffix)", e)
        default:
            return nil
        }
    }

    /// The HF names one GGUF tensor stands for (one per expert for stacked experts).
    static func map(_ info: GGUFTensorInfo, moe: String, projection: [String: String]) -> [(String, Binding)] {
        let shape = info.shape
        let plain = [(info.name, Binding(gguf: info.name, expert: nil, shape: shape))]
        let parts = info.name.split(separator: ".").map(String.init)
        guard let suffix = parts.last, suffix == "weight" || suffix == "bias" else { return plain }
        if parts.count == 2, let hf = global[parts[0]] {
            return [("\(hf).\(suffix)", Binding(gguf: info.name, expert: nil, shape: shape))]
        }
        guard parts.count >= 4, parts[0] == "blk", let layer = Int(parts[1]) else { return plain }
        let p = "model.layers.\(layer)"
        let kind = parts[2]
        if parts.count == 4 {
            if let hf = perLayer[kind] { return [("\(p).\(hf).\(suffix)", Binding(gguf: info.name, expert: nil, shape: shape))] }
            switch kind {
            case "ffn_gate_inp":
                return [("\(p).\(moe).gate.\(suffix)", Binding(gguf: info.name, expert: nil, shape: shape))]
            case "ffn_gate_inp_shexp":
                return [("\(p).mlp.shared_expert_gate.\(suffix)", Binding(gguf: info.name, expert: nil, shape: [1, info.elementCount]))]
            case "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps":
                guard shape.count == 3, let proj = projection[String(kind.dropFirst(4).dropLast(5))] else { return plain }
                return (0..<shape[0]).map { e in
                    ("\(p).\(moe).experts.\(e).\(proj).\(suffix)", Binding(gguf: info.name, expert: e, shape: Array(shape.dropFirst())))
                }
            default:
                return plain
            }
        }
        // Pre-2024 Mixtral files: blk.L.ffn_gate.E.weight, one tensor per expert.
        if parts.count == 5, let e = Int(parts[3]), kind.hasPrefix("ffn_"), let proj = projection[String(kind.dropFirst(4))] {
            return [("\(p).\(moe).experts.\(e).\(proj).\(suffix)", Binding(gguf: info.name, expert: nil, shape: shape))]
        }
        return plain
    }

    public func shape(of name: String) -> [Int]? { bindings[name]?.shape }

    /// The stored bytes of `name`: the whole GGUF tensor, or one expert's share of a stacked one.
    public func byteCount(of name: String) -> Int? {
        guard let b = bindings[name], let info = file.info(b.gguf) else { return nil }
        guard b.expert != nil else { return info.byteCount }
        return info.byteCount / max(1, info.shape.first ?? 1)
    }

    /// ggml's name of the type `name` is stored in (`Q4_K`, `F32`, ...).
    public func storedDType(of name: String) -> String? {
        bindings[name].flatMap { file.info($0.gguf)?.type.name }
    }

    public var bytesRead: Int { file.bytesRead }

    /// The GGUF tensor (and expert) behind HF name `name`.
    public func ggufName(of name: String) -> (tensor: String, expert: Int?)? {
        bindings[name].map { ($0.gguf, $0.expert) }
    }

    private func binding(_ name: String) throws -> Binding {
        guard let b = bindings[name] else {
            throw GGUFError.unknownTensor(file: file.url.path, tensor: name, suggestions: [])
        }
        return b
    }

    /// A zero-copy view (an expert is a byte slice of its stacked tensor).
    public func tensor(_ name: String) throws -> Tensor {
        let b = try binding(name)
        let t = try file.tensor(b.gguf)
        guard let e = b.expert else {
            return t.shape == b.shape ? t : Tensor(dtype: t.dtype, shape: b.shape, data: t.data, owner: t.owner)
        }
        let bytesPerExpert = (file.info(b.gguf)?.byteCount ?? 0) / max(1, t.shape[0])
        return Tensor(dtype: t.dtype, shape: b.shape, data: t.data + e * bytesPerExpert, owner: t.owner)
    }

    /// Rows of the slowest HF axis, read with `pread` (only those bytes).
    public func readRows(_ name: String, rows: Range<Int>) throws -> Tensor {
        let b = try binding(name)
        let rowCount = b.shape.first ?? 1
        guard rows.lowerBound >= 0, rows.upperBound <= rowCount else {
            throw GGUFError.rowsOutOfRange(file: file.url.path, tensor: name, rows: rows, available: rowCount)
        }
        // Seen as one matrix of `experts · rows` rows, expert e's rows start at e · rows.
        let rowLength = b.shape.dropFirst().reduce(1, *)
        let total = file.info(b.gguf)?.elementCount ?? 0
        let view = [total / max(1, rowLength)] + b.shape.dropFirst()
        let base = (b.expert ?? 0) * rowCount
        return try file.readRows(b.gguf, rows: (base + rows.lowerBound)..<(base + rows.upperBound), viewedAs: view)
    }
}

/// GGUF metadata as the `config.json` a Hugging Face checkpoint of the same model would carry,
/// plus the two facts `config.json` cannot say (RoPE pair layout, llama3 frequency factors).
///
/// Keys read (`a` = `general.architecture`): `a.embedding_length`, `a.block_count`,
/// `a.attention.head_count(_kv)`, `a.attention.key_length`, `a.feed_forward_length`,
/// `a.attention.layer_norm_rms_epsilon`, `a.context_length`, `a.rope.freq_base`,
/// `a.rope.dimension_count`, `a.rope.scaling.{type,factor,original_context_length}`,
/// `a.expert_count`, `a.expert_used_count`, `a.expert_feed_forward_length`,
/// `a.expert_shared_feed_forward_length`, `a.expert_weights_norm`, `a.vocab_size`,
/// `tokenizer.ggml.eos_token_id`. Tied embeddings = no `output.weight`; biases, MoE layers and
/// dense layers are read off which tensors exist.
///
/// `feed_forward_length`, `attention.head_count` and `attention.head_count_kv` may be arrays with
/// one value per layer, as llama.cpp reads them (`get_key_or_arr`; an absent `head_count_kv`
/// copies `head_count`): SEAP's pruned exports and llama.cpp's `deci` architecture (Llama
/// tensors, per-layer widths and heads), which loads as `llama`. The config then carries the
/// largest values (heads rounded up to a multiple of the KV heads) and `adjust` sets the layers.
/// A 0 in these arrays is llama.cpp's layer without attention (`head_count` 0), "linear
/// attention" (`head_count_kv` 0) or without FFN (`feed_forward_length` 0); the engine runs
/// none of these, so they are refused.
public struct GGUFModelConfig {
    /// GGUF `general.architecture` → HF `model_type` (llama with experts is Mixtral).
    public static let architectures = [
        "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe", "qwen2moe": "qwen2_moe",
        "olmoe": "olmoe", "deci": "llama",
    ]

    /// The synthesized `config.json`.
    public let configData: Data
    /// The HF `model_type`.
    public let modelType: String
    /// q/k rows are in GGML's interleaved RoPE order (arch `llama` and `deci`: the converter permutes them).
    /// We keep the weights as they are and rotate pairs `(2i, 2i+1)`; q·k is unchanged because q
    /// and k are permuted alike.
    public let interleavedRoPE: Bool
    /// `rope_freqs.weight`: per-frequency divisors (llama3 scaling), applied to the spec.
    public let ropeFrequencyFactors: [Float]?
    /// GGUF tensors the config consumed (not model weights).
    public let consumedTensors: Set<String>
    /// Per layer query / KV head counts and dense FFN widths when the file's arrays differ
    /// between layers; nil when one value serves every layer.
    public let layerHeadCounts: [Int]?, layerKVHeadCounts: [Int]?, layerFeedForward: [Int]?
    /// The file has `blk.L.ffn_down.bias` (SEAP's bias compensation).
    public let downBias: Bool
    /// The file has `blk.L.attn_output.bias`.
    public let outputBias: Bool

    /// Reads the metadata of `file`.
    /// - Throws: `ModelError.unsupportedModelType` for an architecture not in `architectures`,
    ///   `GGUFError.missingMetadata` / `.metadataTypeMismatch` for required keys.
    public init(file: GGUFFile) throws {
        let path = file.url.path
        guard let arch = try file.string("general.architecture") else {
            throw GGUFError.missingMetadata(file: path, key: "general.architecture", hint: nil)
        }
        guard var type = Self.architectures[arch] else {
            throw ModelError.unsupportedModelType(arch, supported: Self.architectures.keys.sorted(), file: path)
        }
        func required(_ key: String) throws -> Int {
            guard let v = try file.int("\(arch).\(key)") else {
                throw GGUFError.missingMetadata(file: path, key: "\(arch).\(key)", hint: "the file may come from an old converter")
            }
            return v
        }
        let has = { (name: String) in file.info(name) != nil }
        let hidden = try required("embedding_length")
        let layers = try required("block_count")
        // Checked here too: the per-layer scan below runs before the config is validated.
        guard (1...ConfigLimits.layers).contains(layers) else {
            throw GGUFError.invalidMetadata(file: path, key: "\(arch).block_count",
                                            reason: "\(layers) is outside 1...\(ConfigLimits.layers)")
        }
        // One value per layer: an integer for all, or an array (llama.cpp's `get_key_or_arr`).
        func perLayer(_ key: String) throws -> [Int]? {
            let full = "\(arch).\(key)"
            guard let value = file[full] else { return nil }
            if let v = value.int { return [Int](repeating: v, count: layers) }
            guard let values = try file.ints(full) else { return nil }
            guard values.count == layers else {
                throw GGUFError.invalidMetadata(file: path, key: full, reason: "\(values.count) values for \(layers) layers")
            }
            return values
        }
        func checked(_ values: [Int], _ key: String, _ limit: Int, zero: String) throws -> [Int] {
            for (l, v) in values.enumerated() where v < 1 || v > limit {
                if v == 0 { throw ModelError.unsupportedFeature("layer \(l) \(zero) (\(arch).\(key) = 0)", file: path) }
                throw GGUFError.invalidMetadata(file: path, key: "\(arch).\(key)", reason: "layer \(l): \(v) is outside 1...\(limit)")
            }
            return values
        }
        guard let headArray = try perLayer("attention.head_count") else {
            throw GGUFError.missingMetadata(file: path, key: "\(arch).attention.head_count", hint: "the file may come from an old converter")
        }
        let layerHeads = try checked(headArray, "attention.head_count", ConfigLimits.heads, zero: "has no attention")
        let layerKV = try checked(try perLayer("attention.head_count_kv") ?? layerHeads, "attention.head_count_kv",
                                  ConfigLimits.heads, zero: "has linear attention")
        for l in 0..<layers where layerHeads[l] % layerKV[l] != 0 {
            throw GGUFError.invalidMetadata(file: path, key: "\(arch).attention.head_count_kv",
                                            reason: "layer \(l): \(layerKV[l]) KV heads do not divide \(layerHeads[l]) heads")
        }
        let kvHeads = layerKV.max() ?? 1
        // The shared counts bound every layer's; the heads are rounded up so the KV heads divide them.
        let heads = ((layerHeads.max() ?? 1) + kvHeads - 1) / kvHeads * kvHeads
        let uniformHeads = Set(layerHeads).count == 1 && Set(layerKV).count == 1
        layerHeadCounts = uniformHeads ? nil : layerHeads
        layerKVHeadCounts = uniformHeads ? nil : layerKV
        let headDim = try file.int("\(arch).attention.key_length") ?? hidden / layerHeads[0]
        let experts = try file.int("\(arch).expert_count") ?? 0
        if arch == "llama" && experts > 0 { type = "mixtral" }

        var c: [String: Any] = [
            "model_type": type,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": uniformHeads ? layerHeads[0] : heads,
            "num_key_value_heads": kvHeads,
            "head_dim": headDim,
            "rms_norm_eps": try file.double("\(arch).attention.layer_norm_rms_epsilon") ?? 1e-6,
            "max_position_embeddings": try file.int("\(arch).context_length") ?? 2048,
            "tie_word_embeddings": !has("output.weight"),
            "hidden_act": "silu",
        ]
        let vocab = try file.int("\(arch).vocab_size") ?? file.info("token_embd.weight")?.shape.first
            ?? (try file.strings("tokenizer.ggml.tokens"))?.count
        guard let vocab else { throw GGUFError.missingMetadata(file: path, key: "\(arch).vocab_size", hint: nil) }
        c["vocab_size"] = vocab
        if let eos = try file.int("tokenizer.ggml.eos_token_id") { c["eos_token_id"] = eos }
        let ffnArray = try perLayer("feed_forward_length")
        var ffn = ffnArray?.first
        if let ffnArray, Set(ffnArray).count > 1 {
            guard experts == 0 else {
                throw ModelError.unsupportedFeature("per-layer \(arch).feed_forward_length with experts", file: path)
            }
            layerFeedForward = try checked(ffnArray, "feed_forward_length", ConfigLimits.intermediateSize, zero: "has no FFN")
            ffn = ffnArray.max()
        } else {
            layerFeedForward = nil
        }
        let expertFFN = try file.int("\(arch).expert_feed_forward_length")
        c["intermediate_size"] = (type == "olmoe" ? expertFFN ?? ffn : ffn ?? expertFFN) ?? 0

        var rope: [String: Any] = ["rope_theta": try file.double("\(arch).rope.freq_base") ?? 10000, "rope_type": "default"]
        if let dims = try file.int("\(arch).rope.dimension_count"), headDim > 0, dims != headDim {
            rope["partial_rotary_factor"] = Double(dims) / Double(headDim)
        }
        switch try file.string("\(arch).rope.scaling.type") ?? "none" {
        case "none": break
        case "linear":
            rope["rope_type"] = "linear"
            rope["factor"] = try file.double("\(arch).rope.scaling.factor") ?? 1
        case "yarn":
            rope["rope_type"] = "yarn"
            rope["factor"] = try file.double("\(arch).rope.scaling.factor") ?? 1
            if let original = try file.int("\(arch).rope.scaling.original_context_length") {
                rope["original_max_position_embeddings"] = original
            }
        case let other:
            throw ModelError.unsupportedFeature("GGUF rope.scaling.type '\(other)'", file: path)
        }
        c["rope_parameters"] = rope

        let qBias = has("blk.0.attn_q.bias")
        c["attention_bias"] = qBias && type != "qwen2"
        if type == "qwen2_moe" { c["qkv_bias"] = qBias }
        if experts > 0 {
            c[type == "mixtral" ? "num_local_experts" : "num_experts"] = experts
            c["num_experts_per_tok"] = try file.int("\(arch).expert_used_count") ?? 0
            if let expertFFN { c["moe_intermediate_size"] = expertFFN }
            if let shared = try file.int("\(arch).expert_shared_feed_forward_length") {
                c["shared_expert_intermediate_size"] = shared
            }
            // llama.cpp normalises Qwen3-MoE's top-k weights and not Qwen2-MoE's or OLMoE's.
            c["norm_topk_prob"] = try file.bool("\(arch).expert_weights_norm") ?? (type == "qwen3_moe")
            c["decoder_sparse_step"] = 1
            c["mlp_only_layers"] = (0..<layers).filter { !has("blk.\($0).ffn_gate_inp.weight") }
        }
        downBias = has("blk.0.ffn_down.bias")
        outputBias = has("blk.0.attn_output.bias")
        modelType = type
        configData = try JSONSerialization.data(withJSONObject: c, options: [.sortedKeys])
        interleavedRoPE = arch == "llama" || arch == "deci"
        var consumed = Set<String>()
        if file.info("rope_freqs.weight") != nil {
            let factors = try file.tensor("rope_freqs.weight").toFloatArray()
            ropeFrequencyFactors = factors
            consumed.insert("rope_freqs.weight")
        } else {
            ropeFrequencyFactors = nil
        }
        consumedTensors = consumed
    }

    /// Applies what `config.json` cannot express: interleaved RoPE pairs, frequency factors,
    /// per-layer head counts and FFN widths, projection biases read off the tensors.
    /// - Throws: `ModelError.invalidConfig` when `rope_freqs` does not have one factor per frequency.
    public func adjust(_ spec: inout DecoderSpec, file: String) throws {
        if interleavedRoPE { spec.rope.style = .interleaved }
        spec.layerHeadCounts = layerHeadCounts
        spec.layerKVHeadCounts = layerKVHeadCounts
        if let widths = layerFeedForward {
            for (l, w) in widths.enumerated() { spec.feedForward[l] = .dense(intermediateSize: w) }
        }
        if outputBias { spec.outputBias = true }
        if downBias { spec.downBias = true }
        if let factors = ropeFrequencyFactors {
            guard factors.count == spec.rope.invFreq.count else {
                throw ModelError.invalidConfig(
                    field: "rope_freqs.weight", reason: "\(factors.count) factors for \(spec.rope.invFreq.count) frequencies", file: file)
            }
            // llama.cpp divides each frequency by its factor (`theta / freq_factor`).
            for i in factors.indices { spec.rope.invFreq[i] /= factors[i] }
        }
    }
}

extension Tokenizer {
    /// The tokenizer stored in GGUF metadata (`tokenizer.ggml.*`): byte-level BPE
    /// (`tokenizer.ggml.model = "gpt2"`) or SentencePiece (`"llama"`); nil when the file has none.
    /// - Throws: `TokenizerError.unsupported` for another tokenizer model, `TokenizerError` for
    ///   inconsistent metadata, `GGUFError` for mistyped keys.
    public static func fromGGUF(_ file: GGUFFile) throws -> Tokenizer? {
        guard let model = try file.string("tokenizer.ggml.model"),
              let tokens = try file.strings("tokenizer.ggml.tokens") else { return nil }
        switch model {
        case "gpt2":
            return try Tokenizer(
                vocabulary: tokens, merges: try file.strings("tokenizer.ggml.merges") ?? [],
                tokenTypes: try file.ints("tokenizer.ggml.token_type"),
                preTokenizer: try file.string("tokenizer.ggml.pre") ?? "default",
                bosTokenID: try file.int("tokenizer.ggml.bos_token_id"),
                eosTokenID: try file.int("tokenizer.ggml.eos_token_id"),
                addBOS: try file.bool("tokenizer.ggml.add_bos_token") ?? false,
                chatTemplate: try file.string("tokenizer.chat_template"))
        case "llama":
            let key = "tokenizer.ggml.scores"
            let values = file[key]?.array ?? []
            let scores = values.compactMap { $0.double.map(Float.init) }
            guard scores.count == values.count else {
                throw GGUFError.metadataTypeMismatch(file: file.url.path, key: key, expected: "an array of floats",
                                                     actual: "an array of \(values.first?.type ?? .float32)")
            }
            return try Tokenizer(
                sentencePieceVocabulary: tokens, scores: scores.isEmpty ? [Float](repeating: 0, count: tokens.count) : scores,
                tokenTypes: try file.ints("tokenizer.ggml.token_type"),
                bosTokenID: try file.int("tokenizer.ggml.bos_token_id"),
                eosTokenID: try file.int("tokenizer.ggml.eos_token_id"),
                unknownTokenID: try file.int("tokenizer.ggml.unknown_token_id"),
                addBOS: try file.bool("tokenizer.ggml.add_bos_token") ?? true,
                addEOS: try file.bool("tokenizer.ggml.add_eos_token") ?? false,
                addSpacePrefix: try file.bool("tokenizer.ggml.add_space_prefix") ?? true,
                chatTemplate: try file.string("tokenizer.chat_template"))
        default:
            throw TokenizerError.unsupported(component: "GGUF tokenizer.ggml.model", type: model, file: file.url.path)
        }
    }
}

extension ModelLoader {
    /// Whether `url` names a GGUF file (by extension).
    public static func isGGUF(_ url: URL) -> Bool { url.pathExtension.lowercased() == "gguf" }

    /// The shared spec of a GGUF file, from its metadata only.
    /// - Throws: `GGUFError`, `ModelError` as `loadGGUF`.
    public static func ggufSpec(_ url: URL) throws -> DecoderSpec {
        let file = try GGUFFile(url: url)
        let config = try GGUFModelConfig(file: file)
        var (spec, _) = try ModelRegistry.spec(configData: config.configData, file: url.path)
        try config.adjust(&spec, file: url.path)
        return spec
    }

    /// Loads a `.gguf` file: metadata → config, tensors under HF names, tokenizer from metadata.
    /// - Throws: `GGUFError` (corrupt file, missing metadata), `ModelError` (unsupported
    ///   architecture, every weight problem together), `TokenizerError`.
    public static func loadGGUF(_ url: URL, options: LoadOptions = LoadOptions()) throws -> LoadedModel {
        let file = try GGUFFile(url: url)
        let config = try GGUFModelConfig(file: file)
        var (spec, layout) = try ModelRegistry.spec(configData: config.configData, file: url.path)
        try config.adjust(&spec, file: url.path)
        let source = GGUFSource(file: file, mixtralNames: config.modelType == "mixtral", hidden: config.consumedTensors)
        let model = try layout.build(spec: spec, source: source, options: options, directory: url.path)
        let tokenizer = try Tokenizer.fromGGUF(file)
        let eos = (try file.int("tokenizer.ggml.eos_token_id")).map { [$0] } ?? tokenizer?.eosTokenIDs ?? []
        return LoadedModel(model: model, tokenizer: tokenizer, directory: url, configData: config.configData,
                           eosTokenIDs: eos, checkpoint: source, layout: layout)
    }
}
