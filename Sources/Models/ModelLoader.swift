import Formats
import Foundation
import Kernels
import Tokenization

/// A model loaded from a directory: the network, its tokenizer (if the directory has one) and
/// where it came from.
public struct LoadedModel {
    public let model: DecoderModel
    public let tokenizer: Tokenizer?
    public let directory: URL
    /// The raw `config.json` bytes (for fingerprints and export).
    public let configData: Data
    /// End-of-sequence ids: `generation_config.json`'s `eos_token_id` (an id or a list), else
    /// `config.json`'s, else the tokenizer's guess; as transformers' `generate` decides.
    public let eosTokenIDs: [Int]
    public let checkpoint: TensorSource
    /// Checkpoint tensors deliberately not loaded (e.g. DeepSeek's multi-token-prediction layer),
    /// sorted; reported here instead of as unexpected.
    public var ignoredTensors: [String] = []
    /// How the checkpoint names its tensors.
    let layout: HFDecoderLayout

    /// Loads routed experts into the model: per MoE layer, the original indices in `kept`
    /// (router rows follow that order); layers not listed get every expert. Used after a
    /// backbone-only load (`LoadOptions.loadExperts = false`) once retrieval has chosen a plan.
    /// - Parameters:
    ///   - kept: layer → original expert indices to hold.
    ///   - copy: read the experts' bytes into memory (counted by the checkpoint) instead of mapping.
    /// - Throws: `ModelError.weightProblems` when expert tensors are missing or misshaped.
    public func loadExperts(kept: [Int: [Int]], copy: Bool) throws {
        try layout.loadExperts(into: model, source: checkpoint, kept: kept, copy: copy, directory: directory.path)
    }

    /// The blocks `loadExperts(kept:copy:)` would install, returned instead (MoE layer → block,
    /// for each layer in `kept`): they are built on a copy of the model's layer list, so the
    /// model itself is not touched and other threads may run it meanwhile (a server loading
    /// experts while retrieval probes read the backbone).
    /// - Throws: as `loadExperts(kept:copy:)`.
    public func readExperts(kept: [Int: [Int]], copy: Bool) throws -> [Int: MoEBlock] {
        let target = DecoderModel(spec: model.spec, embedding: model.embedding, layers: model.layers,
                                  finalNorm: model.finalNorm, lmHead: model.lmHead, pool: model.pool)
        try layout.loadExperts(into: target, source: checkpoint, kept: kept, copy: copy, directory: directory.path)
        var blocks: [Int: MoEBlock] = [:]
        for l in kept.keys {
            if case .moe(let block) = target.layers[l].feedForward { blocks[l] = block }
        }
        return blocks
    }

    /// Loads routed experts into memory as `loadExperts(kept:copy: true)` does, after reading
    /// `requests` (the expert rows binding will ask for) in one batch with `concurrency` reads in
    /// flight (`TensorSource.readRows(_:concurrency:direct:)`); a read binding asks for that is
    /// not in the batch is done on its own.
    /// - Parameters:
    ///   - kept: layer → original expert indices to hold.
    ///   - requests: tensor names and row ranges, as binding reads them.
    ///   - concurrency: reads in flight.
    ///   - direct: bypass the page cache (see `SafetensorsCheckpoint.readRows(_:concurrency:direct:)`).
    /// - Returns: seconds spent reading the batch and seconds binding the blocks afterwards.
    /// - Throws: `CheckpointError` from the reads, `ModelError.weightProblems` as `loadExperts`.
    @discardableResult
    public func loadExperts(kept: [Int: [Int]], reading requests: [(name: String, rows: Range<Int>)], concurrency: Int,
                            direct: Bool) throws -> (readSeconds: Double, bindSeconds: Double) {
        let start = Date()
        let tensors = try checkpoint.readRows(requests, concurrency: concurrency, direct: direct)
        let read = Date()
        let source = PrereadSource(base: checkpoint, requests: requests, tensors: tensors)
        try layout.loadExperts(into: model, source: source, kept: kept, copy: true, directory: directory.path)
        return (read.timeIntervalSince(start), Date().timeIntervalSince(read))
    }
}

