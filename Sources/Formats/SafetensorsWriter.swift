import Foundation
import Kernels

/// One tensor to write: a `Tensor`, or the stored bytes of a dtype `Tensor` cannot hold (the
/// `F8_E4M3` weights of an FP8 checkpoint, copied as they are by a pruned export).
public enum SafetensorsPayload {
    /// A tensor in one of `DType`'s element types.
    case tensor(Tensor)
    /// Bytes in the safetensors dtype `dtypeName` (a name of the format, e.g. `F8_E4M3`), row-major.
    case raw(dtypeName: String, shape: [Int], bytes: [UInt8])

    /// The safetensors dtype name written in the header.
    public var dtypeName: String {
        switch self {
        case .tensor(let t): return t.dtype.rawValue
        case .raw(let name, _, _): return name
        }
    }
    /// Shape, slowest axis first.
    public var shape: [Int] {
        switch self {
        case .tensor(let t): return t.shape
        case .raw(_, let shape, _): return shape
        }
    }
    /// Bytes of data.
    public var byteCount: Int {
        switch self {
        case .tensor(let t): return t.byteCount
        case .raw(_, _, let bytes): return bytes.count
        }
    }
    var elementCount: Int { shape.reduce(1, *) }
    /// Bytes per element, for the data order.
    var elementBytes: Int {
        switch self {
        case .tensor(let t): return t.dtype.byteSize
        case .raw(let name, _, _): return max(1, (safetensorsDTypeBits[name] ?? 8) / 8)
        }
    }
}

/// Writes safetensors files the way the reference library does, so that it reads ours and
/// files written from the same tensors come out byte for byte the same.
public enum SafetensorsWriter {
    /// Writes one `.safetensors` file atomically (temporary file in the same directory, fsync,
    /// rename), so a crash never leaves a half-written file under the final name.
    ///
    /// Layout, as the reference: compact JSON header (`__metadata__` first, keys sorted; then
    /// tensors in data order), padded with spaces to a multiple of 8 bytes so the data section
    /// starts 8-byte aligned. Tensors keep the given order except that they are stably grouped by
    /// decreasing element size (all F32, then all F16/BF16), which puts every tensor on a
    /// multiple of its element size without leaving holes (the reference refuses holes). Given
    /// the reference's own order (by dtype, then name) the file is identical to its output.
    /// - Parameters:
    ///   - tensors: names and tensors; names must be unique and not `__metadata__`.
    ///   - metadata: the optional `__metadata__` string map (transformers writes `{"format": "pt"}`).
    ///   - url: the destination file; replaced if it exists.
    /// - Throws: `CheckpointError.invalidWriteRequest` for duplicate or reserved names,
    ///   `CheckpointError.io` when the file system fails.
    public static func write(
        _ tensors: [(name: String, tensor: Tensor)], metadata: [String: String]? = nil, to url: URL
    ) throws {
        try write(payloads: tensors.map { ($0.name, .tensor($0.tensor)) }, metadata: metadata, to: url)
    }

