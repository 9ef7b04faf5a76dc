import Formats
import Kernels

/// Where a model's tensors come from (a safetensors checkpoint or a GGUF file, seen under
/// Hugging Face names). Sizes and the read counter let callers measure memory and I/O without
/// knowing the format.
public protocol TensorSource: AnyObject {
    /// Every tensor name, sorted.
    var tensorNames: [String] { get }
    /// Shape of `name`, or nil if absent. Must not read tensor data.
    func shape(of name: String) -> [Int]?
    /// Bytes `name` occupies in storage (its dtype or quantized blocks), nil if absent. Must not
    /// read tensor data.
    func byteCount(of name: String) -> Int?
    /// How `name` is stored, in the storage format's own spelling (`BF16`, `F8_E4M3`, `Q4_K`,
    /// `MXFP4`), nil if absent: what a report says about the file, whatever `tensor(_:)` widens
    /// it to. Must not read tensor data.
    func storedDType(of name: String) -> String?
    /// Bytes read into owned memory by `readRows` so far (mapped views are not counted).
    var bytesRead: Int { get }
    /// A zero-copy view of `name` (memory-mapped).
    func tensor(_ name: String) throws -> Tensor
    /// Rows `rows` of the slowest axis of `name`, read into owned memory (only those bytes).
    func readRows(_ name: String, rows: Range<Int>) throws -> Tensor
    /// Asks the storage to start reading these rows (of the slowest axis of each named tensor)
    /// in the background, so that the `readRows` calls that follow find them ready; a hint,
    /// never an error.
    func prefetchRows(_ requests: [(name: String, rows: Range<Int>)])
    /// Several `readRows` at once, with up to `concurrency` reads in flight where the storage
    /// allows it (the default: `prefetchRows` of them all, then one at a time); `direct` asks to
    /// bypass the page cache.
    /// - Returns: one owned tensor per request, in request order.
    func readRows(_ requests: [(name: String, rows: Range<Int>)], concurrency: Int, direct: Bool) throws -> [Tensor]
}

extension TensorSource {
    public func prefetchRows(_ requests: [(name: String, rows: Range<Int>)]) {}

    public func readRows(_ requests: [(name: String, rows: Range<Int>)], concurrency: Int, direct: Bool) throws -> [Tensor] {
        prefetchRows(requests)
        return try requests.map { try readRows($0.name, rows: $0.rows) }
    }
}

/// A source whose `readRows` answers the requests of one batch read from the tensors that batch
/// returned (each once), and everything else from `base`: binding a model's experts after
/// reading them all at once (`LoadedModel.loadExperts(kept:reading:concurrency:direct:)`).
final class PrereadSource: TensorSource {
    let base: TensorSource
    private var ready: [String: [(rows: Range<Int>, tensor: Tensor)]] = [:]

    init(base: TensorSource, requests: [(name: String, rows: Range<Int>)], tensors: [Tensor]) {
        self.base = base
        for (request, tensor) in zip(requests, tensors) { ready[request.name, default: []].append((request.rows, tensor)) }
    }

    var tensorNames: [String] { base.tensorNames }
    func shape(of name: String) -> [Int]? { base.shape(of: name) }
    func byteCount(of name: String) -> Int? { base.byteCount(of: name) }
    func storedDType(of name: String) -> String? { base.storedDType(of: name) }
    var bytesRead: Int { base.bytesRead }
    func tensor(_ name: String) throws -> Tensor { try base.tensor(name) }

    func readRows(_ name: String, rows: Range<Int>) throws -> Tensor {
        guard var list = ready[name], let i = list.firstIndex(where: { $0.rows == rows }) else {
            return try base.readRows(name, rows: rows)
        }
        let tensor = list.remove(at: i).tensor
        ready[name] = list
        return tensor
    }
}

extension SafetensorsCheckpoint: TensorSource {
    public func shape(of name: String) -> [Int]? {
        (try? entry(name))??.shape
    }

    public func byteCount(of name: String) -> Int? {
        (try? entry(name))??.byteCount
    }

    public func storedDType(of name: String) -> String? {
        (try? entry(name))??.dtypeName
    }
}

