import CKernels
// GGML block-quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K): scalar reference
// dequantize, reference quantize (the 32-value formats by their one rounding rule; K-quants by premoe's own
// fitting in QuantizeKQuants.swift), and fast dot / matmul that compute straight
// from the blocks: each block of a weight row is widened in registers and multiplied with f32
// activations. Nothing is dequantized to a second f32 copy of the weights.
//
// Block layouts (ggml-common.h), all little-endian, `d`/`m`/`dmin` IEEE halves:
//   Q4_0 (32 values, 18 B): d, qs[16]; value j = (nibble - 8)·d, low nibbles of qs are values
//        0..15, high nibbles values 16..31.
//   Q4_1 (32 values, 20 B): d, m, qs[16]; value = nibble·d + m, same nibble order.
//   Q5_0 (32 values, 22 B): d, qh[4], qs[16]; code j = nibble j (Q4_0's order) + 16 · bit j of
//        the little-endian qh; value = (code - 16)·d.
//   Q5_1 (32 values, 24 B): d, m, qh[4], qs[16]; value = code·d + m.
//   Q8_0 (32 values, 34 B): d, qs[32] int8; value = q·d.
//   Q4_K (256 values, 144 B): d, dmin, scales[12] (8 six-bit scale/min pairs), qs[128].
//   Q5_K (256 values, 176 B): d, dmin, scales[12] (as Q4_K), qh[32] (fifth bits), qs[128].
//   Q6_K (256 values, 210 B): ql[128], qh[64], scales[16] int8, d.
//
// Summation order of `QuantizedKernels.dot` (the contract every matmul path follows, so results
// do not depend on threads or batch size): for each block b, a SIMD8 chain
// `s = q0·x0; s = fma(q1, x1, s); …` over the block's integer codes `q` (widened to Float) and
// the activations, then `acc = fma(s, d_b, acc)`; the block offsets (`m`, or `-8·d` for Q4_0, `-16·d`
// for Q5_0)
// are added as `off += m_b · Σx_b` with Σx_b the activations' block sum; result
// `hsum8(acc) + off`. K-quant blocks are dequantized to a 256-float stack buffer and dotted with
// one SIMD8 chain per block.

/// GGML block formats the kernels compute with.
public enum QuantizedFormat: String, Sendable, CaseIterable {
    case q4_0 = "Q4_0"
    case q4_1 = "Q4_1"
    case q8_0 = "Q8_0"
    case q4_K = "Q4_K"
    case q5_K = "Q5_K"
    case q6_K = "Q6_K"
    case q5_0 = "Q5_0"
    case q5_1 = "Q5_1"

    /// Values per block.
    public var blockSize: Int {
        switch self {
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: 32
        case .q4_K, .q5_K, .q6_K: 256
        }
    }

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .q4_0: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q8_0: 34
        case .q4_K: 144
        case .q5_K: 176
        case .q6_K: 210
        }
    }

    /// Whether this is a 256-value K-quant (dequantized per block by the kernels).
    public var isKQuant: Bool { blockSize == 256 }

    /// Bytes of a row of `count` values (`count` a multiple of `blockSize`).
    public func rowBytes(_ count: Int) -> Int { count / blockSize * blockBytes }
}

@inline(__always)
private func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

