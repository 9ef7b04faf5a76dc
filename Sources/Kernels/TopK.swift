// Fast top-k. The ranking (larger first, NaN after every number, ties and ±0 to the lower index)
// is a strict total order on indices, so the answer is unique: the first k indices of that
// order. Any correct algorithm therefore returns exactly what `ScalarReference.topK` returns.

enum FastTopK {
    /// `a` ranks before `b` (values va, vb at indices ia, ib).
    @inline(__always)
    static func before(_ va: Float, _ ia: Int, _ vb: Float, _ ib: Int) -> Bool {
        let an = va.isNaN, bn = vb.isNaN
        if an != bn { return bn }
        if !an && va != vb { return va > vb }
        return ia < ib
    }

    static func topK(_ values: UnsafePointer<Float>, count: Int, k: Int) -> [Int] {
        let k = min(k, count)
        guard k > 0 else { return [] }
        if k > 64 && k * 8 > count {
            // Large k: sort everything (the order is total, so an unstable sort is deterministic).
            var order = Array(0..<count)
            order.sort { before(values[$0], $0, values[$1], $1) }
            return Array(order.prefix(k))
        }
        // Small k: insertion into a sorted buffer, with a quick reject against the current k-th.
        let vals = UnsafeMutablePointer<Float>.allocate(capacity: k)
        let idxs = UnsafeMutablePointer<Int>.allocate(capacity: k)
        defer { vals.deallocate(); idxs.deallocate() }
        var filled = 0
        for i in 0..<count {
            let v = values[i]
            var j: Int
            if filled < k {
                j = filled
                filled += 1
            } else {
                // Indices arrive in increasing order, so i loses every tie with the current k-th.
                if !before(v, i, vals[k - 1], idxs[k - 1]) { continue }
                j = k - 1
            }
            while j > 0 && before(v, i, vals[j - 1], idxs[j - 1]) {
                vals[j] = vals[j - 1]
                idxs[j] = idxs[j - 1]
                j -= 1
            }
            vals[j] = v
            idxs[j] = i
        }
        return Array(UnsafeBufferPointer(start: idxs, count: k))
    }
}
