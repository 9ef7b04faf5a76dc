/// Everything that can go wrong reading or writing a GGUF file. Each case names the file and,
/// where there is one, the metadata key or tensor; `description` adds a hint when the cause is
/// likely.
public enum GGUFError: Error, CustomStringConvertible, Sendable {
    /// The file does not start with `GGUF`.
    case badMagic(file: String, found: [UInt8])
    /// A version other than 2 or 3 (1 used 32-bit counts; a byte-swapped number means a
    /// big-endian file).
    case unsupportedVersion(file: String, version: UInt32)
    /// The file ends inside the header (`what` is the field being read, at byte `offset`).
    case truncated(file: String, what: String, offset: Int, fileSize: Int)
    /// A metadata value type number outside `gguf_type`.
    case invalidValueType(file: String, key: String, rawType: UInt32)
    /// A metadata key appears twice.
    case duplicateKey(file: String, key: String)
    /// A metadata value the format forbids (e.g. `general.alignment` not a power of two), or a
    /// key or string that is not UTF-8.
    case invalidMetadata(file: String, key: String, reason: String)
    /// A tensor name appears twice.
    case duplicateTensor(file: String, tensor: String)
    /// A tensor entry GGML could not describe (too many dims, a negative or overflowing size, a
    /// row length that is not a whole number of blocks).
    case invalidTensorInfo(file: String, tensor: String, reason: String)
    /// A tensor's bytes reach past the end of the file.
    case tensorDataOutOfBounds(file: String, tensor: String, offset: Int, byteCount: Int, dataSize: Int)
    /// A tensor's offset is not a multiple of the file's alignment.
    case misalignedTensor(file: String, tensor: String, offset: Int, alignment: Int)
    /// Two tensors' byte ranges overlap (offsets relative to the data section).
    case overlappingTensors(file: String, first: String, firstRange: Range<Int>, second: String, secondRange: Range<Int>)
    /// The tensor's GGML type number is not one ggml defines (the file is refused when opened).
    case unknownType(file: String, tensor: String, rawType: UInt32)
    /// A known GGML type the kernels cannot compute with (e.g. Q5_K, IQ2_XS, I32).
    case unsupportedType(file: String, tensor: String, type: String)
    /// No tensor of that name; `suggestions` are close names.
    case unknownTensor(file: String, tensor: String, suggestions: [String])
    /// A row range outside the tensor's slowest axis.
    case rowsOutOfRange(file: String, tensor: String, rows: Range<Int>, available: Int)
    /// A required metadata key is absent.
    case missingMetadata(file: String, key: String, hint: String?)
    /// A metadata key has another type than the one needed.
    case metadataTypeMismatch(file: String, key: String, expected: String, actual: String)
    /// The writer was handed something it cannot write.
    case invalidWriteRequest(file: String, reason: String)

    public var description: String {
        switch self {
        case .badMagic(let file, let found):
            let text = String(decoding: found.map { (32...126).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
            return "\(file): not a GGUF file (starts with \"\(text)\", expected \"GGUF\")."
                + (found.count < 4 ? " Hint: the file is shorter than the 4-byte magic." : "")
        case .unsupportedVersion(let file, let version):
            let swapped = version.byteSwapped
            return "\(file): GGUF version \(version) is not supported (only 2 and 3)."
                + (swapped == 2 || swapped == 3 ? " Hint: this is a big-endian GGUF file." : "")
                + (version == 1 ? " Hint: version 1 files are obsolete; reconvert with a current llama.cpp." : "")
        case .truncated(let file, let what, let offset, let size):
            return "\(file): file ends while reading \(what) at byte \(offset) (file is \(size) bytes). "
                + "Hint: the download may be incomplete."
        case .invalidValueType(let file, let key, let raw):
            return "\(file): metadata '\(key)' has value type \(raw), which GGUF does not define."
        case .duplicateKey(let file, let key):
            return "\(file): metadata key '\(key)' appears twice."
        case .invalidMetadata(let file, let key, let reason):
            return "\(file): metadata '\(key)': \(reason)."
        case .duplicateTensor(let file, let tensor):
            return "\(file): tensor '\(tensor)' appears twice; refusing to guess which one is meant."
        case .invalidTensorInfo(let file, let tensor, let reason):
            return "\(file): tensor '\(tensor)': \(reason)."
        case .tensorDataOutOfBounds(let file, let tensor, let offset, let count, let dataSize):
            return "\(file): tensor '\(tensor)' spans bytes \(offset)..<\(offset + count) of the data section, "
                + "which has \(dataSize) bytes. Hint: the file may be truncated."
        case .misalignedTensor(let file, let tensor, let offset, let alignment):
            return "\(file): tensor '\(tensor)' starts at data offset \(offset), not a multiple of the "
                + "alignment \(alignment)."
        case .overlappingTensors(let file, let first, let a, let second, let b):
            return "\(file): tensors '\(first)' (bytes \(a)) and '\(second)' (bytes \(b)) overlap."
        case .unknownType(let file, let tensor, let raw):
            return "\(file): tensor '\(tensor)' has GGML type \(raw), which this build does not know. "
                + "Hint: the file may come from a newer llama.cpp."
        case .unsupportedType(let file, let tensor, let type):
            return "\(file): tensor '\(tensor)' is \(type), which the kernels cannot compute with; supported: "
                + DTypeNames.supported + ". Hint: requantize with llama-quantize to one of those."
        case .unknownTensor(let file, let tensor, let suggestions):
            return "\(file): no tensor named '\(tensor)'."
                + (suggestions.isEmpty ? "" : " Did you mean " + suggestions.map { "'\($0)'" }.joined(separator: ", ") + "?")
        case .rowsOutOfRange(let file, let tensor, let rows, let available):
            return "\(file): tensor '\(tensor)': rows \(rows) are outside 0..<\(available)."
        case .missingMetadata(let file, let key, let hint):
            return "\(file): metadata '\(key)' is missing." + (hint.map { " Hint: \($0)" } ?? "")
        case .metadataTypeMismatch(let file, let key, let expected, let actual):
            return "\(file): metadata '\(key)' is \(actual), expected \(expected)."
        case .invalidWriteRequest(let file, let reason):
            return "\(file): cannot write GGUF: \(reason)."
        }
    }
}

import Kernels

enum DTypeNames {
    static var supported: String {
        // Plain types, then the block types this build has (`DType` knows them by GGML name).
        (DType.allCases + QuantizedFormat.allCases.compactMap { DType(rawValue: $0.rawValue) })
            .map(\.rawValue).joined(separator: ", ")
    }
}
