import Formats
import Foundation
import Kernels
import Models
import PreMoe
import Testing
import TestSupport

/// Golden of an exported checkpoint, written by `scripts/make_export_fixture.py` from
/// transformers' `from_pretrained(exported dir)`.
struct ExportGolden: Decodable {
    let input_ids: [Int]
    let logits: [[Float]]
    let kept_experts: [String: [Int]]
}

/// The committed export fixtures: name → (source model fixture, fixed kept lists in plan order).
let exportFixtures: [(name: String, source: String, kept: [Int: [Int]])] = [
    ("qwen3_moe_pruned", "qwen3_moe", [0: [5, 1, 6, 2], 1: [0, 7, 3, 4]]),
    ("qwen3_moe_fused_pruned", "qwen3_moe_fused", [1: [3, 0, 7], 2: [6, 2, 4]]),
    ("gpt_oss_mxfp4_pruned", "gpt_oss_mxfp4", [0: [6, 0, 3, 5], 1: [2, 7, 1, 4], 2: [5, 3, 0, 6]]),
    // Kept experts from both of the source's two routing groups (n_group 2, topk_group 1), which the
    // export drops (n_group 1); FP8 stays F8_E4M3 with its scale grids sliced.
    ("deepseek_v3_fp8_pruned", "deepseek_v3_fp8", [1: [6, 0, 3, 5]]),
    ("glm4_moe_pruned", "glm4_moe", [1: [2, 7, 4, 1], 2: [5, 0, 6, 3]]),
]

/// The expert count a config declares, under whichever of the three keys it uses.
func declaredExpertCount(_ config: JSONValue) -> Int? {
    ["num_experts", "num_local_experts", "n_routed_experts"].lazy.compactMap { config[$0]?.intValue }.first
}

@Suite(.serialized) struct ExportTests {
    func export(_ source: String, kept: [Int: [Int]], to out: URL) throws -> ExportReport {
        let loaded = try ModelLoader.load(fixtureDirectory(source), options: LoadOptions(threads: 1, loadExperts: false))
        return try PrunedExport.write(modelDirectory: fixtureDirectory(source), keptExperts: kept,
                                      sourceFingerprint: try ModelFingerprint.compute(loaded), tasks: ["fixture"], to: out)
    }