/// Six-bit scale and min `j` (0..<8) of a Q4_K block's 12 packed bytes (ggml's `get_scale_min_k4`).
@inline(__always)
func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (Float, Float) {
    func b(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
    if j < 4 { return (Float(b(j) & 63), Float(b(j + 4) & 63)) }
    let sc = (b(j + 4) & 0xF) | ((b(j - 4) >> 6) << 4)
    let m = (b(j + 4) >> 4) | ((b(j) >> 6) << 4)
    return (Float(sc), Float(m))
}

/// Plain scalar versions: the definition the fast kernels are tested against.
public enum QuantizedReference {
    /// Dequantizes `count` values (a multiple of the block size) from `blocks`.
    public static func dequantize(_ format: QuantizedFormat, _ blocks: UnsafeRawPointer, into out: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count % format.blockSize == 0, "\(count) values is not a whole number of \(format) blocks")
        for b in 0..<(count / format.blockSize) {
            dequantizeBlock(format, blocks + b * format.blockBytes, into: out + b * format.blockSize)
        }
    }

    /// Dequantizes one block (ggml's `dequantize_row_*`).
    public static func dequantizeBlock(_ format: QuantizedFormat, _ p: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>) {
        func u8(_ i: Int) -> UInt8 { p.load(fromByteOffset: i, as: UInt8.self) }
        func i8(_ i: Int) -> Int8 { p.load(fromByteOffset: i, as: Int8.self) }
        switch format {
        case .q4_0:
            let d = half(p, 0)
            for j in 0..<16 {
                y[j] = Float(Int(u8(2 + j) & 0xF) - 8) * d
                y[j + 16] = Float(Int(u8(2 + j) >> 4) - 8) * d
            }
        case .q4_1:
            let d = half(p, 0), m = half(p, 2)
            for j in 0..<16 {
                y[j] = Float(u8(4 + j) & 0xF) * d + m
                y[j + 16] = Float(u8(4 + j) >> 4) * d + m
            }
        case .q5_0, .q5_1:
            let hasMin = format == .q5_1
            let d = half(p, 0), m = hasMin ? half(p, 2) : 0
            let qh = p.loadUnaligned(fromByteOffset: hasMin ? 4 : 2, as: UInt32.self).littleEndian
            let qs = hasMin ? 8 : 6
            for j in 0..<16 {
                let c0 = Int(u8(qs + j) & 0xF) | Int((qh >> UInt32(j)) & 1) << 4
                let c1 = Int(u8(qs + j) >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
                if hasMin {
                    y[j] = Float(c0) * d + m
                    y[j + 16] = Float(c1) * d + m
                } else {
                    y[j] = Float(c0 - 16) * d
                    y[j + 16] = Float(c1 - 16) * d
                }
            }
        case .q8_0:
            let d = half(p, 0)
            for j in 0..<32 { y[j] = Float(i8(2 + j)) * d }
        case .q4_K, .q5_K:
            // Q5_K is Q4_K's scales and low nibbles (at byte 48 instead of 16) plus a fifth bit per
            // value in qh[32] at byte 16: bit 2k of qh[l] for value l of sub-block 2k, bit 2k+1 for 2k+1.
            let d = half(p, 0), dmin = half(p, 2)
            let scales = p + 4
            let fifthBits = format == .q5_K
            var q = fifthBits ? 48 : 16
            var out = 0
            var u1: UInt8 = 1, u2: UInt8 = 2
            for j in stride(from: 0, to: 8, by: 2) {
                let (sc1, m1) = scaleMinK4(j, scales)
                let (sc2, m2) = scaleMinK4(j + 1, scales)
                let d1 = d * sc1, mm1 = dmin * m1, d2 = d * sc2, mm2 = dmin * m2
                for l in 0..<32 {
                    let h = fifthBits ? u8(16 + l) : 0
                    y[out + l] = d1 * Float(Int(u8(q + l) & 0xF) + (h & u1 != 0 ? 16 : 0)) - mm1
                    y[out + 32 + l] = d2 * Float(Int(u8(q + l) >> 4) + (h & u2 != 0 ? 16 : 0)) - mm2
                }
                q += 32
                out += 64
                u1 <<= 2
                u2 <<= 2
            }
        case .q6_K:
            let d = half(p, 208)
            var ql = 0, qh = 128, sc = 192, out = 0
            for _ in 0..<2 {
                for l in 0..<32 {
                    let s = l / 16
                    let h = u8(qh + l)
                    let q1 = Int((u8(ql + l) & 0xF) | ((h >> 0) & 3) << 4) - 32
                    let q2 = Int((u8(ql + l + 32) & 0xF) | ((h >> 2) & 3) << 4) - 32
                    let q3 = Int((u8(ql + l) >> 4) | ((h >> 4) & 3) << 4) - 32
                    let q4 = Int((u8(ql + l + 32) >> 4) | ((h >> 6) & 3) << 4) - 32
                    y[out + l] = d * Float(i8(sc + s)) * Float(q1)
                    y[out + l + 32] = d * Float(i8(sc + s + 2)) * Float(q2)
                    y[out + l + 64] = d * Float(i8(sc + s + 4)) * Float(q3)
                    y[out + l + 96] = d * Float(i8(sc + s + 6)) * Float(q4)
                }
                out += 128
                ql += 64
                qh += 32
                sc += 8
            }
        }
    }

    /// Dot of a quantized row with `x`: dequantize, then a Double sum.
    public static func dot(_ format: QuantizedFormat, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        var w = [Float](repeating: 0, count: count)
        w.withUnsafeMutableBufferPointer { dequantize(format, row, into: $0.baseAddress!, count: count) }
        var s = 0.0
        for i in 0..<count { s += Double(w[i]) * Double(x[i]) }
        return Float(s)
    }

    /// Quantizes `count` values (a multiple of the block size). Q4_0/Q4_1/Q8_0 give the bytes ggml
    /// and gguf-py's `quants.quantize` give; K-quants go to `KQuantizer`, premoe's own fitting
    /// (different bytes, dequantized RMSE at or below ggml's reference quantizer's).
    public static func quantize(_ format: QuantizedFormat, _ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutableRawPointer) {
        if format.isKQuant { return KQuantizer.quantize(format, x, count: count, into: out) }
        precondition(count % 32 == 0, "\(count) values is not a whole number of blocks")
        func storeHalf(_ v: Float, _ p: UnsafeMutableRawPointer) { p.storeBytes(of: Float16(v).bitPattern, as: UInt16.self) }
        /// Q4_0/Q5_0: d = the block's value of largest magnitude / -levels, stored at `p`; returns 1/d (0 for d = 0).
        func symmetricScale(_ v: UnsafePointer<Float>, levels: Float, _ p: UnsafeMutableRawPointer) -> Float {
            var amax: Float = 0, maxValue: Float = 0
            for j in 0..<32 where abs(v[j]) > amax {
                amax = abs(v[j])
                maxValue = v[j]
            }
            let d = maxValue / -levels
            storeHalf(d, p)
            return d != 0 ? 1 / d : 0
        }
        /// Q4_1/Q5_1: d = (max - min) / steps and m = min, stored at `p` and `p + 2`; returns (min, 1/d).
        func rangeScale(_ v: UnsafePointer<Float>, steps: Float, _ p: UnsafeMutableRawPointer) -> (Float, Float) {
            var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
            for j in 0..<32 {
                lo = min(lo, v[j])
                hi = max(hi, v[j])
            }
            let d = (hi - lo) / steps
            storeHalf(d, p)
            storeHalf(lo, p + 2)
            return (lo, d != 0 ? 1 / d : 0)
        }
        for b in 0..<(count / 32) {
            let v = x + b * 32
            let p = out + b * format.blockBytes
            switch format {
            case .q8_0:
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(v[j])) }
                let d = amax / 127
                let id: Float = d != 0 ? 1 / d : 0
                storeHalf(d, p)
                for j in 0..<32 { p.storeBytes(of: Int8((v[j] * id).rounded(.toNearestOrAwayFromZero)), toByteOffset: 2 + j, as: Int8.self) }
            case .q4_0:
                let id = symmetricScale(v, levels: 8, p)
                for j in 0..<16 {
                    let q0 = min(15, Int8(truncatingIfNeeded: Int(v[j] * id + 8.5)))
                    let q1 = min(15, Int8(truncatingIfNeeded: Int(v[j + 16] * id + 8.5)))
                    p.storeBytes(of: UInt8(q0) | UInt8(q1) << 4, toByteOffset: 2 + j, as: UInt8.self)
                }
            case .q4_1:
                let (lo, id) = rangeScale(v, steps: 15, p)
                for j in 0..<16 {
                    let q0 = min(15, Int8(truncatingIfNeeded: Int((v[j] - lo) * id + 0.5)))
                    let q1 = min(15, Int8(truncatingIfNeeded: Int((v[j + 16] - lo) * id + 0.5)))
                    p.storeBytes(of: UInt8(q0) | UInt8(q1) << 4, toByteOffset: 4 + j, as: UInt8.self)
                }
            case .q5_0, .q5_1:
                // ggml's quantize_row_q5_0_ref / q5_1_ref: Q4_0's (Q4_1's) rule with 32 levels.
                var codes = [UInt8](repeating: 0, count: 32)
                if format == .q5_0 {
                    let id = symmetricScale(v, levels: 16, p)
                    for j in 0..<32 { codes[j] = UInt8(min(31, Int8(truncatingIfNeeded: Int(v[j] * id + 16.5)))) }
                } else {
                    let (lo, id) = rangeScale(v, steps: 31, p)
                    for j in 0..<32 { codes[j] = UInt8(truncatingIfNeeded: Int((v[j] - lo) * id + 0.5)) }
                }
                let qs = format == .q5_0 ? 6 : 8
                var qh: UInt32 = 0
                for j in 0..<16 {
                    p.storeBytes(of: (codes[j] & 0xF) | (codes[j + 16] & 0xF) << 4, toByteOffset: qs + j, as: UInt8.self)
                    qh |= UInt32((codes[j] & 0x10) >> 4) << UInt32(j) | UInt32((codes[j + 16] & 0x10) >> 4) << UInt32(j + 16)
                }
                p.storeBytes(of: qh.littleEndian, toByteOffset: qs - 4, as: UInt32.self)
            case .q4_K, .q5_K, .q6_K:
                preconditionFailure("unreachable: K-quants are quantized by KQuantizer")
            }
        }
    }

    /// `quantize` into a new byte array.
    public static func quantize(_ format: QuantizedFormat, _ values: [Float]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: format.rowBytes(values.count))
        values.withUnsafeBufferPointer { x in
            out.withUnsafeMutableBytes { quantize(format, x.baseAddress!, count: values.count, into: $0.baseAddress!) }
        }
        return out
    }
}

