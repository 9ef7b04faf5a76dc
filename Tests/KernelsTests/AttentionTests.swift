@testable import Kernels
import Testing
import TestSupport

/// Attention: q·k in 8 FMA chains (vs a left to right sum), the vector exp (≤ 2 ulp) in the
/// softmax, and an FMA weighted sum. Observed max |Δ| / max |out| up to 1.3e-6 (4000-position cache); 1e-5 is margin.
let attentionTolerance: Float = 1e-5

struct AttentionCase: Sendable, CustomStringConvertible {
    var queries: Int, heads: Int, kvHeads: Int, headDim: Int, valueDim: Int, start: Int, pad: Int = 0
    /// Sliding window (0: none) and whether each head has a sink logit (gpt-oss).
    var window: Int = 0, sinks: Bool = false
    var description: String {
        "q\(queries) h\(heads)/\(kvHeads) d\(headDim)/\(valueDim) start \(start) pad \(pad) window \(window) sinks \(sinks)"
    }
    var keyStride: Int { kvHeads * headDim + pad }
    var valueStride: Int { kvHeads * valueDim + pad }
    var positions: Int { start + queries }
}

struct AttentionData {
    var q: [Float], k: [Float], v: [Float], sinks: [Float]
    init(_ c: AttentionCase, seed: UInt64) {
        var rng = TestRandom(seed: seed)
        q = rng.floats(c.queries * c.heads * c.headDim, -2, 2)
        k = rng.floats(c.positions * c.keyStride, -2, 2)
        v = rng.floats(c.positions * c.valueStride, -1, 1)
        sinks = c.sinks ? rng.floats(c.heads, -2, 2) : []
    }
}

func runAttention(_ c: AttentionCase, _ d: AttentionData, threads: Int, reference: Bool = false) -> [Float] {
    var out = [Float](repeating: .nan, count: c.queries * c.heads * c.valueDim)
    let scale = 1 / Float(c.headDim).squareRoot()
    d.sinks.withUnsafeBufferPointer { sinkValues in
    let sinks = c.sinks ? sinkValues.baseAddress : nil
    d.q.withUnsafeBufferPointer { q in
        d.k.withUnsafeBufferPointer { k in
            d.v.withUnsafeBufferPointer { v in
                out.withUnsafeMutableBufferPointer { o in
                    if reference {
                        ScalarReference.attention(
                            q: q.baseAddress!, queries: c.queries, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
                            valueDim: c.valueDim, keys: k.baseAddress!, keyStride: c.keyStride, values: v.baseAddress!,
                            valueStride: c.valueStride, start: c.start, scale: scale, window: c.window, sinks: sinks,
                            into: o.baseAddress!)
                    } else {
                        attention(
                            q: q.baseAddress!, queries: c.queries, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
                            valueDim: c.valueDim, keys: k.baseAddress!, keyStride: c.keyStride, values: v.baseAddress!,
                            valueStride: c.valueStride, start: c.start, scale: scale, window: c.window, sinks: sinks,
                            into: o.baseAddress!, pool: testPool(threads))
                    }
                }
            }
        }
    }
    }
    return out
}

let attentionCases: [AttentionCase] = [
    AttentionCase(queries: 1, heads: 1, kvHeads: 1, headDim: 1, valueDim: 1, start: 0),
    AttentionCase(queries: 1, heads: 4, kvHeads: 2, headDim: 64, valueDim: 64, start: 100),
    AttentionCase(queries: 5, heads: 4, kvHeads: 4, headDim: 17, valueDim: 33, start: 0, pad: 3),
    AttentionCase(queries: 37, heads: 6, kvHeads: 2, headDim: 8, valueDim: 7, start: 3),
    AttentionCase(queries: 2, heads: 3, kvHeads: 1, headDim: 192, valueDim: 128, start: 1023),
    AttentionCase(queries: 3, heads: 2, kvHeads: 2, headDim: 128, valueDim: 40, start: 64, pad: 1),
    // gpt-oss: a window shorter than the prefill and than the cache, sinks, both.
    AttentionCase(queries: 9, heads: 4, kvHeads: 2, headDim: 16, valueDim: 16, start: 0, window: 4),
    AttentionCase(queries: 2, heads: 4, kvHeads: 2, headDim: 16, valueDim: 16, start: 30, pad: 2, window: 7),
    AttentionCase(queries: 5, heads: 4, kvHeads: 1, headDim: 32, valueDim: 32, start: 3, sinks: true),
    AttentionCase(queries: 6, heads: 6, kvHeads: 2, headDim: 8, valueDim: 8, start: 11, window: 3, sinks: true),
]

