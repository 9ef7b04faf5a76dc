// Fast causal grouped-query attention. Work items are (sequence, head, query) triples, ordered
// sequence-major then head-major, so that a contiguous chunk holds whole heads with all their
// queries: with causal prefill the later queries cost more, and head-major chunks keep the
// threads balanced. A batched step hands every sequence to one call, so the pool is entered once
// per layer rather than once per sequence (a decode row is a few microseconds of work, less than
// one hand-off). Each item is computed independently by the same code, so results depend neither
// on the thread count nor on the other sequences of the call.

enum FastAttention {
    static func attention(
        q: UnsafePointer<Float>, queries: Int, heads: Int, kvHeads: Int, headDim: Int, valueDim: Int,
        keys: UnsafePointer<Float>, keyStride: Int, values: UnsafePointer<Float>, valueStride: Int,
        start: Int, scale: Float, window: Int = 0, sinks: UnsafePointer<Float>? = nil,
        into out: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        attention(batch: [AttentionSequence(q: q, queries: queries, keys: keys, values: values, start: start, out: out)],
                  heads: heads, kvHeads: kvHeads, headDim: headDim, valueDim: valueDim, keyStride: keyStride,
                  valueStride: valueStride, scale: scale, window: window, sinks: sinks, pool: pool)
    }

    static func attention(
        batch: [AttentionSequence], heads: Int, kvHeads: Int, headDim: Int, valueDim: Int, keyStride: Int,
        valueStride: Int, scale: Float, window: Int, sinks: UnsafePointer<Float>?, pool: ThreadPool
    ) {
        guard heads > 0, !batch.isEmpty else { return }
        precondition(kvHeads > 0 && heads % kvHeads == 0, "heads \(heads) not a multiple of kvHeads \(kvHeads)")
        let group = heads / kvHeads
        // firstItem[s]: the first item of sequence s; its items are heads × queries, head-major.
        var firstItem = [Int](repeating: 0, count: batch.count + 1)
        var maxVisible = 0
        var work = 0
        for (s, seq) in batch.enumerated() {
            firstItem[s + 1] = firstItem[s] + heads * seq.queries
            maxVisible = max(maxVisible, seq.start + seq.queries)
            work += heads * seq.queries * (seq.start + (seq.queries + 1) / 2) * (headDim + valueDim)
        }
        let items = firstItem[batch.count]
        guard items > 0 else { return }
        // A thread should get at least ~32K multiply-adds.
        let perItem = max(1, work / items)
        batch.withUnsafeBufferPointer { batch in
            firstItem.withUnsafeBufferPointer { firstItem in
                pool.parallelFor(items, minChunk: max(1, 32_768 / perItem)) { range in
                    let scores = UnsafeMutablePointer<Float>.allocate(capacity: maxVisible + 1)
                    defer { scores.deallocate() }
                    // The sequence holding the chunk's first item (chunks are contiguous).
                    var lo = 0, hi = batch.count - 1
                    while lo < hi {
                        let mid = (lo + hi + 1) / 2
                        if firstItem[mid] <= range.lowerBound { lo = mid } else { hi = mid - 1 }
                    }
                    var s = lo
                    for item in range {
                        while item >= firstItem[s + 1] { s += 1 }
                        let seq = batch[s]
                        let local = item - firstItem[s]
                        let h = local / seq.queries
                        let t = local - h * seq.queries
                        let g = h / group
                        let end = seq.start + t + 1
                        let first = window > 0 ? max(0, end - window) : 0
                        let visible = end - first
                        let qh = seq.q + (t * heads + h) * headDim
                        let kBase = seq.keys + g * headDim + first * keyStride
                        scoreRows(qh, kBase, keyStride, visible, headDim, scale, scores)
                        if let sinks {
                            // The sink is one more logit in the softmax whose value row does not exist.
                            scores[visible] = sinks[h]
                            FastElementwise.softmax(scores, count: visible + 1)
                        } else {
                            FastElementwise.softmax(scores, count: visible)
                        }
                        weightedSum(scores, visible, seq.values + g * valueDim + first * valueStride, valueStride, valueDim,
                                    seq.out + (t * heads + h) * valueDim)
                    }
                }
            }
        }
    }

    /// scores[p] = dot(q, k[p]) · scale for `count` key rows `stride` apart. Four rows at a time
    /// share each load of `q` in four independent FMA chains (one chain alone waits on the FMA
    /// latency); each score is still the canonical dot product of `FastElementwise.dot`.
    @inline(__always)
    static func scoreRows(
        _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ stride: Int, _ count: Int, _ dim: Int, _ scale: Float,
        _ scores: UnsafeMutablePointer<Float>
    ) {
        var p = 0
        while p &+ 4 <= count {
            let k0 = k + p &* stride, k1 = k0 + stride, k2 = k1 + stride, k3 = k2 + stride
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var i = 0
            while i &+ 8 <= dim {
                let qv = load8(q + i)
                a0 = a0.addingProduct(qv, load8(k0 + i))
                a1 = a1.addingProduct(qv, load8(k1 + i))
                a2 = a2.addingProduct(qv, load8(k2 + i))
                a3 = a3.addingProduct(qv, load8(k3 + i))
                i &+= 8
            }
            var s0 = hsum8(a0), s1 = hsum8(a1), s2 = hsum8(a2), s3 = hsum8(a3)
            while i < dim {
                s0 = s0.addingProduct(q[i], k0[i])
                s1 = s1.addingProduct(q[i], k1[i])
                s2 = s2.addingProduct(q[i], k2[i])
                s3 = s3.addingProduct(q[i], k3[i])
                i &+= 1
            }
            scores[p] = s0 * scale
            scores[p &+ 1] = s1 * scale
            scores[p &+ 2] = s2 * scale
            scores[p &+ 3] = s3 * scale
            p &+= 4
        }
        while p < count {
            scores[p] = FastElementwise.dot(q, k + p &* stride, count: dim) * scale
            p &+= 1
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
