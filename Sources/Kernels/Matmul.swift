import CKernels

// Fast `matmul`: y[t, o] = Σ_i x[t, i] · W[o, i] with W stored as f32, f16 or bf16.
//
// Every output element follows the summation order of `SIMDSupport.swift` (one SIMD8 FMA chain,
// `hsum8`, scalar FMA tail), whichever path computes it, so results are bit-identical for any
// thread count, any chunking and any batch size (a token gives the same row in a batch of 37 as
// alone).
//
// - tokens == 1 (GEMV, memory-bound): 8 weight rows at a time straight from storage, widened in
//   registers; each row streamed once, eight streams in flight (measured 5–10% more GB/s than
//   four on 512- and 1024-column bf16 rows). `matmulPair` streams 4 rows of each of two weights.
//   On AVX2 CPUs bf16/f16 rows go to the C kernel `pm_gemv_half` instead (CKernels/HalfGemv.c:
//   same order, bit-identical, four rows a quarter of the matrix apart read side by side: four
//   sequential streams, 1.5-1.6x the decode speed of eight neighbouring rows).
// - tokens > 1 (prefill, compute-bound): each thread widens a block of its rows to f32 scratch
//   (one reused buffer per thread, see `ThreadScratch`) once, then runs a 4-row × 3-token
//   register tile over all tokens, so a converted weight vector is reused by three tokens from a
//   register and by every token from cache. With 2 or 3 tokens (an expert's rows in a batched
//   decode step) there is one tile pass, so f16/bf16 rows are widened in registers in place;
//   with 4 to 16 (a batched decode step's attention projections and head) f16/bf16 rows are read
//   in place by a 2-row × 6-token tile (one in-register widening per six tokens: the head of the
//   demo model measured about 20% faster in a 12-sequence step than widening to scratch).
//   On AVX-512 CPUs every such tile is the C kernel `pm_gemm_tiles_avx512` (HalfGemv.c): two
//   tokens per 512-bit register, one 8-lane chain per half, so the same bits at twice the
//   multiply-adds per instruction (bf16 bench model prefill on Zen 5: 1.44x the AVX2 tiles).

/// How one weight row is read: 8 lanes widened to Float, or one element.
protocol WeightRowFormat {
    static var byteSize: Int { get }
    static func load8(_ row: UnsafeRawPointer, _ i: Int) -> SIMD8<Float>
    static func load1(_ row: UnsafeRawPointer, _ i: Int) -> Float
}

enum F32Row: WeightRowFormat {
    static var byteSize: Int { @inline(__always) get { 4 } }
    @inline(__always) static func load8(_ row: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        row.loadUnaligned(fromByteOffset: i &* 4, as: SIMD8<Float>.self)
    }
    @inline(__always) static func load1(_ row: UnsafeRawPointer, _ i: Int) -> Float {
        row.loadUnaligned(fromByteOffset: i &* 4, as: Float.self)
    }
}

enum BF16Row: WeightRowFormat {
    static var byteSize: Int { @inline(__always) get { 2 } }
    @inline(__always) static func load8(_ row: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        loadBF16x8(row + i &* 2)
    }
    @inline(__always) static func load1(_ row: UnsafeRawPointer, _ i: Int) -> Float {
        bf16ToFloat(row.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))
    }
}

enum F16Row: WeightRowFormat {
    static var byteSize: Int { @inline(__always) get { 2 } }
    @inline(__always) static func load8(_ row: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
        loadF16x8(row + i &* 2)
    }
    @inline(__always) static func load1(_ row: UnsafeRawPointer, _ i: Int) -> Float {
        f16ToFloat(row.loadUnaligned(fromByteOffset: i &* 2, as: UInt16.self))
    }
}

enum FastMatmul {
    /// Rows per register tile (and the granularity of the thread split).
    static let tileRows = 4
    /// Target size of one thread's f32 weight block in prefill (fits the 512 KiB L2 with room).
    static let blockBytes = 192 * 1024
    /// Up to this many tokens (one 4×3 register tile pass), f16/bf16 rows are read in place:
    /// widening them to scratch first would add a store and a reload to the same conversions.
    static let directTokens = 3
    /// Up to this many tokens (a batched decode step's attention projections and head), f16/bf16
    /// rows are also read in place, six tokens at a time through a 2-row × 6-token tile, so each
    /// row is widened in registers once per six tokens instead of once into scratch and reloaded
    /// by every 4×3 pass.
    static let directWideTokens = 16

