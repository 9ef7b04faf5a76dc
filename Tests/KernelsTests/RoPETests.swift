import Foundation
import Kernels
import Testing
import TestSupport

/// The fast RoPE performs the reference's exact operations (same cos/sin, no FMA): bit-exact.
let ropeTolerance: Float = 0
/// The hand-computed values below are rounded to 7 decimals.
let ropeHandTolerance: Float = 2e-6

func runRoPE(_ x: [Float], tokens: Int, heads: Int, headDim: Int, rotaryDim: Int, positions: [Int], invFreq: [Float],
             scaling: Float, style: RoPEStyle, reference: Bool = false) -> [Float] {
    var out = x
    out.withUnsafeMutableBufferPointer { o in
        positions.withUnsafeBufferPointer { p in
            invFreq.withUnsafeBufferPointer { f in
                if reference {
                    ScalarReference.applyRoPE(o.baseAddress!, tokens: tokens, heads: heads, headDim: headDim, rotaryDim: rotaryDim,
                        positions: p.baseAddress!, invFreq: f.baseAddress!, attentionScaling: scaling, style: style)
                } else {
                    applyRoPE(o.baseAddress!, tokens: tokens, heads: heads, headDim: headDim, rotaryDim: rotaryDim,
                        positions: p.baseAddress!, invFreq: f.baseAddress!, attentionScaling: scaling, style: style)
                }
            }
        }
    }
    return out
}

@Test func ropeHandComputedHalfSplit() {
    // Pairs (0,2) at angle 1·1 and (1,3) at angle 1·0.5.
    let out = runRoPE([1, 2, 3, 4], tokens: 1, heads: 1, headDim: 4, rotaryDim: 4, positions: [1], invFreq: [1, 0.5],
                      scaling: 1, style: .halfSplit)
    let expected: [Float] = [-1.9841106, -0.1625371, 2.4623779, 4.4691813]
    for i in 0..<4 { #expect(abs(out[i] - expected[i]) <= ropeHandTolerance, "\(i)") }
}

@Test func ropeHandComputedInterleaved() {
    // Pairs (0,1) at angle 1 and (2,3) at angle 0.5.
    let out = runRoPE([1, 2, 3, 4], tokens: 1, heads: 1, headDim: 4, rotaryDim: 4, positions: [1], invFreq: [1, 0.5],
                      scaling: 1, style: .interleaved)
    let expected: [Float] = [-1.1426397, 1.9220756, 0.7150455, 4.9486068]
    for i in 0..<4 { #expect(abs(out[i] - expected[i]) <= ropeHandTolerance, "\(i)") }
}

@Test func ropePositionZeroIsIdentityAndScalingMultiplies() {
    let x: [Float] = [1, 2, 3, 4, 5, 6, 7, 8]
    #expect(runRoPE(x, tokens: 1, heads: 1, headDim: 8, rotaryDim: 8, positions: [0], invFreq: [1, 0.1, 0.01, 0.001],
                    scaling: 1, style: .halfSplit) == x)
    #expect(runRoPE(x, tokens: 1, heads: 1, headDim: 8, rotaryDim: 8, positions: [0], invFreq: [1, 0.1, 0.01, 0.001],
                    scaling: 2, style: .interleaved) == x.map { $0 * 2 })
}

struct RoPECase: Sendable, CustomStringConvertible {
    var headDim: Int, rotaryDim: Int, heads: Int, tokens: Int
    var description: String { "head \(headDim) rot \(rotaryDim) heads \(heads) tokens \(tokens)" }
}

@Test(arguments: [
    RoPECase(headDim: 4, rotaryDim: 4, heads: 1, tokens: 1),
    RoPECase(headDim: 24, rotaryDim: 16, heads: 3, tokens: 5),
    RoPECase(headDim: 64, rotaryDim: 64, heads: 4, tokens: 2),
    RoPECase(headDim: 130, rotaryDim: 34, heads: 2, tokens: 3),
    RoPECase(headDim: 192, rotaryDim: 64, heads: 2, tokens: 37),
    RoPECase(headDim: 128, rotaryDim: 128, heads: 2, tokens: 1),
], [RoPEStyle.halfSplit, .interleaved])
func ropeMatchesReferenceExactly(_ c: RoPECase, _ style: RoPEStyle) {
    var rng = TestRandom(seed: UInt64(c.headDim * 31 + c.rotaryDim))
    let x = rng.floats(c.tokens * c.heads * c.headDim, -3, 3)
    let invFreq: [Float] = (0..<(c.rotaryDim / 2)).map { (i: Int) -> Float in
        Float(1 / pow(10000.0, Double(2 * i) / Double(c.rotaryDim)))
    }
    let positions = (0..<c.tokens).map { 3 + 1000 * $0 }
    let fast = runRoPE(x, tokens: c.tokens, heads: c.heads, headDim: c.headDim, rotaryDim: c.rotaryDim,
                       positions: positions, invFreq: invFreq, scaling: 1.25, style: style)
    let ref = runRoPE(x, tokens: c.tokens, heads: c.heads, headDim: c.headDim, rotaryDim: c.rotaryDim,
                      positions: positions, invFreq: invFreq, scaling: 1.25, style: style, reference: true)
    #expect(ropeTolerance == 0 && fast.bitwiseEqual(ref))
}
