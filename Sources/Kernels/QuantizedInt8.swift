import CKernels
import Synchronization

// The approximate path for quantized weights, llama.cpp's way: each activation row is quantized
// to 8 bits once per matmul call (blocks of 32 with `d = max|x|/127` for Q4_0/Q4_1/Q8_0, blocks
// of 256 with 16-value sums for the K-quants), then every weight block meets it in an exact
// integer dot product (`vpmaddubsw`, C target `CKernels`), scaled once in float.
//
// Error: each activation moves by at most d/2 = max|x_block|/254, so
// |int8 − exact| ≤ Σ_i |w_i| · max|x_block(i)| / 254 (plus float rounding); see
// `QuantizedInt8Tests` for the bound the kernels are held to.

/// How quantized weights are multiplied with f32 activations.
public enum QuantizedArithmetic: String, Sendable, CaseIterable {
    /// f32 activations times the weight codes widened to f32, in `QuantizedKernels.dot`'s fixed
    /// order: what `logits` and the parity tests use.
    case exact
    /// Activations quantized to 8 bits per block and integer dot products: 2–6× faster decode,
    /// results within the bound above.
    case int8
}

/// The instruction sets of the integer kernels and which one runs.
public enum InstructionSet: Int32, Sendable, CaseIterable {
    case scalar = 0
    case avx2 = 1
    /// Detected and reported; its CPUs run the AVX2 kernels (no untested AVX-512 code ships).
    case avx512VNNI = 2

    /// Whether this CPU can run kernels built for `self`.
    public var isSupported: Bool { pm_isa_supported(rawValue) != 0 }

    /// The best one this CPU supports: what `QuantizedArithmetic.int8` uses.
    public static var best: InstructionSet { InstructionSet(rawValue: pm_isa_best()) ?? .scalar }

    /// Short name ("scalar", "avx2", "avx512vnni").
    public var name: String { String(cString: pm_isa_name(rawValue)) }
}

extension QuantizedFormat {
    /// The format's number in `CKernels` (`pm_format`).
    var cFormat: Int32 {
        switch self {
        case .q4_0: Int32(PM_Q4_0.rawValue)
        case .q4_1: Int32(PM_Q4_1.rawValue)
        case .q8_0: Int32(PM_Q8_0.rawValue)
        case .q4_K: Int32(PM_Q4_K.rawValue)
        case .q5_K: Int32(PM_Q5_K.rawValue)
        case .q6_K: Int32(PM_Q6_K.rawValue)
        }
    }
}

extension QuantizedKernels {
    /// Bytes of one quantized activation row of `cols` values for weights of `format`.
    static func activationBytes(_ format: QuantizedFormat, cols: Int) -> Int {
        pm_activation_bytes(format.cFormat, Int32(cols))
    }

    /// The quantized activations of `tokens` rows of `cols` values (what `matmulInt8` computes
    /// with), as bytes: for tests.
    static func quantizeActivations(_ format: QuantizedFormat, _ x: [Float], tokens: Int, cols: Int,
                                    isa: InstructionSet) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: tokens * activationBytes(format, cols: cols))
        out.withUnsafeMutableBytes { pm_quantize_activations(isa.rawValue, format.cFormat, x, Int32(tokens), Int32(cols), $0.baseAddress!) }
        return out
    }

    /// `y[t, o] = Σ_i x[t, i] · W[o, i]` with 8-bit activations (see this file's header).
    /// - Parameters:
    ///   - x: activations `[tokens, cols]`, row-major.
    ///   - weight: `rows` quantized rows of `cols` values in `format`; `y`: output `[tokens, rows]`.
    ///   - second: optionally a second weight of the same shape and format with its output (an
    ///     MLP's gate and up): it shares the one quantization of `x` and the one pass of the threads.
    ///   - isa: instruction set (tests pass each supported one; the engine passes `.best`).
    ///   - owner: the object that keeps `weight` (and `second`'s weight) alive, a `Tensor`'s
    ///     `owner`. When it is a file mapping (`ReleasableStorage`), Q4_0/Q4_1/Q4_K weights of a
    ///     multiple of 8 rows are multiplied from an interleaved copy made on first use and kept
    ///     as long as `owner` lives (`InterleavedWeights`); otherwise from `weight` as it is. Results agree within
    ///     `int8KernelTolerance` (the same integer sums, f32 steps in another order).
    ///   - pool: threads; work is split by output rows, so results do not depend on the split.
    public static func matmulInt8(
        _ x: UnsafePointer<Float>, tokens: Int, weight: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>,
        second: (weight: UnsafeRawPointer, y: UnsafeMutablePointer<Float>)? = nil,
        format: QuantizedFormat, rows: Int, cols: Int, isa: InstructionSet = .best, owner: AnyObject? = nil,
        pool: ThreadPool
    ) {
        precondition(cols % format.blockSize == 0, "row length \(cols) is not a whole number of \(format) blocks")
        precondition(cols <= Int(Int32.max) && tokens <= Int(Int32.max) && rows <= Int(Int32.max), "matrix too large")
        guard tokens > 0, rows > 0 else { return }
        let f = format.cFormat
        let stride = activationBytes(format, cols: cols)
        let xq = ThreadScratch.bytes(tokens * stride)
        pm_quantize_activations(isa.rawValue, f, x, Int32(tokens), Int32(cols), xq)
        let rowBytes = format.rowBytes(cols)
        // Rows of ~16K values per chunk at least: below that the hand-off costs more than it saves.
        let minChunk = max(1, 16_384 / max(1, cols * tokens * (second == nil ? 1 : 2)))
        let source = UnsafeRawPointer(xq)
        if let owner, InterleavedWeights.isSupported(format, rows: rows, isa: isa),
           let first = InterleavedWeights.copy(of: weight, owner: owner, format: format, rows: rows, cols: cols) {
            let other = second.flatMap { InterleavedWeights.copy(of: $0.weight, owner: owner, format: format, rows: rows, cols: cols) }
            if second == nil || other != nil {
                // Threads take whole groups of eight rows; a group starts 8 · rowBytes after the previous one.
                pool.parallelFor(rows / 8, minChunk: max(1, minChunk / 8)) { range in
                    let r0 = range.lowerBound &* 8
                    let offset = r0 &* rowBytes
                    let count = Int32(range.count &* 8)
                    pm_matmul_q8_interleaved(isa.rawValue, f, first + offset, count, source, stride, Int32(tokens), Int32(cols),
                                             y + r0, rows)
                    if let second, let other {
                        pm_matmul_q8_interleaved(isa.rawValue, f, other + offset, count, source, stride, Int32(tokens),
                                                 Int32(cols), second.y + r0, rows)
                    }
                }
                return
            }
        }
        pool.parallelFor(rows, minChunk: minChunk) { range in
            let offset = range.lowerBound &* rowBytes
            pm_matmul_q8(isa.rawValue, f, weight + offset, rowBytes, Int32(range.count), source, stride, Int32(tokens),
                         Int32(cols), y + range.lowerBound, rows)
            if let second {
                pm_matmul_q8(isa.rawValue, f, second.weight + offset, rowBytes, Int32(range.count), source, stride,
                             Int32(tokens), Int32(cols), second.y + range.lowerBound, rows)
            }
        }
    }
}

