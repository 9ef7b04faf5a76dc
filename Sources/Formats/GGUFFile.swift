import Foundation
import Kernels

/// A memory-mapped GGUF file (versions 2 and 3, little-endian), as llama.cpp writes them.
///
/// Layout (all little-endian): `"GGUF"`, `u32 version`, `u64 tensor_count`, `u64 kv_count`; then
/// `kv_count` metadata entries (`string key`, `u32 type`, value; strings are `u64 length` + UTF-8
/// bytes, arrays `u32 element type` + `u64 count` + elements); then `tensor_count` tensor infos
/// (`string name`, `u32 n_dims`, `i64 ne[n_dims]` fastest dim first, `u32 ggml_type`,
/// `u64 offset`); then padding to `general.alignment` (default 32), where the data section
/// starts. Tensor offsets are relative to it and must be multiples of the alignment.
///
/// The header is parsed and every tensor's byte range checked at `init` (bounds, alignment,
/// overlaps); the data is never read up front. `tensor(_:)` hands out zero-copy views whose
/// `owner` keeps the mapping alive. Thread-safe after `init`.
public final class GGUFFile: @unchecked Sendable {
    /// Alignment of the data section and every tensor when `general.alignment` is absent.
    public static let defaultAlignment = 32
    /// Deepest array nesting accepted (llama.cpp writes none; a bound keeps hostile files from
    /// exhausting the stack).
    static let maxArrayDepth = 4
    /// Most dimensions a tensor can have (`GGML_MAX_DIMS`).
    public static let maxDimensions = 4

    /// The file.
    public let url: URL
    /// Format version (2 or 3).
    public let version: UInt32
    /// Metadata by key.
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor entries in file order.
    public let tensorInfos: [GGUFTensorInfo]
    /// `general.alignment` (or the default).
    public let alignment: Int
    /// Absolute file offset of the data section.
    public let dataOffset: Int

    let mapping: MappedFile
    let reader: ReadOnlyFile
    private let indexOfName: [String: Int]
    private let lock = NSLock()
    private var readCount = 0

