import Formats
import Foundation
import Kernels
import Models

/// What an export wrote.
public struct ExportReport: Codable, Sendable {
    public var outputDirectory: String
    /// Weight files, config and copied files, by name.
    public var files: [String]
    public var tensorCount: Int
    /// Bytes of tensor data written.
    public var tensorBytes: Int
    public var expertsPerLayer: Int
    /// Decisions worth telling the user (tensors stored in a fallback type, ...).
    public var notes: [String] = []
}

/// Writes a pruned model as a standard Hugging Face checkpoint in the same layout family as the
/// input, so transformers, vLLM or SGLang load it like any other:
///
/// - per-expert tensors (`….experts.{e}.…`) of kept experts are renamed to their slot
///   `0..<N` in plan order; others are dropped;
/// - fused tensors stacking experts on axis 0 (`….experts.gate_up_proj [E, …]`) keep the kept
///   experts' slices in plan order (gpt-oss's MXFP4 `_blocks` and `_scales` as raw bytes);
/// - router weights (`….gate.weight [E, H]`, gpt-oss's `….router.weight`) and per-expert router
///   vectors (`gate.bias`, `gate.e_score_correction_bias`, `router.bias`) keep the kept rows in the
///   same order;
/// - every other tensor is copied unchanged (same dtype, same bytes; an FP8 checkpoint's
///   `F8_E4M3` weights and their `_scale_inv` grids stay as stored, kept experts' renamed with them);
/// - `config.json` gets the new expert count under whichever of `num_experts`,
///   `num_local_experts`, `n_routed_experts` it had (and `num_experts_per_tok` lowered to N if
///   it was larger), `n_group` / `topk_group` set to 1 (group-limited routing is dropped, as
///   in the in-memory pruned model), plus `"premoe": {"kept_experts": {layer: [original indices]},
///   "source_fingerprint": …, "tasks": […]}` (and `"merged_experts": true` when the dropped experts
///   were merged into the kept ones);
/// - tensors the loader ignores are dropped (DeepSeek's multi-token-prediction layers, with
///   `num_nextn_predict_layers` set to 0; rotary `inv_freq` buffers);
/// - tokenizer and generation files are copied.
public enum PrunedExport {
    /// Names of non-weight files copied from the source directory when present.
    public static let copiedFiles = [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
        "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json", "generation_config.json",
    ]

