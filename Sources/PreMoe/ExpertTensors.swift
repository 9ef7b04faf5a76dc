import Formats
import Foundation
import Kernels
import Models

/// What a checkpoint tensor is, as far as expert pruning cares. Names are Hugging Face's:
/// `model.layers.{l}.{block}.…` where `block` is `mlp` (Qwen, OLMoE, DeepSeek, fused saves) or
/// `block_sparse_moe` (Mixtral).
public enum ExpertTensorRole: Equatable, Sendable {
    /// `….{block}.gate.weight` (gpt-oss: `….router.weight`), `[E, hidden]`: one row per routed expert.
    case router(layer: Int)
    /// `….{block}.gate.{bias | e_score_correction_bias}` (gpt-oss: `….router.bias`), `[E]`: one
    /// entry per routed expert.
    case routerVector(layer: Int)
    /// One routed expert's tensor in the per-expert layout,
    /// `{prefix}{expert}{suffix}` = `….experts.{expert}.gate_proj.weight`.
    case expert(layer: Int, expert: Int, prefix: String, suffix: String)
    /// A fused tensor stacking every routed expert on axis 0 (`….experts.gate_up_proj [E, 2I, H]`;
    /// gpt-oss's expert biases and MXFP4 `_blocks` / `_scales` likewise).
    case stackedExperts(layer: Int)
    /// Everything else (embeddings, attention, norms, dense MLPs, shared experts, LM head).
    case backbone

    /// The layer of a `model.layers.{l}.…` name, nil for other names.
    public static func layerIndex(_ name: String) -> Int? {
        let parts = name.split(separator: ".", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3, parts[0] == "model", parts[1] == "layers" else { return nil }
        return Int(parts[2])
    }

    /// Classifies `name` for a model whose MoE layers hold `expertCount(l)` routed experts.
    /// - Parameters:
    ///   - name: the checkpoint's tensor name.
    ///   - shape: its shape (a stacked tensor must lead with the expert count).
    ///   - expertCount: routed experts of layer `l`, nil for a dense layer.
    public static func classify(_ name: String, shape: [Int], expertCount: (Int) -> Int?) -> ExpertTensorRole {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 6, parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]),
            let e = expertCount(l)
        else { return .backbone }
        switch parts[4] {
        case "gate" where parts.count == 6, "router" where parts.count == 6:  // gpt-oss names its router `router`
            return parts[5] == "weight" ? .router(layer: l) : (shape == [e] ? .routerVector(layer: l) : .backbone)
        case "experts":
            if let id = Int(parts[5]), parts.count > 6 {
                let prefix = parts[0...4].joined(separator: ".") + "."
                let suffix = "." + parts[6...].joined(separator: ".")
                return .expert(layer: l, expert: id, prefix: prefix, suffix: suffix)
            }
            return shape.first == e ? .stackedExperts(layer: l) : .backbone
        default:
            return .backbone
        }
    }
}

/// Storage sizes of a checkpoint, split into the backbone and each routed expert, as stored on
/// disk (the unit of `--budget`).
public struct ModelSizes: Sendable, Equatable {
    /// Bytes of every tensor that is not a routed expert (routers included, at full size).
    public var backboneBytes: Int
    /// Per MoE layer, bytes of each original expert (index = original expert index).
    public var expertBytes: [Int: [Int]]

    public init(backboneBytes: Int, expertBytes: [Int: [Int]]) {
        self.backboneBytes = backboneBytes
        self.expertBytes = expertBytes
    }

    /// Reads the sizes from the source's headers (no tensor data is read). Tensors of layers
    /// past `spec.layerCount` (DeepSeek's multi-token-prediction layer, never loaded) count for
    /// nothing.
    public static func measure(_ source: TensorSource, spec: DecoderSpec) -> ModelSizes {
        var backbone = 0
        var experts: [Int: [Int]] = [:]
        for l in spec.moeLayers { experts[l] = [Int](repeating: 0, count: spec.moe(l)?.expertCount ?? 0) }
        for name in source.tensorNames {
            guard let shape = source.shape(of: name), let bytes = source.byteCount(of: name) else { continue }
            if let l = ExpertTensorRole.layerIndex(name), l >= spec.layerCount { continue }
            switch ExpertTensorRole.classify(name, shape: shape, expertCount: { spec.moe($0)?.expertCount }) {
            case .expert(let l, let e, _, _):
                if experts[l]?.indices.contains(e) == true { experts[l]![e] += bytes } else { backbone += bytes }
            case .stackedExperts(let l):
                let count = experts[l]?.count ?? 1
                for e in 0..<count { experts[l]![e] += bytes / count }
            default:
                backbone += bytes
            }
        }
        return ModelSizes(backboneBytes: backbone, expertBytes: experts)
    }

    /// Backbone plus the listed experts.
    public func bytes(keeping kept: [Int: [Int]]) -> Int {
        var total = backboneBytes
        for (l, sizes) in expertBytes {
            let ids = kept[l] ?? Array(sizes.indices)
            total += ids.reduce(0) { $0 + (sizes.indices.contains($1) ? sizes[$1] : 0) }
        }
        return total
    }
}

/// The model fingerprint patterns are keyed by: SHA-256 (hex) of the `config.json` bytes
/// followed by the raw stored bytes of every router weight (`….gate.weight`), in MoE-layer order.
/// Two checkpoints with the same config and routers route identically up to the first MoE layer's
/// input, which is what a pattern depends on; hashing routers rather than all weights keeps it
/// cheap (a few MB even for DeepSeek-R1).
public enum ModelFingerprint {
    /// Computes the fingerprint. Router tensors are viewed through the memory map (not counted
    /// as read bytes by `SafetensorsCheckpoint.bytesRead`).
    /// - Throws: checkpoint errors for unreadable router tensors.
    public static func compute(configData: Data, checkpoint: TensorSource, spec: DecoderSpec) throws -> String {
        var hasher = SHA256()
        hasher.update(configData)
        var routers: [(Int, String)] = []
        for name in checkpoint.tensorNames {
            guard let shape = checkpoint.shape(of: name) else { continue }
            if case .router(let l) = ExpertTensorRole.classify(name, shape: shape, expertCount: { spec.moe($0)?.expertCount }) {
                routers.append((l, name))
            }
        }
        for (_, name) in routers.sorted(by: { $0.0 < $1.0 }) {
            let tensor = try checkpoint.tensor(name)
            hasher.update(tensor.data, count: tensor.byteCount)
        }
        return hasher.hexDigest()
    }

    /// The fingerprint of a loaded model.
    public static func compute(_ loaded: LoadedModel) throws -> String {
        try compute(configData: loaded.configData, checkpoint: loaded.checkpoint, spec: loaded.model.spec)
    }
}
