import Foundation

/// Character classes used by the pre-tokenizers, matching the `tokenizers` (Rust/Oniguruma)
/// definitions: `\p{L}`, `\p{N}`, `\s` (Unicode White_Space), `\w` and punctuation.
extension Unicode.Scalar {
    @inline(__always) var isLetter: Bool {
        if value < 0x80 { return (value | 0x20) >= 0x61 && (value | 0x20) <= 0x7A }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    @inline(__always) var isNumber: Bool {
        if value < 0x80 { return value >= 0x30 && value <= 0x39 }
        switch properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    @inline(__always) var isSpace: Bool {
        if value < 0x80 { return value == 0x20 || (value >= 0x09 && value <= 0x0D) }
        return properties.isWhitespace
    }

    @inline(__always) var isNewline: Bool { value == 0x0A || value == 0x0D }

    /// Rust regex `\w`: Alphabetic, marks, decimal digits, connector punctuation, Join_Control.
    var isWordCharacter: Bool {
        if value < 0x80 {
            return isLetter || isNumber || value == 0x5F
        }
        if properties.isAlphabetic || properties.isJoinControl { return true }
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// `tokenizers`' `is_punc`: ASCII punctuation (including symbols such as `$+<=>^|~`) or any
    /// Unicode `P*` category.
    var isPunctuation: Bool {
        if value < 0x80 {
            return (value >= 0x21 && value <= 0x2F) || (value >= 0x3A && value <= 0x40)
                || (value >= 0x5B && value <= 0x60) || (value >= 0x7B && value <= 0x7E)
        }
        switch properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
            .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default: return false
        }
    }
}

/// GPT-2's reversible byte ↔ printable-character table (`bytes_to_unicode` in `encoder.py`).
enum ByteLevelTable {
    /// Character for each byte value 0...255.
    static let byteToScalar: [Unicode.Scalar] = {
        var bs: [Int] = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) {
            bs.append(b)
            cs.append(256 + n)
            n += 1
        }
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        for (b, c) in zip(bs, cs) { table[b] = Unicode.Scalar(UInt32(c))! }
        return table
    }()

    /// Inverse table, indexed by scalar value (all mapped scalars are below 0x144).
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x200)
        for (b, s) in byteToScalar.enumerated() { table[Int(s.value)] = Int16(b) }
        return table
    }()

    /// Maps the UTF-8 bytes of `scalars` to byte-level characters.
    static func encode(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.count + scalars.count / 2)
        byteToScalar.withUnsafeBufferPointer { table in
            for s in scalars {
                if s.value < 0x80 {
                    out.append(table[Int(s.value)])
                } else {
                    UTF8.encode(s) { out.append(table[Int($0)]) }
                }
            }
        }
        return out
    }

    /// The byte of a byte-level character, or nil if `s` is not one.
    @inline(__always) static func byte(_ s: Unicode.Scalar) -> UInt8? {
        guard s.value < 0x200 else { return nil }
        let b = scalarToByte[Int(s.value)]
        return b < 0 ? nil : UInt8(b)
    }
}

extension String {
    /// Builds a string from scalars through UTF-8 bytes: several times faster than appending to a
    /// `UnicodeScalarView`, which re-encodes and grows the storage scalar by scalar.
    init<C: Collection>(scalars: C) where C.Element == Unicode.Scalar {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(scalars.count + 8)
        for s in scalars {
            if s.value < 0x80 {
                bytes.append(UInt8(truncatingIfNeeded: s.value))
            } else {
                UTF8.encode(s) { bytes.append($0) }
            }
        }
        self = String(decoding: bytes, as: UTF8.self)
    }
}
