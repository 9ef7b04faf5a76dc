import Formats
import Foundation
import Kernels
import Models

/// Pruning a GGUF file into a GGUF file ("GGUF in, GGUF out"): no tensor is converted or
/// requantized, so a Q4_K file stays Q4_K and its experts keep their exact bytes.
///
/// - routed experts are stacked on the slowest axis (`blk.L.ffn_{gate,up,down}_exps`, ne
///   {…, E}), so each expert is one contiguous byte range, whatever the type: the kept ranges
///   are copied in plan order (ne {…, N});
/// - per-expert router rows (`blk.L.ffn_gate_inp.weight` {H, E}, and any router vector the
///   loader binds to `gate.bias`) are sliced the same way, one row per expert;
/// - every other tensor (shared experts included) is copied byte for byte with its type, in the
///   source's tensor order and at the source's alignment;
/// - metadata: every key is copied in order, then `<arch>.expert_count` = N,
///   `<arch>.expert_used_count` = min(k, N), `<arch>.expert_group_count` /
///   `expert_group_used_count` = 1 when present (group-limited routing is dropped, as
///   `PrunedExport` does for `n_group`), and the `premoe.*` provenance keys of `GGUFExport`.
///
/// Which tensor holds which experts is decided by `GGUFSource`'s name table and
/// `ExpertTensorRole`, the same ones the loader and the profiler use.
extension GGUFExport {
    /// Writes `out/model.gguf`, the GGUF file `source` pruned to `keptExperts`.
    /// - Parameters:
    ///   - source: the unpruned `.gguf` file.
    ///   - keptExperts: layer → source expert indices, every MoE layer listed, the same count in
    ///     each (`PrunedExport.checkPlan`).
    ///   - sourceFingerprint: recorded as `premoe.source_fingerprint` (`ModelFingerprint.compute`
    ///     of the loaded source, which patterns profiled on it carry).
    ///   - tasks: recorded as `premoe.tasks`.
    ///   - out: a new or empty directory.
    /// - Throws: `PreMoeError.invalidBudget` for a bad plan, `.unsupported` for an expert layout
    ///   that cannot be sliced without requantizing, `.io` for a non-empty output directory;
    ///   `GGUFError`, `ModelError` for an unreadable source.
    @discardableResult
    public static func prune(gguf source: URL, keptExperts: [Int: [Int]], sourceFingerprint: String, tasks: [String] = [],
                             to out: URL) throws -> ExportReport {
        try intoDirectory(out) { file in
            try pruneFile(gguf: source, keptExperts: keptExperts, sourceFingerprint: sourceFingerprint, tasks: tasks, to: file)
        }
    }

