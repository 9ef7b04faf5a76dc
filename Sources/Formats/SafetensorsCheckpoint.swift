import Foundation
import Kernels

/// The safetensors weights of a model directory, possibly split across shards.
///
/// Which files make up the checkpoint (checked in this order, first match wins, the same order
/// as transformers' `from_pretrained`):
/// 1. `model.safetensors`: a single file; every other file is ignored.
/// 2. `model.safetensors.index.json`: its `weight_map` (tensor name → shard file name, relative
///    to the directory) is the whole truth; tensors a shard holds but the index does not list are
///    ignored. Every shard it names must exist (checked at `init`, by `stat` only).
/// 3. Otherwise every `*.safetensors` file directly in the directory (hidden files excluded),
///    in sorted file-name order. A name in two files is an error. Files named like transformers
///    shards (`x-00001-of-00003.safetensors`) must form a complete set.
///
/// Files are opened lazily: with an index, nothing but the index is read until an entry is
/// asked for; then only that shard's header is read (two small `pread`s), and the shard is
/// mapped the first time one of its tensors is viewed with `tensor(_:)`. `readRows` never maps:
/// it `pread`s exactly the bytes asked for. Thread-safe.
public final class SafetensorsCheckpoint: @unchecked Sendable {
    /// The model directory.
    public let directory: URL
    /// The index file used, if the checkpoint has one.
    public let indexURL: URL?
    /// The weight files, in the order described above (index: sorted by file name).
    public let files: [URL]
    /// What happens to misaligned tensors in `tensor(_:)`.
    public let misalignment: SafetensorsFile.MisalignmentPolicy

    private let shards: [Shard]
    private let shardOfName: [String: Int]
    private let counterLock = NSLock()
    private var readCount = 0

    /// Opens a model directory (see the type's documentation for which files are used).
    /// - Parameters:
    ///   - directory: the folder holding `config.json` and the weights.
    ///   - misalignment: passed to each shard's `SafetensorsFile`.
    /// - Throws: `CheckpointError.noSafetensorsFiles`, `.invalidIndex`, `.missingShard`,
    ///   `.tensorInSeveralFiles`, or a header error of a file read at open (cases 1 and 3).
    public init(directory: URL, misalignment: SafetensorsFile.MisalignmentPolicy = .copy) throws {
        self.directory = directory
        self.misalignment = misalignment
        let fm = FileManager.default
        let single = directory.appendingPathComponent("model.safetensors")
        let index = directory.appendingPathComponent("model.safetensors.index.json")

        if fm.fileExists(atPath: single.path) {
            let shard = Shard(url: single)
            let header = try shard.header()
            indexURL = nil
            files = [single]
            shards = [shard]
            shardOfName = Dictionary(uniqueKeysWithValues: header.entries.keys.map { ($0, 0) })
        } else if fm.fileExists(atPath: index.path) {
            let map = try Self.readWeightMap(index: index)
            let fileNames = Set(map.values).sorted()
            let position = Dictionary(uniqueKeysWithValues: fileNames.enumerated().map { ($1, $0) })
            var tensorOfFile: [String: String] = [:]
            for (tensor, file) in map where tensor < (tensorOfFile[file] ?? "\u{10FFFF}") {
                tensorOfFile[file] = tensor  // the first name in sorted order, for the error message
            }
            for name in fileNames where !fm.fileExists(atPath: directory.appendingPathComponent(name).path) {
                throw CheckpointError.missingShard(directory: directory.path, shard: name, tensor: tensorOfFile[name])
            }
            indexURL = index
            files = fileNames.map { directory.appendingPathComponent($0) }
            shards = files.map { Shard(url: $0) }
            shardOfName = map.compactMapValues { position[$0] }
        } else {
            let found = try Self.scanDirectory(directory)
            indexURL = nil
            files = found
            shards = found.map { Shard(url: $0) }
            var owner: [String: Int] = [:]
            for (i, shard) in shards.enumerated() {
                for name in try shard.header().entries.keys {
                    if let first = owner[name] {
                        throw CheckpointError.tensorInSeveralFiles(
                            tensor: name, files: [found[first].path, found[i].path])
                    }
                    owner[name] = i
                }
            }
            shardOfName = owner
        }
    }

