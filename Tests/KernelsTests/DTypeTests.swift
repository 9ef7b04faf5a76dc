import Kernels
import Testing

/// Special values whose f16/bf16 round trip must be exact (or NaN for NaN).
let specialFloats: [Float] = [
    0, -0, 1, -1, .infinity, -.infinity, 65504, -65504, 6.1035156e-05 /* f16 min normal */,
    5.9604645e-08 /* f16 min subnormal */, 3.0517578e-05 /* f16 subnormal */,
    Float(bitPattern: 0x0001_0000) /* bf16 subnormal */, Float(bitPattern: 0x0080_0000) /* f32 min normal */,
    .greatestFiniteMagnitude, 3.140625, -2.5,
]

@Test(arguments: specialFloats)
func bf16RoundTripExactValues(_ v: Float) {
    // Every value above is representable in bf16 except where its low 16 bits are non-zero.
    let bits = floatToBF16(v)
    let back = bf16ToFloat(bits)
    if v.bitPattern & 0xFFFF == 0 {
        #expect(back.bitPattern == v.bitPattern)
    } else if v.magnitude > Float(bitPattern: 0x7F7F_7FFF) {
        #expect(back.isInfinite)  // above the largest bf16 + half an ulp: rounds to infinity
    } else {
        #expect(abs(back - v) <= v.ulp * 65536)
    }
}

@Test func bf16NaNAndRounding() {
    #expect(bf16ToFloat(floatToBF16(.nan)).isNaN)
    #expect(bf16ToFloat(floatToBF16(-.nan)).isNaN)
    // A signalling NaN whose payload sits only in the low bits must stay NaN, not become inf.
    #expect(bf16ToFloat(floatToBF16(Float(bitPattern: 0x7F80_0001))).isNaN)
    // Round to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 → 1 (even).
    #expect(bf16ToFloat(floatToBF16(1 + 0x1p-8)) == 1)
    #expect(bf16ToFloat(floatToBF16(1 + 0x1p-8 + 0x1p-20)) == 1 + 0x1p-7)
    #expect(bf16ToFloat(floatToBF16(-0.0)).sign == .minus)
    // Overflow rounds to infinity.
    #expect(bf16ToFloat(floatToBF16(.greatestFiniteMagnitude)) == .infinity)
}

@Test(arguments: specialFloats)
func f16RoundTrip(_ v: Float) {
    let back = f16ToFloat(floatToF16(v))
    if abs(v) > 65520 {
        #expect(back == (v.sign == .minus ? -.infinity : .infinity))
    } else if v != 0 && abs(v) < 2.9802322e-08 {
        #expect(back == 0)  // below half the smallest subnormal: flushes to (signed) zero
    } else if Float(Float16(v)) == v {
        #expect(back.bitPattern == v.bitPattern)
    }
}

@Test func f16SpecialValues() {
    #expect(f16ToFloat(floatToF16(.nan)).isNaN)
    #expect(f16ToFloat(floatToF16(-0.0)).bitPattern == (-0.0 as Float).bitPattern)
    #expect(f16ToFloat(0x0001) == 5.9604645e-08)
    #expect(f16ToFloat(0x7C00) == .infinity)
    #expect(f16ToFloat(0xFC00) == -.infinity)
    #expect(f16ToFloat(0x7E00).isNaN)
    // Every one of the 65536 half bit patterns survives widening and narrowing.
    for bits in UInt16.min...UInt16.max {
        let f = f16ToFloat(bits)
        if f.isNaN { continue }
        #expect(floatToF16(f) == bits)
    }
}

@Test func bf16AllPatternsRoundTrip() {
    var failures = 0
    for bits in UInt16.min...UInt16.max {
        let f = bf16ToFloat(bits)
        if f.isNaN {
            if !bf16ToFloat(floatToBF16(f)).isNaN { failures += 1 }
        } else if floatToBF16(f) != bits {
            failures += 1
        }
    }
    #expect(failures == 0)
}

/// The vector widening used by convertToFloat / matmul agrees with the scalar one on every
/// bit pattern, NaN and subnormals included.
@Test(arguments: [DType.float16, .bfloat16])
func vectorWideningAllPatterns(_ dtype: DType) {
    let buffer = TensorBuffer(byteCount: 65536 * 2)
    let p = buffer.pointer.bindMemory(to: UInt16.self, capacity: 65536)
    for i in 0..<65536 { p[i] = UInt16(i) }
    let t = Tensor(dtype: dtype, shape: [65536], data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    let wide = t.toFloatArray()
    var failures = 0
    for i in 0..<65536 {
        let s = dtype == .float16 ? f16ToFloat(UInt16(i)) : bf16ToFloat(UInt16(i))
        if s.isNaN ? !wide[i].isNaN : s.bitPattern != wide[i].bitPattern { failures += 1 }
    }
    #expect(failures == 0)
}