    /// Opens, parses and checks a GGUF file, then maps it.
    /// - Parameter url: the `.gguf` file.
    /// - Throws: `GGUFError` for every malformed header (see its cases), `CheckpointError.io` when
    ///   the file cannot be opened or mapped.
    public init(url: URL) throws {
        self.url = url
        let path = url.path
        let file = try ReadOnlyFile(path: path)
        reader = file
        guard file.size >= 4 else {
            throw GGUFError.badMagic(file: path, found: try file.readBytes(count: file.size, at: 0))
        }
        mapping = try MappedFile(file: file)
        var c = Cursor(base: mapping.base, size: file.size, file: path)
        let magic = try c.bytes(4, "magic")
        guard magic == Array("GGUF".utf8) else { throw GGUFError.badMagic(file: path, found: magic) }
        version = try c.u32("version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(file: path, version: version) }
        let tensorCount = try c.count("tensor count", minimumEntryBytes: 8 + 4 + 8 + 4 + 8)
        let kvCount = try c.count("metadata count", minimumEntryBytes: 8 + 4 + 1)

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        for i in 0..<kvCount {
            let key = try c.string("metadata key #\(i)", strict: true)
            let rawType = try c.u32("type of '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError.invalidValueType(file: path, key: key, rawType: rawType)
            }
            let value = try c.value(type, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else { throw GGUFError.duplicateKey(file: path, key: key) }
            keys.append(key)
        }
        self.metadata = metadata
        metadataKeys = keys

        var alignment = Self.defaultAlignment
        if let value = metadata["general.alignment"] {
            guard case .uint32(let a) = value else {
                throw GGUFError.metadataTypeMismatch(file: path, key: "general.alignment", expected: "uint32", actual: "\(value.type)")
            }
            guard a > 0, a & (a - 1) == 0 else {
                throw GGUFError.invalidMetadata(file: path, key: "general.alignment", reason: "\(a) is not a power of two")
            }
            alignment = Int(a)
        }
        self.alignment = alignment

        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(tensorCount)
        var index: [String: Int] = [:]
        for i in 0..<tensorCount {
            let name = try c.string("name of tensor #\(i)", strict: true)
            let dimCount = Int(try c.u32("dimension count of '\(name)'"))
            guard dimCount <= Self.maxDimensions else {
                throw GGUFError.invalidTensorInfo(file: path, tensor: name, reason: "\(dimCount) dimensions (GGML allows at most \(Self.maxDimensions))")
            }
            var dims: [Int] = []
            for d in 0..<dimCount {
                let ne = Int64(bitPattern: try c.u64("dimension \(d) of '\(name)'"))
                guard ne >= 0 else {
                    throw GGUFError.invalidTensorInfo(file: path, tensor: name, reason: "dimension \(d) is negative (\(ne))")
                }
                dims.append(Int(ne))
            }
            let type = GGMLType(rawValue: try c.u32("type of '\(name)'"))
            let offset = try c.u64("offset of '\(name)'")
            let info = try Self.checkedInfo(name: name, dimensions: dims, type: type, offset: offset, file: path)
            guard index.updateValue(infos.count, forKey: name) == nil else {
                throw GGUFError.duplicateTensor(file: path, tensor: name)
            }
            infos.append(info)
        }
        tensorInfos = infos
        indexOfName = index

        // The data section starts at the next multiple of the alignment.
        let start = (c.offset + alignment - 1) / alignment * alignment
        dataOffset = start
        let dataSize = max(0, file.size - start)
        for info in infos {
            guard info.offset % alignment == 0 else {
                throw GGUFError.misalignedTensor(file: path, tensor: info.name, offset: info.offset, alignment: alignment)
            }
            guard info.offset <= dataSize, info.byteCount <= dataSize - info.offset else {
                throw GGUFError.tensorDataOutOfBounds(
                    file: path, tensor: info.name, offset: info.offset, byteCount: info.byteCount, dataSize: dataSize)
            }
        }
        // Overlaps: sorted by start, each range must end before the next begins (ends cannot
        // overflow: every range lies inside the file, checked above).
        let sorted = infos.filter { $0.byteCount > 0 }.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw GGUFError.overlappingTensors(
                file: path, first: a.name, firstRange: a.offset..<(a.offset + a.byteCount),
                second: b.name, secondRange: b.offset..<(b.offset + b.byteCount))
        }
    }

    /// The one check of a tensor-info record, before anything is sized from it: a type ggml
    /// defines, a row length that is a whole number of blocks, an element count and a byte size
    /// that fit in `Int` (llama.cpp's `gguf_init_from_file` checks the same), and an offset that
    /// fits. Bounds and alignment against the data section are checked once it is known.
    /// - Throws: `GGUFError.unknownType`, `.invalidTensorInfo`, `.tensorDataOutOfBounds`.
    static func checkedInfo(name: String, dimensions dims: [Int], type: GGMLType, offset: UInt64,
                            file path: String) throws -> GGUFTensorInfo {
        guard let traits = GGMLType.traits[type.rawValue] else {
            throw GGUFError.unknownType(file: path, tensor: name, rawType: type.rawValue)
        }
        guard let elements = checkedProduct(dims) else {
            throw GGUFError.invalidTensorInfo(file: path, tensor: name, reason: "element count of dimensions \(dims) overflows")
        }
        let rowLength = dims.first ?? 1
        guard rowLength % traits.blockSize == 0 else {
            throw GGUFError.invalidTensorInfo(
                file: path, tensor: name,
                reason: "row length \(rowLength) is not a multiple of \(type)'s block size \(traits.blockSize)")
        }
        guard let bytes = type.byteCount(dimensions: dims) else {
            throw GGUFError.invalidTensorInfo(file: path, tensor: name, reason: "byte size of dimensions \(dims) overflows")
        }
        guard let start = Int(exactly: offset) else {
            throw GGUFError.tensorDataOutOfBounds(file: path, tensor: name, offset: Int.max, byteCount: bytes, dataSize: 0)
        }
        return GGUFTensorInfo(name: name, dimensions: dims, type: type, offset: start, byteCount: bytes,
                              elementCount: elements)
    }

    // MARK: Metadata

    /// `general.architecture` (`llama`, `qwen3moe`, …), nil if absent.
    public var architecture: String? { metadata["general.architecture"]?.string }

    /// The value of `key`, nil when absent.
    public subscript(key: String) -> GGUFValue? { metadata[key] }

    /// An integer metadata value (any integer type), nil when absent.
    /// - Throws: `GGUFError.metadataTypeMismatch` when present with a non-integer type.
    public func int(_ key: String) throws -> Int? {
        guard let v = metadata[key] else { return nil }
        guard let i = v.int else { throw mismatch(key, "an integer", v) }
        return i
    }

    /// A numeric metadata value as Double, nil when absent.
    /// - Throws: `GGUFError.metadataTypeMismatch` for a non-numeric value.
    public func double(_ key: String) throws -> Double? {
        guard let v = metadata[key] else { return nil }
        guard let d = v.double else { throw mismatch(key, "a number", v) }
        return d
    }

    /// A string metadata value, nil when absent.
    /// - Throws: `GGUFError.metadataTypeMismatch` for another type.
    public func string(_ key: String) throws -> String? {
        guard let v = metadata[key] else { return nil }
        guard let s = v.string else { throw mismatch(key, "a string", v) }
        return s
    }

    /// A boolean metadata value, nil when absent.
    /// - Throws: `GGUFError.metadataTypeMismatch` for another type.
    public func bool(_ key: String) throws -> Bool? {
        guard let v = metadata[key] else { return nil }
        guard let b = v.bool else { throw mismatch(key, "a bool", v) }
        return b
    }

    /// An array-of-strings metadata value, nil when absent.
    /// - Throws: `GGUFError.metadataTypeMismatch` for another type.
    public func strings(_ key: String) throws -> [String]? {
        guard let v = metadata[key] else { return nil }
        guard let s = v.strings else { throw mismatch(key, "an array of strings", v) }
        return s
    }

    /// An array-of-integers metadata value, nil when absent.
    /// - Throws: `GGUFError.metadataTypeMismatch` for another type.
    public func ints(_ key: String) throws -> [Int]? {
        guard let v = metadata[key] else { return nil }
        guard let s = v.ints else { throw mismatch(key, "an array of integers", v) }
        return s
    }

    private func mismatch(_ key: String, _ expected: String, _ value: GGUFValue) -> GGUFError {
        let actual: String
        if case .array(let t, _) = value { actual = "an array of \(t)" } else { actual = "\(value.type)" }
        return .metadataTypeMismatch(file: url.path, key: key, expected: expected, actual: actual)
    }

    // MARK: Tensors

    /// Tensor names in file order.
    public var tensorNames: [String] { tensorInfos.map(\.name) }

    /// The entry of tensor `name`, nil when absent.
    public func info(_ name: String) -> GGUFTensorInfo? {
        indexOfName[name].map { tensorInfos[$0] }
    }

    /// The bytes of tensor `name` inside the mapping, whatever its type (for copying tensors
    /// into another file).
    /// - Throws: `GGUFError.unknownTensor`.
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try lookup(name)
        return UnsafeRawBufferPointer(start: mapping.base + dataOffset + info.offset, count: info.byteCount)
    }