// MARK: - Fast kernels

/// Eight bytes zero-extended to UInt32 lanes (spelled lane by lane, as `loadBF16x8` does, so
/// LLVM emits one `vpmovzxbd`).
@inline(__always)
private func widen8(_ u: SIMD8<UInt8>) -> SIMD8<UInt32> {
    SIMD8<UInt32>(UInt32(u[0]), UInt32(u[1]), UInt32(u[2]), UInt32(u[3]),
                  UInt32(u[4]), UInt32(u[5]), UInt32(u[6]), UInt32(u[7]))
}

/// Eight int8 values at `p` as Float (exact): `vpmovsxbd`, +128, then `toFloat`.
@inline(__always)
private func signed8(_ p: UnsafeRawPointer) -> SIMD8<Float> {
    let u = p.loadUnaligned(as: SIMD8<Int8>.self)
    let w = SIMD8<Int32>(Int32(u[0]), Int32(u[1]), Int32(u[2]), Int32(u[3]),
                         Int32(u[4]), Int32(u[5]), Int32(u[6]), Int32(u[7])) &+ 128
    return toFloat(unsafeBitCast(w, to: SIMD8<UInt32>.self), minus: 128)
}

/// Small unsigned integers (< 2^23) to Float exactly: OR them into the mantissa of 2^23 and
/// subtract 2^23 (two vector ops, no int→float conversion instruction needed).
@inline(__always)
private func toFloat(_ v: SIMD8<UInt32>, minus bias: Float) -> SIMD8<Float> {
    unsafeBitCast(v | 0x4B00_0000, to: SIMD8<Float>.self) - SIMD8(repeating: 8_388_608 + bias)
}