/// Binds checkpoint tensors to model parts while checking them, and reports every missing,
/// misshaped or unused tensor together at the end (strict loading).
final class WeightBinder {
    let source: TensorSource
    /// Load routed experts by reading their bytes into memory (counted) instead of mapping them.
    let copyExperts: Bool
    private(set) var problems: [WeightProblem] = []
    private var used = Set<String>()
    private let names: Set<String>

    init(source: TensorSource, copyExperts: Bool = false) {
        self.source = source
        self.copyExperts = copyExperts
        names = Set(source.tensorNames)
    }

    func contains(_ name: String) -> Bool { names.contains(name) }

    /// Marks `name` as consumed without loading it (e.g. the experts a pruned model drops).
    func skip(_ name: String) { if names.contains(name) { used.insert(name) } }

    /// The tensor `name` with shape `shape`, or a placeholder after recording a problem.
    func tensor(_ name: String, shape: [Int]) -> Tensor {
        guard names.contains(name), let actual = source.shape(of: name) else {
            problems.append(.missing(name))
            return Self.placeholder(shape)
        }
        used.insert(name)
        guard actual == shape else {
            problems.append(.wrongShape(name, expected: shape, actual: actual))
            return Self.placeholder(shape)
        }
        do {
            return try source.tensor(name)
        } catch {
            problems.append(.unreadable(name, reason: "\(error)"))
            return Self.placeholder(shape)
        }
    }

    /// Rows `rows` of a stacked tensor whose full shape must be `shape`: mapped, or read into
    /// memory when `copy` is set.
    func rows(_ name: String, shape: [Int], rows: Range<Int>, copy: Bool) -> Tensor {
        guard names.contains(name), let actual = source.shape(of: name) else {
            problems.append(.missing(name))
            return Self.placeholder([rows.count] + shape.dropFirst())
        }
        used.insert(name)
        guard actual == shape else {
            problems.append(.wrongShape(name, expected: shape, actual: actual))
            return Self.placeholder([rows.count] + shape.dropFirst())
        }
        do {
            return copy ? try source.readRows(name, rows: rows) : try source.tensor(name).rows(rows)
        } catch {
            problems.append(.unreadable(name, reason: "\(error)"))
            return Self.placeholder([rows.count] + shape.dropFirst())
        }
    }

    /// A whole tensor, read into memory when `copy` is set.
    func tensor(_ name: String, shape: [Int], copy: Bool) -> Tensor {
        copy ? rows(name, shape: shape, rows: 0..<(shape.first ?? 1), copy: true) : tensor(name, shape: shape)
    }

    /// A small tensor widened to f32 (norm weights, biases).
    func floats(_ name: String, count: Int) -> [Float] {
        let t = tensor(name, shape: [count])
        return t.count == count && t.owner !== Self.placeholderStorage ? t.toFloatArray() : [Float](repeating: 0, count: count)
    }

    /// `floats` when present, nil when absent (no problem recorded).
    func optionalFloats(_ name: String, count: Int) -> [Float]? {
        contains(name) ? floats(name, count: count) : nil
    }

    /// Throws every problem found, plus tensors nobody consumed (unless `ignore` accepts them).
    func finish(directory: String, ignore: (String) -> Bool = { _ in false }) throws {
        let unused = names.subtracting(used).filter { !ignore($0) }.sorted()
        let all = problems + unused.map { WeightProblem.unexpected($0) }
        if !all.isEmpty { throw ModelError.weightProblems(all, directory: directory) }
    }

    private static let placeholderStorage = TensorBuffer(byteCount: 64)
    /// Whether `tensor` is a placeholder standing in for one that failed to bind (its data must
    /// not be read).
    static func isPlaceholder(_ tensor: Tensor) -> Bool { tensor.owner === placeholderStorage }
    /// Stands in for a tensor that failed to bind; loading throws before it could be read.
    static func placeholder(_ shape: [Int]) -> Tensor {
        Tensor(dtype: .float32, shape: shape, data: UnsafeRawPointer(placeholderStorage.pointer), owner: placeholderStorage)
    }
}