    /// Every tensor name, sorted.
    public var tensorNames: [String] { shardOfName.keys.sorted() }

    /// Whether the checkpoint has a tensor of that name (never opens a shard).
    public func contains(_ name: String) -> Bool { shardOfName[name] != nil }

    /// The header entry of `name`, or nil if the checkpoint has no such tensor. Reads the header
    /// of the shard holding it (not its data) the first time.
    /// - Throws: header errors of that shard, `CheckpointError.indexMismatch`.
    public func entry(_ name: String) throws -> SafetensorsEntry? {
        guard let i = shardOfName[name] else { return nil }
        return try locate(name, shard: i).1
    }

    /// A zero-copy view of tensor `name` (the shard holding it is mapped on first use).
    /// - Throws: `CheckpointError.unknownTensor` (with close names), `.unsupportedDType`,
    ///   shard header and mapping errors.
    public func tensor(_ name: String) throws -> Tensor {
        let (shard, entry) = try locate(name)
        return try shard.mapped(misalignment: misalignment).makeTensor(entry)
    }

    /// Reads rows `rows` of the slowest axis of `name` with `pread` into a new owned, aligned
    /// buffer: one expert of a stacked `[E, …]` tensor (rows = e..<e+1), or a whole per-expert
    /// tensor (rows = 0..<shape[0]). Exactly `rows.count × (bytes per row)` bytes are read,
    /// and nothing is mapped; `bytesRead` grows by that amount.
    /// - Parameters:
    ///   - name: the tensor.
    ///   - rows: a range of the slowest axis. For a scalar (shape `[]`) only `0..<1` exists.
    /// - Returns: a tensor of shape `[rows.count] + shape.dropFirst()` (`[1]` for a scalar,
    ///   as `Tensor.rows` does).
    /// - Throws: `CheckpointError.unknownTensor`, `.unsupportedDType`, `.rowsOutOfRange`, `.io`.
    public func readRows(_ name: String, rows: Range<Int>) throws -> Tensor {
        let span = try rowSpan(name, rows: rows)
        let buffer = TensorBuffer(uninitializedByteCount: span.count)
        try span.shard.reader().read(into: buffer.pointer, count: span.count, at: span.offset)
        counterLock.lock()
        readCount += span.count
        counterLock.unlock()
        return Tensor(dtype: span.dtype, shape: span.shape, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }

    /// Where rows `rows` of `name` lie: shard, byte offset and count, dtype and the shape read.
    /// - Throws: `CheckpointError.unknownTensor`, `.unsupportedDType`, `.rowsOutOfRange`.
    private func rowSpan(_ name: String, rows: Range<Int>) throws
        -> (shard: Shard, offset: Int, count: Int, dtype: DType, shape: [Int]) {
        let (shard, entry) = try locate(name)
        guard let dtype = entry.dtype else {
            throw CheckpointError.unsupportedDType(file: shard.url.path, tensor: name, dtype: entry.dtypeName)
        }
        let rowCount = entry.shape.first ?? 1
        guard rows.lowerBound >= 0, rows.upperBound <= rowCount else {
            throw CheckpointError.rowsOutOfRange(file: shard.url.path, tensor: name, rows: rows, available: rowCount)
        }
        let rowBytes = entry.shape.dropFirst().reduce(1, *) * dtype.byteSize
        var shape = entry.shape.isEmpty ? [1] : entry.shape
        shape[0] = rows.count
        return (shard, entry.dataRange.lowerBound + rows.lowerBound * rowBytes, rows.count * rowBytes, dtype, shape)
    }

    /// Reads several row ranges as `readRows(_:rows:)` does, with up to `concurrency` reads in
    /// flight (see `ReadOnlyFile.read(_:concurrency:)`), issued in file order. With `direct`, the
    /// reads of ranges not already in the page cache (`mincore`) bypass it (`O_DIRECT`, Linux)
    /// straight into the tensors' buffers: no copy out of the page cache, and no page-cache
    /// pages charged to a memory cgroup beside the buffers; cached ranges, and files on a file
    /// system that refuses `O_DIRECT`, are read through the page cache. The bytes counted in
    /// `bytesRead` are the requested ones, as `readRows` counts them.
    /// - Parameters:
    ///   - requests: tensor names and ranges of their slowest axis.
    ///   - concurrency: reads in flight (threads).
    ///   - direct: bypass the page cache for ranges it does not hold.
    /// - Returns: one owned tensor per request, in request order.
    /// - Throws: as `readRows(_:rows:)`, before any byte is read for a bad request.
    public func readRows(_ requests: [(name: String, rows: Range<Int>)], concurrency: Int, direct: Bool) throws -> [Tensor] {
        var tensors: [Tensor] = []
        var reads: [FileRead] = []
        tensors.reserveCapacity(requests.count)
        reads.reserveCapacity(requests.count)
        var total = 0
        for request in requests {
            let (shard, offset, count, dtype, shape) = try rowSpan(request.name, rows: request.rows)
            // A direct read lands the bytes `offset % 4096` into an aligned buffer: only when that
            // keeps the elements aligned.
            let directFile = direct && offset % dtype.byteSize == 0
                && (try? shard.mapped(misalignment: misalignment).mapping.isResident(offset: offset, count: count)) != true
                ? shard.directReader() : nil
            let buffer: TensorBuffer
            let data: UnsafeMutableRawPointer
            if directFile != nil {
                buffer = TensorBuffer(uninitializedByteCount: FileRead.directSpan(offset: offset, count: count),
                                      alignment: ReadOnlyFile.directAlignment)
                data = buffer.pointer + offset % ReadOnlyFile.directAlignment
            } else {
                buffer = TensorBuffer(uninitializedByteCount: count)
                data = buffer.pointer
            }
            reads.append(FileRead(file: try shard.reader(), offset: offset, count: count, destination: data, direct: directFile))
            tensors.append(Tensor(dtype: dtype, shape: shape, data: UnsafeRawPointer(data), owner: buffer))
            total += count
        }
        let order = reads.indices.sorted {
            (reads[$0].file.path, reads[$0].offset) < (reads[$1].file.path, reads[$1].offset)
        }
        try ReadOnlyFile.read(order.map { reads[$0] }, concurrency: concurrency)
        counterLock.lock()
        readCount += total
        counterLock.unlock()
        return tensors
    }

    /// Calls `body` with a zero-copy view of the stored bytes of `name` whatever its dtype (the
    /// shard is mapped on first use; not counted in `bytesRead`, like `tensor`).
    /// - Throws: `CheckpointError.unknownTensor`, shard header and mapping errors, and what `body` throws.
    public func withMappedBytes<R>(_ name: String, _ body: (SafetensorsEntry, UnsafeRawBufferPointer) throws -> R) throws -> R {
        let (shard, entry) = try locate(name)
        let file = try shard.mapped(misalignment: misalignment)
        return try body(entry, UnsafeRawBufferPointer(start: file.mapping.base + entry.dataRange.lowerBound, count: entry.byteCount))
    }

    /// Reads the stored bytes of rows `rows` (slowest axis) of `name` whatever its dtype: the
    /// path for dtypes `Tensor` cannot hold (`F8_E4M3` weights of FP8 checkpoints), decoded by
    /// the caller. Counted in `bytesRead` like `readRows`.
    /// - Parameters:
    ///   - name: the tensor.
    ///   - rows: a range of the slowest axis.
    /// - Returns: the header entry and the bytes, row-major.
    /// - Throws: `CheckpointError.unknownTensor`, `.rowsOutOfRange`, `.io`, and
    ///   `.unsupportedDType` for a dtype narrower than a byte (`F4`, `F6_*`).
    public func readRawRows(_ name: String, rows: Range<Int>) throws -> (entry: SafetensorsEntry, bytes: [UInt8]) {
        let (shard, entry) = try locate(name)
        guard let bits = safetensorsDTypeBits[entry.dtypeName], bits % 8 == 0 else {
            throw CheckpointError.unsupportedDType(file: shard.url.path, tensor: name, dtype: entry.dtypeName)
        }
        let rowCount = entry.shape.first ?? 1
        guard rows.lowerBound >= 0, rows.upperBound <= rowCount else {
            throw CheckpointError.rowsOutOfRange(file: shard.url.path, tensor: name, rows: rows, available: rowCount)
        }
        let rowBytes = entry.shape.dropFirst().reduce(1, *) * bits / 8
        var bytes = [UInt8](repeating: 0, count: rows.count * rowBytes)
        let offset = entry.dataRange.lowerBound + rows.lowerBound * rowBytes
        try bytes.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            try shard.reader().read(into: base, count: buffer.count, at: offset)
        }
        counterLock.lock()
        readCount += bytes.count
        counterLock.unlock()
        return (entry, bytes)
    }

