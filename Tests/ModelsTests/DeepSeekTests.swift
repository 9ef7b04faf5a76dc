import Formats
import Foundation
import Kernels
@testable import Models
import Testing
import TestSupport

/// DeepSeek-V2/V3: configuration decoding, routing rule, MLA shapes, checkpoint mapping.
@Suite struct DeepSeekTests {
    func fixtureConfig(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: Fixtures.url("models/\(name)/config.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    func spec(_ object: [String: Any]) throws -> DecoderSpec {
        try ModelRegistry.spec(configData: JSONSerialization.data(withJSONObject: object), file: "config.json").0
    }

    @Test func v3FixtureConfig() throws {
        let spec = try spec(fixtureConfig("deepseek_v3"))
        let mla = try #require(spec.mla)
        #expect(mla == MLASpec(qLoRARank: 32, kvLoRARank: 32, qkNopeHeadDim: 16, qkRopeHeadDim: 8, vHeadDim: 16,
                               attentionBias: false))
        #expect(spec.headDim == 24 && spec.kvHeadCount == 4)
        #expect(spec.cacheKeyWidth == 4 * 24 && spec.cacheValueWidth == 4 * 16)
        #expect(spec.rope.style == .interleaved && spec.rope.rotaryDim == 8 && spec.rope.invFreq.count == 4)
        // YaRN factor 4, mscale_all_dim 1: scale = mscale² / sqrt(24).
        let m = 0.1 * log(4.0) + 1
        #expect(spec.attentionScale == Float(1 / 24.0.squareRoot() * m * m))
        #expect(spec.rope.attentionScaling == 1)  // mscale / mscale_all_dim
        guard case .dense(let inner) = spec.feedForward[0] else { Issue.record("layer 0 should be dense"); return }
        #expect(inner == 128)
        let moe = try #require(spec.moe(1))
        #expect(moe.routing == .sigmoid && moe.selectionBias && moe.normTopKProb)
        #expect(moe.routedScalingFactor == 2.5 && moe.sharedIntermediateSize == 32 && !moe.sharedExpertGate)
        #expect(moe.groupLimit == GroupLimit(groupCount: 2, keptGroups: 1, ranking: .topTwoSum))
    }

    @Test func v2FixtureConfig() throws {
        let spec = try spec(fixtureConfig("deepseek_v2"))
        let mla = try #require(spec.mla)
        #expect(mla.qLoRARank == nil && mla.kvLoRARank == 32)
        #expect(spec.rope.style == .interleaved)
        #expect(spec.attentionScale == Float(1 / 24.0.squareRoot()))
        let moe = try #require(spec.moe(1))
        #expect(moe.routing == .softmax && !moe.selectionBias && !moe.normTopKProb && moe.groupLimit == nil)
        #expect(moe.routedScalingFactor == 16 && moe.sharedIntermediateSize == 64)
    }

    @Test func v2GroupLimitedGreedy() throws {
        var object = try fixtureConfig("deepseek_v2")
        object["topk_method"] = "group_limited_greedy"
        object["n_group"] = 4
        object["topk_group"] = 2
        #expect(try spec(object).moe(1)?.groupLimit == GroupLimit(groupCount: 4, keptGroups: 2, ranking: .max))
        // transformers' V2 router never renormalises, whatever norm_topk_prob says.
        object["norm_topk_prob"] = true
        #expect(try spec(object).moe(1)?.normTopKProb == false)
    }

    @Test(arguments: [
        ("deepseek_v2", "topk_method", "noaux_tc" as Any, "topk_method"),
        ("deepseek_v2", "scoring_func", "sigmoid" as Any, "scoring_func"),
        ("deepseek_v3", "scoring_func", "softmax" as Any, "scoring_func"),
        ("deepseek_v3", "n_group", 3 as Any, "n_group"),
        ("deepseek_v3", "topk_group", 3 as Any, "topk_group"),
        ("deepseek_v3", "n_group", 8 as Any, "n_group"),  // groups of one expert have no top-2
        ("deepseek_v3", "qk_rope_head_dim", 7 as Any, "qk_rope_head_dim"),
        ("deepseek_v3", "kv_lora_rank", 0 as Any, "kv_lora_rank"),
        ("deepseek_v3", "num_experts_per_tok", 9 as Any, "num_experts_per_tok"),
        ("deepseek_v2", "mlp_bias", true as Any, "mlp_bias"),
    ])
    func invalidConfigsNameTheField(_ fixture: String, _ key: String, _ value: Any, _ field: String) throws {
        var object = try fixtureConfig(fixture)
        object[key] = value
        let error = try #require(throws: ModelError.self) { try spec(object) }
        #expect("\(error)".contains(field), "\(error)")
    }

    @Test func v3WithoutGroupsRoutesOverEveryExpert() throws {
        var object = try fixtureConfig("deepseek_v3")
        object["n_group"] = NSNull()
        #expect(try spec(object).moe(1)?.groupLimit == nil)
        object["n_group"] = 1
        object["topk_group"] = 1
        #expect(try spec(object).moe(1)?.groupLimit == nil)
    }

    /// The keys a real DeepSeek-V3 / R1 `config.json` (written for transformers 4.x) has:
    /// top-level `rope_scaling` with `type`, `scoring_func`, `topk_method`, no `head_dim`.
    @Test func realV3StyleConfig() throws {
        var object = try fixtureConfig("deepseek_v3")
        object["rope_parameters"] = nil
        object["head_dim"] = nil
        object["qk_head_dim"] = nil
        object["rope_theta"] = 10000
        object["rope_scaling"] = [
            "type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
        ]
        object["max_position_embeddings"] = 163_840
        object["scoring_func"] = "sigmoid"
        object["topk_method"] = "noaux_tc"
        object["q_lora_rank"] = nil  // absent: the class default 1536
        let spec = try spec(object)
        #expect(spec.mla?.qLoRARank == 1536)
        #expect(spec.rope.rotaryDim == 8)
        let m = 0.1 * log(40.0) + 1
        #expect(spec.attentionScale == Float(1 / 24.0.squareRoot() * m * m))
        #expect(spec.moe(1)?.groupLimit?.ranking == .topTwoSum)
    }

    @Test func ropeInterleaveFalseUsesHalfSplit() throws {
        var object = try fixtureConfig("deepseek_v3")
        object["rope_interleave"] = false
        #expect(try spec(object).rope.style == .halfSplit)
    }

    @Test func multiTokenPredictionLayersAreIgnored() {
        var layout = DeepSeekConfiguration.layout
        layout.extraLayerCount = 1
        let names = ["model.layers.1.mlp.gate.weight", "model.layers.2.eh_proj.weight", "model.layers.2.enorm.weight",
                     "model.layers.3.eh_proj.weight", "model.layers.20.x", "model.norm.weight"]
        #expect(layout.ignoredTensors(names, layerCount: 2) == ["model.layers.2.eh_proj.weight", "model.layers.2.enorm.weight"])
        layout.extraLayerCount = 0
        #expect(layout.ignoredTensors(names, layerCount: 2).isEmpty)
    }
}