    /// Writes the export.
    /// - Parameters:
    ///   - modelDirectory: the unpruned source model.
    ///   - keptExperts: layer → original indices, every MoE layer listed, the same count in each.
    ///   - sourceFingerprint: recorded in the config.
    ///   - tasks: recorded in the config.
    ///   - out: a new or empty directory.
    ///   - maxShardBytes: shard size (transformers' default 5 GB).
    ///   - routedTopK: experts per token written as `num_experts_per_tok` (the paper's a/b, e.g.
    ///     4/64); nil keeps the checkpoint's (lowered to N if larger).
    ///   - merged: per MoE layer, the kept experts with the dropped ones merged into them
    ///     (`ExpertMerging.merge`, plan order); their weights replace the stored ones, converted to
    ///     each tensor's dtype. Per-expert float layouts only (not fused, FP8 or MXFP4 experts).
    /// - Throws: `PreMoeError` for a bad plan, a non-empty output directory or merged experts in a
    ///   layout they cannot be written to, `ModelError`, `CheckpointError`.
    @discardableResult
    public static func write(modelDirectory: URL, keptExperts: [Int: [Int]], sourceFingerprint: String, tasks: [String] = [],
                             to out: URL, maxShardBytes: Int = 5_000_000_000, routedTopK: Int? = nil,
                             merged: [Int: [GatedMLP]]? = nil) throws -> ExportReport {
        let spec = try ModelLoader.spec(at: modelDirectory)
        let checkpoint = try SafetensorsCheckpoint(directory: modelDirectory)
        let moeLayers = spec.moeLayers
        let (kept, slot) = try checkPlan(keptExperts, spec: spec, model: modelDirectory)
        try checkEmptyOutput(out)

        // What loading ignores (DeepSeek's MTP layer with its own full router and experts) is
        // dropped, and the config says so below: a pruned config beside an unpruned layer lies.
        let ignored = try ModelLoader.ignoredTensors(at: modelDirectory, names: checkpoint.tensorNames)
        var tensors: [(name: String, payload: SafetensorsPayload)] = []
        for name in checkpoint.tensorNames where !ignored.contains(name) {
            guard let entry = try checkpoint.entry(name) else { continue }
            // As stored: FP8 weights (and their F32 `_scale_inv` grids, named like them) stay FP8.
            func stored() throws -> SafetensorsPayload {
                if entry.dtype != nil { return .tensor(try checkpoint.tensor(name)) }
                let bytes = try checkpoint.readRawRows(name, rows: 0..<(entry.shape.first ?? 1)).bytes
                return .raw(dtypeName: entry.dtypeName, shape: entry.shape, bytes: bytes)
            }
            let role = ExpertTensorRole.classify(name, shape: entry.shape, expertCount: { spec.moe($0)?.expertCount })
            if case .stackedExperts(let l) = role, merged?[l] != nil {
                throw PreMoeError.unsupported("\(name): merged experts are written to per-expert tensors only, not to experts "
                    + "stacked in one tensor")
            }
            switch role {
            case .router(let l), .routerVector(let l), .stackedExperts(let l):
                if entry.dtype != nil {
                    tensors.append((name, .tensor(gatherRows(try checkpoint.tensor(name), keptExperts[l]!))))
                } else {
                    // Stored bytes Tensor cannot hold (gpt-oss's MXFP4 `_blocks` / `_scales`, U8):
                    // the kept experts' slices, byte for byte, in plan order.
                    var bytes: [UInt8] = []
                    for e in keptExperts[l]! { bytes += try checkpoint.readRawRows(name, rows: e..<(e + 1)).bytes }
                    var shape = entry.shape
                    shape[0] = keptExperts[l]!.count
                    tensors.append((name, .raw(dtypeName: entry.dtypeName, shape: shape, bytes: bytes)))
                }
            case .expert(let l, let e, let prefix, let suffix):
                guard let s = slot[l]?[e] else { continue }
                if let experts = merged?[l] {
                    guard experts.count == kept else {
                        throw PreMoeError.unsupported("layer \(l): \(experts.count) merged experts for \(kept) kept")
                    }
                    tensors.append((prefix + String(s) + suffix, .tensor(try mergedTensor(experts[s], name: name, suffix: suffix,
                                                                                     entry: entry))))
                } else {
                    tensors.append((prefix + String(s) + suffix, try stored()))
                }
            case .backbone:
                tensors.append((name, try stored()))
            }
        }
        tensors.sort { $0.name < $1.name }
        let weightFiles = try SafetensorsWriter.writeSharded(payloads: tensors, metadata: ["format": "pt"],
                                                             maxShardBytes: maxShardBytes, to: out)

        let configURL = modelDirectory.appendingPathComponent("config.json")
        guard case .object(var config) = try JSONValue(contentsOf: configURL) else {
            throw PreMoeError.unsupported("\(configURL.path): not a JSON object")
        }
        let countKeys = ["num_experts", "num_local_experts", "n_routed_experts"].filter { config[$0]?.intValue != nil }
        guard !countKeys.isEmpty else {
            throw PreMoeError.unsupported("\(configURL.path): no num_experts / num_local_experts / n_routed_experts key")
        }
        let original = config[countKeys[0]]?.intValue ?? kept
        for key in countKeys { config[key] = .number(Double(kept)) }
        if let k = config["num_experts_per_tok"]?.intValue {
            if let routedTopK, routedTopK < 1 || routedTopK > k {
                throw PreMoeError.invalidBudget("--top-k \(routedTopK): expected 1 … \(k) (the checkpoint's num_experts_per_tok)")
            }
            config["num_experts_per_tok"] = .number(Double(min(routedTopK ?? k, kept)))
        }
        // Group-limited routing (DeepSeek's n_group / topk_group) is dropped after pruning, as the
        // in-memory pruned model does (METHODS §8.5): one group that is always kept.
        if kept < original, config["n_group"]?.intValue != nil {
            config["n_group"] = .number(1)
            config["topk_group"] = .number(1)
        }
        for key in ["num_nextn_predict_layers", "num_mtp_layers"] where config[key]?.intValue ?? 0 > 0 {
            config[key] = .number(0)
        }
        let keptJSON = Dictionary(uniqueKeysWithValues: keptExperts.filter { moeLayers.contains($0.key) }
            .map { (String($0.key), JSONValue.array($0.value.map { .number(Double($0)) })) })
        var premoe: [String: JSONValue] = [
            "kept_experts": .object(keptJSON),
            "source_fingerprint": .string(sourceFingerprint),
            "tasks": .array(tasks.map { .string($0) }),
        ]
        if merged != nil { premoe["merged_experts"] = .bool(true) }
        config["premoe"] = .object(premoe)
        let configOut = out.appendingPathComponent("config.json")
        do {
            try Data((prettyJSON(.object(config)) + "\n").utf8).write(to: configOut, options: .atomic)
        } catch {
            throw PreMoeError.io(path: configOut.path, reason: "\(error)")
        }
        var files = weightFiles.map(\.lastPathComponent)
        if FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors.index.json").path) {
            files.append("model.safetensors.index.json")
        }
        files.append("config.json")
        for name in copiedFiles {
            let source = modelDirectory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: source.path) else { continue }
            do {
                try FileManager.default.copyItem(at: source, to: out.appendingPathComponent(name))
            } catch {
                throw PreMoeError.io(path: out.appendingPathComponent(name).path, reason: "\(error)")
            }
            files.append(name)
        }
        return ExportReport(outputDirectory: out.path, files: files, tensorCount: tensors.count,
                            tensorBytes: tensors.reduce(0) { $0 + $1.payload.byteCount }, expertsPerLayer: kept)
    }

    /// The merged expert's tensor standing in for the stored `name` (`….experts.{e}{suffix}`),
    /// in the stored dtype and shape.
    /// - Throws: `PreMoeError.unsupported` for a tensor that is not a float gate/up/down weight or
    ///   bias of the expert, or whose shape differs.
    static func mergedTensor(_ expert: GatedMLP, name: String, suffix: String, entry: SafetensorsEntry) throws -> Tensor {
        let parts = suffix.split(separator: ".").map(String.init)
        let projections = ["gate_proj": expert.gate, "w1": expert.gate, "up_proj": expert.up, "w3": expert.up,
                           "down_proj": expert.down, "w2": expert.down]
        guard let dtype = entry.dtype, [.float32, .float16, .bfloat16].contains(dtype), parts.count == 2, let linear = projections[parts[0]],
              ["weight", "bias"].contains(parts[1])
        else {
            throw PreMoeError.unsupported("\(name) (\(entry.dtypeName)): merged experts are written as float gate/up/down "
                + "weights and biases only")
        }
        let tensor: Tensor
        if parts[1] == "weight" {
            tensor = linear.weight
        } else {
            guard let bias = linear.bias else { throw PreMoeError.unsupported("\(name): the merged expert has no bias") }
            tensor = Tensor.owned(bias, shape: [bias.count])
        }
        guard tensor.shape == entry.shape else {
            throw PreMoeError.unsupported("\(name): merged shape \(tensor.shape), stored \(entry.shape)")
        }
        return tensor.dtype == dtype ? tensor : tensor.converted(to: dtype)
    }

    /// Validates an export plan: every MoE layer listed, distinct valid indices, the same count
    /// everywhere. Returns that count and, per layer, original index → slot.
    /// - Throws: `PreMoeError.unsupported` without MoE layers, `.invalidBudget` for a bad plan.
    /// - Parameter uniform: require the same count in every layer (exports: one expert count per
    ///   config); the engine itself runs per-layer counts.
    static func checkPlan(_ keptExperts: [Int: [Int]], spec: DecoderSpec, model: URL,
                          uniform: Bool = true) throws -> (kept: Int, slot: [Int: [Int: Int]]) {
        let moeLayers = spec.moeLayers
        guard !moeLayers.isEmpty else { throw PreMoeError.unsupported("\(model.path): no MoE layer to prune") }
        var n: Int?
        var slot: [Int: [Int: Int]] = [:]
        for l in moeLayers {
            guard let ids = keptExperts[l], !ids.isEmpty else {
                throw PreMoeError.invalidBudget("the plan does not list MoE layer \(l)")
            }
            let e = spec.moe(l)?.expertCount ?? 0
            guard ids.allSatisfy({ $0 >= 0 && $0 < e }), Set(ids).count == ids.count else {
                throw PreMoeError.invalidBudget("layer \(l): kept experts must be distinct indices in 0..<\(e)")
            }
            if uniform, let n, n != ids.count {
                throw PreMoeError.invalidBudget("an export keeps the same number of experts in every layer (\(n) vs \(ids.count)); "
                    + "plan it with the uniform allocation")
            }
            n = max(n ?? 0, ids.count)
            slot[l] = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })
        }
        return (n!, slot)
    }

    /// - Throws: `PreMoeError.io` when `out` exists and is not an empty directory.
    static func checkEmptyOutput(_ out: URL) throws {
        if FileManager.default.fileExists(atPath: out.path),
            let contents = try? FileManager.default.contentsOfDirectory(atPath: out.path), !contents.isEmpty {
            throw PreMoeError.io(path: out.path, reason: "the output directory is not empty")
        }
    }

    /// JSON with two-space indentation and sorted keys (like `json.dumps(indent=2, sort_keys=True)`).
    static func prettyJSON(_ value: JSONValue, indent: String = "") -> String {
        let inner = indent + "  "
        switch value {
        case .array(let elements) where !elements.isEmpty:
            return "[\n" + elements.map { inner + prettyJSON($0, indent: inner) }.joined(separator: ",\n") + "\n" + indent + "]"
        case .object(let members) where !members.isEmpty:
            return "{\n" + members.keys.sorted().map { key in
                inner + JSONValue.string(key).jsonString + ": " + prettyJSON(members[key]!, indent: inner)
            }.joined(separator: ",\n") + "\n" + indent + "}"
        default:
            return value.jsonString
        }
    }
}
