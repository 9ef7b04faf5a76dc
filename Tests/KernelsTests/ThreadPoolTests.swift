import Dispatch
import Kernels
import Synchronization
import Testing

/// Every index is visited exactly once, whatever the count, chunk hint and thread count.
@Test(arguments: [1, 2, 3, 4], [0, 1, 2, 3, 7, 64, 1000])
func parallelForCoversEachIndexOnce(_ threads: Int, _ count: Int) {
    for minChunk in [1, 3, 100] {
        for persistent in [false, true] {
        let pool = ThreadPool(threads: threads, persistentWorkers: persistent)
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: max(1, count))
        hits.initialize(repeating: 0, count: max(1, count))
        defer { hits.deallocate() }
        for _ in 0..<20 {
            pool.parallelFor(count, minChunk: minChunk) { r in for i in r { hits[i] += 1 } }
        }
        #expect((0..<count).allSatisfy { hits[$0] == 20 }, "minChunk \(minChunk) persistent \(persistent)")
        }
    }
}

/// Several threads calling one pool at once, and a nested call from inside a body: all complete
/// with the right result (a busy pool runs the job on the caller).
@Test(arguments: [false, true])
func parallelForConcurrentAndNestedCalls(_ persistent: Bool) {
    let pool = ThreadPool(threads: 2, persistentWorkers: persistent)
    let total = Atomic<Int>(0)
    DispatchQueue.concurrentPerform(iterations: 4) { _ in
        for _ in 0..<200 {
            pool.parallelFor(64) { r in
                total.add(r.count, ordering: .relaxed)
                pool.parallelFor(3) { inner in total.add(inner.count, ordering: .relaxed) }
            }
        }
    }
    // Each outer call covers 64 items and runs the nested 3-item job once per chunk it made
    // (a nested job may be split again or run inline; it covers its 3 items either way).
    let t = total.load(ordering: .relaxed)
    #expect(t >= 4 * 200 * (64 + 3) && t <= 4 * 200 * (64 + 2 * 3), "persistent \(persistent)")
}

@Test func poolsAreReleasedCleanly() {
    for _ in 0..<20 {
        let pool = ThreadPool(threads: 3, persistentWorkers: true)
        let sum = Atomic<Int>(0)
        pool.parallelFor(30) { r in sum.add(r.count, ordering: .relaxed) }
        #expect(sum.load(ordering: .relaxed) == 30)
    }
}

/// `forEachTask` runs every task exactly once, on either backend and from several callers at
/// once (a busy persistent pool runs the tasks on the caller).
@Test(arguments: [1, 2, 3], [0, 1, 2, 5, 64])
func forEachTaskRunsEachTaskOnce(_ threads: Int, _ count: Int) {
    for persistent in [false, true] {
        let pool = ThreadPool(threads: threads, persistentWorkers: persistent)
        let hits = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: max(1, count))
        for i in 0..<max(1, count) { (hits + i).initialize(to: Atomic<Int>(0)) }
        defer { hits.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 3) { _ in
            for _ in 0..<10 {
                pool.forEachTask(count) { i in hits[i].add(1, ordering: .relaxed) }
            }
        }
        #expect((0..<count).allSatisfy { hits[$0].load(ordering: .relaxed) == 30 }, "persistent \(persistent)")
    }
}
