import CKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
    /// AVX-512 F/BW/VL/DQ + VNNI: kernels of their own for every format, plain rows and
    /// interleaved (two blocks, chunks or sub-blocks per zmm; `vpdpbusd` where codes are
    /// unsigned), results bit-identical to the AVX2 kernels'.
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
        case .q5_0: Int32(PM_Q5_0.rawValue)
        case .q5_1: Int32(PM_Q5_1.rawValue)
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
        var parts = [Int8Rows(weight: weight, format: format, rows: rows, cols: cols, isa: isa, owner: owner, y: y)]
        if let second {
            parts.append(Int8Rows(weight: second.weight, format: format, rows: rows, cols: cols, isa: isa, owner: owner,
                                  y: second.y))
        }
        matmulInt8(x, tokens: tokens, parts, isa: isa, pool: pool)
    }

    /// Several int8 matmuls over the same activations `x` (`[tokens, cols]`, every part's row
    /// length): `x` is quantized once per format and all parts' rows are split over the threads
    /// in one pass, so the pool is entered once (an attention layer's q, k and v projections).
    /// Each part's results are those of its own `matmulInt8` call.
    static func matmulInt8(_ x: UnsafePointer<Float>, tokens: Int, _ parts: [Int8Rows], isa: InstructionSet = .best,
                           pool: ThreadPool) {
        guard tokens > 0, let cols = parts.first?.cols else { return }
        precondition(parts.allSatisfy { $0.cols == cols }, "int8 matmuls over one x must share its row length")
        precondition(cols <= Int(Int32.max) && tokens <= Int(Int32.max), "matrix too large")
        let n = parts.count
        // Threads take a part's rows in whole groups of eight where its row count allows it (the
        // interleaved layout needs them, and only such parts have it), single rows otherwise.
        func unit(_ p: Int) -> Int { parts[p].rows % 8 == 0 ? 8 : 1 }
        // Per part: the byte offset of its quantized x in this thread's scratch (one copy per
        // distinct format, side by side), its stride, and its first unit (n + 1 entries).
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 3 * n + 1) { table in
            let offset = table.baseAddress!, stride = offset + n, firstUnit = stride + n
            var bytes = 0
            firstUnit[0] = 0
            for p in 0..<n {
                stride[p] = pm_activation_bytes(parts[p].format, Int32(cols))
                if let q = (0..<p).first(where: { parts[$0].format == parts[p].format }) {
                    offset[p] = offset[q]
                } else {
                    offset[p] = bytes
                    bytes += (tokens * stride[p] + 31) / 32 * 32
                }
                firstUnit[p + 1] = firstUnit[p] + parts[p].rows / unit(p)
            }
            // Rows of ~16K values per chunk at least: below that the hand-off costs more than it saves.
            let rowsPerUnit = max(1, parts.reduce(0) { $0 + $1.rows } / max(1, firstUnit[n]))
            let minChunk = max(1, 16_384 / max(1, cols * tokens * rowsPerUnit))
            let xq = ThreadScratch.bytes(bytes)
            for p in 0..<n where !(0..<p).contains(where: { parts[$0].format == parts[p].format }) {
                pm_quantize_activations(isa.rawValue, parts[p].format, x, Int32(tokens), Int32(cols), xq + offset[p])
            }
            let source = UnsafeRawPointer(xq)
            pool.parallelFor(firstUnit[n], minChunk: minChunk) { range in
                for p in 0..<n {
                    let lo = max(range.lowerBound, firstUnit[p]), hi = min(range.upperBound, firstUnit[p + 1])
                    guard lo < hi else { continue }
                    let u = unit(p)
                    parts[p].run((lo - firstUnit[p]) * u..<(hi - firstUnit[p]) * u, xq: source + offset[p], stride: stride[p],
                                 tokens: tokens)
                }
            }
        }
    }
}

/// One weight of an int8 matmul: its rows (the interleaved copy when there is one), format and output.
struct Int8Rows {
    let weight: UnsafeRawPointer
    let interleaved: Bool
    let format: Int32
    let isa: Int32
    let rowBytes: Int
    let rows: Int
    let cols: Int
    let y: UnsafeMutablePointer<Float>

