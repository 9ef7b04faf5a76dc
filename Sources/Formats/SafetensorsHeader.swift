import Foundation
import Kernels

/// One tensor's header entry.
public struct SafetensorsEntry: Sendable, Equatable {
    /// The tensor's name in the file.
    public let name: String
    /// The dtype as spelled in the header: "BF16", "F32", "I64", "F8_E4M3", …
    public let dtypeName: String
    /// The matching `DType`, or nil when we cannot compute on it (integers, fp8, …).
    public let dtype: DType?
    /// Shape, slowest axis first; `[]` for a scalar.
    public let shape: [Int]
    /// Absolute byte offsets in the file (header length and header included).
    public let dataRange: Range<Int>

    /// Number of elements (1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }
    /// Number of bytes.
    public var byteCount: Int { dataRange.count }
}

/// Every dtype the safetensors format defines (safetensors 0.8), with its size in bits. Sizes let
/// us check `data_offsets` against the shape even for dtypes we cannot compute on.
let safetensorsDTypeBits: [String: Int] = [
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
]

/// A parsed and validated safetensors header.
///
/// Validation follows the reference (`safetensors` crate) with two deliberate differences:
/// holes between tensors are allowed (only overlaps are refused), and a dtype name we do not
/// know is kept (its entry has `dtype == nil` and no size check) instead of failing the whole
/// file, so a newer file with one exotic tensor still loads everything else.
struct SafetensorsHeader: Sendable {
    let entries: [String: SafetensorsEntry]
    let metadata: [String: String]
    /// Absolute offset of the data section (8 + header length).
    let dataStart: Int
    let fileSize: Int

    /// Reads the header of `file` with two small `pread`s; the data section is not touched.
    static func read(from file: ReadOnlyFile) throws -> SafetensorsHeader {
        let path = file.path
        guard file.size >= 8 else { throw CheckpointError.fileTooSmall(file: path, size: file.size) }
        let prefix = try file.readBytes(count: min(file.size, 64), at: 0)
        var length: UInt64 = 0
        for i in 0..<8 { length |= UInt64(prefix[i]) << (8 * UInt64(i)) }
        guard length <= UInt64(SafetensorsFile.maxHeaderBytes), Int(length) <= file.size - 8 else {
            throw CheckpointError.headerLengthOutOfRange(
                file: path, headerLength: length, fileSize: file.size, hint: formatHint(prefix))
        }
        guard length > 0 else {
            throw CheckpointError.invalidHeader(file: path, reason: "the header is empty", hint: formatHint(prefix))
        }
        let bytes = try file.readBytes(count: Int(length), at: 8)
        return try parse(headerBytes: bytes, fileSize: file.size, path: path, prefix: prefix)
    }

    /// Parses and validates header JSON (`headerBytes`, without the 8-byte length).
    static func parse(headerBytes: [UInt8], fileSize: Int, path: String, prefix: [UInt8] = []) throws
        -> SafetensorsHeader
    {
        let dataStart = 8 + headerBytes.count
        let dataSize = fileSize - dataStart
        guard headerBytes.first == UInt8(ascii: "{") else {
            throw CheckpointError.invalidHeader(
                file: path, reason: "it does not start with '{'", hint: formatHint(prefix))
        }
        let root: JSONValue
        do {
            root = try headerBytes.withUnsafeBytes { raw in
                var parser = StrictJSONParser(bytes: raw, duplicateKeys: .reject)
                return try parser.parseDocument()
            }
        } catch let error as JSONParseError {
            if let key = error.duplicateKey, error.depth == 1 {
                throw CheckpointError.duplicateTensor(file: path, tensor: key)
            }
            throw CheckpointError.invalidHeader(
                file: path, reason: "not valid JSON: \(error)",
                hint: "the header may be truncated or the file is not safetensors")
        }
        guard case .object(let members) = root else {
            throw CheckpointError.invalidHeader(file: path, reason: "not a JSON object", hint: nil)
        }

        var metadata: [String: String] = [:]
        var entries: [String: SafetensorsEntry] = [:]
        var relativeRanges: [(name: String, range: Range<Int>)] = []
        for (name, value) in members {
            if name == "__metadata__" {
                guard case .object(let items) = value else {
                    throw CheckpointError.invalidEntry(file: path, tensor: name, reason: "must be an object of strings")
                }
                // The reference only writes strings; anything else is kept as its JSON text.
                for (key, item) in items { metadata[key] = item.stringValue ?? item.jsonString }
                continue
            }
            let entry = try parseEntry(name: name, value: value, dataStart: dataStart, dataSize: dataSize, path: path)
            entries[name] = entry
            let relative = (entry.dataRange.lowerBound - dataStart)..<(entry.dataRange.upperBound - dataStart)
            relativeRanges.append((name, relative))
        }

        // Overlaps: sort by start and compare each range with the furthest end seen so far.
        // Empty tensors occupy no bytes and cannot overlap anything.
        let sorted = relativeRanges.filter { !$0.range.isEmpty }.sorted {
            ($0.range.lowerBound, $0.range.upperBound, $0.name) < ($1.range.lowerBound, $1.range.upperBound, $1.name)
        }
        var furthest: (name: String, range: Range<Int>)?
        for item in sorted {
            if let previous = furthest, item.range.lowerBound < previous.range.upperBound {
                throw CheckpointError.overlappingTensors(
                    file: path,
                    first: previous.name, firstOffsets: [previous.range.lowerBound, previous.range.upperBound],
                    second: item.name, secondOffsets: [item.range.lowerBound, item.range.upperBound])
            }
            if item.range.upperBound > (furthest?.range.upperBound ?? Int.min) { furthest = item }
        }
        return SafetensorsHeader(entries: entries, metadata: metadata, dataStart: dataStart, fileSize: fileSize)
    }