/// The four SIMD8 vectors of integer codes of one 32-value block (as Float), in value order.
@inline(__always)
private func codes32(_ format: QuantizedFormat, _ block: UnsafeRawPointer) -> (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>) {
    switch format {
    case .q8_0:
        // int8 lanes sign-extended to Int32 and shifted by +128 into the unsigned range (32-bit lane
        // ops only: byte-vector arithmetic on SIMD32 was scalarized, measured 10x slower).
        return (signed8(block + 2), signed8(block + 10), signed8(block + 18), signed8(block + 26))
    case .q5_0, .q5_1:
        // The nibbles as for Q4_0, each lane OR'ed with its fifth bit (bit j of qh, as 16).
        let hasMin = format == .q5_1
        let raw = block.loadUnaligned(fromByteOffset: hasMin ? 8 : 6, as: SIMD16<UInt8>.self)
        let qh = SIMD8<UInt32>(repeating: block.loadUnaligned(fromByteOffset: hasMin ? 4 : 2, as: UInt32.self).littleEndian)
        let lane = SIMD8<UInt32>(0, 1, 2, 3, 4, 5, 6, 7)
        func fifth(_ first: UInt32) -> SIMD8<UInt32> { ((qh &>> (lane &+ first)) & 1) &<< 4 }
        let lo = raw & SIMD16(repeating: 0x0F)
        let hi = raw &>> 4
        return (toFloat(widen8(lo.lowHalf) | fifth(0), minus: 0), toFloat(widen8(lo.highHalf) | fifth(8), minus: 0),
                toFloat(widen8(hi.lowHalf) | fifth(16), minus: 0), toFloat(widen8(hi.highHalf) | fifth(24), minus: 0))
    default:
        let raw = block.loadUnaligned(fromByteOffset: format == .q4_1 ? 4 : 2, as: SIMD16<UInt8>.self)
        let lo = raw & SIMD16(repeating: 0x0F)
        let hi = raw &>> 4
        return (toFloat(widen8(lo.lowHalf), minus: 0), toFloat(widen8(lo.highHalf), minus: 0),
                toFloat(widen8(hi.lowHalf), minus: 0), toFloat(widen8(hi.highHalf), minus: 0))
    }
}

