// K-quant quantizers (Q4_K, Q5_K, Q6_K), premoe's own fitting. Only the block layouts come from
// the format (they are documented with the dequantizer in Quantized.swift); how the scales and
// levels are chosen is this file's:
//
//  * Q4_K / Q5_K: each sub-block of 32 values is an affine grid `scale·q − offset`, q ∈ 0…top
//    (top 15 or 31), offset ≥ 0 (the format stores a non-negative min). `fitGrid` tries a fan of
//    grid spans (70–107.5% of the sub-block's range) anchored at its low end and at its high end;
//    each start gets its levels snapped and a closed-form least-squares refit of scale and
//    offset for those levels; the best is then polished by alternating snap / refit (neither step
//    can raise the error). The eight scales and eight offsets become 6-bit multiples of the
//    super-block's fp16 `d` / `dmin` (largest → 63); each sub-block's (scale, offset) code pair
//    is settled by trying its ±1 neighbours against the sub-block's values, with the levels
//    re-snapped to the coded grid.
//  * Q6_K: each sub-block of 16 values is `scale·q`, q ∈ −32…31. `fitSymmetric` tries scales that
//    put the largest magnitude 26…34 steps out on the longer (negative) side, refits each by least
//    squares and keeps the lowest error. The 16 scales become int8 multiples of the fp16 `d`
//    (largest magnitude → −128), with the same ±1 neighbour search per code.
//
// The error minimised is plain (unweighted) squared error, which is what the dequantized RMSE
// measures. RMSE ours / ggml's reference quantizer (llama.cpp 0c1e570, no importance matrix) on
// the same inputs: Q4_K 0.973, Q5_K 0.956, Q6_K 0.935 on 2048 rows × 768 of Student-t(5) × 0.02
// (0.977 / 0.957 / 0.929 on 512 × 1024 Gaussian); 0.89–1.00 per fixture row. QuantizeKQuantsTests
// holds every fixture block to ≤ 1.02×.

/// Below this largest magnitude a sub-block or block is stored as zeros.
private let negligible: Float = 1e-15

/// `v` rounded to the nearest integer and clamped to `lo…hi` (NaN gives `lo`).
@inline(__always)
private func snap(_ v: Float, _ lo: Int, _ hi: Int) -> Int {
    let r = v.rounded()
    if !(r > Float(lo)) { return lo }
    if r >= Float(hi) { return hi }
    return Int(r)
}

/// `v` as the fp16 the block stores, back in Float.
@inline(__always)
private func asHalf(_ v: Float) -> Float { Float(Float16(v)) }

/// The integer multiple of `unit` nearest `v`, clamped to `lo…hi` (`0` when `unit` is 0).
@inline(__always)
private func code(_ v: Float, unit: Float, _ lo: Int, _ hi: Int) -> Int {
    unit != 0 ? snap(v / unit, lo, hi) : 0
}

/// Quantizers for the 256-value K-quant super-blocks.
public enum KQuantizer {
    /// Quantizes `count` values (a multiple of 256) into `out` (`format.rowBytes(count)` bytes).
    /// - Parameters:
    ///   - format: `.q4_K`, `.q5_K` or `.q6_K`.
    ///   - x: the values, row-major; rows are a whole number of blocks, so a matrix is one call.
    public static func quantize(_ format: QuantizedFormat, _ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        precondition(format.isKQuant, "\(format) is not a K-quant")
        precondition(count % 256 == 0, "\(count) values is not a whole number of \(format) blocks")
        for b in 0..<(count / 256) {
            let values = x + b * 256
            let block = out + b * format.blockBytes
            switch format {
            case .q4_K: writeAffineBlock(values, block, top: 15)
            case .q5_K: writeAffineBlock(values, block, top: 31)
            default: writeSymmetricBlock(values, block)
            }
        }
    }

    // MARK: Q4_K / Q5_K

    /// A sub-block's affine grid: value ≈ scale·q − offset, q ∈ 0…top.
    struct Grid {
        var scale: Float
        var offset: Float
    }

