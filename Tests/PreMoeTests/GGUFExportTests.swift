import Formats
import Foundation
import Kernels
import Models
import PreMoe
import Testing
import TestSupport

/// `GGUFExport`: the pruned model as one GGUF file, read back by our GGUF loader and checked
/// against the in-memory pruned model and against the converter's naming (the committed
/// unpruned GGUF fixtures of the same models, written by `scripts/make_gguf_fixtures.py`).
@Suite(.serialized) struct GGUFExportTests {
    /// Scrambled kept lists, half the experts of every MoE layer.
    static func keptList(_ name: String) throws -> [Int: [Int]] {
        let spec = try ModelLoader.spec(at: fixtureDirectory(name))
        var kept: [Int: [Int]] = [:]
        for l in spec.moeLayers {
            let e = spec.moe(l)!.expertCount
            kept[l] = (0..<(e / 2)).map { (e - 1 - 2 * $0 + l) % e }
        }
        return kept
    }

    func export(_ name: String, kept: [Int: [Int]], to out: URL) throws -> ExportReport {
        try GGUFExport.write(modelDirectory: fixtureDirectory(name), keptExperts: kept, sourceFingerprint: "fixture-fp",
                             tasks: ["fixture"], to: out)
    }

    @Test(arguments: ["qwen3_moe", "qwen2_moe", "olmoe", "mixtral"])
    func exportedGGUFComputesWhatThePrunedModelComputes(_ name: String) throws {
        let kept: [Int: [Int]] = name == "qwen3_moe" ? [0: [5, 1, 6, 2], 1: [0, 7, 3, 4]] : try Self.keptList(name)
        let n = kept.values.first!.count
        let out = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        let report = try export(name, kept: kept, to: out)
        #expect(report.files == ["model.gguf"])
        #expect(report.expertsPerLayer == n)
        let url = out.appendingPathComponent("model.gguf")

        // Logits: the GGUF file through our GGUF loader = the in-memory pruned model.
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        let loaded = try ModelLoader.load(url, options: LoadOptions(threads: 1))
        let pruned = try ModelLoader.load(fixtureDirectory(name), options: LoadOptions(threads: 1, keptExperts: kept)).model
        let a = try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .all)
        let b = try pruned.forward(golden.input_ids, cache: pruned.makeCache(), logits: .all)
        #expect(a.count == b.count)
        #expect(maxRelativeError(a, b) <= 1e-5, "\(name)")
        #expect(loaded.tokenizer != nil, "the tokenizer travels in tokenizer.ggml.*")

        // Metadata: kept indices round-trip, expert count is N.
        let file = try GGUFFile(url: url)
        let arch = GGUFExport.architectures[try ModelLoader.spec(at: fixtureDirectory(name)).modelType] ?? "?"
        #expect(try file.string("general.architecture") == arch)
        #expect(try file.int("\(arch).expert_count") == n)
        for (l, ids) in kept { #expect(try file.ints("premoe.kept_experts.\(l)") == ids) }
        #expect(try file.string("premoe.source_fingerprint") == "fixture-fp")

        // Naming: the same tensors as the converter's file of the unpruned model, same shapes
        // except the expert axis (N instead of E).
        let reference = try GGUFFile(url: Fixtures.url("gguf/\(name).f32.gguf"))
        #expect(Set(file.tensorNames) == Set(reference.tensorNames.filter { $0 != "rope_freqs.weight" }))
        for info in file.tensorInfos {
            guard let ref = reference.info(info.name) else { continue }
            if info.name.contains("_exps.") || info.name.hasSuffix("ffn_gate_inp.weight") {
                #expect(info.shape == [n] + ref.shape.dropFirst(), "\(info.name)")
            } else {
                #expect(info.shape == ref.shape, "\(info.name)")
                // Non-expert tensors are byte-identical to the converter's (q/k permuted for llama).
                #expect(try file.tensor(info.name).toFloatArray() == (try reference.tensor(info.name).toFloatArray()), "\(info.name)")
            }
        }
        // Every architecture key of the converter's file is there, with the same value except
        // the expert count.
        for key in reference.metadataKeys where key.hasPrefix("\(arch).") && key != "\(arch).expert_count" {
            #expect(file.metadata[key] == reference.metadata[key], "\(key)")
        }
    }

