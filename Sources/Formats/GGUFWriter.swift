import Foundation
import Kernels

/// Builds a GGUF v3 file: metadata in insertion order, then tensor infos, then each tensor's
/// bytes at the next multiple of `alignment` (zero padding), as llama.cpp's `gguf_write_to_file`
/// lays them out. Tensors are referenced, not copied, until `write(to:)`; a tensor added with a
/// producer (`add(_:type:dimensions:producer:)`) is not even made until then: its size follows
/// from its type and dimensions, so the header is written first and each tensor is made, written
/// and dropped in turn (converting a model larger than memory holds one tensor at a time).
///
/// Used to export pruned models; tensors keep whatever GGML type they had (a quantized expert is
/// copied block for block, never requantized).
public struct GGUFWriter {
    /// Alignment of the data section and every tensor (a power of two). Written as
    /// `general.alignment` when it differs from the default 32.
    public let alignment: Int
    /// Metadata entries in the order they will be written.
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []

    struct Entry {
        let name: String
        let type: GGMLType
        /// GGML `ne`, fastest first.
        let dimensions: [Int]
        /// Size of the tensor's data in bytes.
        let byteCount: Int
        let data: EntryData
    }
    enum EntryData {
        /// Bytes kept alive by `owner` (a mapping, a tensor buffer or a byte box).
        case bytes(UnsafeRawBufferPointer, owner: AnyObject?)
        /// Made when the file is written.
        case deferred(() throws -> Tensor)
    }
    private(set) var entries: [Entry] = []
    private var names = Set<String>()

