import Foundation
import Testing

@testable import Models

/// Published `config.json` files of the real checkpoints read into the spec the parity fixtures
/// exercise with small values. The texts are copies of the published files: GLM-4.5-Air's as
/// transformers 4.54 prints it (its keys and values, key order aside), gpt-oss-120b's from
/// huggingface.co/openai/gpt-oss-120b/raw/main/config.json as read 2026-10 (gpt-oss-20b's is in
/// `GptOssTests`).
@Suite("published configs")
struct PublishedConfigTests {
    static let glm45Air = #"""
    {"architectures": ["Glm4MoeForCausalLM"], "attention_bias": true, "attention_dropout": 0.0,
     "eos_token_id": [151329, 151336, 151338], "first_k_dense_replace": 1, "head_dim": 128, "hidden_act": "silu",
     "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 10944, "max_position_embeddings": 131072,
     "model_type": "glm4_moe", "moe_intermediate_size": 1408, "n_group": 1, "n_routed_experts": 128,
     "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 96, "num_experts_per_tok": 8,
     "num_hidden_layers": 46, "num_key_value_heads": 8, "num_nextn_predict_layers": 1, "pad_token_id": 151329,
     "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 1000000,
     "routed_scaling_factor": 1.0, "tie_word_embeddings": false, "topk_group": 1, "torch_dtype": "bfloat16",
     "transformers_version": "4.54.1", "use_cache": true, "use_qk_norm": false, "vocab_size": 151552}
    """#

    @Test("GLM-4.5-Air: 46 layers, layer 0 dense, 128 experts top-8 with a shared one, partial rotary 0.5, no q/k norm")
    func glm45Air() throws {
        let (spec, _) = try ModelRegistry.spec(configData: Data(Self.glm45Air.utf8), file: "config.json")
        #expect(spec.layerCount == 46 && spec.headCount == 96 && spec.kvHeadCount == 8 && spec.headDim == 128)
        #expect(spec.moeLayers == Array(1..<46))
        let moe = try #require(spec.moe(1))
        #expect(moe.expertCount == 128 && moe.topK == 8 && moe.expertIntermediateSize == 1408)
        #expect(moe.sharedIntermediateSize == 1408 && moe.normTopKProb && moe.routedScalingFactor == 1)
        #expect(moe.selectionBias)
        #expect(spec.rope.rotaryDim == 64)
        #expect(spec.qkvBias && !spec.outputBias && spec.qkNorm == .none)
        #expect(spec.vocabularySize == 151552 && spec.maxPositions == 131072)
    }

    /// gpt-oss-120b differs from gpt-oss-20b in depth (36 layers) and experts (128), nothing else.
    @Test("gpt-oss-120b: 36 layers alternating 128/full, 128 experts top-4, MXFP4")
    func gptOss120B() throws {
        var config = try #require(try JSONSerialization.jsonObject(with: Data(GptOssTests.gptOss20B.utf8)) as? [String: Any])
        config["num_hidden_layers"] = 36
        config["num_local_experts"] = 128
        config["layer_types"] = (0..<36).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" }
        let data = try JSONSerialization.data(withJSONObject: config)
        let (spec, _) = try ModelRegistry.spec(configData: data, file: "config.json")
        #expect(spec.layerCount == 36 && spec.moeLayers.count == 36)
        #expect(spec.moe(35)?.expertCount == 128 && spec.moe(35)?.topK == 4)
        #expect(spec.layerWindows == (0..<36).map { $0 % 2 == 0 ? 128 : 0 })
        #expect(try WeightQuantization.read(configData: data, file: "config.json") == .mxfp4)
    }
}
