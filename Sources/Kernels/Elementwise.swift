import Foundation

// SIMD versions of the row-wise and element-wise kernels. Public entry points are in
// Kernels.swift; the scalar specification is in ScalarReference.swift.

enum FastElementwise {
    static func convertToFloat(_ tensor: Tensor, offset: Int, into out: UnsafeMutablePointer<Float>, count: Int) {
        switch tensor.dtype {
        case .float32:
            out.update(from: tensor.data.assumingMemoryBound(to: Float.self) + offset, count: count)
        case .float16:
            FastMatmul.widenRow(F16Row.self, tensor.data + offset * 2, into: out, count)
        case .bfloat16:
            FastMatmul.widenRow(BF16Row.self, tensor.data + offset * 2, into: out, count)
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K:
            QuantizedKernels.dequantize(tensor.dtype.quantizedFormat!, tensor.data, offset: offset, into: out, count: count)
        }
    }

    /// Canonical-order dot product (see SIMDSupport.swift); equals a matmul element bit for bit.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i &+ 8 <= count {
            acc = acc.addingProduct(load8(a + i), load8(b + i))
            i &+= 8
        }
        var s = hsum8(acc)
        while i < count {
            s = s.addingProduct(a[i], b[i])
            i &+= 1
        }
        return s
    }

    static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rows: Int, dim: Int, eps: Float,
        into out: UnsafeMutablePointer<Float>
    ) {
        for r in 0..<rows {
            let xr = x + r &* dim
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
            var i = 0
            while i &+ 16 <= dim {
                let u = load8(xr + i), v = load8(xr + (i &+ 8))
                a0 = a0.addingProduct(u, u)
                a1 = a1.addingProduct(v, v)
                i &+= 16
            }
            if i &+ 8 <= dim {
                let u = load8(xr + i)
                a0 = a0.addingProduct(u, u)
                i &+= 8
            }
            var sumSquares = hsum8(a0 + a1)
            while i < dim {
                sumSquares = sumSquares.addingProduct(xr[i], xr[i])
                i &+= 1
            }
            let inv = 1 / (sumSquares / Float(dim) + eps).squareRoot()
            let o = out + r &* dim
            let invV = SIMD8<Float>(repeating: inv)
            i = 0
            // Same operations per element as the reference: weight · (x · inv).
            while i &+ 8 <= dim {
                store8(load8(weight + i) * (load8(xr + i) * invV), o + i)
                i &+= 8
            }
            while i < dim {
                o[i] = weight[i] * (xr[i] * inv)
                i &+= 1
            }
        }
    }

    static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        var maxValue = -Float.infinity
        var i = 0
        if count >= 8 {
            var m = SIMD8<Float>(repeating: -.infinity)
            while i &+ 8 <= count {
                let v = load8(x + i)
                m.replace(with: v, where: v .> m)
                i &+= 8
            }
            maxValue = hmax8(m)
        }
        while i < count {
            if x[i] > maxValue { maxValue = x[i] }
            i &+= 1
        }
        let mv = SIMD8<Float>(repeating: maxValue)
        var acc = SIMD8<Float>()
        i = 0
        while i &+ 8 <= count {
            let e = fastExp(load8(x + i) - mv)
            store8(e, x + i)
            acc += e
            i &+= 8
        }
        var sum = hsum8(acc)
        if i < count {
            // Tail through one padded vector so it uses the same exp.
            var t = SIMD8<Float>(repeating: -.infinity)
            for j in 0..<(count &- i) { t[j] = x[i &+ j] }
            let e = fastExp(t - mv)
            for j in 0..<(count &- i) {
                x[i &+ j] = e[j]
                sum += e[j]
            }
        }
        let inv = 1 / sum
        let invV = SIMD8<Float>(repeating: inv)
        i = 0
        while i &+ 8 <= count {
            store8(load8(x + i) * invV, x + i)
            i &+= 8
        }
        while i < count {
            x[i] *= inv
            i &+= 1
        }
    }

    static func siluMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let one = SIMD8<Float>(repeating: 1)
        while i &+ 8 <= count {
            let g = load8(gate + i)
            store8(g / (one + fastExp(-g)) * load8(up + i), out + i)
            i &+= 8
        }
        if i < count {
            var g = SIMD8<Float>(), u = SIMD8<Float>()
            for j in 0..<(count &- i) { g[j] = gate[i &+ j]; u[j] = up[i &+ j] }
            let r = g / (one + fastExp(-g)) * u
            for j in 0..<(count &- i) { out[i &+ j] = r[j] }
        }
    }

    static func exponential(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i &+ 8 <= count {
            store8(fastExp(load8(x + i)), out + i)
            i &+= 8
        }
        while i < count {
            out[i] = fastExp1(x[i])
            i &+= 1
        }
    }

    static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        let av = SIMD8<Float>(repeating: a)
        var i = 0
        // Same rounding as the reference `y += a * x` (a product, then a sum; no FMA).
        while i &+ 8 <= count {
            store8(load8(y + i) + av * load8(x + i), y + i)
            i &+= 8
        }
        while i < count {
            y[i] += a * x[i]
            i &+= 1
        }
    }

    static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i &+ 8 <= count {
            store8(load8(a + i) + load8(b + i), out + i)
            i &+= 8
        }
        while i < count {
            out[i] = a[i] + b[i]
            i &+= 1
        }
    }

    static func scale(_ x: UnsafeMutablePointer<Float>, by factor: Float, count: Int) {
        let f = SIMD8<Float>(repeating: factor)
        var i = 0
        while i &+ 8 <= count {
            store8(load8(x + i) * f, x + i)
            i &+= 8
        }
        while i < count {
            x[i] *= factor
            i &+= 1
        }
    }

    /// Bit-identical to `ScalarReference.applyRoPE`: the same cos/sin (Foundation, Float) and the
    /// same products and sums per element, only vectorised over the pairs of a head.
    static func applyRoPE(
        _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, rotaryDim: Int,
        positions: UnsafePointer<Int>, invFreq: UnsafePointer<Float>, attentionScaling: Float, style: RoPEStyle
    ) {
        let half = rotaryDim / 2
        guard half > 0, tokens > 0, heads > 0 else { return }
        // Per token: cos and sin for each pair, laid out to match the style's pair positions.
        let table = UnsafeMutablePointer<Float>.allocate(capacity: 2 * rotaryDim)
        defer { table.deallocate() }
        let cosT = table, sinT = table + rotaryDim
        for t in 0..<tokens {
            let position = Float(positions[t])
            for i in 0..<half {
                let angle = position * invFreq[i]
                let c = cos(angle) * attentionScaling
                let s = sin(angle) * attentionScaling
                switch style {
                case .halfSplit:
                    cosT[i] = c; sinT[i] = s
                case .interleaved:
                    // even lane: x0·c + x1·(-s) == x0·c - x1·s exactly; odd lane: x1·c + x0·s.
                    cosT[2 &* i] = c; cosT[2 &* i &+ 1] = c
                    sinT[2 &* i] = -s; sinT[2 &* i &+ 1] = s
                }
            }
            for h in 0..<heads {
                let base = x + (t &* heads &+ h) &* headDim
                switch style {
                case .halfSplit:
                    var i = 0
                    while i &+ 8 <= half {
                        let x0 = load8(base + i), x1 = load8(base + (half &+ i))
                        let c = load8(cosT + i), s = load8(sinT + i)
                        store8(x0 * c - x1 * s, base + i)
                        store8(x1 * c + x0 * s, base + (half &+ i))
                        i &+= 8
                    }
                    while i < half {
                        let x0 = base[i], x1 = base[half &+ i]
                        let c = cosT[i], s = sinT[i]
                        base[i] = x0 * c - x1 * s
                        base[half &+ i] = x1 * c + x0 * s
                        i &+= 1
                    }
                case .interleaved:
                    var i = 0
                    let pairsEnd = 2 &* half
                    while i &+ 8 <= pairsEnd {
                        let v = load8(base + i)
                        let sw = SIMD8(v[1], v[0], v[3], v[2], v[5], v[4], v[7], v[6])
                        store8(v * load8(cosT + i) + sw * load8(sinT + i), base + i)
                        i &+= 8
                    }
                    while i < pairsEnd {
                        let x0 = base[i], x1 = base[i &+ 1]
                        let c = cosT[i], s = sinT[i &+ 1]
                        base[i] = x0 * c - x1 * s
                        base[i &+ 1] = x1 * c + x0 * s
                        i &+= 2
                    }
                }
            }
        }
    }
}