    /// `write` for payloads that may hold raw bytes of any safetensors dtype.
    /// - Parameters:
    ///   - payloads: names and payloads; names must be unique and not `__metadata__`.
    ///   - metadata: the optional `__metadata__` string map.
    ///   - url: the destination file; replaced if it exists.
    /// - Throws: `CheckpointError.invalidWriteRequest` for duplicate or reserved names, a dtype
    ///   the format does not define, or bytes that do not match the shape; `CheckpointError.io`.
    public static func write(
        payloads: [(name: String, payload: SafetensorsPayload)], metadata: [String: String]? = nil, to url: URL
    ) throws {
        var seen = Set<String>()
        for (name, payload) in payloads {
            guard name != "__metadata__" else {
                throw CheckpointError.invalidWriteRequest(
                    file: url.path, reason: "the tensor name __metadata__ is reserved")
            }
            guard seen.insert(name).inserted else {
                throw CheckpointError.invalidWriteRequest(file: url.path, reason: "tensor '\(name)' is given twice")
            }
            guard payload.shape.allSatisfy({ $0 >= 0 }) else {
                throw CheckpointError.invalidWriteRequest(
                    file: url.path, reason: "tensor '\(name)' has a negative dimension in \(payload.shape)")
            }
            if case .raw(let dtype, let shape, let bytes) = payload {
                guard let bits = safetensorsDTypeBits[dtype], bits % 8 == 0,
                    bytes.count == shape.reduce(1, *) * bits / 8
                else {
                    throw CheckpointError.invalidWriteRequest(
                        file: url.path, reason: "tensor '\(name)': \(bytes.count) bytes do not hold \(dtype) \(shape)")
                }
            }
        }
        let ordered = dataOrder(payloads)
        let header = headerBytes(ordered, metadata: metadata)

        let writer = try AtomicFileWriter(destination: url)
        try writer.write(withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) })
        try writer.write(header)
        for (_, payload) in ordered where payload.byteCount > 0 {
            switch payload {
            case .tensor(let tensor): try writer.write(tensor.data, count: tensor.byteCount)
            case .raw(_, _, let bytes):
                try bytes.withUnsafeBytes { raw in
                    if let base = raw.baseAddress { try writer.write(base, count: raw.count) }
                }
            }
        }
        try writer.commit()
    }

    /// Writes a checkpoint split into shards the way transformers / huggingface_hub do:
    /// tensors are taken in the given order and a new shard starts when the next tensor would
    /// push the current one past `maxShardBytes` (counting tensor bytes only); a tensor larger
    /// than the limit gets a shard of its own. With more than one shard the files are
    /// `model-00001-of-0000N.safetensors` plus `model.safetensors.index.json`
    /// (`{"metadata": {"total_parameters", "total_size"}, "weight_map": {…}}`, indented by two,
    /// keys sorted, as transformers writes it); with a single shard just `model.safetensors`
    /// and no index, as transformers does too. Each shard carries `metadata`.
    /// Write into a fresh directory: files of an earlier save that these names do not
    /// overwrite are left in place.
    /// - Parameters:
    ///   - tensors: names and tensors, unique names.
    ///   - metadata: `__metadata__` for every shard.
    ///   - maxShardBytes: the target shard size in bytes (> 0).
    ///   - directory: the model directory (created if needed).
    ///   - prefix: the file stem, `model` by default.
    /// - Returns: the weight files written, in shard order.
    /// - Throws: `CheckpointError.invalidWriteRequest`, `CheckpointError.io`.
    @discardableResult
    public static func writeSharded(
        _ tensors: [(name: String, tensor: Tensor)], metadata: [String: String]? = nil, maxShardBytes: Int,
        to directory: URL, prefix: String = "model"
    ) throws -> [URL] {
        try writeSharded(payloads: tensors.map { ($0.name, .tensor($0.tensor)) }, metadata: metadata,
                         maxShardBytes: maxShardBytes, to: directory, prefix: prefix)
    }

    /// `writeSharded` for payloads that may hold raw bytes of any safetensors dtype.
    /// - Parameters:
    ///   - payloads: names and payloads, unique names.
    ///   - metadata: `__metadata__` for every shard.
    ///   - maxShardBytes: the target shard size in bytes (> 0).
    ///   - directory: the model directory (created if needed).
    ///   - prefix: the file stem, `model` by default.
    /// - Returns: the weight files written, in shard order.
    /// - Throws: `CheckpointError.invalidWriteRequest`, `CheckpointError.io`.
    @discardableResult
    public static func writeSharded(
        payloads tensors: [(name: String, payload: SafetensorsPayload)], metadata: [String: String]? = nil,
        maxShardBytes: Int, to directory: URL, prefix: String = "model"
    ) throws -> [URL] {
        guard maxShardBytes > 0 else {
            throw CheckpointError.invalidWriteRequest(file: directory.path, reason: "maxShardBytes must be positive")
        }
        var names = Set<String>()
        for (name, _) in tensors where !names.insert(name).inserted {
            throw CheckpointError.invalidWriteRequest(file: directory.path, reason: "tensor '\(name)' is given twice")
        }
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError.io(file: directory.path, operation: "create directory", reason: "\(error)")
        }

        // Same split as huggingface_hub's split_state_dict_into_shards_factory.
        var shards: [[(name: String, payload: SafetensorsPayload)]] = []
        var current: [(name: String, payload: SafetensorsPayload)] = []
        var currentSize = 0
        for item in tensors {
            let size = item.payload.byteCount
            if size > maxShardBytes {
                shards.append([item])
                continue
            }
            if currentSize + size > maxShardBytes, !current.isEmpty {
                shards.append(current)
                current = []
                currentSize = 0
            }
            current.append(item)
            currentSize += size
        }
        if !current.isEmpty || shards.isEmpty { shards.append(current) }

        if shards.count == 1 {
            let url = directory.appendingPathComponent("\(prefix).safetensors")
            try write(payloads: shards[0], metadata: metadata, to: url)
            return [url]
        }
        var urls: [URL] = []
        var weightMap: [String: String] = [:]
        for (i, shard) in shards.enumerated() {
            let fileName = shardName(prefix: prefix, index: i + 1, total: shards.count)
            let url = directory.appendingPathComponent(fileName)
            try write(payloads: shard, metadata: metadata, to: url)
            urls.append(url)
            for (name, _) in shard { weightMap[name] = fileName }
        }
        let totalSize = tensors.reduce(0) { $0 + $1.payload.byteCount }
        let totalParameters = tensors.reduce(0) { $0 + $1.payload.elementCount }
        let index = indexJSON(weightMap: weightMap, totalSize: totalSize, totalParameters: totalParameters)
        let indexURL = directory.appendingPathComponent("\(prefix).safetensors.index.json")
        let indexWriter = try AtomicFileWriter(destination: indexURL)
        try indexWriter.write(Array(index.utf8))
        try indexWriter.commit()
        return urls
    }

    // MARK: Internals

    /// Stable grouping by decreasing element size (see `write`).
    static func dataOrder(_ tensors: [(name: String, payload: SafetensorsPayload)]) -> [(name: String, payload: SafetensorsPayload)] {
        tensors.enumerated()
            .sorted { ($1.element.payload.elementBytes, $0.offset) < ($0.element.payload.elementBytes, $1.offset) }
            .map(\.element)
    }

    /// The padded header JSON for tensors already in data order.
    static func headerBytes(_ ordered: [(name: String, payload: SafetensorsPayload)], metadata: [String: String]?) -> [UInt8] {
        var json = "{"
        var first = true
        if let metadata {
            json += "\"__metadata__\":{"
            json += metadata.keys.sorted().map { jsonQuoted($0) + ":" + jsonQuoted(metadata[$0] ?? "") }
                .joined(separator: ",")
            json += "}"
            first = false
        }
        var offset = 0
        for (name, payload) in ordered {
            if !first { json += "," }
            first = false
            let end = offset + payload.byteCount
            json += jsonQuoted(name) + ":{\"dtype\":\"\(payload.dtypeName)\",\"shape\":["
                + payload.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        json += "}"
        var bytes = Array(json.utf8)
        let padding = (8 - bytes.count % 8) % 8
        bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: padding))
        return bytes
    }

    /// The index file text, formatted like Python's `json.dumps(index, indent=2, sort_keys=True) + "\n"`.
    static func indexJSON(weightMap: [String: String], totalSize: Int, totalParameters: Int) -> String {
        var text = "{\n  \"metadata\": {\n"
        text += "    \"total_parameters\": \(totalParameters),\n"
        text += "    \"total_size\": \(totalSize)\n"
        text += "  },\n  \"weight_map\": {\n"
        // Python sorts str keys by code point.
        let keys = weightMap.keys.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
        text += keys.map { "    " + pythonQuoted($0) + ": " + pythonQuoted(weightMap[$0] ?? "") }
            .joined(separator: ",\n")
        text += "\n  }\n}\n"
        return text
    }
}

/// Quotes a string as Python's `json.dumps` does by default (`ensure_ascii=True`).
func pythonQuoted(_ string: String) -> String {
    var out = "\""
    for unit in string.utf16 {
        switch unit {
        case 0x22: out += "\\\""
        case 0x5C: out += "\\\\"
        case 0x0A: out += "\\n"
        case 0x0D: out += "\\r"
        case 0x09: out += "\\t"
        case 0x08: out += "\\b"
        case 0x0C: out += "\\f"
        case 0x20..<0x7F: out.unicodeScalars.append(Unicode.Scalar(UInt8(unit)))
        default:
            let hex = String(unit, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        }
    }
    out += "\""
    return out
}