    /// Writes one GGUF file `file` (see `prune`).
    /// - Throws: as `prune`; `PreMoeError.io` when `file` already exists.
    @discardableResult
    public static func pruneFile(gguf source: URL, keptExperts: [Int: [Int]], sourceFingerprint: String,
                                 tasks: [String] = [], to file: URL) throws -> ExportReport {
        try checkNewFile(file)
        let gguf = try GGUFFile(url: source)
        let config = try GGUFModelConfig(file: gguf)
        let spec = try ModelLoader.ggufSpec(source)
        let (kept, _) = try PrunedExport.checkPlan(keptExperts, spec: spec, model: source)
        let perExpert = try expertAxisLayers(gguf, config: config, spec: spec)

        // Metadata: the source's, in order, with the expert counts of the pruned model.
        var writer = GGUFWriter(alignment: gguf.alignment)
        for key in gguf.metadataKeys where key != "general.alignment" {
            if let value = gguf[key] { writer.set(key, value) }
        }
        let arch = gguf.architecture ?? ""
        let original = spec.moeLayers.compactMap { spec.moe($0)?.expertCount }.max() ?? kept
        func setCount(_ key: String, _ value: Int) {
            writer.set("\(arch).\(key)", integer(value, like: gguf["\(arch).\(key)"]))
        }
        setCount("expert_count", kept)
        if let k = try gguf.int("\(arch).expert_used_count") { setCount("expert_used_count", min(k, kept)) }
        if kept < original {
            for key in ["expert_group_count", "expert_group_used_count"] where gguf["\(arch).\(key)"] != nil {
                setCount(key, 1)
            }
        }
        setProvenance(&writer, keptExperts: keptExperts, moeLayers: spec.moeLayers,
                      pruned: isPruning(keptExperts, spec: spec), sourceFingerprint: sourceFingerprint, tasks: tasks)

        // Tensors, in file order.
        var tensorBytes = 0
        for info in gguf.tensorInfos {
            let bytes = try gguf.rawBytes(info.name)
            guard let l = perExpert[info.name] else {
                try writer.add(info.name, type: info.type, dimensions: info.dimensions, bytes: bytes, owner: gguf)
                tensorBytes += bytes.count
                continue
            }
            let rows = keptExperts[l] ?? []
            let expertCount = spec.moe(l)?.expertCount ?? 0
            // One expert = one slice of the slowest axis; a 1-D tensor of a block type would cut blocks.
            guard info.dimensions.last == expertCount, expertCount > 0, bytes.count % expertCount == 0,
                info.dimensions.count > 1 || info.type.blockSize == 1, let base = bytes.baseAddress
            else {
                throw PreMoeError.unsupported(
                    "\(source.path): tensor '\(info.name)' (\(info.type) \(info.dimensions)) does not hold "
                        + "\(expertCount) experts on its slowest axis; it cannot be pruned without requantizing")
            }
            let rowBytes = bytes.count / expertCount
            let buffer = TensorBuffer(byteCount: rows.count * rowBytes)
            for (slot, row) in rows.enumerated() {
                buffer.pointer.advanced(by: slot * rowBytes).copyMemory(from: base + row * rowBytes, byteCount: rowBytes)
            }
            try writer.add(info.name, type: info.type, dimensions: Array(info.dimensions.dropLast()) + [rows.count],
                           bytes: UnsafeRawBufferPointer(start: buffer.pointer, count: buffer.byteCount), owner: buffer)
            tensorBytes += buffer.byteCount
        }
        try writer.write(to: file)
        return ExportReport(outputDirectory: file.deletingLastPathComponent().path, files: [file.lastPathComponent],
                            tensorCount: gguf.tensorInfos.count, tensorBytes: tensorBytes, expertsPerLayer: kept)
    }

    /// GGUF tensors with one slice per routed expert on their slowest axis (stacked experts,
    /// routers, router vectors), each with its MoE layer, as the loader binds them.
    /// - Throws: `PreMoeError.unsupported` for per-expert tensors (pre-2024 Mixtral files'
    ///   `blk.L.ffn_gate.E.weight`), which this export does not rename.
    static func expertAxisLayers(_ gguf: GGUFFile, config: GGUFModelConfig, spec: DecoderSpec) throws -> [String: Int] {
        let source = GGUFSource(file: gguf, mixtralNames: config.modelType == "mixtral", hidden: config.consumedTensors)
        var layers: [String: Int] = [:]
        for name in source.tensorNames {
            guard let shape = source.shape(of: name), let binding = source.ggufName(of: name) else { continue }
            let tensor = binding.tensor
            switch ExpertTensorRole.classify(name, shape: shape, expertCount: { spec.moe($0)?.expertCount }) {
            case .expert(let l, _, _, _):
                guard binding.expert != nil else {
                    throw PreMoeError.unsupported(
                        "\(gguf.url.path): expert tensor '\(tensor)' is stored per expert, not stacked "
                            + "(an old converter's layout); reconvert the model with a current convert_hf_to_gguf.py")
                }
                layers[tensor] = l
            case .router(let l), .routerVector(let l), .stackedExperts(let l):
                layers[tensor] = l
            case .backbone:
                break
            }
        }
        return layers
    }

    /// `value` stored with the integer type of `like` (uint32, as llama.cpp writes counts, when
    /// absent or not an integer).
    static func integer(_ value: Int, like: GGUFValue?) -> GGUFValue {
        switch like {
        case .uint8: .uint8(UInt8(clamping: value))
        case .int8: .int8(Int8(clamping: value))
        case .uint16: .uint16(UInt16(clamping: value))
        case .int16: .int16(Int16(clamping: value))
        case .int32: .int32(Int32(clamping: value))
        case .uint64: .uint64(UInt64(clamping: value))
        case .int64: .int64(Int64(value))
        default: .uint32(UInt32(clamping: value))
        }
    }
}
