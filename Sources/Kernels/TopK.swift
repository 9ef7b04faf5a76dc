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
        // A whole ranking where k is a large part of the row; block thresholds in a long row (a
        // vocabulary); insertion for a short one (a router's experts: faster below ~256 values).
        if count >= 512, k <= 64 || k * 8 <= count, let best = thresholdTopK(values, count: count, k: k) {
            return best
        }
        if k > 64 {
            return Array(rankAll(values, count: count).prefix(k))
        }
        // Small k: insertion into a sorted buffer, with a quick reject against the current k-th.
        let vals = UnsafeMutablePointer<Float>.allocate(capacity: k)
        let idxs = UnsafeMutablePointer<Int>.allocate(capacity: k)
        defer { vals.deallocate(); idxs.deallocate() }
        var filled = 0
        @inline(__always) func offer(_ i: Int) {
            let v = values[i]
            var j: Int
            if filled < k {
                j = filled
                filled += 1
            } else {
                // Indices arrive in increasing order, so i loses every tie with the current k-th.
                if !before(v, i, vals[k - 1], idxs[k - 1]) { return }
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
        var i = 0
        while i < count {
            // Once the buffer is full, sixteen values at a time are rejected by one compare with
            // the k-th value: a later index beats it only by being strictly larger (NaN and ties
            // lose). A NaN k-th (fewer than k numbers seen) is beaten by any number: one by one.
            if filled == k, i + 16 <= count, !vals[k - 1].isNaN {
                let chunk = UnsafeRawPointer(values + i).loadUnaligned(as: SIMD16<Float>.self)
                if !any(chunk .> SIMD16(repeating: vals[k - 1])) {
                    i += 16
                    continue
                }
                for j in i..<(i + 16) { offer(j) }
                i += 16
                continue
            }
            offer(i)
            i += 1
        }
        return Array(UnsafeBufferPointer(start: idxs, count: k))
    }

    /// The ranking key of a number (not NaN): ascending integer order is ranking order (larger
    /// value first); `v + 0` makes `-0` equal `+0`.
    @inline(__always)
    static func rankKey(_ v: Float) -> UInt32 {
        let bits = (v + 0).bitPattern
        // Ascending integer order of `ascending` is ascending float order; inverted, largest first.
        let ascending = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
        return ~ascending
    }

    /// A key and its index in one item whose ascending order is ranking order (ties to the
    /// lower index); the index is the low 32 bits.
    @inline(__always)
    static func rankItem(_ key: UInt32, index: Int) -> UInt64 { UInt64(key) << 32 | UInt64(index) }

    /// The `k` best of a long row in two vector passes and a sort of the few candidates, or nil
    /// for a row too short for `k` blocks, or where fewer than `k` blocks hold a finite number
    /// (the caller ranks those another way).
    ///
    /// The row is cut into up to `4k` blocks of whole 16-wide chunks. A threshold `t` that at
    /// least `k` block maxima reach has at least `k` values at or above it (one per block), so
    /// the `k` best are all ≥ t, and only the values ≥ t (in blocks whose maximum reaches t, and
    /// the tail past the last block) are ranked, by one integer key each (rank key, then index).
    /// With `t` just below the `k`-th largest of `4k` maxima rather than the least of `k`, a
    /// vocabulary's low-scoring stretches (byte or reserved tokens) do not pull it down: about
    /// 2.5 µs for the best 64 of 8,192 logits, against 20–28 µs by insertion alone.
    static func thresholdTopK(_ values: UnsafePointer<Float>, count: Int, k: Int) -> [Int]? {
        let blocks = min(4 * k, count / 16)
        guard blocks >= k, count <= Int(UInt32.max) else { return nil }
        let width = count / blocks / 16 * 16
        let maxima = UnsafeMutablePointer<Float>.allocate(capacity: blocks)
        defer { maxima.deallocate() }
        let negInf = SIMD16<Float>(repeating: -.infinity)
        for b in 0..<blocks {
            var m = negInf
            var i = b * width
            while i < (b + 1) * width {
                let v = UnsafeRawPointer(values + i).loadUnaligned(as: SIMD16<Float>.self)
                m.replace(with: v, where: v .> m)  // NaN compares false: it counts as no value
                i += 16
            }
            maxima[b] = largestLane(m)
        }
        let t = threshold(maxima, count: blocks, atLeast: k)
        guard t > -.infinity else { return nil }  // fewer than k blocks hold a finite number
        var keys: [UInt64] = []
        keys.reserveCapacity(4 * k)
        let cut = SIMD16<Float>(repeating: t)
        func collect(_ from: Int, _ to: Int) {
            var i = from
            while i < to {
                let v = UnsafeRawPointer(values + i).loadUnaligned(as: SIMD16<Float>.self)
                var bits = laneBits(v .>= cut)  // NaN compares false
                while bits != 0 {
                    let j = i + bits.trailingZeroBitCount
                    keys.append(rankItem(rankKey(values[j]), index: j))
                    bits &= bits - 1
                }
                i += 16
            }
        }
        for b in 0..<blocks where maxima[b] >= t { collect(b * width, (b + 1) * width) }
        for j in (blocks * width)..<count where values[j] >= t { keys.append(rankItem(rankKey(values[j]), index: j)) }
        keys.sort()
        return keys.prefix(k).map { Int($0 & 0xFFFF_FFFF) }
    }

    /// A value with at least `k` of the `count` numbers (no NaN, `count` ≥ `k`) at or above it,
    /// close below the `k`-th largest, or -inf when fewer than `k` are finite: bisection between
    /// the least finite number and the largest, each step one vector count (no data-dependent
    /// branch but the step's own).
    static func threshold(_ x: UnsafePointer<Float>, count: Int, atLeast k: Int) -> Float {
        func reaching(_ c: Float) -> Int {
            let cut = SIMD16<Float>(repeating: c), one = SIMD16<Int32>(repeating: 1)
            var n = SIMD16<Int32>()
            var i = 0
            while i + 16 <= count {
                let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
                n &+= SIMD16<Int32>().replacing(with: one, where: v .>= cut)
                i += 16
            }
            var total = Int(n.wrappedSum())
            for j in i..<count where x[j] >= c { total += 1 }
            return total
        }
        var lo = Float.infinity, hi = -Float.infinity
        for i in 0..<count where x[i] > -.infinity {
            lo = min(lo, x[i])
            hi = max(hi, x[i])
        }
        guard lo < .infinity, reaching(lo) >= k else { return -.infinity }
        guard hi < .infinity else { return lo }
        if k == 1 { return hi }
        for _ in 0..<12 {
            let mid = lo + (hi - lo) / 2
            guard mid > lo, mid < hi else { break }
            if reaching(mid) >= k { lo = mid } else { hi = mid }
        }
        return lo
    }

    /// The largest lane of a vector without NaN, by halving (`SIMD.max()` goes lane by lane).
    @inline(__always)
    static func largestLane(_ v: SIMD16<Float>) -> Float {
        var a = v.lowHalf, b = v.highHalf
        a.replace(with: b, where: b .> a)
        var c = a.lowHalf, d = a.highHalf
        c.replace(with: d, where: d .> c)
        var e = c.lowHalf, f = c.highHalf
        e.replace(with: f, where: f .> e)
        return Swift.max(e[0], e[1])
    }

    /// The lanes of a mask as the low 16 bits of an integer, lane `i` in bit `i`.
    @inline(__always)
    static func laneBits(_ mask: SIMDMask<SIMD16<Int32>>) -> UInt32 {
        let weights = SIMD16<UInt32>(1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7,
                                     1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15)
        return SIMD16<UInt32>(repeating: 0).replacing(with: weights, where: mask).wrappedSum()
    }

    /// Every index in ranking order: a stable least-significant-digit radix sort (four passes of
    /// 8 bits, their histograms counted in one read) of one 32-bit key per value, carried with
    /// its index in one 64-bit item, over indices in ascending order, so equal keys keep the
    /// lower index first. The key orders numbers largest first (`v + 0` makes `-0` equal `+0`)
    /// and puts NaN after all of them. About 75 µs for 8,192 logits and 0.8 ms for 151,936.
    static func rankAll(_ values: UnsafePointer<Float>, count: Int) -> [Int] {
        guard count > 0 else { return [] }
        precondition(count <= Int(UInt32.max), "too many values to rank")
        // One 64-bit item per value: the key above, the index below (sorted by the key only).
        let items = UnsafeMutablePointer<UInt64>.allocate(capacity: 2 * count)
        defer { items.deallocate() }
        let spare = items + count
        // Every pass's histogram in one read of the keys.
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: 4 * 256)
        defer { counts.deallocate() }
        counts.initialize(repeating: 0, count: 4 * 256)
        for i in 0..<count {
            let v = values[i]
            let key = v.isNaN ? UInt32.max : rankKey(v)
            items[i] = rankItem(key, index: i)
            for pass in 0..<4 { counts[pass * 256 + Int((key >> UInt32(8 * pass)) & 0xFF)] += 1 }
        }
        var from = items, to = spare
        for pass in 0..<4 {
            let histogram = counts + pass * 256
            let shift = UInt64(32 + 8 * pass)
            if histogram[Int((from[0] >> shift) & 0xFF)] == count { continue }  // one bucket: order unchanged
            var offset = 0
            for b in 0..<256 {
                let n = histogram[b]
                histogram[b] = offset
                offset += n
            }
            for i in 0..<count {
                let item = from[i]
                let bucket = Int((item >> shift) & 0xFF)
                to[histogram[bucket]] = item
                histogram[bucket] += 1
            }
            swap(&from, &to)
        }
        return (0..<count).map { Int(from[$0] & 0xFFFF_FFFF) }
    }
}
