import Foundation
import Kernels

/// A memory-mapped `.safetensors` file: the header is parsed and validated up front, the
/// data section is mapped read-only (`PROT_READ`, `MAP_PRIVATE`) and never read into memory;
/// `tensor(_:)` hands out zero-copy views whose `owner` keeps the mapping alive.
///
/// Layout: 8-byte little-endian header length N, N bytes of JSON header
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}}`, offsets
/// relative to the data section), then the data section at byte 8 + N.
public final class SafetensorsFile: @unchecked Sendable {
    /// Largest header we accept. Real headers are kilobytes to a few megabytes (DeepSeek-V3's
    /// shards: ~100 KB); the reference caps at 100 MB, and so do we, so a corrupt length can't
    /// make us allocate gigabytes.
    public static let maxHeaderBytes = 100_000_000

    /// What `tensor(_:)` does with a tensor whose bytes are not aligned to its element size.
    ///
    /// Files from the reference writer are always aligned (the header is padded to 8 bytes and
    /// tensors are ordered by decreasing element size), and the mapping starts on a page, so this
    /// only matters for odd or hostile files. Kernels load F32 weights as `Float`/SIMD lanes,
    /// which needs at least element alignment.
    public enum MisalignmentPolicy: Sendable {
        /// Copy the tensor into an aligned owned buffer (the default: the file is valid, just odd).
        case copy
        /// Throw `CheckpointError.misalignedData`.
        case reject
    }

    /// The file.
    public let url: URL
    /// Header entries by tensor name (`__metadata__` excluded).
    public let entries: [String: SafetensorsEntry]
    /// The header's `__metadata__` (empty when absent). Non-string values, which the reference
    /// never writes, are kept as their JSON text.
    public let metadata: [String: String]
    /// What happens to misaligned tensors.
    public let misalignment: MisalignmentPolicy

    let mapping: MappedFile

    /// Opens, validates and maps a file.
    /// - Parameters:
    ///   - url: the `.safetensors` file.
    ///   - misalignment: what to do with tensors not aligned to their element size.
    /// - Throws: `CheckpointError` for unreadable files and every malformed header (see its cases).
    public convenience init(url: URL, misalignment: MisalignmentPolicy = .copy) throws {
        let file = try ReadOnlyFile(path: url.path)
        let header = try SafetensorsHeader.read(from: file)
        try self.init(url: url, file: file, header: header, misalignment: misalignment)
    }

    /// Maps a file whose header was already read (the checkpoint reads headers first and maps
    /// a shard only when one of its tensors is asked for).
    init(url: URL, file: ReadOnlyFile, header: SafetensorsHeader, misalignment: MisalignmentPolicy) throws {
        self.url = url
        self.entries = header.entries
        self.metadata = header.metadata
        self.misalignment = misalignment
        self.mapping = try MappedFile(file: file)
    }

    /// Tensor names, sorted.
    public var tensorNames: [String] { entries.keys.sorted() }

    /// A zero-copy view of tensor `name` into the mapping (an aligned copy if the file misaligns
    /// it and the policy is `.copy`).
    /// - Parameter name: the tensor's name in the file.
    /// - Returns: the tensor, shape as in the header.
    /// - Throws: `CheckpointError.unknownTensor` (with close names), `.unsupportedDType`,
    ///   `.misalignedData` under `.reject`.
    public func tensor(_ name: String) throws -> Tensor {
        guard let entry = entries[name] else {
            throw CheckpointError.unknownTensor(
                location: url.path, tensor: name, suggestions: closeNames(to: name, in: entries.keys))
        }
        return try makeTensor(entry)
    }

    func makeTensor(_ entry: SafetensorsEntry) throws -> Tensor {
        guard let dtype = entry.dtype else {
            throw CheckpointError.unsupportedDType(file: url.path, tensor: entry.name, dtype: entry.dtypeName)
        }
        let pointer = mapping.base + entry.dataRange.lowerBound
        if Int(bitPattern: pointer) % dtype.byteSize == 0 {
            return Tensor(dtype: dtype, shape: entry.shape, data: pointer, owner: mapping)
        }
        switch misalignment {
        case .reject:
            throw CheckpointError.misalignedData(
                file: url.path, tensor: entry.name, dtype: entry.dtypeName, fileOffset: entry.dataRange.lowerBound)
        case .copy:
            let buffer = TensorBuffer(byteCount: entry.byteCount)
            buffer.pointer.copyMemory(from: pointer, byteCount: entry.byteCount)
            return Tensor(dtype: dtype, shape: entry.shape, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
        }
    }
}

/// Up to three names close to `name`, for "did you mean" hints: names within a small edit
/// distance, and names equal to it up to a leading dotted prefix (`model.` missing or extra).
/// Costs O(names × length) with a banded edit distance, fine for an error path.
func closeNames<S: Sequence>(to name: String, in names: S) -> [String] where S.Element == String {
    let target = Array(name.utf8)
    let limit = max(2, min(4, target.count / 8))
    var scored: [(distance: Int, name: String)] = []
    for candidate in names {
        if candidate.hasSuffix("." + name) || name.hasSuffix("." + candidate) {
            scored.append((0, candidate))
            continue
        }
        let other = Array(candidate.utf8)
        if abs(other.count - target.count) > limit { continue }
        if let d = boundedEditDistance(target, other, limit: limit) { scored.append((d, candidate)) }
    }
    scored.sort { ($0.distance, $0.name) < ($1.distance, $1.name) }
    return scored.prefix(3).map(\.name)
}

/// Levenshtein distance if it is at most `limit`, else nil (only a band of the table is filled).
func boundedEditDistance(_ a: [UInt8], _ b: [UInt8], limit: Int) -> Int? {
    let big = limit + 1
    var previous = [Int](0...b.count).map { min($0, big) }
    var current = [Int](repeating: big, count: b.count + 1)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        current[0] = min(i, big)
        let lo = max(1, i - limit)
        let hi = min(b.count, i + limit)
        if lo > 1 { current[lo - 1] = big }
        var rowMin = current[0]
        if lo <= hi {
            for j in lo...hi {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost, big)
                rowMin = min(rowMin, current[j])
            }
        }
        if hi < b.count { current[hi + 1] = big }
        if rowMin > limit { return nil }
        swap(&previous, &current)
    }
    let d = previous[b.count]
    return d <= limit ? d : nil
}
