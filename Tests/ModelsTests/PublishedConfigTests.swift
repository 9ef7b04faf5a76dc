import Foundation
import Testing

@testable import Models

/// Published `config.json` files of the real checkpoints read into the spec the parity fixtures
/// exercise with small values. The texts are copies of the published files: GLM-4.5-Air's as
/// transformers 4.54 prints it (its keys and values, key order aside), gpt-oss-120b's from
/// huggingface.co/openai/gpt-oss-120b/raw/main/config.json as read 2026-10 (gpt-oss-20b's is in
/// `GptOssTests`), DeepSeek-R1's (the published file, as quoted verbatim in a public benchmark
/// script's table of real configs).
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

    static let deepSeekR1 = #"""
    {"architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
     "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config", "AutoModel": "modeling_deepseek.DeepseekV3Model",
                  "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
     "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu",
     "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
     "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 2048, "moe_layer_freq": 1,
     "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128,
     "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1,
     "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
     "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
     "rms_norm_eps": 1e-06,
     "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                      "original_max_position_embeddings": 4096, "type": "yarn"},
     "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "tie_word_embeddings": false,
     "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "transformers_version": "4.46.3",
     "use_cache": true, "v_head_dim": 128, "vocab_size": 129280}
    """#

    @Test("DeepSeek-R1: 61 layers (3 dense), MLA, 256 experts top-8 in 8 groups keeping 4, FP8 128×128 blocks")
    func deepSeekR1() throws {
        let data = Data(Self.deepSeekR1.utf8)
        let (spec, _) = try ModelRegistry.spec(configData: data, file: "config.json")
        #expect(spec.layerCount == 61 && spec.moeLayers == Array(3..<61))
        let mla = try #require(spec.mla)
        #expect(mla == MLASpec(qLoRARank: 1536, kvLoRARank: 512, qkNopeHeadDim: 128, qkRopeHeadDim: 64, vHeadDim: 128,
                               attentionBias: false))
        guard case .dense(let inner) = spec.feedForward[0] else { Issue.record("layer 0 should be dense"); return }
        #expect(inner == 18432)
        let moe = try #require(spec.moe(3))
        #expect(moe.expertCount == 256 && moe.topK == 8 && moe.expertIntermediateSize == 2048)
        #expect(moe.routing == .sigmoid && moe.selectionBias && moe.normTopKProb && moe.routedScalingFactor == 2.5)
        #expect(moe.sharedIntermediateSize == 2048)
        #expect(moe.groupLimit == GroupLimit(groupCount: 8, keptGroups: 4, ranking: .topTwoSum))
        #expect(spec.rope.style == .interleaved && spec.rope.rotaryDim == 64)
        #expect(spec.vocabularySize == 129280 && spec.maxPositions == 163840)
        #expect(try WeightQuantization.read(configData: data, file: "config.json") == .fp8Block(rows: 128, cols: 128))
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
