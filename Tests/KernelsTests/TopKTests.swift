import Kernels
import Testing
import TestSupport

func fastTopK(_ v: [Float], _ k: Int) -> [Int] { v.withUnsafeBufferPointer { topK($0.baseAddress!, count: v.count, k: k) } }
func referenceTopK(_ v: [Float], _ k: Int) -> [Int] {
    v.withUnsafeBufferPointer { ScalarReference.topK($0.baseAddress!, count: v.count, k: k) }
}

struct TopKCase: Sendable, CustomStringConvertible {
    var name: String, values: [Float], k: Int, expected: [Int]
    var description: String { name }
}

let topKCases: [TopKCase] = [
    TopKCase(name: "ties go to the lower index", values: [1, 3, 3, 2, 3], k: 3, expected: [1, 2, 4]),
    TopKCase(name: "plus and minus zero are equal", values: [-0.0, 0, -1, -0.0], k: 3, expected: [0, 1, 3]),
    TopKCase(name: "minus zero first by index", values: [0, -0.0], k: 1, expected: [0]),
    TopKCase(name: "NaN ranks last", values: [.nan, -5, .nan, 2], k: 4, expected: [3, 1, 0, 2]),
    TopKCase(name: "NaN below -inf", values: [.nan, -.infinity], k: 1, expected: [1]),
    TopKCase(name: "all NaN", values: [.nan, .nan, .nan], k: 2, expected: [0, 1]),
    TopKCase(name: "all equal", values: [0.5, 0.5, 0.5, 0.5, 0.5], k: 3, expected: [0, 1, 2]),
    TopKCase(name: "k = count", values: [2, 9, -1, 4], k: 4, expected: [1, 3, 0, 2]),
    TopKCase(name: "k > count", values: [2, 9], k: 5, expected: [1, 0]),
    TopKCase(name: "k = 0", values: [2, 9], k: 0, expected: []),
    TopKCase(name: "empty", values: [], k: 2, expected: []),
    TopKCase(name: "infinities", values: [.infinity, 1, .infinity, -.infinity], k: 3, expected: [0, 2, 1]),
    TopKCase(name: "numbers after a full buffer of NaN", values: [Float](repeating: .nan, count: 20) + (0..<40).map { Float($0 % 7) },
             k: 3, expected: [26, 33, 40]),
    TopKCase(name: "ties and larger values deep in 16-wide chunks", values: (0..<100).map { $0 == 70 || $0 == 90 ? 5 : $0 == 99 ? 6 : 1 },
             k: 2, expected: [99, 70]),
]

@Test(arguments: topKCases)
func topKExactCases(_ c: TopKCase) {
    #expect(fastTopK(c.values, c.k) == c.expected)
    #expect(referenceTopK(c.values, c.k) == c.expected)
}

/// Random rows with many ties, ±0 and NaN: the fast routine returns exactly the reference's list,
/// for small k (insertion path) and large k (radix-sorting path).
@Test(arguments: [1, 2, 8, 64, 65, 300, 5000])
func topKMatchesReference(_ k: Int) {
    var rng = TestRandom(seed: UInt64(k))
    let pool: [Float] = [0, -0.0, 1, -1, .nan, 0.25, .infinity, -.infinity, 2, 2]
    for count in [1, 7, 64, 256, 301, 4099] {
        let values = (0..<count).map { _ in rng.next() % 3 == 0 ? rng.float(-2, 2) : pool[Int(rng.next() % 10)] }
        #expect(fastTopK(values, k) == referenceTopK(values, k), "count \(count)")
    }
}

/// Long rows (the sampler's vocabulary) take the block-threshold path: every `k` best value is at
/// or above a threshold that `k` of up to `4k` block maxima reach. Rows built against it: the best values
/// in the tail past the last whole block, ties exactly at the threshold, ±0, blocks of only NaN or
/// only -inf, most blocks low (a vocabulary's unused stretch), fewer than `k` numbers (no
/// threshold: the insertion path decides), and logit-like rows.
@Test(arguments: [1, 4, 64, 65, 256])
func topKLongRowsMatchReference(_ k: Int) {
    var rng = TestRandom(seed: 77 + UInt64(k))
    let count = max(64 * k, 1024) + 15  // 16-wide chunks in up to 4k blocks, and a 15-value tail
    let block = count / min(4 * k, count / 16) / 16 * 16
    var rows: [[Float]] = []
    // Logit-like: a spread of values, a few clear winners.
    rows.append((0..<count).map { _ in rng.float(-6, 6) })
    // The best values only in the tail past the blocks.
    var tail = (0..<count).map { _ in rng.float(-1, 1) }
    for j in (count - 15)..<count { tail[j] = 5 + Float(j % 3) }
    rows.append(tail)
    // Every block's maximum equal: ties at the threshold, broken by index; ±0 among them.
    rows.append((0..<count).map { i in i % 7 == 0 ? (i % 2 == 0 ? 0 : -0.0) : -rng.float(0.5, 1) })
    // One block of only NaN, another of only -inf: neither counts towards the threshold.
    var holes = (0..<count).map { _ in rng.float(-1, 1) }
    for j in 0..<block { holes[j] = .nan }
    rows.append(holes)
    var floor = (0..<count).map { _ in rng.float(-1, 1) }
    for j in block..<(2 * block) { floor[j] = -.infinity }
    rows.append(floor)
    // All but the last few blocks low: the threshold comes from the few.
    rows.append((0..<count).map { i in i < count - 40 ? -9 + rng.float(-1, 1) : rng.float(-1, 1) })
    // Sparse numbers among NaN and -inf, and among NaN alone: fewer than k numbers where k is large.
    rows.append((0..<count).map { i in i % 97 == 0 ? rng.float(-1, 1) : (i % 2 == 0 ? .nan : -.infinity) })
    rows.append((0..<count).map { i in i % 97 == 0 ? rng.float(-1, 1) : .nan })
    for (r, values) in rows.enumerated() {
        #expect(fastTopK(values, k) == referenceTopK(values, k), "row \(r)")
    }
}