    /// Squared error of `x[0..<n]` snapped to `grid`, and the least-squares grid for those same
    /// levels (offset kept ≥ 0; nil when the levels are all equal, or the grid is flat).
    static func snapAndRefit(_ x: UnsafePointer<Float>, _ n: Int, _ grid: Grid, top: Int) -> (error: Float, refit: Grid?) {
        guard grid.scale > 0 else {
            var e: Float = 0
            for i in 0..<n { e += (grid.offset + x[i]) * (grid.offset + x[i]) }
            return (e, nil)
        }
        let inverse = 1 / grid.scale
        var e: Float = 0, sumQ: Float = 0, sumQQ: Float = 0, sumX: Float = 0, sumQX: Float = 0
        for i in 0..<n {
            let q = Float(snap((x[i] + grid.offset) * inverse, 0, top))
            let r = grid.scale * q - grid.offset - x[i]
            e += r * r
            sumQ += q
            sumQQ += q * q
            sumX += x[i]
            sumQX += q * x[i]
        }
        // Normal equations of Σ (s·q − m − x)² in (s, m); the q sums are exact small integers.
        let count = Float(n)
        let det = count * sumQQ - sumQ * sumQ
        guard det > 0 else { return (e, nil) }
        var scale = (count * sumQX - sumQ * sumX) / det
        var offset = (scale * sumQ - sumX) / count
        if offset < 0 {
            offset = 0
            scale = sumQX / sumQQ
        }
        guard scale > 0, scale.isFinite, offset.isFinite else { return (e, nil) }
        return (e, Grid(scale: scale, offset: offset))
    }

    /// Squared error of `x[0..<n]` snapped to `grid`.
    @inline(__always)
    static func gridError(_ x: UnsafePointer<Float>, _ n: Int, _ grid: Grid, top: Int) -> Float {
        snapAndRefit(x, n, grid, top: top).error
    }

    /// The grid with the lowest squared error found for `x[0..<n]` (see the file comment).
    static func fitGrid(_ x: UnsafePointer<Float>, _ n: Int, top: Int) -> Grid {
        var lo: Float = 0, hi = -Float.infinity
        for i in 0..<n {
            lo = min(lo, x[i])
            hi = max(hi, x[i])
        }
        var best = Grid(scale: 0, offset: -lo)
        var bestError = gridError(x, n, best, top: top)
        let range = hi - lo
        guard range > negligible, bestError > 0 else { return best }
        func consider(_ grid: Grid, _ error: Float) {
            if error < bestError {
                best = grid
                bestError = error
            }
        }
        let steps = Float(top)
        for k in 0..<16 {
            let span = range * (0.70 + 0.025 * Float(k))
            let scale = span / steps
            // The grid's bottom at the range's low end, or its top at the high end (a centred
            // start too was measured to gain 0.1% RMSE for half again the time).
            for anchor in 0..<2 {
                let offset = anchor == 0 ? -lo : span - hi
                let start = Grid(scale: scale, offset: max(0, offset))
                let (error, refit) = snapAndRefit(x, n, start, top: top)
                consider(start, error)
                if let refit { consider(refit, gridError(x, n, refit, top: top)) }
            }
        }
        for _ in 0..<3 {
            guard let refit = snapAndRefit(x, n, best, top: top).refit else { break }
            let error = gridError(x, n, refit, top: top)
            guard error < bestError else { break }
            best = refit
            bestError = error
        }
        return best
    }