    private static func parseEntry(name: String, value: JSONValue, dataStart: Int, dataSize: Int, path: String)
        throws -> SafetensorsEntry
    {
        func invalid(_ reason: String) -> CheckpointError {
            .invalidEntry(file: path, tensor: name, reason: reason)
        }
        guard case .object(let fields) = value else { throw invalid("entry is not an object") }
        guard let dtypeValue = fields["dtype"] else { throw invalid("missing \"dtype\"") }
        guard let dtypeName = dtypeValue.stringValue else { throw invalid("\"dtype\" is not a string") }
        guard let shapeValue = fields["shape"] else { throw invalid("missing \"shape\"") }
        guard let dims = shapeValue.arrayValue else { throw invalid("\"shape\" is not an array") }
        var shape: [Int] = []
        for dim in dims {
            guard let n = dim.intValue, n >= 0 else {
                throw invalid("\"shape\" \(shapeValue.jsonString) holds a non-integer or negative dimension")
            }
            shape.append(n)
        }
        guard let offsetsValue = fields["data_offsets"] else { throw invalid("missing \"data_offsets\"") }
        guard let pair = offsetsValue.arrayValue, pair.count == 2, let begin = pair[0].intValue,
            let end = pair[1].intValue, begin >= 0, end >= 0
        else { throw invalid("\"data_offsets\" \(offsetsValue.jsonString) is not two non-negative integers") }
        guard begin <= end else {
            throw CheckpointError.invalidOffsets(
                file: path, tensor: name, offsets: [begin, end], dataSize: dataSize, reason: "are reversed")
        }
        guard end <= dataSize else {
            throw CheckpointError.invalidOffsets(
                file: path, tensor: name, offsets: [begin, end], dataSize: dataSize,
                reason: "reach past the end of the data section")
        }
        if let bits = safetensorsDTypeBits[dtypeName] {
            var elements = 1
            var overflow = false
            for dim in shape {
                (elements, overflow) = elements.multipliedReportingOverflow(by: dim)
                if overflow { throw invalid("shape \(shape) has too many elements") }
            }
            let (totalBits, bitsOverflow) = elements.multipliedReportingOverflow(by: bits)
            if bitsOverflow { throw invalid("shape \(shape) has too many elements") }
            let expected = (totalBits + 7) / 8
            if expected != end - begin || totalBits % 8 != 0 {
                throw CheckpointError.sizeMismatch(
                    file: path, tensor: name, dtype: dtypeName, shape: shape, expectedBytes: expected,
                    actualBytes: end - begin)
            }
        }
        // GGML block types (Q4_0, …) have no safetensors spelling: a header naming one is not
        // taken at its word (no size check above would cover it).
        var dtype = DType(rawValue: dtypeName)
        if dtype?.quantizedFormat != nil { dtype = nil }
        return SafetensorsEntry(
            name: name, dtypeName: dtypeName, dtype: dtype, shape: shape,
            dataRange: (dataStart + begin)..<(dataStart + end))
    }

    /// A guess at what the file really is, from its first bytes, for error hints.
    static func formatHint(_ prefix: [UInt8]) -> String? {
        let text = String(decoding: prefix, as: UTF8.self)
        if text.hasPrefix("version https://git-lfs") {
            return "this is a Git LFS pointer, not the weights; run `git lfs pull` in the model repository"
        }
        if text.hasPrefix("GGUF") { return "this is a GGUF file; open it with the GGUF reader" }
        if prefix.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            return "this is a zip archive (a PyTorch .bin checkpoint?); convert it to safetensors"
        }
        if prefix.first == 0x80 { return "this looks like a Python pickle; convert it to safetensors" }
        let lower = text.lowercased()
        if lower.hasPrefix("<!doctype") || lower.hasPrefix("<html") || lower.hasPrefix("{\"error") {
            return "this is a web page or error response saved in place of the file; download it again"
        }
        if prefix.count >= 8 { return "the file is not safetensors, or it is truncated or corrupt" }
        return nil
    }
}
