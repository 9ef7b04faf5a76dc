import Kernels

/// A GGML tensor type (`enum ggml_type` in ggml.h), kept as its raw number. A file using a type
/// this build does not know is refused when opened: without its block size nothing about the
/// tensor's bytes can be checked.
public struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let f32 = GGMLType(rawValue: 0)
    public static let f16 = GGMLType(rawValue: 1)
    public static let q4_0 = GGMLType(rawValue: 2)
    public static let q4_1 = GGMLType(rawValue: 3)
    public static let q5_0 = GGMLType(rawValue: 6)
    public static let q5_1 = GGMLType(rawValue: 7)
    public static let q8_0 = GGMLType(rawValue: 8)
    public static let q8_1 = GGMLType(rawValue: 9)
    public static let q2_K = GGMLType(rawValue: 10)
    public static let q3_K = GGMLType(rawValue: 11)
    public static let q4_K = GGMLType(rawValue: 12)
    public static let q5_K = GGMLType(rawValue: 13)
    public static let q6_K = GGMLType(rawValue: 14)
    public static let q8_K = GGMLType(rawValue: 15)
    public static let i8 = GGMLType(rawValue: 24)
    public static let i16 = GGMLType(rawValue: 25)
    public static let i32 = GGMLType(rawValue: 26)
    public static let i64 = GGMLType(rawValue: 27)
    public static let f64 = GGMLType(rawValue: 28)
    public static let bf16 = GGMLType(rawValue: 30)

    /// (name, elements per block, bytes per block) of every type ggml defines, from ggml.c's
    /// `type_traits` (the same table as gguf-py's `GGML_QUANT_SIZES`). Sizes let the reader check
    /// every tensor's byte range even for types it cannot compute with.
    static let traits: [UInt32: (name: String, blockSize: Int, blockBytes: Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
        18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
        30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    ]

    /// Whether ggml defines this type (its block size is known).
    public var isKnown: Bool { Self.traits[rawValue] != nil }
    /// ggml's name (`Q4_K`), or `type N` for an unknown number.
    public var name: String { Self.traits[rawValue]?.name ?? "type \(rawValue)" }
    /// Elements per block (1 for plain types), nil for an unknown type.
    public var blockSize: Int? { Self.traits[rawValue]?.blockSize }
    /// Bytes per block, nil for an unknown type.
    public var blockBytes: Int? { Self.traits[rawValue]?.blockBytes }
    public var description: String { name }

    /// The `DType` the kernels compute with for this type, nil when they cannot.
    public var dtype: DType? {
        switch rawValue {
        case 0: .float32
        case 1: .float16
        case 30: .bfloat16
        default: DType(rawValue: name)
        }
    }

    /// The GGML type that stores `dtype`.
    public init?(_ dtype: DType) {
        guard let entry = Self.traits.first(where: { $0.value.name == dtype.rawValue }) else { return nil }
        self.init(rawValue: entry.key)
    }

    /// Bytes of a tensor with `dimensions` (ne, fastest first): nil for an unknown type, a row
    /// length that is not a whole number of blocks, or overflow.
    func byteCount(dimensions: [Int]) -> Int? {
        guard let traits = Self.traits[rawValue] else { return nil }
        guard let first = dimensions.first else { return traits.blockBytes }  // a scalar: one block
        guard first % traits.blockSize == 0 else { return nil }
        var bytes = (first / traits.blockSize).multipliedReportingOverflow(by: traits.blockBytes)
        guard !bytes.overflow else { return nil }
        for d in dimensions.dropFirst() {
            bytes = bytes.partialValue.multipliedReportingOverflow(by: d)
            guard !bytes.overflow else { return nil }
        }
        return bytes.partialValue
    }
}

/// Types of GGUF metadata values (`enum gguf_type`).
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12
}

/// One GGUF metadata value.
public indirect enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    /// A homogeneous array; `elementType` is kept so an empty array round-trips.
    case array(GGUFValueType, [GGUFValue])

    /// The stored type.
    public var type: GGUFValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .float32: .float32
        case .bool: .bool
        case .string: .string
        case .uint64: .uint64
        case .int64: .int64
        case .float64: .float64
        case .array: .array
        }
    }

    /// Any integer type as `Int` (nil for other types or a UInt64 above `Int.max`).
    public var int: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        default: nil
        }
    }

    /// A float or integer value as `Double`.
    public var double: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: int.map(Double.init)
        }
    }

    public var bool: Bool? { if case .bool(let v) = self { v } else { nil } }
    public var string: String? { if case .string(let v) = self { v } else { nil } }
    /// The elements of an array value.
    public var array: [GGUFValue]? { if case .array(_, let v) = self { v } else { nil } }
    /// An array of strings (nil if not an array or any element is not a string).
    public var strings: [String]? {
        guard let a = array else { return nil }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for v in a {
            guard let s = v.string else { return nil }
            out.append(s)
        }
        return out
    }
    /// An array of integers.
    public var ints: [Int]? {
        guard let a = array else { return nil }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for v in a {
            guard let i = v.int else { return nil }
            out.append(i)
        }
        return out
    }

    public var description: String {
        switch self {
        case .string(let s): return s.count > 60 ? "\"\(s.prefix(60))…\"" : "\"\(s)\""
        case .array(let t, let a): return "[\(a.count) × \(t)]"
        case .bool(let b): return "\(b)"
        default: return double.map { "\($0)" } ?? "?"
        }
    }
}

/// One tensor's entry in a GGUF header.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// GGML `ne`: dimensions, fastest-varying first (a linear layer's weight is `{in, out}`).
    public let dimensions: [Int]
    public let type: GGMLType
    /// Offset of the first byte, relative to the data section.
    public let offset: Int
    /// Bytes the tensor spans (checked to fit in the file when it was opened).
    public let byteCount: Int
    /// Number of elements (checked not to overflow when the file was opened).
    public let elementCount: Int

    /// The shape in PyTorch order, slowest axis first (`dimensions` reversed): `[out, in]`.
    public var shape: [Int] { dimensions.reversed() }
}

/// The product of `values`, nil when one is negative or the product overflows `Int`: sizes read
/// from files are multiplied only through this.
func checkedProduct(_ values: [Int]) -> Int? {
    var product = 1
    for v in values {
        guard v >= 0 else { return nil }
        let (p, overflow) = product.multipliedReportingOverflow(by: v)
        if overflow { return nil }
        product = p
    }
    return product
}
