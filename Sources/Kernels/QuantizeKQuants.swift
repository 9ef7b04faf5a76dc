// K-quant quantizers (Q4_K, Q5_K, Q6_K): ports of ggml-quants.c's `quantize_row_{q4_K,q5_K,q6_K}_ref`
// with their helpers `make_qkx2_quants`, `make_qx_quants` and `nearest_int`. These are the paths
// `llama-quantize` takes when no importance matrix is given (`quantize_q4_K(…, quant_weights: NULL)`
// calls the `_ref` function), so the blocks written here are the ones llama.cpp writes, up to the
// order of floating-point operations its compiler picks.

/// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below this is all zeros.
private let groupMaxEpsilon: Float = 1e-15

/// Round to nearest with ties to even, by adding 1.5·2^23 (ggml's `nearest_int`; valid for
/// |x| ≤ 4194303, which the callers guarantee by construction).
@inline(__always)
private func nearestInt(_ x: Float) -> Int {
    let bits = (x + 12_582_912).bitPattern
    return Int(bits & 0x007F_FFFF) - 0x0040_0000
}

@inline(__always)
private func storeHalf(_ v: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
    p.storeBytes(of: Float16(v).bitPattern, toByteOffset: offset, as: UInt16.self)
}

@inline(__always)
private func loadHalf(_ p: UnsafeMutableRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: p.load(fromByteOffset: offset, as: UInt16.self)))
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
            let v = x + b * 256
            let p = out + b * format.blockBytes
            switch format {
            case .q4_K: quantizeQ45K(v, p, nmax: 15)
            case .q5_K: quantizeQ45K(v, p, nmax: 31)
            default: quantizeQ6K(v, p)
            }
        }
    }

    /// One Q4_K (nmax 15) or Q5_K (nmax 31) block: 8 sub-blocks of 32 with a 6-bit scale and min each.
    static func quantizeQ45K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, nmax: Int) {
        var levels = [UInt8](repeating: 0, count: 256)
        var scales = [Float](repeating: 0, count: 8)
        var mins = [Float](repeating: 0, count: 8)
        var weights = [Float](repeating: 0, count: 32)
        var aux = [UInt8](repeating: 0, count: 32)
        var maxScale: Float = 0, maxMin: Float = 0
        // ggml's parameters: Q4_K searches rmin −1 in 20 steps, Q5_K rmin −0.5 in 15 steps.
        let (rmin, nstep): (Float, Int) = nmax == 15 ? (-1, 20) : (-0.5, 15)
        for j in 0..<8 {
            let xs = x + 32 * j
            var sumX2: Float = 0
            for l in 0..<32 { sumX2 += xs[l] * xs[l] }
            let avX = (sumX2 / 32).squareRoot()
            for l in 0..<32 { weights[l] = avX + abs(xs[l]) }
            let (scale, min) = levels.withUnsafeMutableBufferPointer { L in
                makeQKX2(32, nmax, xs, weights, L.baseAddress! + 32 * j, aux: &aux, rmin: rmin, rdelta: 0.1, nstep: nstep)
            }
            scales[j] = scale
            mins[j] = min
            if scale > maxScale { maxScale = scale }
            if min > maxMin { maxMin = min }
        }
        let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
        let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
        let sc = y + 4
        for i in 0..<12 { sc.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
        func byte(_ i: Int) -> UInt8 { sc.load(fromByteOffset: i, as: UInt8.self) }
        func set(_ i: Int, _ v: UInt8) { sc.storeBytes(of: v, toByteOffset: i, as: UInt8.self) }
        for j in 0..<8 {
            // ggml stores nearest_int into a uint8_t before MIN(63, ·): keep the truncation.
            let ls = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * scales[j])))
            let lm = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * mins[j])))
            if j < 4 {
                set(j, ls)
                set(j + 4, lm)
            } else {
                set(j + 4, (ls & 0xF) | ((lm & 0xF) << 4))
                set(j - 4, byte(j - 4) | ((ls >> 4) << 6))
                set(j, byte(j) | ((lm >> 4) << 6))
            }
        }
        storeHalf(maxScale / 63, y, 0)
        storeHalf(maxMin / 63, y, 2)
        let d0 = loadHalf(y, 0), dmin0 = loadHalf(y, 2)
        for j in 0..<8 {
            let (s, m) = scaleMinK4(j, UnsafeRawPointer(sc))
            let d = d0 * s
            if d == 0 { continue }
            let dm = dmin0 * m
            for ii in 0..<32 {
                let l = nearestInt((x[32 * j + ii] + dm) / d)
                levels[32 * j + ii] = UInt8(Swift.max(0, Swift.min(nmax, l)))
            }
        }
        if nmax == 15 {
            let q = y + 16
            for (k, j) in stride(from: 0, to: 256, by: 64).enumerated() {
                for l in 0..<32 {
                    q.storeBytes(of: levels[j + l] | (levels[j + l + 32] << 4), toByteOffset: 32 * k + l, as: UInt8.self)
                }
            }
        } else {
            let qh = y + 16, ql = y + 48
            for i in 0..<32 { qh.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
            var m1: UInt8 = 1, m2: UInt8 = 2
            for (k, n) in stride(from: 0, to: 256, by: 64).enumerated() {
                for j in 0..<32 {
                    var l1 = levels[n + j], l2 = levels[n + j + 32]
                    var h = qh.load(fromByteOffset: j, as: UInt8.self)
                    if l1 > 15 { l1 -= 16; h |= m1 }
                    if l2 > 15 { l2 -= 16; h |= m2 }
                    qh.storeBytes(of: h, toByteOffset: j, as: UInt8.self)
                    ql.storeBytes(of: l1 | (l2 << 4), toByteOffset: 32 * k + j, as: UInt8.self)
                }
                m1 <<= 2
                m2 <<= 2
            }
        }
    }

    /// One Q6_K block: 16 sub-blocks of 16 with an int8 scale each.
    static func quantizeQ6K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
        var levels = [Int8](repeating: 0, count: 256)
        var scales = [Float](repeating: 0, count: 16)
        var maxScale: Float = 0, maxAbsScale: Float = 0
        levels.withUnsafeMutableBufferPointer { L in
            for ib in 0..<16 {
                let scale = makeQX(16, 32, x + 16 * ib, L.baseAddress! + 16 * ib)
                scales[ib] = scale
                if abs(scale) > maxAbsScale {
                    maxAbsScale = abs(scale)
                    maxScale = scale
                }
            }
        }
        if maxAbsScale < groupMaxEpsilon {
            y.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
            return
        }
        let iscale = -128 / maxScale
        storeHalf(1 / iscale, y, 208)
        let sc = y + 192
        for ib in 0..<16 {
            sc.storeBytes(of: Int8(truncatingIfNeeded: Swift.min(127, nearestInt(iscale * scales[ib]))), toByteOffset: ib, as: Int8.self)
        }
        let d0 = loadHalf(y, 208)
        for j in 0..<16 {
            let d = d0 * Float(sc.load(fromByteOffset: j, as: Int8.self))
            if d == 0 { continue }
            for ii in 0..<16 {
                let l = nearestInt(x[16 * j + ii] / d)
                levels[16 * j + ii] = Int8(Swift.max(-32, Swift.min(31, l)) + 32)
            }
        }
        let ql = y, qh = y + 128
        for (k, j) in stride(from: 0, to: 256, by: 128).enumerated() {
            for l in 0..<32 {
                let L = { (i: Int) in UInt8(bitPattern: levels[j + l + i]) }
                ql.storeBytes(of: (L(0) & 0xF) | ((L(64) & 0xF) << 4), toByteOffset: 64 * k + l, as: UInt8.self)
                ql.storeBytes(of: (L(32) & 0xF) | ((L(96) & 0xF) << 4), toByteOffset: 64 * k + l + 32, as: UInt8.self)
                let h = (L(0) >> 4) | ((L(32) >> 4) << 2) | ((L(64) >> 4) << 4) | ((L(96) >> 4) << 6)
                qh.storeBytes(of: h, toByteOffset: 32 * k + l, as: UInt8.self)
            }
        }
    }

    /// ggml's `make_qkx2_quants`: levels 0…nmax with a scale and a (non-positive) min, chosen
    /// by a weighted least-squares search over `nstep` candidate scales. Returns (scale, −min).
    /// `aux` (≥ n entries) is scratch for the candidate levels.
    static func makeQKX2(
        _ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ weights: [Float], _ L: UnsafeMutablePointer<UInt8>,
        aux: inout [UInt8], rmin: Float, rdelta: Float, nstep: Int
    ) -> (Float, Float) {
        var minV = x[0], maxV = x[0]
        var sumW = weights[0]
        var sumX = sumW * x[0]
        for i in 1..<n {
            if x[i] < minV { minV = x[i] }
            if x[i] > maxV { maxV = x[i] }
            sumW += weights[i]
            sumX += weights[i] * x[i]
        }
        if minV > 0 { minV = 0 }
        if maxV == minV {
            for i in 0..<n { L[i] = 0 }
            return (0, -minV)
        }
        var iscale = Float(nmax) / (maxV - minV)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = nearestInt(iscale * (x[i] - minV))
            L[i] = UInt8(Swift.max(0, Swift.min(nmax, l)))
            let diff = scale * Float(L[i]) + minV - x[i]
            bestError += weights[i] * (diff * diff)
        }
        for step in 0...nstep {
            iscale = (rmin + rdelta * Float(step) + Float(nmax)) / (maxV - minV)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = Swift.max(0, Swift.min(nmax, nearestInt(iscale * (x[i] - minV))))
                aux[i] = UInt8(l)
                let w = weights[i], fl = Float(l)
                sumL += w * fl
                sumL2 += w * fl * fl
                sumXL += w * fl * x[i]
            }
            let D = sumW * sumL2 - sumL * sumL
            guard D > 0 else { continue }
            var thisScale = (sumW * sumXL - sumX * sumL) / D
            var thisMin = (sumL2 * sumX - sumL * sumXL) / D
            if thisMin > 0 {
                thisMin = 0
                thisScale = sumXL / sumL2
            }
            var error: Float = 0
            for i in 0..<n {
                let diff = thisScale * Float(aux[i]) + thisMin - x[i]
                error += weights[i] * (diff * diff)
            }
            if error < bestError {
                for i in 0..<n { L[i] = aux[i] }
                bestError = error
                scale = thisScale
                minV = thisMin
            }
        }
        return (scale, -minV)
    }

    /// ggml's `make_qx_quants` with `rmse_type` 1 (weights x²) and no importance weights:
    /// symmetric levels −nmax…nmax−1 stored as 0…2·nmax−1, scale refined over 18 candidates.
    static func makeQX(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>) -> Float {
        var maxV: Float = 0, amax: Float = 0
        for i in 0..<n where abs(x[i]) > amax {
            amax = abs(x[i])
            maxV = x[i]
        }
        if amax < groupMaxEpsilon {
            for i in 0..<n { L[i] = 0 }
            return 0
        }
        let fmax = Float(nmax)
        var iscale = -fmax / maxV
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = Swift.max(-nmax, Swift.min(nmax - 1, nearestInt(iscale * x[i])))
            L[i] = Int8(l + nmax)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for step in -9...9 where step != 0 {
            iscale = -(fmax + 0.1 * Float(step)) / maxV
            sumLX = 0
            sumL2 = 0
            for i in 0..<n {
                let l = Swift.max(-nmax, Swift.min(nmax - 1, nearestInt(iscale * x[i])))
                let w = x[i] * x[i], fl = Float(l)
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { L[i] = Int8(nmax + Swift.max(-nmax, Swift.min(nmax - 1, nearestInt(iscale * x[i])))) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }
}
