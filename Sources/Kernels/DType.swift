/// Element types of stored tensors. Raw values are the safetensors spellings.
public enum DType: String, Sendable, CaseIterable, Codable {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"
    /// GGML block-quantized types (GGUF only; see Quantized.swift for the layouts). A row of a
    /// quantized matrix is a whole number of blocks.
    case q4_0 = "Q4_0"
    case q4_1 = "Q4_1"
    case q5_0 = "Q5_0"
    case q5_1 = "Q5_1"
    case q8_0 = "Q8_0"
    case q4_K = "Q4_K"
    case q5_K = "Q5_K"
    case q6_K = "Q6_K"

    /// Bytes per element; for block types, bytes per block (see `byteCount(elements:)`).
    public var byteSize: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K: quantizedFormat!.blockBytes
        }
    }

    /// The plain element types (f32, f16, bf16): what safetensors stores and what code iterating
    /// over "every dtype" means. The GGML block types are `blockQuantized`.
    public static let allCases: [DType] = [.float32, .float16, .bfloat16]
    /// The GGML block-quantized types.
    public static let blockQuantized: [DType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K]

    /// The block format of a quantized type, nil for f32/f16/bf16.
    public var quantizedFormat: QuantizedFormat? { QuantizedFormat(rawValue: rawValue) }
    /// Elements per block (1 for plain types).
    public var blockSize: Int { quantizedFormat?.blockSize ?? 1 }
    /// Bytes of `elements` values (a whole number of blocks for quantized types).
    public func byteCount(elements: Int) -> Int { elements / blockSize * byteSize }
}

/// Converts a bfloat16 bit pattern to Float (exact: bf16 is the top half of an f32).
@inline(__always)
public func bf16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Converts a Float to bfloat16 bits with round-to-nearest-even (NaN stays NaN), as PyTorch does.
@inline(__always)
public func floatToBF16(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) }
    let rounding = ((bits >> 16) & 1) &+ 0x7FFF
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

/// Converts an IEEE half bit pattern to Float.
@inline(__always)
public func f16ToFloat(_ bits: UInt16) -> Float {
    Float(Float16(bitPattern: bits))
}

/// Converts a Float to IEEE half bits (round-to-nearest-even).
@inline(__always)
public func floatToF16(_ value: Float) -> UInt16 {
    Float16(value).bitPattern
}