    /// `rows` rows of `cols` values of `format` at `weight`, results to `y` (`[tokens, rows]`);
    /// `owner` as in `QuantizedKernels.matmulInt8`.
    init(weight: UnsafeRawPointer, format: QuantizedFormat, rows: Int, cols: Int, isa: InstructionSet, owner: AnyObject?,
         y: UnsafeMutablePointer<Float>) {
        precondition(cols % format.blockSize == 0, "row length \(cols) is not a whole number of \(format) blocks")
        precondition(rows <= Int(Int32.max), "matrix too large")
        let copy = owner.flatMap { owner in
            InterleavedWeights.isSupported(format, rows: rows, isa: isa)
                ? InterleavedWeights.copy(of: weight, owner: owner, format: format, rows: rows, cols: cols) : nil
        }
        self.weight = copy ?? weight
        interleaved = copy != nil
        self.format = format.cFormat
        self.isa = isa.rawValue
        rowBytes = format.rowBytes(cols)
        self.rows = rows
        self.cols = cols
        self.y = y
    }

    /// Rows `range` (whole groups of eight when interleaved) for `tokens` activation rows
    /// quantized for this format at `xq`, `stride` bytes apart.
    @inline(__always)
    func run(_ range: Range<Int>, xq: UnsafeRawPointer, stride: Int, tokens: Int) {
        let offset = range.lowerBound &* rowBytes
        if interleaved {
            pm_matmul_q8_interleaved(isa, format, weight + offset, Int32(range.count), xq, stride, Int32(tokens), Int32(cols),
                                     y + range.lowerBound, rows)
        } else {
            pm_matmul_q8(isa, format, weight + offset, rowBytes, Int32(range.count), xq, stride, Int32(tokens), Int32(cols),
                         y + range.lowerBound, rows)
        }
    }
}

/// Interleaved copies of quantized weights for the int8 kernels (QuantDot.c, "Interleaved rows":
/// eight rows block by block, so one pass reads one contiguous stream and one activation load
/// serves eight rows. In-cache throughput of one thread over the row-by-row kernels, measured
/// with the kernels alone on the shared 2-core Zen 3 machine: Q4_0 2.5–3×, Q4_1 ~3×, Q4_K ~1.8×,
/// in decode and in 4-token prefill tiles alike).
///
/// A copy is made on first use, under the write side of a reader-writer lock, into a huge-page
/// arena (`CopyArena`) of its owner's, and kept while the weight's storage owner lives (a weak
/// reference, checked on every look-up, so a freed owner's address reused by a new one never
/// finds a stale copy; dead entries, and with their last one an arena, are dropped when another
/// owner's first copy is made or the table has doubled since the last sweep). Look-ups, hundreds per decode token from both threads at
/// once, take the read side only, so they never wait on each other (a mutex here put the decode
/// threads to sleep in the kernel whenever two experts' look-ups met). Only weights
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
        /// The arena holding the copy (kept alive by its entries).
        let arena: CopyArena
        let pointer: UnsafeMutableRawPointer
    }

    /// Entries hold class references; every access holds `lock` (read side to look up, write
    /// side to add or sweep).
    private final class Table: @unchecked Sendable {
        var entries: [Key: Entry] = [:]
        /// Entry count at which dead entries are swept next (also swept when a new owner's
        /// first copy is made, so a model's copies go soon after the model).
        var sweepAt = 64
        /// The arena the last copies went to, and their owner: one owner's copies share arenas.
        var arena: CopyArena?
        weak var arenaOwner: AnyObject?
        let lock: UnsafeMutablePointer<pthread_rwlock_t> = {
            let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
            lock.initialize(to: pthread_rwlock_t())
            pthread_rwlock_init(lock, nil)
            return lock
        }()

        func sweep() {
            entries = entries.filter { $0.value.owner != nil }
            sweepAt = max(64, 2 * entries.count)
        }

        /// Room for `bytes` bytes of `owner`'s copies: the current arena when it is that owner's
        /// and has room, else a new one. Nil when no memory could be mapped.
        func place(_ bytes: Int, owner: AnyObject) -> (CopyArena, UnsafeMutableRawPointer)? {
            if let arena, arenaOwner === owner, let p = arena.take(bytes) { return (arena, p) }
            if arenaOwner !== owner { sweep() }
            guard let fresh = CopyArena(capacity: max(bytes, CopyArena.chunkBytes)), let p = fresh.take(bytes) else { return nil }
            arena = fresh
            arenaOwner = owner
            return (fresh, p)
        }
    }

    private static let table = Table()

    /// The interleaved copy of `rows` rows of `cols` values of `format` at `weight` (kept alive
    /// by `owner`), made now if there is none; nil when the format or row count has no
    /// interleaved layout.
    static func copy(of weight: UnsafeRawPointer, owner: AnyObject, format: QuantizedFormat, rows: Int,
                     cols: Int) -> UnsafeRawPointer? {
        guard let mapping = owner as? ReleasableStorage else { return nil }
        let key = Key(address: UInt(bitPattern: weight), rows: rows, cols: cols, format: format.cFormat)
        pthread_rwlock_rdlock(table.lock)
        let held = table.entries[key].flatMap { $0.owner === owner ? $0.pointer : nil }
        pthread_rwlock_unlock(table.lock)
        if let held { return UnsafeRawPointer(held) }

        pthread_rwlock_wrlock(table.lock)
        defer { pthread_rwlock_unlock(table.lock) }
        if let entry = table.entries[key], entry.owner === owner { return UnsafeRawPointer(entry.pointer) }
        let bytes = format.rowBytes(cols) * rows
        guard let (arena, pointer) = table.place(bytes, owner: owner),
              pm_interleave_rows(format.cFormat, weight, Int32(rows), Int32(cols), pointer) != 0
        else { return nil }
        if table.entries.count >= table.sweepAt { table.sweep() }
        table.entries[key] = Entry(owner: owner, arena: arena, pointer: pointer)
        mapping.releasePages(from: weight, count: bytes)
        return UnsafeRawPointer(pointer)
    }

    /// Whether `rows` rows of `format` are multiplied interleaved on `isa` (given a mapping owner).
    static func isSupported(_ format: QuantizedFormat, rows: Int, isa: InstructionSet = .best) -> Bool {
        rows <= Int(Int32.max) && pm_interleaved_supported(isa.rawValue, format.cFormat, Int32(rows)) != 0
    }

    /// Whether a copy of the weight at `weight` made for `owner` is held (for tests).
    static func holdsCopy(of weight: UnsafeRawPointer, owner: AnyObject) -> Bool {
        pthread_rwlock_rdlock(table.lock)
        defer { pthread_rwlock_unlock(table.lock) }
        return table.entries.contains { $0.key.address == UInt(bitPattern: weight) && $0.value.owner === owner }
    }
}