    /// A writer with no metadata and no tensors.
    /// - Parameter alignment: power of two; 32 is llama.cpp's default.
    public init(alignment: Int = GGUFFile.defaultAlignment) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment \(alignment) is not a power of two")
        self.alignment = alignment
        if alignment != GGUFFile.defaultAlignment { metadata.append(("general.alignment", .uint32(UInt32(alignment)))) }
    }

    /// Sets metadata `key` (replacing an earlier value in place, so the order stays stable).
    public mutating func set(_ key: String, _ value: GGUFValue) {
        precondition(key != "general.alignment", "set the alignment through init(alignment:)")
        if let i = metadata.firstIndex(where: { $0.key == key }) {
            metadata[i].value = value
        } else {
            metadata.append((key, value))
        }
    }

    /// Adds a tensor in the kernels' layout (shape slowest axis first), stored as its dtype's GGML
    /// type. The tensor's storage is kept alive until the writer goes away.
    /// - Throws: `GGUFError.invalidWriteRequest` for a duplicate name, a dtype GGUF cannot hold or
    ///   more than four dimensions.
    public mutating func add(_ name: String, _ tensor: Tensor) throws {
        guard let type = GGMLType(tensor.dtype) else {
            throw GGUFError.invalidWriteRequest(file: name, reason: "dtype \(tensor.dtype) has no GGML type")
        }
        let dims = Array(tensor.shape.reversed())
        guard let count = type.byteCount(dimensions: dims) else {
            throw GGUFError.invalidWriteRequest(file: name, reason: "shape \(tensor.shape) does not fit \(type) blocks")
        }
        try add(name, type: type, dimensions: dims, bytes: UnsafeRawBufferPointer(start: tensor.data, count: count), owner: tensor.owner)
    }

    /// Adds raw bytes as a tensor of `type` with GGML dimensions `dimensions` (fastest first).
    /// - Throws: `GGUFError.invalidWriteRequest` when `bytes` is not exactly the tensor's size, or
    ///   for a duplicate name, an unknown type or more than four dimensions.
    public mutating func add(_ name: String, type: GGMLType, dimensions: [Int], bytes: [UInt8]) throws {
        let box = ByteBox(bytes)
        try add(name, type: type, dimensions: dimensions, bytes: box.buffer, owner: box)
    }

    /// Adds `bytes` (kept alive by `owner`) as a tensor. See `add(_:type:dimensions:bytes:)`.
    public mutating func add(_ name: String, type: GGMLType, dimensions: [Int], bytes: UnsafeRawBufferPointer,
                             owner: AnyObject?) throws {
        let expected = try checkedByteCount(name, type: type, dimensions: dimensions)
        guard expected == bytes.count else {
            throw GGUFError.invalidWriteRequest(
                file: name, reason: "tensor '\(name)': \(type) \(dimensions) needs \(expected) bytes, got \(bytes.count)")
        }
        names.insert(name)
        entries.append(Entry(name: name, type: type, dimensions: dimensions, byteCount: expected,
                             data: .bytes(bytes, owner: owner)))
    }

    /// Adds a tensor of `type` with GGML dimensions `dimensions` (fastest first) whose bytes
    /// `producer` makes during `write(to:)`, once, after the tensors added before it are written;
    /// the tensor it returns is dropped (and its mapped pages released) as soon as it is written.
    /// - Throws: `GGUFError.invalidWriteRequest` for a duplicate name, an unknown type or more than
    ///   four dimensions. `write(to:)` throws what `producer` throws, and
    ///   `GGUFError.invalidWriteRequest` when the tensor it returns is not of `type` and the size.
    public mutating func add(_ name: String, type: GGMLType, dimensions: [Int],
                             producer: @escaping () throws -> Tensor) throws {
        let expected = try checkedByteCount(name, type: type, dimensions: dimensions)
        names.insert(name)
        entries.append(Entry(name: name, type: type, dimensions: dimensions, byteCount: expected, data: .deferred(producer)))
    }

    /// The data size of a new tensor `name`.
    /// - Throws: `GGUFError.invalidWriteRequest` for a duplicate name, bad dimensions or a type
    ///   that cannot hold them.
    private func checkedByteCount(_ name: String, type: GGMLType, dimensions: [Int]) throws -> Int {
        guard !names.contains(name) else { throw GGUFError.invalidWriteRequest(file: name, reason: "tensor '\(name)' added twice") }
        guard !dimensions.isEmpty, dimensions.count <= GGUFFile.maxDimensions, dimensions.allSatisfy({ $0 >= 0 }) else {
            throw GGUFError.invalidWriteRequest(file: name, reason: "tensor '\(name)' has dimensions \(dimensions)")
        }
        guard let expected = type.byteCount(dimensions: dimensions) else {
            throw GGUFError.invalidWriteRequest(
                file: name, reason: "tensor '\(name)': \(type) cannot hold dimensions \(dimensions)")
        }
        return expected
    }

    /// Writes the file atomically (temporary file, fsync, rename): the header, then each
    /// tensor's bytes in order (deferred tensors are made one at a time, just before they are
    /// written).
    /// - Throws: `CheckpointError.io` when writing fails; what a producer throws;
    ///   `GGUFError.invalidWriteRequest` when a produced tensor does not match its declaration.
    public func write(to url: URL) throws {
        var header: [UInt8] = []
        header.append(contentsOf: Array("GGUF".utf8))
        Self.append(UInt32(3), to: &header)
        Self.append(UInt64(entries.count), to: &header)
        Self.append(UInt64(metadata.count), to: &header)
        for (key, value) in metadata {
            Self.append(string: key, to: &header)
            Self.append(value.type.rawValue, to: &header)
            Self.append(value: value, to: &header)
        }
        var offset = 0
        var offsets: [Int] = []
        for e in entries {
            offsets.append(offset)
            Self.append(string: e.name, to: &header)
            Self.append(UInt32(e.dimensions.count), to: &header)
            for d in e.dimensions { Self.append(UInt64(d), to: &header) }
            Self.append(e.type.rawValue, to: &header)
            Self.append(UInt64(offset), to: &header)
            offset = padded(offset + e.byteCount)
        }
        header.append(contentsOf: [UInt8](repeating: 0, count: padded(header.count) - header.count))

        let out = try AtomicFileWriter(destination: url)
        try out.write(header)
        var written = 0
        for (e, start) in zip(entries, offsets) {
            if start > written { try out.write([UInt8](repeating: 0, count: start - written)) }
            switch e.data {
            case .bytes(let bytes, _):
                if let base = bytes.baseAddress, bytes.count > 0 { try out.write(base, count: bytes.count) }
            case .deferred(let produce):
                let tensor = try produce()
                guard GGMLType(tensor.dtype) == e.type, tensor.byteCount == e.byteCount else {
                    throw GGUFError.invalidWriteRequest(
                        file: e.name, reason: "tensor '\(e.name)' was declared \(e.type) \(e.dimensions) (\(e.byteCount) bytes); "
                            + "its producer made \(tensor.dtype) \(tensor.shape) (\(tensor.byteCount) bytes)")
                }
                if e.byteCount > 0 { try out.write(tensor.data, count: e.byteCount) }
                tensor.releasePages()
                out.dropWrittenPages()
            }
            written = start + e.byteCount
        }
        if padded(written) > written { try out.write([UInt8](repeating: 0, count: padded(written) - written)) }
        try out.commit()
    }

    private func padded(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    static func append<T: FixedWidthInteger>(_ v: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    static func append(string: String, to out: inout [UInt8]) {
        let utf8 = Array(string.utf8)
        append(UInt64(utf8.count), to: &out)
        out.append(contentsOf: utf8)
    }

    static func append(value: GGUFValue, to out: inout [UInt8]) {
        switch value {
        case .uint8(let v): append(v, to: &out)
        case .int8(let v): append(v, to: &out)
        case .uint16(let v): append(v, to: &out)
        case .int16(let v): append(v, to: &out)
        case .uint32(let v): append(v, to: &out)
        case .int32(let v): append(v, to: &out)
        case .float32(let v): append(v.bitPattern, to: &out)
        case .bool(let v): out.append(v ? 1 : 0)
        case .string(let s): append(string: s, to: &out)
        case .uint64(let v): append(v, to: &out)
        case .int64(let v): append(v, to: &out)
        case .float64(let v): append(v.bitPattern, to: &out)
        case .array(let type, let values):
            precondition(values.allSatisfy { $0.type == type }, "GGUF arrays are homogeneous")
            append(type.rawValue, to: &out)
            append(UInt64(values.count), to: &out)
            for v in values { append(value: v, to: &out) }
        }
    }
}

/// Owned bytes with a stable address, for tensors handed to the writer as arrays.
private final class ByteBox {
    let pointer: UnsafeMutableRawPointer
    let count: Int
    init(_ bytes: [UInt8]) {
        count = bytes.count
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(1, count), alignment: 64)
        bytes.withUnsafeBytes { if let b = $0.baseAddress { pointer.copyMemory(from: b, byteCount: count) } }
    }
    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }
    deinit { pointer.deallocate() }
}

extension GGUFValue {
    /// An array of strings.
    public static func strings(_ values: [String]) -> GGUFValue { .array(.string, values.map { .string($0) }) }
    /// An array of int32 values (as `tokenizer.ggml.token_type` is stored).
    public static func int32s(_ values: [Int]) -> GGUFValue { .array(.int32, values.map { .int32(Int32($0)) }) }
    /// An array of float32 values.
    public static func float32s(_ values: [Float]) -> GGUFValue { .array(.float32, values.map { .float32($0) }) }
}