/// DeepSeek models loaded from the fixtures: pruning, expert order, MTP tensors.
@Suite struct DeepSeekModelTests {
    static let biasName = "model.layers.1.mlp.gate.e_score_correction_bias"

    func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }

    @Test func permutedExpertOrderKeepsLogitsAndChoices() throws {
        // Every expert held, in reverse: groups follow original indices, the bias follows the rows.
        let name = "deepseek_v3"
        let golden = try Fixtures.json(Golden.self, "models/\(name)/golden.json")
        let loaded = try ModelLoader.load(Fixtures.url("models/\(name)"),
                                          options: LoadOptions(threads: 1, keptExperts: [1: Array((0..<8).reversed())]))
        let recorder = RouterRecorder(layer: 1)
        loaded.model.observer = recorder
        let logits = try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .all)
        #expect(maxRelativeError(logits, golden.logits.flatMap { $0 }) <= parityTolerance)
        #expect(recorder.selected == golden.router?.selected)
    }

    /// A pruned V3 block routes over its kept experts with the bias entries of those experts and
    /// no group limit (METHODS §8.5), and observers still get the raw logits of the kept rows.
    @Test(arguments: [false, true])
    func prunedV3RoutesOnKeptBiasWithoutGroups(_ loadLater: Bool) throws {
        let name = "deepseek_v3"
        let dir = Fixtures.url("models/\(name)")
        let golden = try Fixtures.json(Golden.self, "models/\(name)/golden.json")
        let kept = [6, 0, 3, 5, 7, 2]
        let loaded: LoadedModel
        if loadLater {
            loaded = try ModelLoader.load(dir, options: LoadOptions(threads: 1, loadExperts: false))
            try loaded.loadExperts(kept: [1: kept], copy: false)
        } else {
            loaded = try ModelLoader.load(dir, options: LoadOptions(threads: 1, keptExperts: [1: kept]))
        }
        let fullBias = try SafetensorsCheckpoint(directory: dir).tensor(Self.biasName).toFloatArray()
        guard case .moe(let block) = loaded.model.layers[1].feedForward else { Issue.record("layer 1 is MoE"); return }
        #expect(block.selectionBias == kept.map { fullBias[$0] })
        #expect(block.rule.groupLimit == nil)

        let recorder = RouterRecorder(layer: 1)
        loaded.model.observer = recorder
        try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .none)
        let reference = try #require(golden.router).logits.map { row in kept.map { row[$0] } }
        #expect(maxRelativeError(recorder.logits.flatMap { $0 }, reference.flatMap { $0 }) <= parityTolerance)
        for (t, row) in recorder.logits.enumerated() {
            // sigmoid + bias over the kept rows, top-2 without groups; weights from the unbiased scores.
            let choice = row.indices.map { sigmoid(row[$0]) + fullBias[kept[$0]] }
            let top = row.indices.sorted { choice[$0] > choice[$1] || (choice[$0] == choice[$1] && $0 < $1) }.prefix(2)
            #expect(recorder.selected[t] == top.map { kept[$0] })
            let sum = top.reduce(Float(0)) { $0 + sigmoid(row[$1]) } + 1e-20
            #expect(recorder.weights[t] == top.map { sigmoid(row[$0]) / sum * 2.5 })
        }
    }

    /// `num_nextn_predict_layers` layers stored after the last decoder layer are reported as
    /// ignored, not unexpected; without the key they are unexpected.
    @Test func multiTokenPredictionTensorsAreIgnored() throws {
        let dir = try copyFixture("deepseek_v3")
        let file = dir.appendingPathComponent("model.safetensors")
        let checkpoint = try SafetensorsCheckpoint(directory: dir)
        var tensors = try checkpoint.tensorNames.map { ($0, try checkpoint.tensor($0)) }
        let mtp = ["model.layers.2.eh_proj.weight", "model.layers.2.enorm.weight"]
        tensors.append((mtp[0], Tensor.owned([Float](repeating: 0.5, count: 64 * 128), shape: [64, 128])))
        tensors.append((mtp[1], Tensor.owned([Float](repeating: 1, count: 64), shape: [64])))
        let rewritten = dir.appendingPathComponent("rewritten.safetensors")
        try SafetensorsWriter.write(tensors.map { (name: $0.0, tensor: $0.1) }, to: rewritten)
        try FileManager.default.removeItem(at: file)
        try FileManager.default.moveItem(at: rewritten, to: file)

        let golden = try Fixtures.json(Golden.self, "models/deepseek_v3/golden.json")
        let loaded = try ModelLoader.load(dir, options: LoadOptions(threads: 1))
        #expect(loaded.ignoredTensors == mtp)
        let logits = try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .all)
        #expect(maxRelativeError(logits, golden.logits.flatMap { $0 }) <= parityTolerance)

        try editConfig(dir) { $0["num_nextn_predict_layers"] = 0 }
        let error = try #require(throws: ModelError.self) { try ModelLoader.load(dir) }
        #expect("\(error)".contains("unexpected tensor 'model.layers.2.eh_proj.weight'"), "\(error)")
    }

    @Test func v3BiasIsRequired() throws {
        let dir = try copyFixture("deepseek_v3")
        let checkpoint = try SafetensorsCheckpoint(directory: dir)
        let tensors = try checkpoint.tensorNames.filter { $0 != Self.biasName }.map { (name: $0, tensor: try checkpoint.tensor($0)) }
        let rewritten = dir.appendingPathComponent("rewritten.safetensors")
        try SafetensorsWriter.write(tensors, to: rewritten)
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
        try FileManager.default.moveItem(at: rewritten, to: dir.appendingPathComponent("model.safetensors"))
        let error = try #require(throws: ModelError.self) { try ModelLoader.load(dir) }
        #expect("\(error)".contains(Self.biasName), "\(error)")
    }
}