@Test(arguments: attentionCases)
func attentionMatchesReference(_ c: AttentionCase) {
    let d = AttentionData(c, seed: UInt64(c.queries * 1000 + c.headDim))
    let ref = runAttention(c, d, threads: 1, reference: true)
    let serial = runAttention(c, d, threads: 1)
    #expect(maxRelativeError(serial, ref) <= attentionTolerance)
    for threads in testThreadCounts.dropFirst() {
        #expect(runAttention(c, d, threads: threads).bitwiseEqual(serial), "threads \(threads)")
    }
}

/// Future positions never influence earlier outputs: changing keys, values and queries from
/// position 5 on leaves the outputs of queries 0...4 bit-identical.
@Test(arguments: testThreadCounts)
func attentionIsCausal(_ threads: Int) {
    let c = AttentionCase(queries: 9, heads: 4, kvHeads: 2, headDim: 16, valueDim: 16, start: 0)
    let d = AttentionData(c, seed: 3)
    var changed = d
    var rng = TestRandom(seed: 4)
    for i in (5 * c.keyStride)..<changed.k.count { changed.k[i] = rng.float(-9, 9) }
    for i in (5 * c.valueStride)..<changed.v.count { changed.v[i] = rng.float(-9, 9) }
    for i in (5 * c.heads * c.headDim)..<changed.q.count { changed.q[i] = rng.float(-9, 9) }
    let a = runAttention(c, d, threads: threads)
    let b = runAttention(c, changed, threads: threads)
    let prefix = 5 * c.heads * c.valueDim
    #expect(Array(a[0..<prefix]).bitwiseEqual(Array(b[0..<prefix])))
    #expect(!Array(a[prefix...]).bitwiseEqual(Array(b[prefix...])))
}

/// Query t of a prefill equals a single-token decode at position start + t (bit for bit), so
/// prefill and decode agree.
@Test func attentionPrefillEqualsDecode() {
    let c = AttentionCase(queries: 6, heads: 4, kvHeads: 2, headDim: 24, valueDim: 24, start: 2)
    let d = AttentionData(c, seed: 9)
    let prefill = runAttention(c, d, threads: 2)
    for t in 0..<c.queries {
        var one = AttentionCase(queries: 1, heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim, valueDim: c.valueDim, start: c.start + t)
        one.pad = c.pad
        var dd = d
        dd.q = Array(d.q[(t * c.heads * c.headDim)..<((t + 1) * c.heads * c.headDim)])
        dd.k = Array(d.k[0..<(one.positions * c.keyStride)])
        dd.v = Array(d.v[0..<(one.positions * c.valueStride)])
        let decoded = runAttention(one, dd, threads: 1)
        #expect(decoded.bitwiseEqual(Array(prefill[(t * c.heads * c.valueDim)..<((t + 1) * c.heads * c.valueDim)])), "t \(t)")
    }
}