    /// The qwen3_moe fixture stored as Qwen3-MoE "-FP8" checkpoints store it: attention and expert
    /// weights `F8_E4M3` with an F32 `weight_scale_inv` per block (scale = amax / 448, e4m3's
    /// largest value), router, norms and embeddings as they were, and `quantization_config` fp8.
    /// Blocks of 24 × 40 leave partial last blocks on the 64- and 32-wide axes.
    static func fp8Qwen3MoE() throws -> URL {
        let block = (rows: 24, cols: 40)
        let dir = try Fixtures.temporaryDirectory().appendingPathComponent("qwen3_moe_fp8")
        try FileManager.default.copyItem(at: fixtureDirectory("qwen3_moe"), to: dir)
        let source = try SafetensorsCheckpoint(directory: dir)
        // e4m3fn's finite non-negative values by code (0…126; 127 is NaN), increasing.
        let codes: [Float] = (0..<127).map { bits in
            let exponent = bits >> 3, mantissa = Float(bits & 7)
            return exponent == 0 ? mantissa / 8 * 0x1p-6 : (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
        }
        func encode(_ x: Float) -> UInt8 {
            let a = abs(x)
            var best = 0
            for c in 1..<codes.count where abs(codes[c] - a) < abs(codes[best] - a) { best = c }
            return UInt8(best) | (x < 0 ? 0x80 : 0)
        }
        var payloads: [(name: String, payload: SafetensorsPayload)] = []
        for name in source.tensorNames {
            let t = try source.tensor(name)
            let quantized = name.contains(".self_attn.") && name.hasSuffix("_proj.weight") || name.contains(".mlp.experts.")
            guard quantized, t.shape.count == 2 else {
                payloads.append((name, .tensor(t)))
                continue
            }
            let (rows, cols) = (t.shape[0], t.shape[1])
            let values = t.toFloatArray()
            let grid = [(rows + block.rows - 1) / block.rows, (cols + block.cols - 1) / block.cols]
            var scales = [Float](repeating: 0, count: grid[0] * grid[1])
            var bytes = [UInt8](repeating: 0, count: rows * cols)
            for gi in 0..<grid[0] {
                for gj in 0..<grid[1] {
                    let r = (gi * block.rows)..<min(rows, (gi + 1) * block.rows), c = (gj * block.cols)..<min(cols, (gj + 1) * block.cols)
                    let amax = r.flatMap { i in c.map { abs(values[i * cols + $0]) } }.max() ?? 0
                    let scale = max(amax, 1e-12) / 448
                    scales[gi * grid[1] + gj] = scale
                    for i in r { for j in c { bytes[i * cols + j] = encode(values[i * cols + j] / scale) } }
                }
            }
            payloads.append((name, .raw(dtypeName: "F8_E4M3", shape: t.shape, bytes: bytes)))
            payloads.append((name + "_scale_inv", .tensor(Tensor.owned(scales, shape: grid))))
        }
        let file = dir.appendingPathComponent("model.safetensors")
        try FileManager.default.removeItem(at: file)
        try SafetensorsWriter.write(payloads: payloads, metadata: ["format": "pt"], to: file)
        let configURL = dir.appendingPathComponent("config.json")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        config["quantization_config"] = ["activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                         "weight_block_size": [block.rows, block.cols]]
        try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]).write(to: configURL)
        return dir
    }