    /// One Q4_K (top 15) or Q5_K (top 31) block: d, dmin, 12 bytes of 6-bit scale/min codes, then
    /// (Q5_K) the fifth bits and the low nibbles.
    static func writeAffineBlock(_ x: UnsafePointer<Float>, _ p: UnsafeMutableRawPointer, top: Int) {
        var scales = SIMD8<Float>(), offsets = SIMD8<Float>()
        for j in 0..<8 {
            let grid = fitGrid(x + 32 * j, 32, top: top)
            scales[j] = grid.scale
            offsets[j] = grid.offset
        }
        let d = asHalf(scales.max() / 63), dmin = asHalf(offsets.max() / 63)
        var scaleCodes = SIMD8<Int32>(), offsetCodes = SIMD8<Int32>()
        var codedScales = SIMD8<Float>(), codedOffsets = SIMD8<Float>()
        for j in 0..<8 {
            let a = code(scales[j], unit: d, 0, 63), b = code(offsets[j], unit: dmin, 0, 63)
            var bestError = Float.infinity
            for ca in max(0, a - 1)...min(63, a + 1) {
                for cb in max(0, b - 1)...min(63, b + 1) {
                    let grid = Grid(scale: d * Float(ca), offset: dmin * Float(cb))
                    let error = gridError(x + 32 * j, 32, grid, top: top)
                    if error < bestError {
                        bestError = error
                        scaleCodes[j] = Int32(ca)
                        offsetCodes[j] = Int32(cb)
                        codedScales[j] = grid.scale
                        codedOffsets[j] = grid.offset
                    }
                }
            }
        }

        p.storeBytes(of: Float16(d).bitPattern, toByteOffset: 0, as: UInt16.self)
        p.storeBytes(of: Float16(dmin).bitPattern, toByteOffset: 2, as: UInt16.self)
        // Codes 0–3 fill the low 6 bits of bytes 0–3 (scale) and 4–7 (min); codes 4–7 put their
        // low nibbles in bytes 8–11 (scale low, min high) and their top 2 bits in the spare top
        // bits of bytes 0–3 (scale) and 4–7 (min).
        var packed = [UInt8](repeating: 0, count: 12)
        for j in 0..<8 {
            let s = UInt8(scaleCodes[j]), m = UInt8(offsetCodes[j])
            if j < 4 {
                packed[j] |= s
                packed[j + 4] |= m
            } else {
                packed[j + 4] = (s & 0xF) | (m & 0xF) << 4
                packed[j - 4] |= (s >> 4) << 6
                packed[j] |= (m >> 4) << 6
            }
        }
        for i in 0..<12 { p.storeBytes(of: packed[i], toByteOffset: 4 + i, as: UInt8.self) }

        // Value 32·j + l (sub-block j) has its low nibble in byte 32·(j/2) + l of the nibble area
        // (low nibble for even j, high for odd) and, in Q5_K, its fifth bit as bit j of qh[l].
        let fifthBits = top == 31
        let nibbles = fifthBits ? 48 : 16
        for i in 0..<(fifthBits ? 160 : 128) { p.storeBytes(of: UInt8(0), toByteOffset: 16 + i, as: UInt8.self) }
        for j in 0..<8 {
            let scale = codedScales[j], offset = codedOffsets[j]
            let inverse: Float = scale > 0 ? 1 / scale : 0
            for l in 0..<32 {
                let q = scale > 0 ? UInt8(snap((x[32 * j + l] + offset) * inverse, 0, top)) : 0
                let at = nibbles + 32 * (j / 2) + l
                let old = p.load(fromByteOffset: at, as: UInt8.self)
                p.storeBytes(of: old | (q & 0xF) << (4 * (j % 2)), toByteOffset: at, as: UInt8.self)
                if fifthBits {
                    let h = p.load(fromByteOffset: 16 + l, as: UInt8.self)
                    p.storeBytes(of: h | (q >> 4) << j, toByteOffset: 16 + l, as: UInt8.self)
                }
            }
        }
    }

    // MARK: Q6_K

