import Foundation

/// Plain scalar versions of every kernel: the specification the SIMD paths are tested against,
/// and a fallback. Kept simple on purpose; speed does not matter here.
public enum ScalarReference {
    /// See `convertToFloat(_:offset:into:count:)`: one element at a time.
    public static func convertToFloat(_ tensor: Tensor, offset: Int = 0, into out: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { out[i] = tensor.scalar(at: offset + i) }
    }

    /// See `matmul(_:tokens:weight:into:pool:)`.
    public static func matmul(_ x: UnsafePointer<Float>, tokens: Int, weight: Tensor, into y: UnsafeMutablePointer<Float>) {
        precondition(weight.shape.count == 2, "matmul weight must be 2-D, got \(weight.shape)")
        let outFeatures = weight.shape[0]
        let inFeatures = weight.shape[1]
        var row = [Float](repeating: 0, count: inFeatures)
        row.withUnsafeMutableBufferPointer { row in
            for o in 0..<outFeatures {
                Self.convertToFloat(weight, offset: o * inFeatures, into: row.baseAddress!, count: inFeatures)
                for t in 0..<tokens {
                    var sum: Float = 0
                    let xt = x + t * inFeatures
                    for i in 0..<inFeatures { sum += xt[i] * row[i] }
                    y[t * outFeatures + o] = sum
                }
            }
        }
    }

    /// See `rmsNorm(_:weight:rows:dim:eps:into:)`.
    public static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rows: Int, dim: Int, eps: Float,
        into out: UnsafeMutablePointer<Float>
    ) {
        for r in 0..<rows {
            let xr = x + r * dim
            var sumSquares: Float = 0
            for i in 0..<dim { sumSquares += xr[i] * xr[i] }
            let inv = 1 / (sumSquares / Float(dim) + eps).squareRoot()
            let outRow = out + r * dim
            for i in 0..<dim { outRow[i] = weight[i] * (xr[i] * inv) }
        }
    }

    /// See `applyRoPE(_:tokens:heads:headDim:rotaryDim:positions:invFreq:attentionScaling:style:)`.
    public static func applyRoPE(
        _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, headDim: Int, rotaryDim: Int,
        positions: UnsafePointer<Int>, invFreq: UnsafePointer<Float>, attentionScaling: Float, style: RoPEStyle
    ) {
        let half = rotaryDim / 2
        for t in 0..<tokens {
            let position = Float(positions[t])
            for i in 0..<half {
                // Float product, as the reference computes `position * inv_freq` in float32.
                let angle = position * invFreq[i]
                let c = cos(angle) * attentionScaling
                let s = sin(angle) * attentionScaling
                for h in 0..<heads {
                    let base = x + (t * heads + h) * headDim
                    let (a, b) = style == .halfSplit ? (i, i + half) : (2 * i, 2 * i + 1)
                    let x0 = base[a]
                    let x1 = base[b]
                    base[a] = x0 * c - x1 * s
                    base[b] = x1 * c + x0 * s
                }
            }
        }
    }

    /// See `softmax(_:count:)`.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        var maxValue = -Float.infinity
        for i in 0..<count { maxValue = max(maxValue, x[i]) }
        var sum: Float = 0
        for i in 0..<count {
            x[i] = exp(x[i] - maxValue)
            sum += x[i]
        }
        let inv = 1 / sum
        for i in 0..<count { x[i] *= inv }
    }

    /// See `siluMul(_:_:into:count:)`.
    public static func siluMul(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let g = gate[i]
            out[i] = g / (1 + exp(-g)) * up[i]
        }
    }

    /// See `topK(_:count:k:)`.
    public static func topK(_ values: UnsafePointer<Float>, count: Int, k: Int) -> [Int] {
        // a ranks before b: larger value first; NaN last; ties to the lower index.
        func before(_ a: Int, _ b: Int) -> Bool {
            let va = values[a]
            let vb = values[b]
            if va.isNaN != vb.isNaN { return vb.isNaN }
            if !va.isNaN && va != vb { return va > vb }
            return a < b
        }
        var chosen: [Int] = []
        chosen.reserveCapacity(k)
        for i in 0..<count {
            if chosen.count < k {
                chosen.append(i)
                var j = chosen.count - 1
                while j > 0 && before(chosen[j], chosen[j - 1]) {
                    chosen.swapAt(j, j - 1)
                    j -= 1
                }
            } else if k > 0 && before(i, chosen[k - 1]) {
                chosen[k - 1] = i
                var j = k - 1
                while j > 0 && before(chosen[j], chosen[j - 1]) {
                    chosen.swapAt(j, j - 1)
                    j -= 1
                }
            }
        }
        return chosen
    }

    /// See `attention(q:queries:heads:kvHeads:headDim:valueDim:keys:keyStride:values:valueStride:start:scale:window:sinks:into:pool:)`.
    /// The window is applied as transformers does, as a −∞ mask on every earlier position, and a
    /// sink as one more score after the positions.
    public static func attention(
        q: UnsafePointer<Float>, queries: Int, heads: Int, kvHeads: Int, headDim: Int, valueDim: Int,
        keys: UnsafePointer<Float>, keyStride: Int, values: UnsafePointer<Float>, valueStride: Int,
        start: Int, scale: Float, window: Int = 0, sinks: UnsafePointer<Float>? = nil, into out: UnsafeMutablePointer<Float>
    ) {
        let group = heads / kvHeads
        var scores = [Float](repeating: 0, count: start + queries + 1)
        scores.withUnsafeMutableBufferPointer { scores in
            for t in 0..<queries {
                let visible = start + t + 1
                for h in 0..<heads {
                    let g = h / group
                    let qh = q + (t * heads + h) * headDim
                    for p in 0..<visible {
                        let kp = keys + p * keyStride + g * headDim
                        var dot: Float = 0
                        for i in 0..<headDim { dot += qh[i] * kp[i] }
                        scores[p] = window > 0 && p <= start + t - window ? -.infinity : dot * scale
                    }
                    if let sinks { scores[visible] = sinks[h] }
                    softmax(scores.baseAddress!, count: sinks == nil ? visible : visible + 1)
                    let oh = out + (t * heads + h) * valueDim
                    for i in 0..<valueDim { oh[i] = 0 }
                    for p in 0..<visible {
                        let vp = values + p * valueStride + g * valueDim
                        let w = scores[p]
                        for i in 0..<valueDim { oh[i] += w * vp[i] }
                    }
                }
            }
        }
    }
}