/// `attention(batch:)` gives every sequence exactly what `attention` gives it alone, whatever the
/// other sequences (decode rows, a prefill, different cache lengths) and the thread count: the
/// batched decode step's bit-for-bit contract rests on it.
@Test(arguments: [false, true])
func attentionBatchEqualsOneCallPerSequence(_ sinks: Bool) {
    // Shared shape; per sequence: (queries, start). A prefill of 7 between decode rows, an empty
    // cache, a long one.
    let shape = AttentionCase(queries: 1, heads: 6, kvHeads: 2, headDim: 16, valueDim: 16, start: 0, pad: 1,
                              window: sinks ? 5 : 0, sinks: sinks)
    let sequences = [(1, 12), (7, 3), (1, 0), (2, 40), (1, 1)]
    let cases = sequences.map { q, start in
        AttentionCase(queries: q, heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim,
                      valueDim: shape.valueDim, start: start, pad: shape.pad, window: shape.window, sinks: shape.sinks)
    }
    var data = cases.enumerated().map { AttentionData($1, seed: UInt64(20 + $0)) }
    for i in data.indices { data[i].sinks = data[0].sinks }  // sinks belong to the layer, not the sequence
    let alone = zip(cases, data).map { runAttention($0, $1, threads: 1) }
    for threads in testThreadCounts {
        var outs = cases.map { [Float](repeating: .nan, count: $0.queries * $0.heads * $0.valueDim) }
        // Arrays stay put while their pointers are used below (no mutation but through the pointers).
        let qs = data.map { UnsafeMutablePointer<Float>.allocate(capacity: $0.q.count) }
        let ks = data.map { UnsafeMutablePointer<Float>.allocate(capacity: $0.k.count) }
        let vs = data.map { UnsafeMutablePointer<Float>.allocate(capacity: $0.v.count) }
        let os = outs.map { UnsafeMutablePointer<Float>.allocate(capacity: $0.count) }
        defer { (qs + ks + vs + os).forEach { $0.deallocate() } }
        for i in data.indices {
            qs[i].initialize(from: data[i].q, count: data[i].q.count)
            ks[i].initialize(from: data[i].k, count: data[i].k.count)
            vs[i].initialize(from: data[i].v, count: data[i].v.count)
        }
        let batch = cases.indices.map {
            AttentionSequence(q: qs[$0], queries: cases[$0].queries, keys: ks[$0], values: vs[$0], start: cases[$0].start,
                              out: os[$0])
        }
        data[0].sinks.withUnsafeBufferPointer { s in
            attention(batch: batch, heads: shape.heads, kvHeads: shape.kvHeads, headDim: shape.headDim,
                      valueDim: shape.valueDim, keyStride: shape.keyStride, valueStride: shape.valueStride,
                      scale: 1 / Float(shape.headDim).squareRoot(), window: shape.window,
                      sinks: sinks ? s.baseAddress : nil, pool: testPool(threads))
        }
        for i in outs.indices {
            outs[i] = Array(UnsafeBufferPointer(start: os[i], count: outs[i].count))
            #expect(outs[i].bitwiseEqual(alone[i]), "threads \(threads) sequence \(i)")
        }
    }
}

/// The score loop's four-row chains give each score bit for bit the canonical dot product (the
/// one-row path's), for head sizes with and without a scalar tail and counts with 0 to 3 rows left.
@Test(arguments: [5, 64, 67, 128])
func scoreRowsEqualOneDotPerRow(_ dim: Int) {
    var rng = TestRandom(seed: UInt64(dim))
    let stride = dim + 3
    let q = rng.floats(dim, -2, 2)
    let k = rng.floats(11 * stride, -2, 2)
    let scale: Float = 0.125
    for count in 0...11 {
        var scores = [Float](repeating: .nan, count: count + 1)
        q.withUnsafeBufferPointer { qp in
            k.withUnsafeBufferPointer { kp in
                scores.withUnsafeMutableBufferPointer { sp in
                    FastAttention.scoreRows(qp.baseAddress!, kp.baseAddress!, stride, count, dim, scale, sp.baseAddress!)
                    for p in 0..<count {
                        let one = FastElementwise.dot(qp.baseAddress!, kp.baseAddress! + p * stride, count: dim) * scale
                        #expect(sp[p].bitPattern == one.bitPattern, "dim \(dim) count \(count) row \(p)")
                    }
                }
            }
        }
        #expect(scores[count].isNaN, "dim \(dim) count \(count): nothing written past the last row")
    }
}
