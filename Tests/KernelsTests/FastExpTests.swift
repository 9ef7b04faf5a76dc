import Foundation
import Kernels
import Testing
import TestSupport

/// The vector exp must stay within this many ulp of Foundation's `exp` (glibc `expf`, itself
/// correctly rounded in practice) wherever the result is a normal float.
let expMaxUlp = 2

@Test func exponentialWithinTwoUlpOfFoundation() {
    // A dense sweep over the whole normal-result range plus random points.
    var xs: [Float] = []
    var v: Float = -87.3
    while v < 88.7 { xs.append(v); v += 0.000_731 }
    var rng = TestRandom(seed: 7)
    xs += rng.floats(100_000, -87, 88)
    xs += [0, -0.0, 1, -1, 0.5, -0.5, 1e-8, -1e-8, 88.72, -87.33]
    var out = [Float](repeating: 0, count: xs.count)
    xs.withUnsafeBufferPointer { x in out.withUnsafeMutableBufferPointer { exponential(x.baseAddress!, into: $0.baseAddress!, count: xs.count) } }
    var worst = 0
    for (x, e) in zip(xs, out) {
        let ref = Foundation.exp(x)
        guard ref.isNormal else { continue }
        worst = max(worst, ulpDistance(e, ref))
    }
    #expect(worst <= expMaxUlp)
}

@Test func exponentialSpecialValues() {
    let xs: [Float] = [.infinity, -.infinity, .nan, 89, 100, -104, -200, -100, 0]
    var out = [Float](repeating: 0, count: xs.count)
    xs.withUnsafeBufferPointer { x in out.withUnsafeMutableBufferPointer { exponential(x.baseAddress!, into: $0.baseAddress!, count: xs.count) } }
    #expect(out[0] == .infinity)
    #expect(out[1] == 0)
    #expect(out[2].isNaN)
    #expect(out[3] == .infinity && out[4] == .infinity)
    #expect(out[5] == 0 && out[6] == 0)
    // Subnormal results are approximately right, not flushed: exp(-100) ≈ 3.72e-44.
    #expect(out[7] > 0 && abs(out[7] - Foundation.exp(-100)) <= 4 * Float.leastNonzeroMagnitude)
    #expect(out[8] == 1)
}