    /// Rewrites `Tests/Fixtures/export/` when PREMOE_WRITE_EXPORT_FIXTURE=1; then run
    /// `python scripts/make_export_fixture.py` for the goldens.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["PREMOE_WRITE_EXPORT_FIXTURE"] == "1", "fixture writer (opt-in)"))
    func regenerateFixtures() throws {
        let root = Fixtures.url("export")
        var manifest: [String: [String: Any]] = [:]
        for f in exportFixtures {
            let dir = root.appendingPathComponent(f.name)
            try? FileManager.default.removeItem(at: dir)
            try export(f.source, kept: f.kept, to: dir)
            manifest[f.name] = ["source": "Tests/Fixtures/models/\(f.source)",
                                "kept_experts": Dictionary(uniqueKeysWithValues: f.kept.map { (String($0.key), $0.value) })]
        }
        let data = try JSONSerialization.data(withJSONObject: manifest, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try data.write(to: root.appendingPathComponent("manifest.json"))
    }

    @Test(arguments: exportFixtures.map(\.name))
    func reExportMatchesCommittedFixture(_ name: String) throws {
        let f = exportFixtures.first { $0.name == name }!
        let committed = Fixtures.url("export/\(name)")
        let out = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        let report = try export(f.source, kept: f.kept, to: out)
        #expect(report.expertsPerLayer == f.kept.values.first!.count)
        let mine = try Data(contentsOf: out.appendingPathComponent("model.safetensors"))
        let theirs = try Data(contentsOf: committed.appendingPathComponent("model.safetensors"))
        #expect(mine == theirs, "weights differ from the committed export")
        let config = try JSONValue(contentsOf: out.appendingPathComponent("config.json"))
        #expect(config == (try JSONValue(contentsOf: committed.appendingPathComponent("config.json"))))
        #expect(declaredExpertCount(config) == f.kept.values.first!.count)
        for (l, ids) in f.kept {
            #expect(config["premoe"]?["kept_experts"]?[String(l)]?.arrayValue?.compactMap(\.intValue) == ids)
        }
        #expect(FileManager.default.contentsEqual(atPath: out.appendingPathComponent("tokenizer.json").path,
                                                  andPath: fixtureDirectory(f.source).appendingPathComponent("tokenizer.json").path))
    }

    @Test(arguments: exportFixtures.map(\.name))
    func exportedTensorsAreRenumberedSlices(_ name: String) throws {
        let f = exportFixtures.first { $0.name == name }!
        let source = try SafetensorsCheckpoint(directory: fixtureDirectory(f.source))
        let exported = try SafetensorsCheckpoint(directory: Fixtures.url("export/\(name)"))
        for (l, ids) in f.kept {
            for (slot, id) in ids.enumerated() {
                let routerName = source.contains("model.layers.\(l).mlp.gate.weight")
                    ? "model.layers.\(l).mlp.gate.weight" : "model.layers.\(l).mlp.router.weight"  // gpt-oss
                let router = try exported.tensor(routerName)
                let original = try source.tensor(routerName)
                #expect(router.rows(slot..<(slot + 1)).toFloatArray() == original.rows(id..<(id + 1)).toFloatArray())
                let bias = "model.layers.\(l).mlp.gate.e_score_correction_bias"  // DeepSeek-V3, GLM-4.5
                if source.contains(bias) {
                    #expect(try exported.tensor(bias).toFloatArray()[slot] == source.tensor(bias).toFloatArray()[id])
                }
                let perExpert = "model.layers.\(l).mlp.experts.\(id)."
                if source.contains(perExpert + "down_proj.weight") {
                    // Stored bytes, so F8_E4M3 weights and their `_scale_inv` grids compare as well.
                    for part in ["gate_proj", "up_proj", "down_proj"] {
                        for suffix in ["weight", "weight_scale_inv"] where source.contains(perExpert + part + "." + suffix) {
                            let from = perExpert + part + "." + suffix
                            let to = "model.layers.\(l).mlp.experts.\(slot).\(part).\(suffix)"
                            let a = try #require(try source.entry(from)), b = try #require(try exported.entry(to))
                            #expect(a.dtypeName == b.dtypeName && a.shape == b.shape, "\(to)")
                            #expect(try exported.readRawRows(to, rows: 0..<b.shape[0]).bytes
                                == source.readRawRows(from, rows: 0..<a.shape[0]).bytes, "\(to)")
                        }
                    }
                } else {
                    // Stored bytes, so MXFP4 `_blocks` (gpt-oss) compare like float tensors.
                    let fused = ["gate_up_proj", "gate_up_proj_blocks"].map { "model.layers.\(l).mlp.experts.\($0)" }
                        .first { source.contains($0) } ?? ""
                    #expect(try exported.readRawRows(fused, rows: slot..<(slot + 1)).bytes
                        == source.readRawRows(fused, rows: id..<(id + 1)).bytes, "\(fused)")
                }
            }
        }
        #expect(!exported.tensorNames.contains { $0.contains(".experts.\(f.kept.values.first!.count).") })
    }

    /// Our engine on the exported checkpoint gives what transformers gives on it, and what our
    /// pruned in-memory model gives.
    @Test(arguments: exportFixtures.map(\.name))
    func logitsMatchTransformersOnTheExport(_ name: String) throws {
        let f = exportFixtures.first { $0.name == name }!
        let golden = try Fixtures.json(ExportGolden.self, "export/\(name)/golden.json")
        #expect(golden.kept_experts == Dictionary(uniqueKeysWithValues: f.kept.map { (String($0.key), $0.value) }))
        let exported = try ModelLoader.load(Fixtures.url("export/\(name)"), options: LoadOptions(threads: 1)).model
        let logits = try exported.forward(golden.input_ids, cache: exported.makeCache(), logits: .all)
        #expect(maxRelativeError(logits, golden.logits.flatMap { $0 }) <= 1e-4)
        let pruned = try Reconstruction.load(fixtureDirectory(f.source), plan: PruningPlan(keptExperts: f.kept), threads: 1).model
        let inMemory = try pruned.forward(golden.input_ids, cache: pruned.makeCache(), logits: .all)
        #expect(maxRelativeError(inMemory, logits) <= 1e-6)
    }

    /// Every MoE family exports (per-expert names of Mixtral/OLMoE/Qwen2-MoE, fused Qwen3-MoE,
    /// Qwen2-MoE's shared expert and its gate kept) and our engine on the export equals the
    /// in-memory pruned model.
    @Test(arguments: moeFixtures)
    func everyFamilyExportsToWhatTheInMemoryPrunedModelComputes(_ name: String) throws {
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        let spec = try ModelLoader.spec(at: fixtureDirectory(name))
        var kept: [Int: [Int]] = [:]
        for l in spec.moeLayers {
            let e = spec.moe(l)!.expertCount
            kept[l] = (0..<(e / 2)).map { (e - 1 - 2 * $0 + l) % e }
        }
        let out = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        try export(name, kept: kept, to: out)
        let exported = try ModelLoader.load(out, options: LoadOptions(threads: 1)).model
        #expect(exported.spec.moe(spec.moeLayers[0])?.expertCount == kept.values.first!.count)
        let pruned = try Reconstruction.load(fixtureDirectory(name), plan: PruningPlan(keptExperts: kept), threads: 1).model
        let a = try exported.forward(golden.input_ids, cache: exported.makeCache(), logits: .all)
        let b = try pruned.forward(golden.input_ids, cache: pruned.makeCache(), logits: .all)
        #expect(maxRelativeError(a, b) <= 1e-6, "\(name)")
    }

    /// The paper's a/b: fewer experts per token, in memory and written into the exported config;
    /// the export loaded back computes what the in-memory model with the override computes.
    @Test func routedTopKOverrideRunsInMemoryAndIsExported() throws {
        let name = "qwen3_moe"
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        let spec = try ModelLoader.spec(at: fixtureDirectory(name))
        let kept = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { ($0, [5, 1, 2, 7]) })
        let pruned = try Reconstruction.load(fixtureDirectory(name), plan: PruningPlan(keptExperts: kept), threads: 1).model
        let log = EventLog()
        pruned.observer = log
        try pruned.overrideRoutedTopK(1)
        #expect(pruned.routedTopK == 1)
        let b = try pruned.forward(golden.input_ids, cache: pruned.makeCache(), logits: .all)
        #expect(!log.events.isEmpty && log.events.allSatisfy { $0.topK == 1 })
        #expect(throws: ModelError.self) { try pruned.overrideRoutedTopK(3) }  // the checkpoint routes to 2
        #expect(throws: ModelError.self) { try pruned.overrideRoutedTopK(0) }

        let out = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        try PrunedExport.write(modelDirectory: fixtureDirectory(name), keptExperts: kept, sourceFingerprint: "f", to: out,
                               routedTopK: 1)
        let exported = try ModelLoader.load(out, options: LoadOptions(threads: 1)).model
        #expect(exported.spec.moe(spec.moeLayers[0])?.topK == 1)
        let a = try exported.forward(golden.input_ids, cache: exported.makeCache(), logits: .all)
        #expect(maxRelativeError(a, b) <= 1e-6)
        let other = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: other) }
        #expect(throws: PreMoeError.self) {
            try PrunedExport.write(modelDirectory: fixtureDirectory(name), keptExperts: kept, sourceFingerprint: "f", to: other,
                                   routedTopK: 5)
        }
    }

    /// `prune --merge`: the export holds the merged experts, and loaded back it computes what the
    /// in-memory merged model computes (and not what dropping computes); fused and FP8 experts,
    /// which cannot take new float weights, are refused.
    @Test(arguments: ["qwen3_moe", "mixtral"])
    func mergedExportComputesTheInMemoryMergedModel(_ name: String) throws {
        let golden = try Fixtures.json(FixtureGolden.self, "models/\(name)/golden.json")
        let model = try ModelLoader.load(fixtureDirectory(name), options: LoadOptions(threads: 1)).model
        let spec = model.spec
        let experts = try #require(spec.moe(spec.moeLayers[0])).expertCount
        let kept = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { l in (l, [3, 1].map { ($0 + l) % experts }) })
        let everything = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { ($0, Array(0..<experts)) })
        let weights = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { l in (l, (0..<experts).map { Double(($0 * 7 + l) % 5 + 1) }) })
        let merged = try ExpertMerging.mergedExperts(model, kept: kept, weights: weights)
        let expected = try model.withKeptExperts(everything) { () throws -> [Float] in
            try model.pruneMerging(kept, weights: weights)
            return try model.forward(golden.input_ids, cache: model.makeCache(), logits: .all)
        }
        let out = try Fixtures.temporaryDirectory()
        try PrunedExport.write(modelDirectory: fixtureDirectory(name), keptExperts: kept, sourceFingerprint: "f", to: out,
                               merged: merged)
        let config = try JSONValue(contentsOf: out.appendingPathComponent("config.json"))
        #expect(config["premoe"]?["merged_experts"] == .bool(true))
        let exported = try ModelLoader.load(out, options: LoadOptions(threads: 1)).model
        let a = try exported.forward(golden.input_ids, cache: exported.makeCache(), logits: .all)
        #expect(maxRelativeError(a, expected) <= 1e-6)

        let plain = try Fixtures.temporaryDirectory()
        try PrunedExport.write(modelDirectory: fixtureDirectory(name), keptExperts: kept, sourceFingerprint: "f", to: plain)
        let dropped = try ModelLoader.load(plain, options: LoadOptions(threads: 1)).model
        #expect(maxRelativeError(try dropped.forward(golden.input_ids, cache: dropped.makeCache(), logits: .all), a) > 1e-3)
    }

    @Test(arguments: ["qwen3_moe_fused", "deepseek_v3_fp8"])
    func mergedExportRefusesExpertsItCannotRewrite(_ name: String) throws {
        let spec = try ModelLoader.spec(at: fixtureDirectory(name))
        let kept = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { ($0, [0, 1]) })
        let model = try ModelLoader.load(fixtureDirectory(name), options: LoadOptions(threads: 1)).model
        let weights = Dictionary(uniqueKeysWithValues: spec.moeLayers.map { l in (l, [Double](repeating: 1, count: spec.moe(l)!.expertCount)) })
        let merged = try ExpertMerging.mergedExperts(model, kept: kept, weights: weights)
        let out = try Fixtures.temporaryDirectory()
        #expect(throws: PreMoeError.self) {
            try PrunedExport.write(modelDirectory: fixtureDirectory(name), keptExperts: kept, sourceFingerprint: "f", to: out,
                                   merged: merged)
        }
    }

    @Test func refusesBadPlansAndNonEmptyOutput() throws {
        let out = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: out) }
        #expect(throws: PreMoeError.self) { try export("qwen3_moe", kept: [0: [1, 2]], to: out) }  // layer 1 missing
        #expect(throws: PreMoeError.self) { try export("qwen3_moe", kept: [0: [1, 2], 1: [3]], to: out) }  // uneven
        #expect(throws: PreMoeError.self) { try export("qwen3_moe", kept: [0: [1, 1], 1: [3, 4]], to: out) }  // repeated
        #expect(throws: PreMoeError.self) { try export("qwen3_moe", kept: [0: [1, 8], 1: [3, 4]], to: out) }  // out of range
        try Data("x".utf8).write(to: out.appendingPathComponent("stale"))
        #expect(throws: PreMoeError.self) { try export("qwen3_moe", kept: [0: [1, 2], 1: [3, 4]], to: out) }
    }

    /// A DeepSeek-V3 checkpoint as the real V3/R1 ship it, with its multi-token-prediction layer
    /// `model.layers.<num_hidden_layers>.*` holding a full 8-expert router and experts (issue 12):
    /// sizes ignore it, and the export drops it and says so in the config instead of writing
    /// "2 experts" beside an 8-expert router.
    @Test func deepSeekMTPLayerIsDroppedConsistently() throws {
        let source = try Fixtures.temporaryDirectory().appendingPathComponent("deepseek_v3")
        try FileManager.default.copyItem(at: fixtureDirectory("deepseek_v3"), to: source)
        let original = try SafetensorsCheckpoint(directory: source)
        var tensors = try original.tensorNames.map { (name: $0, tensor: try original.tensor($0)) }
        func add(_ name: String, _ shape: [Int]) {
            tensors.append((name, Tensor.owned([Float](repeating: 0.25, count: shape.reduce(1, *)), shape: shape)))
        }
        let mtp = "model.layers.2"
        add("\(mtp).eh_proj.weight", [64, 128])
        add("\(mtp).enorm.weight", [64])
        add("\(mtp).mlp.gate.weight", [8, 64])
        add("\(mtp).mlp.gate.e_score_correction_bias", [8])
        for e in 0..<8 {
            add("\(mtp).mlp.experts.\(e).gate_proj.weight", [32, 64])
            add("\(mtp).mlp.experts.\(e).up_proj.weight", [32, 64])
            add("\(mtp).mlp.experts.\(e).down_proj.weight", [64, 32])
        }
        let file = source.appendingPathComponent("model.safetensors")
        try FileManager.default.removeItem(at: file)
        try SafetensorsWriter.write(tensors, to: file)

        let spec = try ModelLoader.spec(at: source)
        let withMTP = try SafetensorsCheckpoint(directory: source)
        #expect(ModelSizes.measure(withMTP, spec: spec) == ModelSizes.measure(original, spec: spec))
        #expect(spec.moe(2) == nil)  // the MTP layer's index is outside the model

        let out = try Fixtures.temporaryDirectory().appendingPathComponent("pruned")
        let loaded = try ModelLoader.load(source, options: LoadOptions(threads: 1, loadExperts: false))
        try PrunedExport.write(modelDirectory: source, keptExperts: [1: [6, 0]],
                               sourceFingerprint: try ModelFingerprint.compute(loaded), to: out)
        let written = try SafetensorsCheckpoint(directory: out)
        #expect(!written.tensorNames.contains { $0.hasPrefix("\(mtp).") })
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
        #expect(config["n_routed_experts"] as? Int == 2)
        #expect(config["num_nextn_predict_layers"] as? Int == 0)
        let reloaded = try ModelLoader.load(out, options: LoadOptions(threads: 1))
        #expect(reloaded.ignoredTensors.isEmpty)
        #expect(reloaded.model.spec.moe(1)?.expertCount == 2)
    }

    /// A pruned FP8 checkpoint stays FP8: kept experts' `F8_E4M3` weights and `_scale_inv` grids are
    /// copied byte for byte under their new slots, the backbone's too; the MTP layer is dropped.
    @Test func fp8ExportStaysFP8WithScalesRenamed() throws {
        let source = fixtureDirectory("deepseek_v3_fp8")
        let out = try Fixtures.temporaryDirectory().appendingPathComponent("pruned")
        defer { try? FileManager.default.removeItem(at: out.deletingLastPathComponent()) }
        let report = try export("deepseek_v3_fp8", kept: [1: [6, 0, 3]], to: out)
        let original = try SafetensorsCheckpoint(directory: source)
        let written = try SafetensorsCheckpoint(directory: out)
        for (slot, e) in [6, 0, 3].enumerated() {
            for part in ["gate_proj", "up_proj", "down_proj"] {
                for suffix in ["weight", "weight_scale_inv"] {
                    let from = "model.layers.1.mlp.experts.\(e).\(part).\(suffix)"
                    let to = "model.layers.1.mlp.experts.\(slot).\(part).\(suffix)"
                    let a = try #require(try original.entry(from)), b = try #require(try written.entry(to))
                    #expect(a.dtypeName == b.dtypeName && a.shape == b.shape)
                    #expect(try original.readRawRows(from, rows: 0..<a.shape[0]).bytes
                        == written.readRawRows(to, rows: 0..<b.shape[0]).bytes)
                }
            }
        }
        #expect(try written.entry("model.layers.0.self_attn.kv_a_proj_with_mqa.weight")?.dtypeName == "F8_E4M3")
        #expect(!written.tensorNames.contains { $0.hasPrefix("model.layers.2.") || $0.contains("experts.3.") })
        #expect(report.tensorBytes == written.tensorNames.reduce(0) { $0 + ((try? written.entry($1))??.byteCount ?? 0) })
        let config = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
        #expect((config["quantization_config"] as? [String: Any])?["quant_method"] as? String == "fp8")
    }

    /// A pruned gpt-oss MXFP4 checkpoint stays MXFP4: the kept experts' U8 `_blocks` and `_scales`
    /// slices and their biases are copied byte for byte in plan order, and the router's rows and
    /// bias follow them.
    @Test func mxfp4ExportSlicesRawBlocksAndRouterBias() throws {
        let name = "gpt_oss_mxfp4"
        let keptOrder = [6, 0, 3]
        let kept = Dictionary(uniqueKeysWithValues: (0..<3).map { ($0, keptOrder) })
        let out = try Fixtures.temporaryDirectory().appendingPathComponent("pruned")
        defer { try? FileManager.default.removeItem(at: out.deletingLastPathComponent()) }
        try export(name, kept: kept, to: out)
        let original = try SafetensorsCheckpoint(directory: fixtureDirectory(name))
        let written = try SafetensorsCheckpoint(directory: out)
        for l in 0..<3 {
            for part in ["gate_up_proj_blocks", "gate_up_proj_scales", "down_proj_blocks", "down_proj_scales",
                         "gate_up_proj_bias", "down_proj_bias"] {
                let tensor = "model.layers.\(l).mlp.experts.\(part)"
                let a = try #require(try original.entry(tensor)), b = try #require(try written.entry(tensor))
                #expect(a.dtypeName == b.dtypeName && b.shape == [3] + a.shape.dropFirst(), "\(tensor)")
                for (slot, e) in keptOrder.enumerated() {
                    #expect(try original.readRawRows(tensor, rows: e..<(e + 1)).bytes
                        == written.readRawRows(tensor, rows: slot..<(slot + 1)).bytes, "\(tensor) slot \(slot)")
                }
            }
            for part in ["weight", "bias"] {
                let tensor = "model.layers.\(l).mlp.router.\(part)"
                let rows = try original.tensor(tensor).toFloatArray(), cut = try written.tensor(tensor).toFloatArray()
                let width = rows.count / 8
                #expect(cut == keptOrder.flatMap { rows[($0 * width)..<(($0 + 1) * width)] }, "\(tensor)")
            }
        }
        #expect(try written.entry("model.layers.0.mlp.experts.gate_up_proj_blocks")?.dtypeName == "U8")
        let config = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
        #expect((config["quantization_config"] as? [String: Any])?["quant_method"] as? String == "mxfp4")
        #expect(config["num_local_experts"] as? Int == 3)
    }
}
