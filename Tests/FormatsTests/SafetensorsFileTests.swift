import Foundation
import Kernels
import Testing
import TestSupport

@testable import Formats

/// A deliberately broken file: its bytes, the tensor to ask for after opening (nil: opening
/// must already fail), the `CheckpointError` case expected and the tensor name it must mention.
struct BrokenFile: Sendable, CustomTestStringConvertible {
    let label: String
    let bytes: [UInt8]
    var access: String? = nil
    let expected: String
    var tensor: String? = nil
    var hint: String? = nil

    var testDescription: String { label }
}

private let validEntry = #""w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#

let brokenFiles: [BrokenFile] = [
    BrokenFile(label: "empty file", bytes: [], expected: "fileTooSmall"),
    BrokenFile(label: "shorter than the length prefix", bytes: [1, 2, 3, 4, 5], expected: "fileTooSmall"),
    BrokenFile(
        label: "git LFS pointer instead of weights",
        bytes: Array("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n".utf8),
        expected: "headerLengthOutOfRange", hint: "git lfs pull"),
    BrokenFile(label: "GGUF file", bytes: Array("GGUF".utf8) + [3, 0, 0, 0] + Array(repeating: 0, count: 32),
        expected: "headerLengthOutOfRange", hint: "GGUF"),
    BrokenFile(label: "truncated header (length past EOF)",
        bytes: Array(rawSafetensors("{" + validEntry + "}", data: f32Bytes([1, 2])).prefix(30)),
        expected: "headerLengthOutOfRange"),
    BrokenFile(label: "header length beyond EOF", bytes: rawSafetensors("{}", length: 1000), expected: "headerLengthOutOfRange"),
    BrokenFile(label: "absurd header length", bytes: rawSafetensors("{}", length: 1 << 40), expected: "headerLengthOutOfRange"),
    BrokenFile(label: "zero header length", bytes: rawSafetensors("", length: 0) + [0, 0], expected: "invalidHeader"),
    BrokenFile(label: "header is not an object", bytes: rawSafetensors("[1, 2, 3]"), expected: "invalidHeader"),
    BrokenFile(label: "header starts with garbage", bytes: rawSafetensors("\u{0}\u{1}{}"), expected: "invalidHeader"),
    BrokenFile(label: "non-JSON header", bytes: rawSafetensors(#"{"w": {"dtype": F32}}"#), expected: "invalidHeader"),
    BrokenFile(label: "header cut mid-JSON", bytes: rawSafetensors(#"{"w": {"dtype": "F32", "sha"#), expected: "invalidHeader"),
    BrokenFile(label: "header nested 10000 deep", bytes: rawSafetensors(#"{"w":"# + String(repeating: "[", count: 10000)),
        expected: "invalidHeader"),
    BrokenFile(label: "tensor name not UTF-8",
        bytes: rawSafetensors(bytes: Array("{\"".utf8) + [0xC3, 0x28] + Array("\":{}}".utf8)),
        expected: "invalidHeader"),
    BrokenFile(label: "entry without dtype",
        bytes: rawSafetensors(#"{"w":{"shape":[2],"data_offsets":[0,8]}}"#, data: f32Bytes([1, 2])),
        expected: "invalidEntry", tensor: "w"),
    BrokenFile(label: "entry without shape",
        bytes: rawSafetensors(#"{"w":{"dtype":"F32","data_offsets":[0,8]}}"#, data: f32Bytes([1, 2])),
        expected: "invalidEntry", tensor: "w"),
    BrokenFile(label: "entry without data_offsets",
        bytes: rawSafetensors(#"{"w":{"dtype":"F32","shape":[2]}}"#, data: f32Bytes([1, 2])),
        expected: "invalidEntry", tensor: "w"),
    BrokenFile(label: "entry is not an object", bytes: rawSafetensors(#"{"w":[1,2]}"#), expected: "invalidEntry", tensor: "w"),
    BrokenFile(label: "negative dimension",
        bytes: rawSafetensors(#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: f32Bytes([1, 2])),
        expected: "invalidEntry", tensor: "w"),
    BrokenFile(label: "fractional offset",
        bytes: rawSafetensors(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}}"#, data: f32Bytes([1, 2])),
        expected: "invalidEntry", tensor: "w"),
    BrokenFile(label: "shape overflows Int",
        bytes: rawSafetensors(#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
            data: f32Bytes([1, 2])),
        expected: "invalidEntry", tensor: "w"),
    BrokenFile(label: "metadata is not an object",
        bytes: rawSafetensors(#"{"__metadata__":"pt","#  + validEntry + "}", data: f32Bytes([1, 2])),
        expected: "invalidEntry", tensor: "__metadata__"),
    BrokenFile(label: "data_offsets reversed",
        bytes: rawSafetensors(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: f32Bytes([1, 2])),
        expected: "invalidOffsets", tensor: "w"),
    BrokenFile(label: "offset past the end (truncated data)",
        bytes: rawSafetensors("{" + validEntry + "}", data: f32Bytes([1])),
        expected: "invalidOffsets", tensor: "w"),
    BrokenFile(label: "offsets not matching the shape",
        bytes: rawSafetensors(#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: f32Bytes([1, 2])),
        expected: "sizeMismatch", tensor: "w"),
    BrokenFile(label: "offsets not matching an unsupported dtype's size",
        bytes: rawSafetensors(#"{"p":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}}"#, data: f32Bytes([1, 2])),
        expected: "sizeMismatch", tensor: "p"),
    BrokenFile(label: "duplicate tensor name",
        bytes: rawSafetensors("{" + validEntry + "," + validEntry + "}", data: f32Bytes([1, 2])),
        expected: "duplicateTensor", tensor: "w"),
    BrokenFile(label: "overlapping ranges",
        bytes: rawSafetensors(
            #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            data: f32Bytes([1, 2, 3])),
        expected: "overlappingTensors", tensor: "b"),
    BrokenFile(label: "misaligned data (header not padded), policy .reject",
        bytes: rawSafetensors("{" + validEntry + "}", data: f32Bytes([1, 2]), misalignBy: 2),
        access: "w", expected: "misalignedData", tensor: "w"),
    BrokenFile(label: "misaligned data (odd offset), policy .reject",
        bytes: rawSafetensors(
            #"{"u":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}}"#,
            data: [7, 7] + f32Bytes([1, 2])),
        access: "w", expected: "misalignedData", tensor: "w"),
    BrokenFile(label: "unsupported dtype on access",
        bytes: rawSafetensors(#"{"p":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, data: f32Bytes([1, 2])),
        access: "p", expected: "unsupportedDType", tensor: "p", hint: "BF16"),
    BrokenFile(label: "unknown dtype on access",
        bytes: rawSafetensors(#"{"q":{"dtype":"Q9_WEIRD","shape":[3],"data_offsets":[0,8]}}"#, data: f32Bytes([1, 2])),
        access: "q", expected: "unsupportedDType", tensor: "q", hint: "Q9_WEIRD"),
    BrokenFile(label: "unknown tensor name",
        bytes: rawSafetensors("{" + validEntry + "}", data: f32Bytes([1, 2])),
        access: "x", expected: "unknownTensor", tensor: "x"),
]

@Suite struct SafetensorsFileTests {
    @Test(arguments: brokenFiles)
    func brokenFileThrowsNamingFileAndTensor(_ broken: BrokenFile) throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = try writeFile(broken.bytes, "broken.safetensors", in: directory)
        var mentions = [url.path]
        if let tensor = broken.tensor { mentions.append("'\(tensor)'") }
        if let hint = broken.hint { mentions.append(hint) }
        expectCheckpointError(broken.expected, mentioning: mentions) {
            let file = try SafetensorsFile(url: url, misalignment: .reject)
            if let name = broken.access { _ = try file.tensor(name) }
        }
    }

    @Test func misalignedDataIsCopiedIntoAlignedBufferByDefault() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = try writeFile(
            rawSafetensors(
                #"{"u":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}}"#,
                data: [7, 7] + f32Bytes([1.5, -2])),
            "odd.safetensors", in: directory)
        let file = try SafetensorsFile(url: url)
        let w = try file.tensor("w")
        #expect(Int(bitPattern: w.data) % 4 == 0)
        #expect(w.toFloatArray() == [1.5, -2])
        #expect(w.owner is TensorBuffer)
        #expect(file.entries["u"]?.dtype == nil)
        #expect(file.entries["u"]?.dtypeName == "U8")
    }

    @Test func holesBetweenTensorsAndEmptyTensorsAreAccepted() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = try writeFile(
            rawSafetensors(
                #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                data: f32Bytes([1, 99, 3])),
            "holes.safetensors", in: directory)
        let file = try SafetensorsFile(url: url)
        #expect(try file.tensor("b").toFloatArray() == [3])
        #expect(try file.tensor("e").shape == [0, 3])
        #expect(file.metadata.isEmpty)
    }

    @Test func unknownNameSuggestsCloseNames() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("m.safetensors")
        let t = Tensor.owned([1], shape: [1])
        try SafetensorsWriter.write(
            [("model.layers.0.mlp.gate.weight", t), ("model.layers.1.mlp.gate.weight", t), ("lm_head.weight", t)], to: url)
        let file = try SafetensorsFile(url: url)
        expectCheckpointError("unknownTensor", mentioning: ["Did you mean", "'model.layers.0.mlp.gate.weight'"]) {
            _ = try file.tensor("model.layers.0.mlp.gate.wieght")
        }
        expectCheckpointError("unknownTensor", mentioning: ["'model.layers.1.mlp.gate.weight'"]) {
            _ = try file.tensor("layers.1.mlp.gate.weight")
        }
        expectCheckpointError("unknownTensor", mentioning: ["no tensor named 'zzz'"]) { _ = try file.tensor("zzz") }
    }

    @Test func readsTheReferenceWritersFile() throws {
        let expected = try ReferenceExpectations.load()
        let spec = try #require(expected.files["reference"])
        let file = try SafetensorsFile(url: Fixtures.url("safetensors/reference.safetensors"))
        #expect(file.metadata == spec.metadata)
        #expect(Set(file.entries.keys) == Set(spec.tensors.keys))
        for (name, tensorSpec) in spec.tensors {
            let entry = try #require(file.entries[name])
            #expect(entry.dtypeName == tensorSpec.dtype, "\(name)")
            #expect(entry.shape == tensorSpec.shape, "\(name)")
            guard entry.dtype != nil else {
                expectCheckpointError("unsupportedDType", mentioning: [name, tensorSpec.dtype]) { _ = try file.tensor(name) }
                continue
            }
            let tensor = try file.tensor(name)
            #expect(tensor.shape == tensorSpec.shape, "\(name)")
            #expect(tensor.toFloatArray() == tensorSpec.values, "\(name)")
            #expect(tensor.owner === file.mapping, "\(name) is not a zero-copy view")
            #expect(Int(bitPattern: tensor.data) % tensor.dtype.byteSize == 0)
        }
    }

    @Test func tensorsOutliveTheFileObject() throws {
        var tensor: Tensor?
        do {
            let file = try SafetensorsFile(url: Fixtures.url("safetensors/reference_float.safetensors"))
            tensor = try file.tensor("f32.matrix")
        }
        #expect(tensor?.toFloatArray().first == -3)
    }
}
