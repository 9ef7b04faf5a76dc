import Foundation
import TestSupport
import Testing

@testable import Models

@Suite("gpt-oss (gpt_oss)")
struct GptOssTests {
    /// The gpt_oss fixture's config.json with `edit` applied, in a directory without weights.
    static func configOnly(_ edit: (inout [String: Any]) -> Void) throws -> URL {
        let source = Fixtures.url("models/gpt_oss")
        let dir = try Fixtures.temporaryDirectory("premoe-gptoss")
        var config = try JSONSerialization.jsonObject(
            with: Data(contentsOf: source.appendingPathComponent("config.json"))) as? [String: Any] ?? [:]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        return dir
    }

    @Test("layer_types become per-layer windows; sinks, router bias and the clamped SwiGLU are in the spec")
    func spec() throws {
        let spec = try ModelLoader.spec(at: Fixtures.url("models/gpt_oss"))
        #expect(spec.layerWindows == [4, 0, 4])
        #expect(spec.slidingWindow == nil)  // windows run in the kernel: no context limit below max_position_embeddings
        #expect(spec.attentionSinks && spec.qkvBias && spec.outputBias)
        let moe = try #require(spec.moe(0))
        #expect(moe.routing == .topKSoftmax && moe.biases && moe.topK == 2 && moe.expertCount == 8)
        #expect(moe.expertActivation == .clampedSwiGLU(alpha: 1.702, limit: 1.5))
    }