    /// Squared error of `x[0..<n]` snapped to `scale·q`, q ∈ −32…31, and the least-squares
    /// scale for those levels (nil when all levels are 0).
    static func snapSymmetric(_ x: UnsafePointer<Float>, _ n: Int, scale: Float) -> (error: Float, refit: Float?) {
        var e: Float = 0, sumQQ: Float = 0, sumQX: Float = 0
        let inverse: Float = scale != 0 ? 1 / scale : 0
        for i in 0..<n {
            let q = scale != 0 ? Float(snap(x[i] * inverse, -32, 31)) : 0
            let r = scale * q - x[i]
            e += r * r
            sumQQ += q * q
            sumQX += q * x[i]
        }
        guard sumQQ > 0 else { return (e, nil) }
        let refit = sumQX / sumQQ
        return (e, refit.isFinite && refit != 0 ? refit : nil)
    }

    /// The scale with the lowest squared error found for `x[0..<n]` (see the file comment).
    static func fitSymmetric(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var peak: Float = 0
        for i in 0..<n where abs(x[i]) > abs(peak) { peak = x[i] }
        guard abs(peak) > negligible else { return 0 }
        var best: Float = 0
        var bestError = snapSymmetric(x, n, scale: 0).error
        // From the finest grid down, so an exact fit (a constant sub-block) keeps the peak at −32.
        for k in 0...16 {
            let scale = -peak / (34 - 0.5 * Float(k))
            let (error, refit) = snapSymmetric(x, n, scale: scale)
            if error < bestError {
                best = scale
                bestError = error
            }
            if let refit {
                let refitError = snapSymmetric(x, n, scale: refit).error
                if refitError < bestError {
                    best = refit
                    bestError = refitError
                }
            }
        }
        for _ in 0..<2 {
            guard let refit = snapSymmetric(x, n, scale: best).refit else { break }
            let error = snapSymmetric(x, n, scale: refit).error
            guard error < bestError else { break }
            best = refit
            bestError = error
        }
        return best
    }

    /// One Q6_K block: ql[128] (low nibbles), qh[64] (top 2 bits), 16 int8 scale codes, d.
    static func writeSymmetricBlock(_ x: UnsafePointer<Float>, _ p: UnsafeMutableRawPointer) {
        var scales = SIMD16<Float>()
        var largest: Float = 0
        for j in 0..<16 {
            scales[j] = fitSymmetric(x + 16 * j, 16)
            if abs(scales[j]) > abs(largest) { largest = scales[j] }
        }
        let d = asHalf(largest / -128)
        var steps = SIMD16<Float>()
        for j in 0..<16 {
            let c = code(scales[j], unit: d, -128, 127)
            var bestError = Float.infinity
            for candidate in max(-128, c - 1)...min(127, c + 1) {
                let error = snapSymmetric(x + 16 * j, 16, scale: d * Float(candidate)).error
                if error < bestError {
                    bestError = error
                    p.storeBytes(of: Int8(candidate), toByteOffset: 192 + j, as: Int8.self)
                    steps[j] = d * Float(candidate)
                }
            }
        }
        p.storeBytes(of: Float16(d).bitPattern, toByteOffset: 208, as: UInt16.self)

        // Value v = 128·h + 32·k + l (h 0–1, k 0–3, l 0–31), stored as q + 32 ∈ 0…63: low nibble
        // in ql[64·h + 32·(k % 2) + l] (low half for k < 2, high half otherwise), top two bits
        // at bit 2·k of qh[32·h + l]. Its scale is code v / 16.
        for i in 0..<192 { p.storeBytes(of: UInt8(0), toByteOffset: i, as: UInt8.self) }
        for v in 0..<256 {
            let step = steps[v / 16]
            let q = step != 0 ? snap(x[v] * (1 / step), -32, 31) : 0
            let u = UInt8(q + 32)
            let h = v / 128, k = (v % 128) / 32, l = v % 32
            let low = 64 * h + 32 * (k % 2) + l, high = 128 + 32 * h + l
            p.storeBytes(of: p.load(fromByteOffset: low, as: UInt8.self) | (u & 0xF) << (4 * (k / 2)), toByteOffset: low, as: UInt8.self)
            p.storeBytes(of: p.load(fromByteOffset: high, as: UInt8.self) | (u >> 4) << (2 * k), toByteOffset: high, as: UInt8.self)
        }
    }
}
