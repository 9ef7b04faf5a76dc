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