    /// `premoe quantize` / GGUF export of an FP8 checkpoint: weights dequantized with their scale
    /// grids (partial blocks included), no scale tensor in the file; the F32 GGUF computes what the
    /// FP8 checkpoint computes, and a Q8_0 one holds exactly the blocks a float checkpoint of the
    /// dequantized weights gives.
    @Test func fp8CheckpointConvertsThroughItsScales() throws {
        let fp8 = try Self.fp8Qwen3MoE()
        defer { try? FileManager.default.removeItem(at: fp8.deletingLastPathComponent()) }
        let golden = try Fixtures.json(FixtureGolden.self, "models/qwen3_moe/golden.json")
        let reference = try ModelLoader.load(fp8, options: LoadOptions(threads: 1)).model
        let b = try reference.forward(golden.input_ids, cache: reference.makeCache(), logits: .all)
        let original = try ModelLoader.load(fixtureDirectory("qwen3_moe"), options: LoadOptions(threads: 1)).model
        let unquantized = try original.forward(golden.input_ids, cache: original.makeCache(), logits: .all)
        #expect(maxRelativeError(b, unquantized) > 1e-4, "the FP8 copy must differ from the float fixture")
        let spec = try ModelLoader.spec(at: fp8)
        let out = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        func convert(_ model: URL, _ type: GGUFOutputType?, _ name: String) throws -> GGUFFile {
            let file = out.appendingPathComponent(name)
            try GGUFExport.writeFile(modelDirectory: model, keptExperts: GGUFExport.allExperts(spec), sourceFingerprint: "fp8",
                                     type: type, to: file)
            return try GGUFFile(url: file)
        }
        let f32 = try convert(fp8, nil, "f32.gguf")
        #expect(!f32.tensorNames.contains { $0.contains("scale") })
        #expect(f32.info("blk.0.attn_q.weight")?.type.dtype == .float32)
        let loaded = try ModelLoader.load(out.appendingPathComponent("f32.gguf"), options: LoadOptions(threads: 1)).model
        let a = try loaded.forward(golden.input_ids, cache: loaded.makeCache(), logits: .all)
        #expect(maxRelativeError(a, b) <= 1e-5)

        // The dequantized weights as a plain float checkpoint, converted the same way.
        let plain = out.appendingPathComponent("dequantized")
        try FileManager.default.copyItem(at: fixtureDirectory("qwen3_moe"), to: plain)
        let source = try ModelLoader.tensorSource(at: fp8)
        try FileManager.default.removeItem(at: plain.appendingPathComponent("model.safetensors"))
        try SafetensorsWriter.write(try source.tensorNames.map { ($0, try source.tensor($0)) },
                                    to: plain.appendingPathComponent("model.safetensors"))
        let q8 = try convert(fp8, .q8_0, "q8.gguf"), q8Plain = try convert(plain, .q8_0, "q8-plain.gguf")
        #expect(q8.info("blk.0.attn_q.weight")?.type.dtype == .q8_0)
        #expect(q8.tensorNames == q8Plain.tensorNames)
        for name in q8.tensorNames {
            #expect(try q8.tensor(name).toFloatArray() == q8Plain.tensor(name).toFloatArray(), "\(name)")
        }
    }

