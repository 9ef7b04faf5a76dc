import Kernels

/// Deterministic pseudo-random numbers for kernel tests (SplitMix64).
struct TestRandom {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    mutating func float(_ lo: Float = -1, _ hi: Float = 1) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }

    mutating func floats(_ count: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<count).map { _ in float(lo, hi) }
    }
}

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
