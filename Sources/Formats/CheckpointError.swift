import Foundation
import Kernels

/// Everything that can go wrong reading or writing a checkpoint. Each case carries the file, the
/// tensor (where there is one), expected vs actual values, and `description` adds a hint when
/// the cause is likely.
public enum CheckpointError: Error, CustomStringConvertible, Sendable {
    /// The file is shorter than the 8-byte header length that starts every safetensors file.
    case fileTooSmall(file: String, size: Int)
    /// The header length read from the first 8 bytes is past the end of the file or absurdly
    /// large (more than `SafetensorsFile.maxHeaderBytes`).
    case headerLengthOutOfRange(file: String, headerLength: UInt64, fileSize: Int, hint: String?)
    /// The header is not a JSON object (bad start, invalid JSON, invalid UTF-8, not an object).
    case invalidHeader(file: String, reason: String, hint: String?)
    /// The same tensor name appears twice in one header.
    case duplicateTensor(file: String, tensor: String)
    /// A header entry lacks `dtype`, `shape` or `data_offsets`, or one of them has the wrong type.
    case invalidEntry(file: String, tensor: String, reason: String)
    /// `data_offsets` are reversed or reach past the data section.
    case invalidOffsets(file: String, tensor: String, offsets: [Int], dataSize: Int, reason: String)
    /// `data_offsets` span a different number of bytes than shape × dtype size.
    case sizeMismatch(file: String, tensor: String, dtype: String, shape: [Int], expectedBytes: Int, actualBytes: Int)
    /// Two tensors' byte ranges overlap (relative data offsets given).
    case overlappingTensors(file: String, first: String, firstOffsets: [Int], second: String, secondOffsets: [Int])
    /// A tensor's bytes are not aligned to its element size and the policy is to refuse.
    case misalignedData(file: String, tensor: String, dtype: String, fileOffset: Int)
    /// The tensor's dtype has no `DType` (e.g. I64, F8_E4M3), so it cannot be viewed as a `Tensor`.
    case unsupportedDType(file: String, tensor: String, dtype: String)
    /// No tensor of that name. `suggestions` are close names, if any.
    case unknownTensor(location: String, tensor: String, suggestions: [String])
    /// A row range outside the tensor's slowest axis.
    case rowsOutOfRange(file: String, tensor: String, rows: Range<Int>, available: Int)
    /// The directory holds no `model.safetensors`, no `model.safetensors.index.json` and no `*.safetensors`.
    case noSafetensorsFiles(directory: String)
    /// `model.safetensors.index.json` is unreadable or malformed.
    case invalidIndex(file: String, reason: String)
    /// The index (or a shard-numbered file name) names a shard that does not exist.
    case missingShard(directory: String, shard: String, tensor: String?)
    /// One tensor name appears in two files of one checkpoint.
    case tensorInSeveralFiles(tensor: String, files: [String])
    /// The index maps a tensor to a shard whose header does not list it.
    case indexMismatch(index: String, tensor: String, shard: String)
    /// A system call failed (open, read, mmap, write, fsync, rename).
    case io(file: String, operation: String, reason: String)
    /// The writer was handed something it cannot write (duplicate names, a bad size limit, …).
    case invalidWriteRequest(file: String, reason: String)

    public var description: String {
        switch self {
        case .fileTooSmall(let file, let size):
            return "\(file): \(size) bytes is too small for a safetensors file (it must start with an 8-byte "
                + "header length). Hint: the download may be incomplete."
        case .headerLengthOutOfRange(let file, let length, let size, let hint):
            return "\(file): header length \(length) is out of range (file is \(size) bytes, limit "
                + "\(SafetensorsFile.maxHeaderBytes) bytes)." + Self.hintSuffix(hint)
        case .invalidHeader(let file, let reason, let hint):
            return "\(file): invalid safetensors header: \(reason)." + Self.hintSuffix(hint)
        case .duplicateTensor(let file, let tensor):
            return "\(file): tensor '\(tensor)' appears twice in the header; refusing to guess which one is meant."
        case .invalidEntry(let file, let tensor, let reason):
            return "\(file): tensor '\(tensor)': \(reason)."
        case .invalidOffsets(let file, let tensor, let offsets, let dataSize, let reason):
            return "\(file): tensor '\(tensor)': data_offsets \(offsets) \(reason) (data section is \(dataSize) bytes)."
                + (reason.contains("past") ? " Hint: the file may be truncated." : "")
        case .sizeMismatch(let file, let tensor, let dtype, let shape, let expected, let actual):
            return "\(file): tensor '\(tensor)': \(dtype) \(shape) needs \(expected) bytes but data_offsets span "
                + "\(actual) bytes."
        case .overlappingTensors(let file, let first, let firstOffsets, let second, let secondOffsets):
            return "\(file): tensors '\(first)' \(firstOffsets) and '\(second)' \(secondOffsets) overlap."
        case .misalignedData(let file, let tensor, let dtype, let offset):
            return "\(file): tensor '\(tensor)' (\(dtype)) starts at byte \(offset), not a multiple of its element "
                + "size. Hint: open with misalignment policy .copy to read it through an aligned copy."
        case .unsupportedDType(let file, let tensor, let dtype):
            return "\(file): tensor '\(tensor)' has dtype \(dtype), which is not supported; supported: "
                + DType.allCases.map(\.rawValue).joined(separator: ", ") + "."
        case .unknownTensor(let location, let tensor, let suggestions):
            return "\(location): no tensor named '\(tensor)'."
                + (suggestions.isEmpty
                    ? "" : " Did you mean " + suggestions.map { "'\($0)'" }.joined(separator: ", ") + "?")
        case .rowsOutOfRange(let file, let tensor, let rows, let available):
            return "\(file): tensor '\(tensor)': rows \(rows) are outside 0..<\(available)."
        case .noSafetensorsFiles(let directory):
            return "\(directory): no model.safetensors, model.safetensors.index.json or *.safetensors file. "
                + "Hint: is this the model directory (the one holding config.json)?"
        case .invalidIndex(let file, let reason):
            return "\(file): invalid index: \(reason)."
        case .missingShard(let directory, let shard, let tensor):
            return "\(directory): shard '\(shard)' is missing"
                + (tensor.map { " (it holds tensor '\($0)')" } ?? "") + ". Hint: the download may be incomplete."
        case .tensorInSeveralFiles(let tensor, let files):
            return "tensor '\(tensor)' appears in several files: \(files.joined(separator: ", "))."
        case .indexMismatch(let index, let tensor, let shard):
            return "\(index): maps tensor '\(tensor)' to '\(shard)', whose header does not list it. "
                + "Hint: the index and the shards come from different saves."
        case .io(let file, let operation, let reason):
            return "\(file): \(operation) failed: \(reason)."
        case .invalidWriteRequest(let file, let reason):
            return "\(file): cannot write: \(reason)."
        }
    }

    private static func hintSuffix(_ hint: String?) -> String {
        hint.map { " Hint: \($0)" } ?? ""
    }
}
