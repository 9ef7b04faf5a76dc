import Kernels
import TestSupport

/// Thread counts every parallel kernel is run with; the pools split even tiny jobs so that
/// chunk boundaries really move. 2 threads use `concurrentPerform`, 3 the persistent workers, so
/// both backends are covered.
let testThreadCounts = [1, 2, 3]

func testPool(_ threads: Int) -> ThreadPool {
    ThreadPool(threads: threads, ignoringMinChunk: true, persistentWorkers: threads == 3)
}

/// Distance in units in the last place between two finite floats of the same sign region.
func ulpDistance(_ a: Float, _ b: Float) -> Int {
    if a == b { return 0 }
    func key(_ x: Float) -> Int64 {
        let bits = Int64(x.bitPattern)
        return x.sign == .minus ? -(bits & 0x7FFF_FFFF) : bits
    }
    return Int(abs(key(a) - key(b)))
}

extension Array where Element == Float {
    /// Bitwise equality (distinguishes -0 from +0, compares NaN payloads).
    func bitwiseEqual(_ other: [Float]) -> Bool {
        count == other.count && zip(self, other).allSatisfy { $0.bitPattern == $1.bitPattern }
    }
}