    static func matmul(
        _ x: UnsafePointer<Float>, tokens: Int, weight: Tensor, into y: UnsafeMutablePointer<Float>,
        pool: ThreadPool
    ) {
        precondition(weight.shape.count == 2, "matmul weight must be 2-D, got \(weight.shape)")
        let outF = weight.shape[0]
        let n = weight.shape[1]
        guard tokens > 0, outF > 0 else { return }
        let w = weight.data
        switch weight.dtype {
        case .float32: run(F32Row.self, x, tokens: tokens, w, outF: outF, n: n, y, pool)
        case .bfloat16: run(BF16Row.self, x, tokens: tokens, w, outF: outF, n: n, y, pool)
        case .float16: run(F16Row.self, x, tokens: tokens, w, outF: outF, n: n, y, pool)
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K:
            let format = weight.dtype.quantizedFormat!
            if pool.quantizedArithmetic == .int8 {
                QuantizedKernels.matmulInt8(x, tokens: tokens, weight: w, into: y, format: format, rows: outF, cols: n,
                                            owner: weight.owner, pool: pool)
            } else {
                QuantizedKernels.matmul(x, tokens: tokens, weight: w, format: format, rows: outF, cols: n, into: y, pool: pool)
            }
        }
    }

    @inline(__always)
    static func run<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, tokens: Int, _ w: UnsafeRawPointer, outF: Int, n: Int,
        _ y: UnsafeMutablePointer<Float>, _ pool: ThreadPool
    ) {
        let groups = (outF + tileRows - 1) / tileRows
        // Give a thread at least ~64K multiply-adds; below that the hand-off costs more than it saves.
        let macsPerGroup = max(1, tileRows * n * tokens)
        let minChunk = max(1, 65_536 / macsPerGroup)
        pool.parallelFor(groups, minChunk: minChunk) { range in
            let r0 = range.lowerBound * tileRows
            let r1 = min(outF, range.upperBound * tileRows)
            if tokens == 1 {
                gemvRows(W.self, x, w, r0: r0, r1: r1, n: n, y)
            } else {
                prefillRows(W.self, x, tokens: tokens, w, r0: r0, r1: r1, outF: outF, n: n, y)
            }
        }
    }

    /// Several matmuls over the same activations (an attention layer's q, k and v projections);
    /// results equal one `matmul` call per weight. Where every weight takes the int8 path, or
    /// for one token over f32/f16/bf16 weights of one dtype, all their rows are split over the
    /// threads in one pass: one hand-off to the pool instead of one per weight (and one
    /// quantization of `x` per format). Otherwise one `matmul` per weight.
    static func matmulGroup(
        _ x: UnsafePointer<Float>, tokens: Int, _ weights: [Tensor], into ys: [UnsafeMutablePointer<Float>], pool: ThreadPool
    ) {
        precondition(weights.count == ys.count, "one output per weight")
        guard let first = weights.first else { return }
        let n = first.shape.count == 2 ? first.shape[1] : -1
        let sameWidth = weights.allSatisfy { $0.shape.count == 2 && $0.shape[1] == n && $0.shape[0] > 0 }
        if sameWidth, weights.count > 1, pool.threadCount > 1, tokens > 0 {
            if pool.quantizedArithmetic == .int8, weights.allSatisfy({ $0.dtype.quantizedFormat != nil }) {
                let parts = zip(weights, ys).map { w, y in
                    Int8Rows(weight: w.data, format: w.dtype.quantizedFormat!, rows: w.shape[0], cols: n, isa: .best,
                             owner: w.owner, y: y)
                }
                QuantizedKernels.matmulInt8(x, tokens: tokens, parts, pool: pool)
                return
            }
            if tokens == 1, weights.allSatisfy({ $0.dtype == first.dtype }) {
                let data = weights.map(\.data), rows = weights.map { $0.shape[0] }
                switch first.dtype {
                case .float32: return runGroup(F32Row.self, x, data, rows: rows, n: n, ys, pool)
                case .bfloat16: return runGroup(BF16Row.self, x, data, rows: rows, n: n, ys, pool)
                case .float16: return runGroup(F16Row.self, x, data, rows: rows, n: n, ys, pool)
                case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K: break  // exact quantized path: one call each
                }
            }
        }
        for (w, y) in zip(weights, ys) { matmul(x, tokens: tokens, weight: w, into: y, pool: pool) }
    }

    /// GEMV of one token over several weights of one row format, groups of `tileRows` rows of
    /// all of them split over the threads in one pass.
    static func runGroup<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, _ weights: [UnsafeRawPointer], rows: [Int], n: Int,
        _ ys: [UnsafeMutablePointer<Float>], _ pool: ThreadPool
    ) {
        var firstGroup = [0]
        for r in rows { firstGroup.append(firstGroup[firstGroup.count - 1] + (r + tileRows - 1) / tileRows) }
        let groups = firstGroup[rows.count]
        let minChunk = max(1, 65_536 / max(1, tileRows * n))
        pool.parallelFor(groups, minChunk: minChunk) { range in
            for p in 0..<rows.count {
                let lo = max(range.lowerBound, firstGroup[p]), hi = min(range.upperBound, firstGroup[p + 1])
                guard lo < hi else { continue }
                gemvRows(W.self, x, weights[p], r0: (lo - firstGroup[p]) * tileRows,
                         r1: min(rows[p], (hi - firstGroup[p]) * tileRows), n: n, ys[p])
            }
        }
    }

    /// Two matmuls over the same activations (an expert's gate and up projections). For one
    /// token both weights are streamed in one pass over `x`, eight rows in flight; each output
    /// element is still the canonical dot product, so results equal two `matmul` calls.
    static func matmulPair(
        _ x: UnsafePointer<Float>, tokens: Int, _ a: Tensor, _ b: Tensor, into ya: UnsafeMutablePointer<Float>,
        _ yb: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        if pool.quantizedArithmetic == .int8, let format = a.dtype.quantizedFormat, a.shape.count == 2, a.shape == b.shape,
           a.dtype == b.dtype {
            QuantizedKernels.matmulInt8(x, tokens: tokens, weight: a.data, into: ya, second: (b.data, yb), format: format,
                                        rows: a.shape[0], cols: a.shape[1], owner: a.owner === b.owner ? a.owner : nil,
                                        pool: pool)
            return
        }
        guard tokens == 1, a.shape.count == 2, a.shape == b.shape, a.dtype == b.dtype, a.dtype.quantizedFormat == nil else {
            matmul(x, tokens: tokens, weight: a, into: ya, pool: pool)
            matmul(x, tokens: tokens, weight: b, into: yb, pool: pool)
            return
        }
        let outF = a.shape[0]
        let n = a.shape[1]
        guard outF > 0 else { return }
        switch a.dtype {
        case .float32: runPair(F32Row.self, x, a.data, b.data, outF: outF, n: n, ya, yb, pool)
        case .bfloat16: runPair(BF16Row.self, x, a.data, b.data, outF: outF, n: n, ya, yb, pool)
        case .float16: runPair(F16Row.self, x, a.data, b.data, outF: outF, n: n, ya, yb, pool)
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K: break  // sent to `matmul` by the guard
        }
    }

    @inline(__always)
    static func runPair<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, _ wa: UnsafeRawPointer, _ wb: UnsafeRawPointer, outF: Int, n: Int,
        _ ya: UnsafeMutablePointer<Float>, _ yb: UnsafeMutablePointer<Float>, _ pool: ThreadPool
    ) {
        let groups = (outF + tileRows - 1) / tileRows
        let minChunk = max(1, 65_536 / max(1, 2 * tileRows * n))
        let rowBytes = n &* W.byteSize
        pool.parallelFor(groups, minChunk: minChunk) { range in
            let r0 = range.lowerBound * tileRows
            let r1 = min(outF, range.upperBound * tileRows)
            if halfGemvC(W.self, x, wa, r0: r0, r1: r1, n: n, ya), halfGemvC(W.self, x, wb, r0: r0, r1: r1, n: n, yb) {
                return
            }
            var r = r0
            while r &+ 4 <= r1 {
                tile8x1(W.self, wa + r &* rowBytes, wb + r &* rowBytes, rowBytes, x, n, ya + r, yb + r)
                r &+= 4
            }
            while r < r1 {
                ya[r] = dot1(W.self, wa + r &* rowBytes, x, n)
                yb[r] = dot1(W.self, wb + r &* rowBytes, x, n)
                r &+= 1
            }
        }
    }

    /// Four rows of each of two weights · one token: eight chains, eight weight streams.
    @inline(__always)
    static func tile8x1<W: WeightRowFormat>(
        _: W.Type, _ wa: UnsafeRawPointer, _ wb: UnsafeRawPointer, _ rb: Int, _ x: UnsafePointer<Float>, _ n: Int,
        _ ya: UnsafeMutablePointer<Float>, _ yb: UnsafeMutablePointer<Float>
    ) {
        let a0 = wa, a1 = wa + rb, a2 = wa + 2 &* rb, a3 = wa + 3 &* rb
        let b0 = wb, b1 = wb + rb, b2 = wb + 2 &* rb, b3 = wb + 3 &* rb
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
        var t0 = SIMD8<Float>(), t1 = SIMD8<Float>(), t2 = SIMD8<Float>(), t3 = SIMD8<Float>()
        var i = 0
        while i &+ 8 <= n {
            let xv = load8(x + i)
            s0 = s0.addingProduct(xv, W.load8(a0, i))
            t0 = t0.addingProduct(xv, W.load8(b0, i))
            s1 = s1.addingProduct(xv, W.load8(a1, i))
            t1 = t1.addingProduct(xv, W.load8(b1, i))
            s2 = s2.addingProduct(xv, W.load8(a2, i))
            t2 = t2.addingProduct(xv, W.load8(b2, i))
            s3 = s3.addingProduct(xv, W.load8(a3, i))
            t3 = t3.addingProduct(xv, W.load8(b3, i))
            i &+= 8
        }
        finish(W.self, (s0, s1, s2, s3), wa, rb, x, i, n, ya)
        finish(W.self, (t0, t1, t2, t3), wb, rb, x, i, n, yb)
    }

    /// GEMV rows `r0..<r1` straight from storage.
    @inline(__always)
    static func gemvRows<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, _ w: UnsafeRawPointer, r0: Int, r1: Int, n: Int,
        _ y: UnsafeMutablePointer<Float>
    ) {
        if halfGemvC(W.self, x, w, r0: r0, r1: r1, n: n, y) { return }
        let rowBytes = n &* W.byteSize
        var r = r0
        while r &+ 8 <= r1 {
            let wr = w + r &* rowBytes
            tile8x1(W.self, wr, wr + 4 &* rowBytes, rowBytes, x, n, y + r, y + (r &+ 4))
            r &+= 8
        }
        while r &+ 4 <= r1 {
            tile4x1(W.self, w + r &* rowBytes, rowBytes, x, n, y + r)
            r &+= 4
        }
        while r < r1 {
            y[r] = dot1(W.self, w + r &* rowBytes, x, n)
            r &+= 1
        }
    }

    /// GEMV rows `r0..<r1` of a bf16 or f16 weight with the AVX2 C kernel (`pm_gemv_half`, same
    /// summation order, bit-identical to the Swift tiles); false where it does not apply (f32
    /// rows, a CPU without AVX2), and then nothing is written.
    @inline(__always)
    static func halfGemvC<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, _ w: UnsafeRawPointer, r0: Int, r1: Int, n: Int,
        _ y: UnsafeMutablePointer<Float>
    ) -> Bool {
        let kind: Int32 = W.self == BF16Row.self ? 0 : W.self == F16Row.self ? 1 : -1
        guard kind >= 0, r1 > r0, n <= Int(Int32.max), r1 - r0 <= Int(Int32.max) else { return false }
        return pm_gemv_half(kind, w + r0 &* n &* 2, n, Int32(r1 - r0), x, Int32(n), y + r0) != 0
    }

    /// Prefill rows `r0..<r1`, one cache-sized block of rows at a time: f16/bf16 blocks are
    /// widened to f32 scratch first, f32 blocks are used in place. Each block is then reused by
    /// every token while it sits in L2.
    static func prefillRows<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, tokens: Int, _ w: UnsafeRawPointer, r0: Int, r1: Int,
        outF: Int, n: Int, _ y: UnsafeMutablePointer<Float>
    ) {
        let rowBytes = n &* W.byteSize
        let blockRows = min(r1 - r0, max(tileRows, (blockBytes / max(1, n * 4)) / tileRows * tileRows))
        // With AVX-512 every tile is the C kernel's (two tokens per register, same chains); its
        // packed activations live in this thread's byte scratch while the f32 block uses the other.
        var pairs: UnsafeMutablePointer<Float>? = nil
        if tokens > 1, tokens <= Int(Int32.max), n <= Int(Int32.max), pm_tiles_avx512_supported() != 0 {
            let count = pm_token_pairs_floats(Int32(tokens), Int32(n))
            let xp = ThreadScratch.bytes(count * 4).bindMemory(to: Float.self, capacity: count)
            pm_pack_token_pairs(x, Int32(tokens), Int32(n), xp)
            pairs = xp
        }
        // Few tokens (an expert's share of a batched decode step) read f16/bf16 rows in place,
        // widening in registers: each widened vector is used by one register tile only.
        let direct = W.self == F32Row.self || tokens <= directTokens
        if !direct && tokens <= directWideTokens {
            if let pairs {
                tilesAVX512(W.self, x, pairs, tokens: tokens, w + r0 &* rowBytes, rowBytes: rowBytes, rows: r1 &- r0, n: n, y + r0, outF)
            } else {
                wideTiles(W.self, x, tokens: tokens, w + r0 &* rowBytes, rowBytes: rowBytes, rows: r1 &- r0, n: n, y + r0, outF)
            }
            return
        }
        let scratch = direct ? nil : ThreadScratch.floats(blockRows * n)
        var b = r0
        while b < r1 {
            let rows = min(blockRows, r1 &- b)
            if let scratch {
                for r in 0..<rows {
                    widenRow(W.self, w + (b &+ r) &* rowBytes, into: scratch + r &* n, n)
                }
                if let pairs {
                    tilesAVX512(F32Row.self, x, pairs, tokens: tokens, UnsafeRawPointer(scratch), rowBytes: n &* 4, rows: rows, n: n,
                                y + b, outF)
                } else {
                    tiles(F32Row.self, x, tokens: tokens, UnsafeRawPointer(scratch), rowBytes: n &* 4, rows: rows, n: n, y + b, outF)
                }
            } else if let pairs {
                tilesAVX512(W.self, x, pairs, tokens: tokens, w + b &* rowBytes, rowBytes: rowBytes, rows: rows, n: n, y + b, outF)
            } else {
                tiles(W.self, x, tokens: tokens, w + b &* rowBytes, rowBytes: rowBytes, rows: rows, n: n, y + b, outF)
            }
            b &+= rows
        }
    }

    /// All tokens × `rows` rows with the AVX-512 C kernel (`pm_gemm_tiles_avx512`, two tokens per
    /// register, every output's canonical chain: bit-identical to `tiles`); `pairs` is `x` packed
    /// by `pm_pack_token_pairs`.
    @inline(__always)
    static func tilesAVX512<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, _ pairs: UnsafePointer<Float>, tokens: Int, _ w: UnsafeRawPointer, rowBytes: Int,
        rows: Int, n: Int, _ y: UnsafeMutablePointer<Float>, _ ldy: Int
    ) {
        let kind: Int32 = W.self == BF16Row.self ? 0 : W.self == F16Row.self ? 1 : 2
        let done = pm_gemm_tiles_avx512(kind, w, rowBytes, Int32(rows), x, pairs, Int32(tokens), Int32(n), y, ldy)
        precondition(done != 0, "AVX-512 tiles refused \(rows) rows × \(tokens) tokens of \(n)")
    }

    @inline(__always)
    static func widenRow<W: WeightRowFormat>(_: W.Type, _ row: UnsafeRawPointer, into out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i &+ 8 <= n {
            store8(W.load8(row, i), out + i)
            i &+= 8
        }
        while i < n {
            out[i] = W.load1(row, i)
            i &+= 1
        }
    }

    /// All tokens × `rows` rows starting at `w` (row stride `rowBytes`); `y` points at column 0
    /// of this block in token row 0, token rows `ldy` apart.
    @inline(__always)
    static func tiles<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, tokens: Int, _ w: UnsafeRawPointer, rowBytes: Int, rows: Int,
        n: Int, _ y: UnsafeMutablePointer<Float>, _ ldy: Int
    ) {
        var t = 0
        while t < tokens {
            let tt = min(3, tokens &- t)
            let xt = x + t &* n
            let yt = y + t &* ldy
            var r = 0
            while r &+ 4 <= rows {
                let wr = w + r &* rowBytes
                switch tt {
                case 3: tile4x3(W.self, wr, rowBytes, xt, n, yt + r, ldy)
                case 2: tile4x2(W.self, wr, rowBytes, xt, n, yt + r, ldy)
                default: tile4x1(W.self, wr, rowBytes, xt, n, yt + r)
                }
                r &+= 4
            }
            while r < rows {
                for j in 0..<tt {
                    yt[j &* ldy &+ r] = dot1(W.self, w + r &* rowBytes, xt + j &* n, n)
                }
                r &+= 1
            }
            t &+= tt
        }
    }

    /// All tokens × `rows` rows read in place: six tokens at a time by 2-row × 6-token tiles
    /// (12 accumulators, 2 weight vectors, 1 activation vector), the remaining tokens by `tiles`.
    /// Every output keeps the canonical chain, so results equal every other path bit for bit.
    @inline(__always)
    static func wideTiles<W: WeightRowFormat>(
        _: W.Type, _ x: UnsafePointer<Float>, tokens: Int, _ w: UnsafeRawPointer, rowBytes: Int, rows: Int,
        n: Int, _ y: UnsafeMutablePointer<Float>, _ ldy: Int
    ) {
        var t = 0
        while t &+ 6 <= tokens {
            let xt = x + t &* n
            let yt = y + t &* ldy
            var r = 0
            while r &+ 2 <= rows {
                tile2x6(W.self, w + r &* rowBytes, rowBytes, xt, n, yt + r, ldy)
                r &+= 2
            }
            if r < rows {
                for j in 0..<6 { yt[j &* ldy &+ r] = dot1(W.self, w + r &* rowBytes, xt + j &* n, n) }
            }
            t &+= 6
        }
        if t < tokens {
            tiles(W.self, x + t &* n, tokens: tokens &- t, w, rowBytes: rowBytes, rows: rows, n: n, y + t &* ldy, ldy)
        }
    }

    /// Two rows · six tokens.
    @inline(__always)
    static func tile2x6<W: WeightRowFormat>(
        _: W.Type, _ w: UnsafeRawPointer, _ rb: Int, _ x: UnsafePointer<Float>, _ n: Int,
        _ y: UnsafeMutablePointer<Float>, _ ldy: Int
    ) {
        let w0 = w, w1 = w + rb
        var a00 = SIMD8<Float>(), a01 = SIMD8<Float>(), a10 = SIMD8<Float>(), a11 = SIMD8<Float>()
        var a20 = SIMD8<Float>(), a21 = SIMD8<Float>(), a30 = SIMD8<Float>(), a31 = SIMD8<Float>()
        var a40 = SIMD8<Float>(), a41 = SIMD8<Float>(), a50 = SIMD8<Float>(), a51 = SIMD8<Float>()
        var i = 0
        while i &+ 8 <= n {
            let u = W.load8(w0, i), v = W.load8(w1, i)
            var xv = load8(x + i)
            a00 = a00.addingProduct(xv, u); a01 = a01.addingProduct(xv, v)
            xv = load8(x + (n &+ i))
            a10 = a10.addingProduct(xv, u); a11 = a11.addingProduct(xv, v)
            xv = load8(x + (2 &* n &+ i))
            a20 = a20.addingProduct(xv, u); a21 = a21.addingProduct(xv, v)
            xv = load8(x + (3 &* n &+ i))
            a30 = a30.addingProduct(xv, u); a31 = a31.addingProduct(xv, v)
            xv = load8(x + (4 &* n &+ i))
            a40 = a40.addingProduct(xv, u); a41 = a41.addingProduct(xv, v)
            xv = load8(x + (5 &* n &+ i))
            a50 = a50.addingProduct(xv, u); a51 = a51.addingProduct(xv, v)
            i &+= 8
        }
        finish2(W.self, a00, a01, w0, w1, x, i, n, y)
        finish2(W.self, a10, a11, w0, w1, x + n, i, n, y + ldy)
        finish2(W.self, a20, a21, w0, w1, x + 2 &* n, i, n, y + 2 &* ldy)
        finish2(W.self, a30, a31, w0, w1, x + 3 &* n, i, n, y + 3 &* ldy)
        finish2(W.self, a40, a41, w0, w1, x + 4 &* n, i, n, y + 4 &* ldy)
        finish2(W.self, a50, a51, w0, w1, x + 5 &* n, i, n, y + 5 &* ldy)
    }

    /// Horizontal sums and scalar tails of one token's two row accumulators; stores y[0], y[1].
    @inline(__always)
    static func finish2<W: WeightRowFormat>(
        _: W.Type, _ p: SIMD8<Float>, _ q: SIMD8<Float>, _ w0: UnsafeRawPointer, _ w1: UnsafeRawPointer,
        _ x: UnsafePointer<Float>, _ start: Int, _ n: Int, _ y: UnsafeMutablePointer<Float>
    ) {
        var s0 = hsum8(p), s1 = hsum8(q)
        var k = start
        while k < n {
            s0 = s0.addingProduct(x[k], W.load1(w0, k))
            s1 = s1.addingProduct(x[k], W.load1(w1, k))
            k &+= 1
        }
        y[0] = s0
        y[1] = s1
    }

    /// One row · one token, canonical order.
    @inline(__always)
    static func dot1<W: WeightRowFormat>(_: W.Type, _ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i &+ 8 <= n {
            acc = acc.addingProduct(load8(x + i), W.load8(w, i))
            i &+= 8
        }
        var s = hsum8(acc)
        while i < n {
            s = s.addingProduct(x[i], W.load1(w, i))
            i &+= 1
        }
        return s
    }

    /// Four rows · one token (GEMV): four independent chains, four weight streams.
    @inline(__always)
    static func tile4x1<W: WeightRowFormat>(
        _: W.Type, _ w: UnsafeRawPointer, _ rb: Int, _ x: UnsafePointer<Float>, _ n: Int,
        _ y: UnsafeMutablePointer<Float>
    ) {
        let w0 = w, w1 = w + rb, w2 = w + 2 &* rb, w3 = w + 3 &* rb
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var i = 0
        while i &+ 8 <= n {
            let xv = load8(x + i)
            a0 = a0.addingProduct(xv, W.load8(w0, i))
            a1 = a1.addingProduct(xv, W.load8(w1, i))
            a2 = a2.addingProduct(xv, W.load8(w2, i))
            a3 = a3.addingProduct(xv, W.load8(w3, i))
            i &+= 8
        }
        var s0 = hsum8(a0), s1 = hsum8(a1), s2 = hsum8(a2), s3 = hsum8(a3)
        while i < n {
            let xi = x[i]
            s0 = s0.addingProduct(xi, W.load1(w0, i))
            s1 = s1.addingProduct(xi, W.load1(w1, i))
            s2 = s2.addingProduct(xi, W.load1(w2, i))
            s3 = s3.addingProduct(xi, W.load1(w3, i))
            i &+= 1
        }
        y[0] = s0; y[1] = s1; y[2] = s2; y[3] = s3
    }

    /// Four rows · two tokens.
    @inline(__always)
    static func tile4x2<W: WeightRowFormat>(
        _: W.Type, _ w: UnsafeRawPointer, _ rb: Int, _ x: UnsafePointer<Float>, _ n: Int,
        _ y: UnsafeMutablePointer<Float>, _ ldy: Int
    ) {
        let w0 = w, w1 = w + rb, w2 = w + 2 &* rb, w3 = w + 3 &* rb
        let x0 = x, x1 = x + n
        var a00 = SIMD8<Float>(), a01 = SIMD8<Float>(), a02 = SIMD8<Float>(), a03 = SIMD8<Float>()
        var a10 = SIMD8<Float>(), a11 = SIMD8<Float>(), a12 = SIMD8<Float>(), a13 = SIMD8<Float>()
        var i = 0
        while i &+ 8 <= n {
            let u = load8(x0 + i), v = load8(x1 + i)
            var wv = W.load8(w0, i)
            a00 = a00.addingProduct(u, wv); a10 = a10.addingProduct(v, wv)
            wv = W.load8(w1, i)
            a01 = a01.addingProduct(u, wv); a11 = a11.addingProduct(v, wv)
            wv = W.load8(w2, i)
            a02 = a02.addingProduct(u, wv); a12 = a12.addingProduct(v, wv)
            wv = W.load8(w3, i)
            a03 = a03.addingProduct(u, wv); a13 = a13.addingProduct(v, wv)
            i &+= 8
        }
        finish(W.self, (a00, a01, a02, a03), w, rb, x0, i, n, y)
        finish(W.self, (a10, a11, a12, a13), w, rb, x1, i, n, y + ldy)
    }

    /// Four rows · three tokens: 12 accumulators + 3 activation vectors + 1 weight vector.
    @inline(__always)
    static func tile4x3<W: WeightRowFormat>(
        _: W.Type, _ w: UnsafeRawPointer, _ rb: Int, _ x: UnsafePointer<Float>, _ n: Int,
        _ y: UnsafeMutablePointer<Float>, _ ldy: Int
    ) {
        let w0 = w, w1 = w + rb, w2 = w + 2 &* rb, w3 = w + 3 &* rb
        let x0 = x, x1 = x + n, x2 = x + 2 &* n
        var a00 = SIMD8<Float>(), a01 = SIMD8<Float>(), a02 = SIMD8<Float>(), a03 = SIMD8<Float>()
        var a10 = SIMD8<Float>(), a11 = SIMD8<Float>(), a12 = SIMD8<Float>(), a13 = SIMD8<Float>()
        var a20 = SIMD8<Float>(), a21 = SIMD8<Float>(), a22 = SIMD8<Float>(), a23 = SIMD8<Float>()
        var i = 0
        while i &+ 8 <= n {
            let u = load8(x0 + i), v = load8(x1 + i), s = load8(x2 + i)
            var wv = W.load8(w0, i)
            a00 = a00.addingProduct(u, wv); a10 = a10.addingProduct(v, wv); a20 = a20.addingProduct(s, wv)
            wv = W.load8(w1, i)
            a01 = a01.addingProduct(u, wv); a11 = a11.addingProduct(v, wv); a21 = a21.addingProduct(s, wv)
            wv = W.load8(w2, i)
            a02 = a02.addingProduct(u, wv); a12 = a12.addingProduct(v, wv); a22 = a22.addingProduct(s, wv)
            wv = W.load8(w3, i)
            a03 = a03.addingProduct(u, wv); a13 = a13.addingProduct(v, wv); a23 = a23.addingProduct(s, wv)
            i &+= 8
        }
        finish(W.self, (a00, a01, a02, a03), w, rb, x0, i, n, y)
        finish(W.self, (a10, a11, a12, a13), w, rb, x1, i, n, y + ldy)
        finish(W.self, (a20, a21, a22, a23), w, rb, x2, i, n, y + 2 &* ldy)
    }

    /// Horizontal sums and scalar tails of one token's four row accumulators; stores y[0..<4].
    @inline(__always)
    static func finish<W: WeightRowFormat>(
        _: W.Type, _ acc: (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>), _ w: UnsafeRawPointer,
        _ rb: Int, _ x: UnsafePointer<Float>, _ start: Int, _ n: Int, _ y: UnsafeMutablePointer<Float>
    ) {
        let w0 = w, w1 = w + rb, w2 = w + 2 &* rb, w3 = w + 3 &* rb
        var s0 = hsum8(acc.0), s1 = hsum8(acc.1), s2 = hsum8(acc.2), s3 = hsum8(acc.3)
        var i = start
        while i < n {
            let xi = x[i]
            s0 = s0.addingProduct(xi, W.load1(w0, i))
            s1 = s1.addingProduct(xi, W.load1(w1, i))
            s2 = s2.addingProduct(xi, W.load1(w2, i))
            s3 = s3.addingProduct(xi, W.load1(w3, i))
            i &+= 1
        }
        y[0] = s0; y[1] = s1; y[2] = s2; y[3] = s3
    }
}
