import Foundation
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
