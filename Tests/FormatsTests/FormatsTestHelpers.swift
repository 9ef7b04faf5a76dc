import Foundation
import Kernels
import Testing
import TestSupport

@testable import Formats

/// Builds a safetensors file by hand, so tests can break any part of it.
/// - Parameters:
///   - header: the header JSON text.
///   - data: the data section.
///   - misalignBy: extra spaces after padding the header to a multiple of 8 (as the reference
///     does), which shifts the data section off 8-byte alignment.
///   - length: overrides the 8-byte header length.
func rawSafetensors(_ header: String, data: [UInt8] = [], misalignBy: Int = 0, length: UInt64? = nil) -> [UInt8] {
    rawSafetensors(bytes: Array(header.utf8), data: data, misalignBy: misalignBy, length: length)
}

/// `rawSafetensors` with the header given as bytes (for headers that are not valid UTF-8).
func rawSafetensors(bytes header: [UInt8], data: [UInt8] = [], misalignBy: Int = 0, length: UInt64? = nil) -> [UInt8] {
    var headerBytes = header
    headerBytes += Array(repeating: UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8 + misalignBy)
    let n = length ?? UInt64(headerBytes.count)
    return withUnsafeBytes(of: n.littleEndian) { Array($0) } + headerBytes + data
}

/// Little-endian bytes of Float values.
func f32Bytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }
}

/// Writes bytes to `name` inside `directory`.
@discardableResult
func writeFile(_ bytes: [UInt8], _ name: String, in directory: URL) throws -> URL {
    let url = directory.appendingPathComponent(name)
    try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
    try Data(bytes).write(to: url)
    return url
}

/// Writes text to `name` inside `directory`.
@discardableResult
func writeFile(_ text: String, _ name: String, in directory: URL) throws -> URL {
    try writeFile(Array(text.utf8), name, in: directory)
}

/// The case name of a `CheckpointError` ("duplicateTensor", …), so tables can name the expected case.
func caseName(_ error: CheckpointError) -> String {
    Mirror(reflecting: error).children.first?.label ?? "\(error)"
}

/// Runs `body`, which must throw a `CheckpointError` of case `expected` whose description
/// contains every string in `mentions`.
func expectCheckpointError(
    _ expected: String, mentioning mentions: [String], sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected CheckpointError.\(expected), nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as CheckpointError {
        #expect(caseName(error) == expected, "\(error)", sourceLocation: sourceLocation)
        for text in mentions {
            #expect(error.description.contains(text), "'\(text)' missing from: \(error)", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected CheckpointError.\(expected), got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
}

/// The reference fixtures' expectations (`Tests/Fixtures/safetensors/expected.json`).
struct ReferenceExpectations {
    struct TensorSpec {
        let dtype: String
        let shape: [Int]
        let values: [Float]
    }
    struct FileSpec {
        let metadata: [String: String]
        let tensors: [String: TensorSpec]
    }
    let files: [String: FileSpec]

    static func load() throws -> ReferenceExpectations {
        let root = try JSONValue(contentsOf: Fixtures.url("safetensors/expected.json"))
        var files: [String: FileSpec] = [:]
        for (file, spec) in root.objectValue ?? [:] {
            var tensors: [String: TensorSpec] = [:]
            for (name, t) in spec["tensors"]?.objectValue ?? [:] {
                tensors[name] = TensorSpec(
                    dtype: t["dtype"]?.stringValue ?? "?",
                    shape: t["shape"]?.arrayValue?.compactMap(\.intValue) ?? [],
                    values: t["values"]?.arrayValue?.compactMap(\.floatValue) ?? [])
            }
            let metadata = (spec["metadata"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
            files[file] = FileSpec(metadata: metadata, tensors: tensors)
        }
        return ReferenceExpectations(files: files)
    }
}

/// Tensors with recognisable values: element i of tensor k is k + i / 64 (exact in bf16 for small sizes).
func sampleTensor(_ k: Int, shape: [Int], dtype: DType) -> Tensor {
    let count = shape.reduce(1, *)
    return Tensor.owned((0..<count).map { Float(k) + Float($0 % 64) / 64 }, shape: shape, dtype: dtype)
}