    /// Starts reading the requested rows into the page cache in the background
    /// (`POSIX_FADV_WILLNEED`), per shard in file order with adjacent ranges merged: issued for
    /// every kept expert before the first `readRows`, the reads are queued together and
    /// sequential instead of one blocking read at a time in plan order. Errors are ignored.
    public func prefetchRows(_ requests: [(name: String, rows: Range<Int>)]) {
        var ranges: [ObjectIdentifier: (file: ReadOnlyFile, ranges: [Range<Int>])] = [:]
        for request in requests {
            guard let (shard, entry) = try? locate(request.name), let dtype = entry.dtype,
                  let file = try? shard.reader() else { continue }
            let rowBytes = entry.shape.dropFirst().reduce(1, *) * dtype.byteSize
            let start = entry.dataRange.lowerBound + request.rows.lowerBound * rowBytes
            ranges[ObjectIdentifier(file), default: (file, [])].ranges.append(start..<(start + request.rows.count * rowBytes))
        }
        for (file, list) in ranges.values {
            var merged: [Range<Int>] = []
            for range in list.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                if let last = merged.last, last.upperBound >= range.lowerBound {
                    merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
                } else {
                    merged.append(range)
                }
            }
            for range in merged { file.adviseWillNeed(offset: range.lowerBound, count: range.count) }
        }
    }

    /// Total bytes read by `readRows` so far (headers and mapped pages are not counted).
    public var bytesRead: Int {
        counterLock.lock()
        defer { counterLock.unlock() }
        return readCount
    }

    // MARK: Internals

    private func locate(_ name: String) throws -> (Shard, SafetensorsEntry) {
        guard let i = shardOfName[name] else {
            throw CheckpointError.unknownTensor(
                location: directory.path, tensor: name, suggestions: closeNames(to: name, in: shardOfName.keys))
        }
        return try locate(name, shard: i)
    }

    private func locate(_ name: String, shard i: Int) throws -> (Shard, SafetensorsEntry) {
        let shard = shards[i]
        guard let entry = try shard.header().entries[name] else {
            throw CheckpointError.indexMismatch(
                index: indexURL?.path ?? directory.path, tensor: name, shard: shard.url.lastPathComponent)
        }
        return (shard, entry)
    }

    /// Reads `weight_map` from an index file. Duplicate keys are refused: a tensor listed twice
    /// may point at two shards.
    private static func readWeightMap(index: URL) throws -> [String: String] {
        let data: Data
        do {
            data = try Data(contentsOf: index)
        } catch {
            throw CheckpointError.io(file: index.path, operation: "read", reason: "\(error)")
        }
        let root: JSONValue
        do {
            root = try JSONValue(parsing: data, duplicateKeys: .reject)
        } catch let error as JSONParseError {
            if let key = error.duplicateKey, error.depth == 2 {
                throw CheckpointError.invalidIndex(file: index.path, reason: "tensor '\(key)' is listed twice")
            }
            throw CheckpointError.invalidIndex(file: index.path, reason: "\(error)")
        }
        guard let map = root["weight_map"]?.objectValue else {
            throw CheckpointError.invalidIndex(file: index.path, reason: "no \"weight_map\" object")
        }
        var result: [String: String] = [:]
        for (tensor, value) in map {
            guard let file = value.stringValue, !file.isEmpty, !file.hasPrefix("/"),
                !file.split(separator: "/").contains("..")
            else {
                throw CheckpointError.invalidIndex(
                    file: index.path,
                    reason: "tensor '\(tensor)' maps to \(value.jsonString), "
                        + "not a file name inside the model directory")
            }
            result[tensor] = file
        }
        return result
    }

    /// Every visible `*.safetensors` in `directory`, sorted; checks shard-numbered sets are complete.
    private static func scanDirectory(_ directory: URL) throws -> [URL] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw CheckpointError.io(file: directory.path, operation: "list directory", reason: "\(error)")
        }
        let found = names.filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(".") }.sorted()
        guard !found.isEmpty else { throw CheckpointError.noSafetensorsFiles(directory: directory.path) }
        let present = Set(found)
        for name in found {
            guard let (prefix, _, total, width) = parseShardName(name) else { continue }
            for k in 1...total {
                let expected = shardName(prefix: prefix, index: k, total: total, width: width)
                if !present.contains(expected) {
                    throw CheckpointError.missingShard(directory: directory.path, shard: expected, tensor: nil)
                }
            }
        }
        return found.map { directory.appendingPathComponent($0) }
    }
}