    @Test("gpt-oss-20b's defaults: sliding first, alternating, window 128, alpha 1.702, limit 7")
    func defaults() throws {
        let dir = try Self.configOnly {
            for key in ["layer_types", "sliding_window", "swiglu_alpha", "swiglu_limit", "num_experts_per_tok"] {
                $0.removeValue(forKey: key)
            }
            $0["num_hidden_layers"] = 4
            $0["experts_per_token"] = 2  // the original release's name
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        let spec = try ModelLoader.spec(at: dir)
        #expect(spec.layerWindows == [128, 0, 128, 0])
        #expect(spec.moe(0)?.expertActivation == .clampedSwiGLU(alpha: 1.702, limit: 7))
        #expect(spec.moe(0)?.topK == 2)
    }

    /// gpt-oss-20b's config.json keys and values (transformers 4.55 style: top-level `rope_theta`,
    /// `rope_scaling`; `experts_per_token` beside `num_experts_per_tok`; no `swiglu_alpha`).
    static let gptOss20B = #"""
    {"architectures": ["GptOssForCausalLM"], "attention_bias": true, "attention_dropout": 0.0, "eos_token_id": 200002,
     "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
     "initializer_range": 0.02, "intermediate_size": 2880,
     "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention",
       "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention",
       "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention",
       "full_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention", "sliding_attention",
       "full_attention"],
     "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4,
     "num_hidden_layers": 24, "num_key_value_heads": 8, "num_local_experts": 32, "output_router_logits": false,
     "pad_token_id": 199999,
     "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
       "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
     "rms_norm_eps": 1e-05,
     "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
       "rope_type": "yarn", "truncate": false},
     "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
     "tie_word_embeddings": false, "transformers_version": "4.55.0.dev0", "use_cache": true, "vocab_size": 201088}
    """#

    @Test("gpt-oss-20b's own config.json reads: 24 layers alternating 128/full, 32 experts top-4, YaRN ×32, MXFP4")
    func realConfig() throws {
        let data = Data(Self.gptOss20B.utf8)
        let (spec, layout) = try ModelRegistry.spec(configData: data, file: "config.json")
        #expect(spec.layerCount == 24 && spec.headCount == 64 && spec.kvHeadCount == 8 && spec.headDim == 64)
        #expect(spec.layerWindows == (0..<24).map { $0 % 2 == 0 ? 128 : 0 })
        #expect(spec.moe(23)?.expertCount == 32 && spec.moe(23)?.topK == 4 && spec.moe(0)?.expertIntermediateSize == 2880)
        #expect(spec.moe(0)?.expertActivation == .clampedSwiGLU(alpha: 1.702, limit: 7))
        #expect(abs(spec.rope.attentionScaling - Float(0.1 * log(32.0) + 1)) < 1e-6)  // YaRN's mscale
        #expect(layout.routerName == "router")
        #expect(try WeightQuantization.read(configData: data, file: "config.json") == .mxfp4)
    }

    @Test(
        "unsupported variants are refused by name before any weight is read",
        arguments: [
            ("layer_types", "chunked_attention"), ("layer_types", "3 entries"), ("num_local_experts", "num_local_experts"),
        ])
    func refused(field: String, named: String) throws {
        let dir = try Self.configOnly {
            switch named {
            case "chunked_attention": $0["layer_types"] = ["sliding_attention", "chunked_attention", "full_attention"]
            case "3 entries": $0["num_hidden_layers"] = 4
            default: $0["num_local_experts"] = 0
            }
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            _ = try ModelLoader.load(dir)
            Issue.record("loaded a config with bad \(field)")
        } catch {
            #expect("\(error)".contains(named) && "\(error)".contains(field), "\(error)")
        }
    }
}

@Suite("MXFP4 experts (gpt-oss)")
struct MXFP4SourceTests {
    @Test("e2m1 codes decode as transformers' FP4_VALUES")
    func table() {
        #expect(e2m1Values == [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])
        #expect(e2m1Values[8].sign == .minus)
    }

    @Test("mxfp4 is accepted for gpt_oss only, by name")
    func onlyGptOss() throws {
        let q = #"{"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]}"#
        #expect(try WeightQuantization.read(
            configData: Data(#"{"model_type": "gpt_oss", "quantization_config": \#(q)}"#.utf8), file: "c") == .mxfp4)
        do {
            _ = try WeightQuantization.read(
                configData: Data(#"{"model_type": "qwen3_moe", "quantization_config": \#(q)}"#.utf8), file: "c")
            Issue.record("mxfp4 accepted for qwen3_moe")
        } catch {
            #expect("\(error)".contains("mxfp4") && "\(error)".contains("qwen3_moe"), "\(error)")
        }
    }

    @Test("blocks and scales are shown as one input-major f32 tensor, read per expert")
    func source() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/gpt_oss_mxfp4"), options: LoadOptions(threads: 1))
        let source = loaded.checkpoint
        let name = "model.layers.1.mlp.experts.gate_up_proj"
        #expect(!source.tensorNames.contains { $0.hasSuffix("_blocks") || $0.hasSuffix("_scales") })
        #expect(source.tensorNames.contains(name))
        #expect(source.shape(of: name) == [8, 64, 64])
        #expect(source.byteCount(of: name) == 8 * 64 * 2 * 16 + 8 * 64 * 2)  // half a byte per weight + a scale per 32
        let before = source.bytesRead
        let one = try source.readRows(name, rows: 3..<4)
        #expect(source.bytesRead - before == 64 * 2 * 16 + 64 * 2)  // exactly expert 3's blocks and scales
        let all = try source.tensor(name).toFloatArray()
        #expect(Array(all[(3 * 64 * 64)..<(4 * 64 * 64)]) == one.toFloatArray())
    }

    @Test("the MXFP4 and f32 gpt-oss fixtures agree to the quantization error only")
    func quantizedDiffers() throws {
        let f32 = try ModelLoader.load(Fixtures.url("models/gpt_oss"), options: LoadOptions(threads: 1))
        let mx = try ModelLoader.load(Fixtures.url("models/gpt_oss_mxfp4"), options: LoadOptions(threads: 1))
        let a = try f32.checkpoint.readRows("model.layers.0.mlp.experts.down_proj", rows: 0..<1).toFloatArray()
        let b = try mx.checkpoint.readRows("model.layers.0.mlp.experts.down_proj", rows: 0..<1).toFloatArray()
        #expect(a.count == b.count && a != b)
        #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 0.0625 })
    }
}