/// Opens model directories (`config.json` + safetensors + `tokenizer.json`).
public enum ModelLoader {
    /// `eos_token_id` of a JSON config file (an integer or a list of integers), nil when absent.
    static func eosIDs(in url: URL) -> [Int]? {
        guard let data = try? Data(contentsOf: url),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        if let id = object["eos_token_id"] as? Int { return [id] }
        if let ids = object["eos_token_id"] as? [Int], !ids.isEmpty { return ids }
        return nil
    }

    /// Reads only `config.json` and returns the model's shared spec — no weights are touched.
    /// - Throws: `ModelError` for a missing/invalid config or an unsupported `model_type`.
    public static func spec(at directory: URL) throws -> DecoderSpec {
        if isGGUF(directory) { return try ggufSpec(directory) }  // GGUFSource.swift
        return try readSpec(directory).spec
    }

    private static func readSpec(_ directory: URL) throws -> (spec: DecoderSpec, layout: HFDecoderLayout, data: Data) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory) else {
            throw ModelError.notAModel(path: directory.path, reason: "no such file or directory")
        }
        guard isDirectory.boolValue else {
            throw ModelError.notAModel(path: directory.path, reason: "expected a directory with config.json and *.safetensors")
        }
        let configURL = directory.appendingPathComponent("config.json")
        guard let data = try? Data(contentsOf: configURL) else {
            throw ModelError.notAModel(path: directory.path, reason: "no readable config.json")
        }
        let (spec, layout) = try ModelRegistry.spec(configData: data, file: configURL.path)
        _ = try WeightQuantization.read(configData: data, file: configURL.path)  // refuse before any weight is read
        return (spec, layout, data)
    }

    /// The tensors of `names` that loading a model directory ignores on purpose (DeepSeek's
    /// multi-token-prediction layers after `num_hidden_layers`, rotary buffers), so exporters
    /// drop the same ones. Reads only `config.json`.
    /// - Throws: `ModelError` as `spec(at:)`.
    public static func ignoredTensors(at directory: URL, names: [String]) throws -> Set<String> {
        let (spec, layout, _) = try readSpec(directory)
        return Set(layout.ignoredTensors(names, layerCount: spec.layerCount))
    }

    /// Loads a model directory. The architecture is checked before any weight file is opened.
    /// - Parameters:
    ///   - directory: folder with `config.json`, `model.safetensors` (or an index and shards) and
    ///     optionally `tokenizer.json`.
    ///   - options: threads, which experts to load and how.
    /// - Throws: `ModelError` (config, unsupported type, every weight problem together),
    ///   `CheckpointError` (corrupt files), `TokenizerError`.
    public static func load(_ directory: URL, options: LoadOptions = LoadOptions()) throws -> LoadedModel {
        if isGGUF(directory) { return try loadGGUF(directory, options: options) }  // GGUFSource.swift
        let (spec, layout, data) = try readSpec(directory)
        let checkpoint = try tensorSource(
            try SafetensorsCheckpoint(directory: directory), configData: data,
            file: directory.appendingPathComponent("config.json").path)
        let model = try layout.build(spec: spec, source: checkpoint, options: options, directory: directory.path)
        let tokenizerURL = directory.appendingPathComponent("tokenizer.json")
        let tokenizer = FileManager.default.fileExists(atPath: tokenizerURL.path) ? try Tokenizer(url: directory) : nil
        let eos = eosIDs(in: directory.appendingPathComponent("generation_config.json"))
            ?? eosIDs(in: directory.appendingPathComponent("config.json")) ?? tokenizer?.eosTokenIDs ?? []
        var loaded = LoadedModel(model: model, tokenizer: tokenizer, directory: directory, configData: data,
                                 eosTokenIDs: eos, checkpoint: checkpoint, layout: layout)
        loaded.ignoredTensors = layout.ignoredTensors(checkpoint.tensorNames, layerCount: spec.layerCount)
        return loaded
    }
}
