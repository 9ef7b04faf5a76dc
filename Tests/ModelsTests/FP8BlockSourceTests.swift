import Formats
import Foundation
import Kernels
import TestSupport
import Testing

@testable import Models

@Suite("FP8 block-scaled checkpoints")
struct FP8BlockSourceTests {
    @Test(
        "float8_e4m3fn decodes as PyTorch does",
        arguments: [
            (UInt8(0x38), Float(1)), (0x7E, 448), (0xFE, -448), (0x01, 0x1p-9), (0x07, 7 * 0x1p-9), (0x08, 0x1p-6),
            (0x40, 2), (0x3C, 1.5), (0x00, 0), (0x30, 0.5),
        ])
    func decode(bits: UInt8, value: Float) {
        #expect(e4m3Values[Int(bits)] == value)
    }

    @Test("NaN patterns and negative zero")
    func specials() {
        #expect(e4m3Values[0x7F].isNaN && e4m3Values[0xFF].isNaN)
        #expect(e4m3Values[0x80] == 0 && e4m3Values[0x80].sign == .minus)
        #expect(e4m3Values.filter(\.isNaN).count == 2)
    }

    static func config(_ quantization: String) -> Data {
        Data(#"{"model_type": "deepseek_v3", "quantization_config": \#(quantization)}"#.utf8)
    }

    @Test("DeepSeek-V3's quantization_config is read")
    func readsBlockSize() throws {
        let q = try WeightQuantization.read(
            configData: Self.config(
                #"{"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}"#),
            file: "config.json")
        #expect(q == .fp8Block(rows: 128, cols: 128))
        #expect(try WeightQuantization.read(configData: Data(#"{"model_type": "x"}"#.utf8), file: "c") == nil)
    }

    @Test(
        "other quantization schemes are refused by name",
        arguments: [
            (#"{"quant_method": "awq", "bits": 4}"#, "awq"), (#"{"quant_method": "gptq"}"#, "gptq"),
            (#"{"quant_method": "mxfp4"}"#, "mxfp4"), (#"{"quant_method": "fp8", "fmt": "e5m2", "weight_block_size": [128, 128]}"#, "e5m2"),
            (#"{"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]}"#, "static"),
            (#"{"quant_method": "fp8"}"#, "weight_block_size"),
            (#"{"quant_method": "fp8", "weight_block_size": [0, 128]}"#, "weight_block_size"),
        ])
    func refused(json: String, named: String) {
        do {
            _ = try WeightQuantization.read(configData: Self.config(json), file: "config.json")
            Issue.record("accepted \(json)")
        } catch {
            #expect("\(error)".contains(named), "\(error)")
        }
    }

    /// A copy of the FP8 fixture with its config changed, the weights linked.
    static func variant(_ edit: (inout [String: Any]) -> Void, weights: Bool = true) throws -> URL {
        let source = Fixtures.url("models/deepseek_v3_fp8")
        let dir = try Fixtures.temporaryDirectory("premoe-fp8")
        var config = try JSONSerialization.jsonObject(
            with: Data(contentsOf: source.appendingPathComponent("config.json"))) as? [String: Any] ?? [:]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        if weights {
            try FileManager.default.copyItem(
                at: source.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        }
        return dir
    }

    @Test("an unsupported scheme is refused before any weight file is looked at")
    func refusedBeforeWeights() throws {
        let dir = try Self.variant({ $0["quantization_config"] = ["quant_method": "bitsandbytes", "load_in_4bit": true] },
                                   weights: false)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(throws: ModelError.self) { try ModelLoader.load(dir) }
        do {
            _ = try ModelLoader.load(dir)
        } catch {
            #expect("\(error)".contains("bitsandbytes"), "\(error)")
        }
    }

    @Test("scale grids that do not fit the declared block size are reported by name")
    func wrongBlockSize() throws {
        let dir = try Self.variant({ $0["quantization_config"] = ["quant_method": "fp8", "weight_block_size": [16, 16]] })
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            _ = try ModelLoader.load(dir)
            Issue.record("loaded with the wrong block size")
        } catch ModelError.weightProblems(let problems, _) {
            #expect(problems.count == 42)  // every FP8 weight, the MTP layer's two included
            #expect(problems.contains { "\($0)".contains("model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv") })
        }
    }

    @Test("the FP8 model hides the scales, ignores the MTP layer and dequantizes each expert it reads")
    func loadsExperts() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/deepseek_v3_fp8"))
        #expect(!loaded.checkpoint.tensorNames.contains { $0.hasSuffix("_scale_inv") })
        #expect(loaded.ignoredTensors.allSatisfy { $0.hasPrefix("model.layers.2.") } && loaded.ignoredTensors.count == 9)
        let name = "model.layers.1.mlp.experts.3.up_proj.weight"
        let whole = try loaded.checkpoint.tensor(name)
        let rows = try loaded.checkpoint.readRows(name, rows: 5..<9)
        #expect(whole.dtype == .float32 && rows.shape == [4, 64])
        #expect(Array(whole.toFloatArray()[(5 * 64)..<(9 * 64)]) == rows.toFloatArray())
        #expect(loaded.checkpoint.byteCount(of: name) == 32 * 64 + 2 * 4)  // fp8 bytes + one f32 scale per 32×32 block
    }

    /// `scale_fmt: ue8m0` with scale grids stored as `F8_E8M0` (one exponent byte per block):
    /// the same logits as the F32 grids holding the same powers of two, the key itself accepted.
    @Test("F8_E8M0 scale grids read as 2^(byte - 127)")
    func e8m0Scales() throws {
        let source = try SafetensorsCheckpoint(directory: Fixtures.url("models/deepseek_v3_fp8"))
        var asF32: [(name: String, payload: SafetensorsPayload)] = [], asE8M0 = asF32
        for name in source.tensorNames {
            let entry = try #require(try source.entry(name))
            let raw = try source.readRawRows(name, rows: 0..<(entry.shape.first ?? 1)).bytes
            guard name.hasSuffix("_scale_inv") else {
                let payload = SafetensorsPayload.raw(dtypeName: entry.dtypeName, shape: entry.shape, bytes: raw)
                asF32.append((name, payload))
                asE8M0.append((name, payload))
                continue
            }
            // Each scale rounded to a power of two, 2^(byte - 127).
            let exponents = try source.tensor(name).toFloatArray().map { UInt8(clamping: Int(log2($0).rounded()) + 127) }
            asE8M0.append((name, .raw(dtypeName: "F8_E8M0", shape: entry.shape, bytes: exponents)))
            let values = exponents.map { Float(sign: .plus, exponent: Int($0) - 127, significand: 1) }
            asF32.append((name, .tensor(Tensor.owned(values, shape: entry.shape))))
        }
        var logits: [[Float]] = []
        for payloads in [asF32, asE8M0] {
            let dir = try Self.variant({
                var q = $0["quantization_config"] as? [String: Any] ?? [:]
                q["scale_fmt"] = "ue8m0"
                $0["quantization_config"] = q
            }, weights: false)
            defer { try? FileManager.default.removeItem(at: dir) }
            try SafetensorsWriter.write(payloads: payloads, to: dir.appendingPathComponent("model.safetensors"))
            let model = try ModelLoader.load(dir, options: LoadOptions(threads: 1)).model
            logits.append(try model.forward([3, 1, 4, 1, 5, 9, 2, 6], cache: model.makeCache(), logits: .all))
        }
        #expect(logits[0] == logits[1])
        let original = try ModelLoader.load(Fixtures.url("models/deepseek_v3_fp8"), options: LoadOptions(threads: 1)).model
        let unrounded = try original.forward([3, 1, 4, 1, 5, 9, 2, 6], cache: original.makeCache(), logits: .all)
        #expect(unrounded != logits[0], "rounding the scales must change the model")
    }
}