/// `model-00002-of-00003.safetensors` → ("model", 2, 3, 5); nil for other names.
func parseShardName(_ name: String) -> (prefix: String, index: Int, total: Int, width: Int)? {
    guard name.hasSuffix(".safetensors") else { return nil }
    let stem = name.dropLast(".safetensors".count)
    guard let ofRange = stem.range(of: "-of-", options: .backwards) else { return nil }
    let totalText = stem[ofRange.upperBound...]
    let head = stem[..<ofRange.lowerBound]
    guard let dash = head.lastIndex(of: "-") else { return nil }
    let indexText = head[head.index(after: dash)...]
    guard !indexText.isEmpty, indexText.count == totalText.count, indexText.count <= 9,
        indexText.allSatisfy(\.isASCII), totalText.allSatisfy(\.isASCII),
        let index = Int(indexText), let total = Int(totalText), index >= 1, index <= total
    else { return nil }
    return (String(head[..<dash]), index, total, indexText.count)
}

/// The transformers shard name: `model-00001-of-00003.safetensors`.
func shardName(prefix: String, index: Int, total: Int, width: Int = 5) -> String {
    func padded(_ n: Int) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
    return "\(prefix)-\(padded(index))-of-\(padded(total)).safetensors"
}

/// One weight file of a checkpoint, opened in stages: descriptor and header on first need,
/// mapping on first `tensor(_:)`.
private final class Shard: @unchecked Sendable {
    let url: URL
    private let lock = NSLock()
    private var file: ReadOnlyFile?
    /// The `O_DIRECT` descriptor, once tried (nil inside when the file system refuses it).
    private var direct: ReadOnlyFile??
    private var parsed: SafetensorsHeader?
    private var mappedFile: SafetensorsFile?

