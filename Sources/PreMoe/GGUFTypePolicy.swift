import Formats
import Kernels

/// Output types of a GGUF export (`premoe quantize --type`, `premoe prune --format gguf --type`),
/// spelled as `llama-quantize` spells them in lower case.
public enum GGUFOutputType: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k
    /// llama.cpp's Q4_K_M mixture (see `GGUFTypePolicy`).
    case q4_k_m

    /// The type most weight matrices get.
    public var baseType: DType {
        switch self {
        case .f32: .float32
        case .f16: .float16
        case .bf16: .bfloat16
        case .q8_0: .q8_0
        case .q4_0: .q4_0
        case .q4_k, .q4_k_m: .q4_K
        case .q5_k: .q5_K
        case .q6_k: .q6_K
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`): a label only, readers take each tensor's
    /// own type. Plain Q4_K/Q5_K are labelled as llama.cpp's `_S` variants, the nearest it has.
    public var fileType: UInt32 {
        switch self {
        case .f32: 0
        case .f16: 1
        case .q4_0: 2
        case .q8_0: 7
        case .q4_k: 14
        case .q4_k_m: 15
        case .q5_k: 16
        case .q6_k: 18
        case .bf16: 32
        }
    }

    /// Whether the type quantizes (the file then carries `general.quantization_version`).
    public var isQuantized: Bool { baseType.quantizedFormat != nil }
}

/// Chooses each exported tensor's GGML type the way llama.cpp does, so a premoe GGUF looks like
/// one made by `convert_hf_to_gguf.py` (plain types) or `llama-quantize` (block types):
///
/// - always F32 (the converter's rule; llama.cpp's CPU ops refuse other types there): 1-D tensors,
///   `*_norm.weight`, tensors whose name does not end in `.weight` (biases), the routers
///   `ffn_gate_inp` / `ffn_gate_inp_shexp`;
/// - no `--type`: every other tensor keeps its checkpoint dtype;
/// - `f32`/`f16`/`bf16`: every other tensor in that type;
/// - block types (`llama_tensor_get_type`): `output.weight` (the embedding when tied) is Q6_K
///   (Q8_0 for a `q8_0` export, or when its rows are not a multiple of 256); for `q4_k_m`,
///   `attn_v` and every `ffn_down*` of the layers `useMoreBits` selects are Q6_K, and with exactly
///   8 experts `attn_v`/`attn_k` are Q8_0 and `attn_output` Q5_K; the rest get the base type.
/// - fallback when a row (GGML `ne0`) is not a whole number of blocks: llama.cpp demotes
///   Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0 and others to F16. premoe reads Q5_0/Q5_1 files but writes
///   a K-quant's fallback as Q8_0 (rows a multiple of 32; more bytes than llama.cpp's choice, less
///   error: on the 64-wide qwen3_moe fixture a q4_k_m export's logits differ from the f32 model's
///   by 0.26 relative with Q5_0 there, under 0.03 with Q8_0), anything else as F16; each fallback
///   is reported in `notes`.
public struct GGUFTypePolicy: Sendable {
    /// The requested type; nil keeps checkpoint dtypes (only the F32 rules apply).
    public let type: GGUFOutputType?
    /// `block_count`.
    public let layerCount: Int
    /// Experts per MoE layer in the written file.
    public let expertCount: Int
    /// Whether the file has no `output.weight` (the embedding doubles as the output head).
    public let tiedEmbeddings: Bool

    public init(type: GGUFOutputType?, layerCount: Int, expertCount: Int, tiedEmbeddings: Bool) {
        self.type = type
        self.layerCount = layerCount
        self.expertCount = expertCount
        self.tiedEmbeddings = tiedEmbeddings
    }

    /// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third between.
    public static func useMoreBits(_ layer: Int, _ layers: Int) -> Bool {
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
    }

    /// Whether a tensor stays F32 whatever the requested type.
    public static func alwaysF32(_ name: String, shape: [Int]) -> Bool {
        shape.count <= 1 || name.hasSuffix("_norm.weight") || !name.hasSuffix(".weight")
            || name.hasSuffix("ffn_gate_inp.weight") || name.hasSuffix("ffn_gate_inp_shexp.weight")
    }

    /// The type GGUF tensor `name` (shape slowest axis first) is stored as, and a note when the
    /// policy had to fall back because of the tensor's shape.
    public func target(for name: String, shape: [Int], source: DType) -> (type: DType, note: String?) {
        if Self.alwaysF32(name, shape: shape) { return (.float32, nil) }
        guard let type else { return (source, nil) }
        let rowLength = shape.last ?? 1
        var t = type.baseType
        if t.quantizedFormat != nil {
            let layer = Self.layer(of: name)
            let isOutput = name == "output.weight" || (tiedEmbeddings && name == "token_embd.weight")
            if isOutput {
                t = type == .q8_0 || rowLength % 256 != 0 ? .q8_0 : .q6_K
            } else if type == .q4_k_m, let layer {
                if name.contains(".attn_v.") {
                    t = expertCount == 8 ? .q8_0 : Self.useMoreBits(layer, layerCount) ? .q6_K : t
                } else if name.contains(".attn_k.") && expertCount == 8 {
                    t = .q8_0
                } else if name.contains(".ffn_down") && Self.useMoreBits(layer, layerCount) {
                    t = .q6_K
                } else if name.contains(".attn_output.") && expertCount == 8 {
                    t = .q5_K
                }
            }
        }
        guard rowLength % t.blockSize != 0 else { return (t, nil) }
        let fallback: DType = t.blockSize == 256 && rowLength % 32 == 0 ? .q8_0 : .float16
        return (fallback, "\(name): row length \(rowLength) is not a multiple of \(t.rawValue)'s block of "
            + "\(t.blockSize); stored as \(fallback.rawValue) instead")
    }

    /// The block number of `blk.N.…`, nil for global tensors.
    static func layer(of name: String) -> Int? {
        let parts = name.split(separator: ".", maxSplits: 2)
        guard parts.count >= 2, parts[0] == "blk" else { return nil }
        return Int(parts[1])
    }
}