/// Scale and offset of a 32-value block: value = code·d + m.
@inline(__always)
private func scaleOffset(_ format: QuantizedFormat, _ block: UnsafeRawPointer) -> (Float, Float) {
    let d = half(block, 0)
    switch format {
    case .q4_0: return (d, -8 * d)
    case .q5_0: return (d, -16 * d)
    case .q4_1, .q5_1: return (d, half(block, 2))
    default: return (d, 0)
    }
}

/// Fast dot products and matmul on quantized rows.
public enum QuantizedKernels {
    /// Per-block sums of `x` (`count / 32` values), the Σx_b the block offsets multiply.
    @inline(__always)
    static func blockSums(_ x: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 32) {
            let p = x + b * 32
            let s = (load8(p) + load8(p + 8)) + (load8(p + 16) + load8(p + 24))
            out[b] = hsum8(s)
        }
    }

    /// `Σ w[i]·x[i]` for one quantized row of `count` values (a multiple of the block size).
    /// Follows the order in this file's header.
    public static func dot(_ format: QuantizedFormat, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        switch format {
        case .q4_K, .q5_K, .q6_K:
            return dotK(format, row, x, count: count)
        default:
            let sums = UnsafeMutablePointer<Float>.allocate(capacity: max(1, count / 32))
            defer { sums.deallocate() }
            blockSums(x, count: count, into: sums)
            var out: Float = 0
            dotRows(format, row, rowBytes: 0, rows: 1, x, sums, count: count, into: &out, stride: 1)
            return out
        }
    }

    /// One K-quant block as `QuantizedReference.dequantizeBlock` gives it: the AVX2 C version
    /// (same floats, bit for bit) where the CPU has it.
    @inline(__always)
    static func dequantizeKBlock(_ format: QuantizedFormat, _ block: UnsafeRawPointer, into w: UnsafeMutablePointer<Float>) {
        if !dequantizeKBlockAVX2(format, block, into: w) { QuantizedReference.dequantizeBlock(format, block, into: w) }
    }

    /// The AVX2 C dequantizer alone: false (nothing written) where the CPU lacks AVX2.
    @inline(__always)
    static func dequantizeKBlockAVX2(_ format: QuantizedFormat, _ block: UnsafeRawPointer, into w: UnsafeMutablePointer<Float>) -> Bool {
        pm_dequantize_k_block(format.cFormat, block, w) != 0
    }

    /// K-quants: each 256-value block is dequantized into a stack buffer, then one SIMD8 chain.
    static func dotK(_ format: QuantizedFormat, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 256) { buffer in
            let w = buffer.baseAddress!
            var acc = SIMD8<Float>()
            for b in 0..<(count / 256) {
                dequantizeKBlock(format, row + b * format.blockBytes, into: w)
                let xb = x + b * 256
                var s = load8(w) * load8(xb)
                var i = 8
                while i < 256 {
                    s = s.addingProduct(load8(w + i), load8(xb + i))
                    i &+= 8
                }
                acc += s
            }
            return hsum8(acc)
        }
    }

    /// `dotK` of one K-quant row with `tokens` activation rows (`cols` apart), each block
    /// dequantized once for all of them (prefill); token t's result to `out[t * stride]`, the
    /// same operations per token as `dotK`, so the same bits.
    static func dotKRow(_ format: QuantizedFormat, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, tokens: Int, cols: Int,
                        into out: UnsafeMutablePointer<Float>, stride: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 256) { buffer in
            let w = buffer.baseAddress!
            let acc = ThreadScratch.floats(tokens * 8)
            acc.initialize(repeating: 0, count: tokens * 8)
            for b in 0..<(cols / 256) {
                dequantizeKBlock(format, row + b * format.blockBytes, into: w)
                for t in 0..<tokens {
                    let xb = x + (t &* cols &+ b &* 256)
                    var s = load8(w) * load8(xb)
                    var i = 8
                    while i < 256 {
                        s = s.addingProduct(load8(w + i), load8(xb + i))
                        i &+= 8
                    }
                    store8(load8(acc + t &* 8) + s, acc + t &* 8)
                }
            }
            for t in 0..<tokens { out[t &* stride] = hsum8(load8(acc + t &* 8)) }
        }
    }

    /// Dots `rows` consecutive quantized rows (32-value formats) with one activation vector,
    /// writing `out[r * stride]`.
    @inline(__always)
    static func dotRows(
        _ format: QuantizedFormat, _ row0: UnsafeRawPointer, rowBytes: Int, rows: Int, _ x: UnsafePointer<Float>,
        _ sums: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>, stride: Int
    ) {
        let blocks = count / 32
        let bb = format.blockBytes
        for r in 0..<rows {
            let row = row0 + r &* rowBytes
            var acc = SIMD8<Float>()
            var off: Float = 0
            for b in 0..<blocks {
                let block = row + b &* bb
                let (q0, q1, q2, q3) = codes32(format, block)
                let (d, m) = scaleOffset(format, block)
                let xb = x + b &* 32
                var s = q0 * load8(xb)
                s = s.addingProduct(q1, load8(xb + 8))
                s = s.addingProduct(q2, load8(xb + 16))
                s = s.addingProduct(q3, load8(xb + 24))
                acc = acc.addingProduct(s, SIMD8(repeating: d))
                off = off.addingProduct(m, sums[b])
            }
            out[r &* stride] = hsum8(acc) + off
        }
    }

    /// Linear layer with a quantized weight: `y[t, o] = Σ_i x[t, i] · W[o, i]`.
    /// - Parameters:
    ///   - x: activations `[tokens, cols]`, row-major.
    ///   - weight: `rows` quantized rows of `cols` values each (`cols` a multiple of the block
    ///     size), `format.rowBytes(cols)` bytes per row.
    ///   - y: output `[tokens, rows]`, overwritten.
    ///   - pool: threads; work is split by output rows.
    ///
    /// Each output element is `dot(format, W[o], x[t])`, so results are bit-identical for any
    /// thread count and batch size.
    public static func matmul(
        _ x: UnsafePointer<Float>, tokens: Int, weight: UnsafeRawPointer, format: QuantizedFormat, rows: Int, cols: Int,
        into y: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        precondition(cols % format.blockSize == 0, "row length \(cols) is not a whole number of \(format) blocks")
        guard tokens > 0, rows > 0 else { return }
        let rowBytes = format.rowBytes(cols)
        let isK = format.isKQuant
        let blocks = cols / 32
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: max(1, tokens * blocks))
        defer { sums.deallocate() }
        if !isK {
            for t in 0..<tokens { blockSums(x + t * cols, count: cols, into: sums + t * blocks) }
        }
        // Rows of ~16K values per chunk at least: below that the hand-off costs more than it saves.
        let minChunk = max(1, 16_384 / max(1, cols * tokens))
        let sumsPointer = UnsafePointer(sums)
        if InstructionSet.avx2.isSupported, cols <= Int(Int32.max), tokens <= Int(Int32.max), rows <= Int(Int32.max) {
            // The C kernels (AVX2: four row streams in decode, four tokens per unpacked block in
            // prefill), bit-identical to `dotRows` and `dotK`.
            pool.parallelFor(rows, minChunk: minChunk) { range in
                let done = pm_matmul_exact(format.cFormat, weight + range.lowerBound &* rowBytes, rowBytes, Int32(range.count), x,
                                           Int32(tokens), Int32(cols), sumsPointer, y + range.lowerBound, rows)
                precondition(done != 0, "the exact C kernel refused \(format) \(range.count)x\(cols), \(tokens) tokens")
            }
            return
        }
        if isK && tokens > 1 {
            pool.parallelFor(rows, minChunk: minChunk) { range in
                for r in range { dotKRow(format, weight + r &* rowBytes, x, tokens: tokens, cols: cols, into: y + r, stride: rows) }
            }
            return
        }
        pool.parallelFor(rows, minChunk: minChunk) { range in
            // Rows in the outer loop: a quantized row (a few hundred bytes) stays in L1 while
            // every token reads it.
            for r in range {
                let row = weight + r &* rowBytes
                for t in 0..<tokens {
                    if isK {
                        y[t &* rows &+ r] = dotK(format, row, x + t &* cols, count: cols)
                    } else {
                        dotRows(format, row, rowBytes: rowBytes, rows: 1, x + t &* cols, sumsPointer + t &* blocks,
                                count: cols, into: y + (t &* rows &+ r), stride: 1)
                    }
                }
            }
        }
    }

    /// Dequantizes `count` values starting at value `offset` (both multiples of the block size)
    /// into f32: embedding rows and small tensors.
    public static func dequantize(_ format: QuantizedFormat, _ blocks: UnsafeRawPointer, offset: Int = 0,
                                  into out: UnsafeMutablePointer<Float>, count: Int) {
        precondition(offset % format.blockSize == 0 && count % format.blockSize == 0,
                     "\(format): offset \(offset) and count \(count) must be whole blocks")
        let base = blocks + offset / format.blockSize * format.blockBytes
        switch format {
        case .q4_K, .q5_K, .q6_K:
            QuantizedReference.dequantize(format, base, into: out, count: count)
        default:
            for b in 0..<(count / 32) {
                let block = base + b * format.blockBytes
                let (q0, q1, q2, q3) = codes32(format, block)
                let (d, m) = scaleOffset(format, block)
                let dv = SIMD8<Float>(repeating: d), mv = SIMD8<Float>(repeating: m)
                let o = out + b * 32
                store8(mv.addingProduct(q0, dv), o)
                store8(mv.addingProduct(q1, dv), o + 8)
                store8(mv.addingProduct(q2, dv), o + 16)
                store8(mv.addingProduct(q3, dv), o + 24)
            }
        }
    }
}