    init(url: URL) { self.url = url }

    func reader() throws -> ReadOnlyFile {
        lock.lock()
        defer { lock.unlock() }
        return try unlockedReader()
    }

    /// The file opened with `O_DIRECT` for `readRows(_:concurrency:direct:)`, nil where that
    /// is refused (macOS, tmpfs).
    func directReader() -> ReadOnlyFile? {
        lock.lock()
        defer { lock.unlock() }
        if let direct { return direct }
        let opened = try? ReadOnlyFile(path: url.path, direct: true)
        direct = .some(opened?.isDirect == true ? opened : nil)
        return direct ?? nil
    }

    private func unlockedReader() throws -> ReadOnlyFile {
        if let file { return file }
        let opened = try ReadOnlyFile(path: url.path)
        opened.adviseRandomAccess()  // this descriptor serves `readRows` only
        file = opened
        return opened
    }

    func header() throws -> SafetensorsHeader {
        lock.lock()
        defer { lock.unlock() }
        return try unlockedHeader()
    }

    private func unlockedHeader() throws -> SafetensorsHeader {
        if let parsed { return parsed }
        let header = try SafetensorsHeader.read(from: try unlockedReader())
        parsed = header
        return header
    }

    func mapped(misalignment: SafetensorsFile.MisalignmentPolicy) throws -> SafetensorsFile {
        lock.lock()
        defer { lock.unlock() }
        if let mappedFile { return mappedFile }
        let header = try unlockedHeader()
        let file = try SafetensorsFile(url: url, file: try unlockedReader(), header: header, misalignment: misalignment)
        mappedFile = file
        return file
    }
}