/// Memory for interleaved copies: one anonymous mapping, 2 MiB-aligned and on Linux marked for
/// transparent huge pages (`MADV_HUGEPAGE`), filled one copy after another and unmapped when the
/// last copy in it is dropped.
///
/// Why: decode streams every active expert's copy once per token, 4 KiB page after 4 KiB page
/// where each page costs a TLB walk and the hardware prefetchers stop at its edge. Copies of
/// a few hundred KiB, each its own heap block, never got huge pages. Measured on the shared 2-core
/// Zen 3 (`premoe bench --profile`, interleaved runs): at load ~8, arenas alone against heap
/// blocks gave a Q4_0 bench-model decode token of 17–24 ms (one run of 58 ms left out) against
/// 24–34 ms; at load 0.1–0.5, with the read-lock look-ups and the fused q/k/v hand-off,
/// 9.1–9.8 ms against 10.3–11.4 ms before them.
final class CopyArena: @unchecked Sendable {
    /// Size of a new arena (a copy larger than this gets an arena of its own size).
    static let chunkBytes = 32 << 20
    static let hugePageBytes = 2 << 20

    private let mapping: UnsafeMutableRawPointer
    private let mappedBytes: Int
    private let start: UnsafeMutableRawPointer
    private let capacity: Int
    /// Bytes handed out; only the table's writer (under its write lock) calls `take`.
    private var used = 0

    /// An arena of at least `capacity` bytes, rounded up to whole huge pages; nil if the
    /// mapping fails.
    init?(capacity: Int) {
        let size = (capacity + Self.hugePageBytes - 1) / Self.hugePageBytes * Self.hugePageBytes
        mappedBytes = size + Self.hugePageBytes  // room to align the start to a huge page
        guard let raw = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != MAP_FAILED
        else { return nil }
        mapping = raw
        start = raw.alignedUp(toMultipleOf: Self.hugePageBytes)
        self.capacity = size
        #if os(Linux)
        _ = madvise(start, size, MADV_HUGEPAGE)  // a hint: without huge pages the arena still works
        #endif
    }

    deinit { munmap(mapping, mappedBytes) }

    /// The next `bytes` bytes (64-byte aligned), or nil when the arena is full.
    func take(_ bytes: Int) -> UnsafeMutableRawPointer? {
        let size = (bytes + 63) / 64 * 64
        guard used + size <= capacity else { return nil }
        defer { used += size }
        return start + used
    }
}