    /// A zero-copy view of tensor `name`, shape slowest axis first (GGML `ne` reversed). A float
    /// tensor not aligned to its element size (only possible with `general.alignment` < 4) is
    /// copied into an aligned buffer.
    /// - Throws: `GGUFError.unknownTensor`, `.unknownType`, `.unsupportedType`.
    public func tensor(_ name: String) throws -> Tensor {
        let info = try lookup(name)
        let dtype = try dtype(of: info)
        let pointer = mapping.base + dataOffset + info.offset
        let count = info.byteCount
        let elementAlignment = info.type.blockSize == 1 ? (info.type.blockBytes ?? 1) : 1
        if Int(bitPattern: pointer) % elementAlignment == 0 {
            return Tensor(dtype: dtype, shape: info.shape, data: pointer, owner: mapping)
        }
        let buffer = TensorBuffer(byteCount: count)
        buffer.pointer.copyMemory(from: pointer, byteCount: count)
        return Tensor(dtype: dtype, shape: info.shape, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }

    /// Rows `rows` of the slowest axis of `name` (one expert of a stacked `{…, E}` tensor), read
    /// with `pread` into owned memory: only those bytes are read.
    /// - Returns: shape `[rows.count] + shape.dropFirst()`.
    /// - Throws: `GGUFError.unknownTensor`, `.unknownType`, `.unsupportedType`, `.rowsOutOfRange`,
    ///   `CheckpointError.io`.
    public func readRows(_ name: String, rows: Range<Int>) throws -> Tensor {
        try readRows(name, rows: rows, viewedAs: try lookup(name).shape)
    }

    /// Rows `rows` of tensor `name` seen with shape `shape` (same element count, whole blocks per
    /// row): e.g. rows of one expert of a stacked `[E, I, H]` tensor seen as `[E·I, H]`.
    /// - Throws: as `readRows(_:rows:)`; `GGUFError.invalidTensorInfo` if `shape` does not fit.
    public func readRows(_ name: String, rows: Range<Int>, viewedAs viewShape: [Int]) throws -> Tensor {
        let info = try lookup(name)
        let dtype = try dtype(of: info)
        let shape = viewShape.isEmpty ? [1] : viewShape
        guard checkedProduct(shape) == info.elementCount, shape[0] > 0, info.byteCount % shape[0] == 0 else {
            throw GGUFError.invalidTensorInfo(file: url.path, tensor: name, reason: "cannot be seen as \(viewShape)")
        }
        guard rows.lowerBound >= 0, rows.upperBound <= shape[0] else {
            throw GGUFError.rowsOutOfRange(file: url.path, tensor: name, rows: rows, available: shape[0])
        }
        let rowBytes = info.byteCount / shape[0]
        let count = rows.count * rowBytes
        let buffer = TensorBuffer(byteCount: count)
        try reader.read(into: buffer.pointer, count: count, at: dataOffset + info.offset + rows.lowerBound * rowBytes)
        lock.lock()
        readCount += count
        lock.unlock()
        var newShape = shape
        newShape[0] = rows.count
        return Tensor(dtype: dtype, shape: newShape, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }

    /// Total bytes read by `readRows` so far (the header and mapped pages are not counted).
    public var bytesRead: Int {
        lock.lock()
        defer { lock.unlock() }
        return readCount
    }

    private func lookup(_ name: String) throws -> GGUFTensorInfo {
        guard let info = info(name) else {
            throw GGUFError.unknownTensor(file: url.path, tensor: name, suggestions: closeNames(to: name, in: indexOfName.keys))
        }
        return info
    }

    private func dtype(of info: GGUFTensorInfo) throws -> DType {
        guard let dtype = info.type.dtype else {
            throw GGUFError.unsupportedType(file: url.path, tensor: info.name, type: info.type.name)
        }
        return dtype
    }
}

/// A bounds-checked little-endian reader over the mapped header.
private struct Cursor {
    let base: UnsafeRawPointer
    let size: Int
    let file: String
    var offset = 0

    init(base: UnsafeRawPointer, size: Int, file: String) {
        self.base = base
        self.size = size
        self.file = file
    }

    func need(_ count: Int, _ what: @autoclosure () -> String) throws {
        guard count >= 0, size - offset >= count else {
            throw GGUFError.truncated(file: file, what: what(), offset: offset, fileSize: size)
        }
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        try need(MemoryLayout<T>.size, what())
        let v = T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return v
    }

    mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 { try load(UInt32.self, what()) }
    mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 { try load(UInt64.self, what()) }

    mutating func bytes(_ count: Int, _ what: @autoclosure () -> String) throws -> [UInt8] {
        try need(count, what())
        let out = Array(UnsafeRawBufferPointer(start: base + offset, count: count))
        offset += count
        return out
    }

    /// A count of entries that each take at least `minimumEntryBytes`: more than the rest of the
    /// file could hold means a truncated (or corrupt) file, caught before allocating anything.
    mutating func count(_ what: String, minimumEntryBytes: Int) throws -> Int {
        let at = offset
        let n = try u64(what)
        guard n <= UInt64(max(0, size - offset) / minimumEntryBytes) else {
            throw GGUFError.truncated(file: file, what: "\(n) entries of \(what)", offset: at, fileSize: size)
        }
        return Int(n)
    }

    /// A `u64 length` + bytes string. `strict` (keys, tensor names) rejects invalid UTF-8;
    /// values are decoded with replacement characters, as llama.cpp does not validate them.
    mutating func string(_ what: @autoclosure () -> String, strict: Bool = false) throws -> String {
        let at = offset
        let length = try u64(what())
        guard length <= UInt64(size - offset) else {
            throw GGUFError.truncated(file: file, what: "\(length)-byte string (\(what()))", offset: at, fileSize: size)
        }
        let raw = UnsafeBufferPointer(start: (base + offset).assumingMemoryBound(to: UInt8.self), count: Int(length))
        offset += Int(length)
        if strict {
            guard let s = String(validating: raw, as: UTF8.self) else {
                throw GGUFError.invalidMetadata(file: file, key: what(), reason: "not valid UTF-8")
            }
            return s
        }
        return String(decoding: raw, as: UTF8.self)
    }

    mutating func value(_ type: GGUFValueType, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, "value of '\(key)'"))
        case .int8: return .int8(try load(Int8.self, "value of '\(key)'"))
        case .uint16: return .uint16(try load(UInt16.self, "value of '\(key)'"))
        case .int16: return .int16(try load(Int16.self, "value of '\(key)'"))
        case .uint32: return .uint32(try load(UInt32.self, "value of '\(key)'"))
        case .int32: return .int32(try load(Int32.self, "value of '\(key)'"))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, "value of '\(key)'")))
        case .bool:
            let b = try load(UInt8.self, "value of '\(key)'")
            guard b <= 1 else { throw GGUFError.invalidMetadata(file: file, key: key, reason: "bool byte is \(b)") }
            return .bool(b == 1)
        case .string: return .string(try string("value of '\(key)'"))
        case .uint64: return .uint64(try load(UInt64.self, "value of '\(key)'"))
        case .int64: return .int64(try load(Int64.self, "value of '\(key)'"))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, "value of '\(key)'")))
        case .array:
            guard depth < GGUFFile.maxArrayDepth else {
                throw GGUFError.invalidMetadata(file: file, key: key, reason: "arrays nested deeper than \(GGUFFile.maxArrayDepth)")
            }
            let rawType = try u32("element type of '\(key)'")
            guard let elementType = GGUFValueType(rawValue: rawType) else {
                throw GGUFError.invalidValueType(file: file, key: key, rawType: rawType)
            }
            let minimum: Int
            switch elementType {
            case .uint8, .int8, .bool: minimum = 1
            case .uint16, .int16: minimum = 2
            case .uint32, .int32, .float32: minimum = 4
            case .uint64, .int64, .float64, .string: minimum = 8
            case .array: minimum = 12
            }
            let n = try count("elements of '\(key)'", minimumEntryBytes: minimum)
            var values: [GGUFValue] = []
            values.reserveCapacity(n)
            for _ in 0..<n { values.append(try value(elementType, key: key, depth: depth + 1)) }
            return .array(elementType, values)
        }
    }
}
