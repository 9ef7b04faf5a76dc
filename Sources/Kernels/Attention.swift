// Fast causal grouped-query attention. Work items are (head, query) pairs, ordered head-major
// so that a contiguous chunk holds whole heads with all their queries: with causal prefill the
// later queries cost more, and head-major chunks keep the threads balanced. Each item is
// computed independently by the same code, so results do not depend on the thread count.

enum FastAttention {
    static func attention(
        q: UnsafePointer<Float>, queries: Int, heads: Int, kvHeads: Int, headDim: Int, valueDim: Int,
        keys: UnsafePointer<Float>, keyStride: Int, values: UnsafePointer<Float>, valueStride: Int,
        start: Int, scale: Float, window: Int = 0, sinks: UnsafePointer<Float>? = nil,
        into out: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        guard queries > 0, heads > 0 else { return }
        precondition(kvHeads > 0 && heads % kvHeads == 0, "heads \(heads) not a multiple of kvHeads \(kvHeads)")
        let group = heads / kvHeads
        let items = heads * queries
        let maxVisible = start + queries
        // A thread should get at least ~32K multiply-adds.
        let perItem = max(1, (start + (queries + 1) / 2) * (headDim + valueDim))
        pool.parallelFor(items, minChunk: max(1, 32_768 / perItem)) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: maxVisible + 1)
            defer { scores.deallocate() }
            for item in range {
                let h = item / queries
                let t = item - h * queries
                let g = h / group
                let end = start + t + 1
                let first = window > 0 ? max(0, end - window) : 0
                let visible = end - first
                let qh = q + (t * heads + h) * headDim
                let kBase = keys + g * headDim + first * keyStride
                for p in 0..<visible {
                    scores[p] = FastElementwise.dot(qh, kBase + p * keyStride, count: headDim) * scale
                }
                if let sinks {
                    // The sink is one more logit in the softmax whose value row does not exist.
                    scores[visible] = sinks[h]
                    FastElementwise.softmax(scores, count: visible + 1)
                } else {
                    FastElementwise.softmax(scores, count: visible)
                }
                weightedSum(scores, visible, values + g * valueDim + first * valueStride, valueStride, valueDim,
                            out + (t * heads + h) * valueDim)
            }
        }
    }

    /// out[i] = Σ_p w[p] · v[p][i], positions in order (the reference's order, with FMA).
    @inline(__always)
    static func weightedSum(
        _ w: UnsafePointer<Float>, _ count: Int, _ v: UnsafePointer<Float>, _ stride: Int, _ dim: Int,
        _ out: UnsafeMutablePointer<Float>
    ) {
        var i = 0
        // 32 output lanes at a time held in registers across all positions.
        while i &+ 32 <= dim {
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var vp = v + i
            for p in 0..<count {
                let wp = SIMD8<Float>(repeating: w[p])
                a0 = a0.addingProduct(wp, load8(vp))
                a1 = a1.addingProduct(wp, load8(vp + 8))
                a2 = a2.addingProduct(wp, load8(vp + 16))
                a3 = a3.addingProduct(wp, load8(vp + 24))
                vp += stride
            }
            store8(a0, out + i); store8(a1, out + (i &+ 8)); store8(a2, out + (i &+ 16)); store8(a3, out + (i &+ 24))
            i &+= 32
        }
        while i &+ 8 <= dim {
            var a0 = SIMD8<Float>()
            var vp = v + i
            for p in 0..<count {
                a0 = a0.addingProduct(SIMD8(repeating: w[p]), load8(vp))
                vp += stride
            }
            store8(a0, out + i)
            i &+= 8
        }
        while i < dim {
            var s: Float = 0
            var vp = v + i
            for p in 0..<count {
                s = s.addingProduct(w[p], vp[0])
                vp += stride
            }
            out[i] = s
            i &+= 1
        }
    }
}