/// Interleaved copies of quantized weights for the int8 kernels (QuantDot.c, "Interleaved rows":
/// eight rows block by block, so one pass reads one contiguous stream and one activation load
/// serves eight rows. In-cache throughput of one thread over the row-by-row kernels, measured
/// with the kernels alone on the shared 2-core Zen 3 machine: Q4_0 2.5–3×, Q4_1 ~3×, Q4_K ~1.8×,
/// in decode and in 4-token prefill tiles alike).
///
/// A copy is made on first use, under a lock, and kept while the weight's storage owner lives
/// (a weak reference, checked on every look-up, so a freed owner's address reused by a new one
/// never finds a stale copy; dead entries are dropped when the next copy is made). Only weights
/// of a read-only file mapping (`ReleasableStorage`) are copied, and their plain rows' resident
/// pages are dropped once copied: the copy takes their place in memory, and anything reading
/// the plain rows later (the exact path, an embedding lookup) reads them back from the file.
/// Weights in owned buffers (experts gathered for a pruned model, loaded under a memory budget)
/// stay on the row-by-row kernels: a second copy would double the memory the budget counts.
enum InterleavedWeights {
    private struct Key: Hashable {
        let address: UInt
        let rows: Int
        let cols: Int
        let format: Int32
    }

    private struct Entry {
        weak var owner: AnyObject?
        let buffer: TensorBuffer
    }

    /// Entries hold class references; every access goes through the lock.
    private struct Table: @unchecked Sendable {
        var entries: [Key: Entry] = [:]
    }

    private static let table = Mutex(Table())

    /// The interleaved copy of `rows` rows of `cols` values of `format` at `weight` (kept alive
    /// by `owner`), made now if there is none; nil when the format or row count has no
    /// interleaved layout.
    static func copy(of weight: UnsafeRawPointer, owner: AnyObject, format: QuantizedFormat, rows: Int,
                     cols: Int) -> UnsafeRawPointer? {
        guard let mapping = owner as? ReleasableStorage else { return nil }
        let key = Key(address: UInt(bitPattern: weight), rows: rows, cols: cols, format: format.cFormat)
        let address: UInt? = table.withLock { table in
            if let entry = table.entries[key], entry.owner === owner { return UInt(bitPattern: entry.buffer.pointer) }
            let bytes = format.rowBytes(cols) * rows
            let buffer = TensorBuffer(uninitializedByteCount: bytes)
            guard pm_interleave_rows(format.cFormat, weight, Int32(rows), Int32(cols), buffer.pointer) != 0 else { return nil }
            table.entries = table.entries.filter { $0.value.owner != nil }
            table.entries[key] = Entry(owner: owner, buffer: buffer)
            mapping.releasePages(from: weight, count: bytes)
            return UInt(bitPattern: buffer.pointer)
        }
        return address.flatMap { UnsafeRawPointer(bitPattern: $0) }
    }

    /// Whether `rows` rows of `format` are multiplied interleaved on `isa` (given a mapping owner).
    static func isSupported(_ format: QuantizedFormat, rows: Int, isa: InstructionSet = .best) -> Bool {
        rows <= Int(Int32.max) && pm_interleaved_supported(isa.rawValue, format.cFormat, Int32(rows)) != 0
    }

    /// Whether a copy of the weight at `weight` made for `owner` is held (for tests).
    static func holdsCopy(of weight: UnsafeRawPointer, owner: AnyObject) -> Bool {
        table.withLock { table in
            table.entries.contains { $0.key.address == UInt(bitPattern: weight) && $0.value.owner === owner }
        }
    }
}