    /// Families GGUF export cannot express are refused by name before any weight is read,
    /// whatever their storage (FP8 DeepSeek-V3, MXFP4 gpt-oss, GLM-4.5).
    @Test(arguments: [("deepseek_v3_fp8", "deepseek_v3"), ("gpt_oss_mxfp4", "gpt_oss"), ("glm4_moe", "glm4_moe")])
    func quantizedFamiliesWithoutGGUFLayoutAreRefusedByName(_ name: String, _ modelType: String) throws {
        let out = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        let spec = try ModelLoader.spec(at: fixtureDirectory(name))
        #expect {
            try GGUFExport.write(modelDirectory: fixtureDirectory(name), keptExperts: GGUFExport.allExperts(spec),
                                 sourceFingerprint: "f", type: .q8_0, to: out)
        } throws: { error in
            guard let e = error as? PreMoeError, case .unsupported(let reason) = e else { return false }
            return reason.contains("'\(modelType)'") && reason.contains("GGUF export supports model types")
        }
    }

    /// SHA-256 of the files `premoe quantize` wrote before the exporter streamed tensors (the
    /// release build of 8287aed, which held every converted tensor in memory before writing):
    /// making each tensor only when the writer reaches it must not change a byte. Covers K-quant
    /// fallbacks, RoPE-permuted q/k rows (mixtral), a reshaped shared-expert gate (qwen2_moe),
    /// tensors written unconverted (bf16 → bf16) and a sharded checkpoint.
    static let eagerExporterHashes: [(model: String, type: GGUFOutputType, sha256: String)] = [
        ("qwen3_moe", .q4_k_m, "c6d7fc726ef1313d5a9a7fdad5868021313e00a99626c68ff97bd01bc1393f14"),
        ("qwen3_moe", .q8_0, "f6cea2e5d71b65f3a35c6e1982c3969bb097cddf19ad1afd02b5ca0ba8fbe58f"),
        ("mixtral", .f16, "37e3d6102fc2ac07d5d4e31d1d990ee2aaf8d667786bebdee50211126d1401a7"),
        ("mixtral", .q8_0, "d8e63c6a83db34d04fe7b1d6925a5aa61b1263afc3ee0f2396f2a4ce04d80755"),
        ("olmoe", .q5_k, "fa6f8b9726348253964db18e21d6e4164648b5c9737f10529a1eadcbae9c100c"),
        ("qwen2_moe", .q4_0, "b8d45ffb4ef3c1db944fdcf9b5876f5782fb0476095a44ee52a419c3f5cce981"),
        ("qwen3_moe_bf16", .bf16, "d7d85f27fa154a3d84ae038401531ffa3cb2e69d28a9091bac0b34f010fb5d7e"),
        ("qwen3_moe_sharded", .f32, "7c3a6fcfc3a86b0db5847d00fb0f7f2e0581351c8e85369f2139279165aa7c9c"),
    ]

    @Test func streamingExportWritesTheEagerExportersBytes() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for c in Self.eagerExporterHashes {
            let model = fixtureDirectory(c.model)
            let spec = try ModelLoader.spec(at: model)
            let fingerprint = try ModelFingerprint.compute(
                configData: try Data(contentsOf: model.appendingPathComponent("config.json")),
                checkpoint: try SafetensorsCheckpoint(directory: model), spec: spec)
            let out = dir.appendingPathComponent("\(c.model).\(c.type).gguf")
            try GGUFExport.writeFile(modelDirectory: model, keptExperts: GGUFExport.allExperts(spec), sourceFingerprint: fingerprint,
                                     type: c.type, pool: ThreadPool(threads: 2), to: out)
            #expect(SHA256.hex(try Data(contentsOf: out)) == c.sha256, "\(c.model) \(c.type)")
        }
    }

    @Test func refusesUnsupportedRequests() throws {
        let out = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        // Not an architecture GGUF export handles (MLA).
        #expect {
            try export("deepseek_v2", kept: try Self.keptList("deepseek_v2"), to: out)
        } throws: { error in
            guard let e = error as? PreMoeError, case .unsupported(let reason) = e else { return false }
            return reason.contains("GGUF export supports model types") && reason.contains("deepseek")
        }
        // Fused expert tensors have no GGUF layout here.
        #expect(throws: PreMoeError.self) {
            try export("qwen3_moe_fused", kept: try Self.keptList("qwen3_moe_fused"), to: out)
        }
        // A bad plan.
        #expect(throws: PreMoeError.self) { try export("qwen3_moe", kept: [0: [1, 2]], to: out) }
        // A non-empty output directory.
        try Data("x".utf8).write(to: out.appendingPathComponent("stale"))
        #expect {
            try export("qwen3_moe", kept: [0: [1, 2], 1: [3, 4]], to: out)
        } throws: { error in
            guard let e = error as? PreMoeError, case .io(_, let reason) = e else { return false }
            return reason.contains("not empty")
        }
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("model.gguf").path))
    }
}
