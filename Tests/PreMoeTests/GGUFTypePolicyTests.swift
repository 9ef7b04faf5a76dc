import Formats
import Foundation
import Kernels
import Models
import PreMoe
import Testing
import TestSupport

/// Relative logit error of an export with f16 weights against the f32 model (f16 keeps 11 bits).
let f16ExportTolerance: Float = 2e-3
/// Same for 8-bit blocks (Q8_0 keeps ~8 bits per block of 32).
let q8ExportTolerance: Float = 3e-2

/// `GGUFTypePolicy` (llama.cpp's per-tensor type rules) and exports written with `--type`.
@Suite(.serialized) struct GGUFTypePolicyTests {
    let policy = GGUFTypePolicy(type: .q4_k_m, layerCount: 16, expertCount: 4, tiedEmbeddings: false)

    @Test("norms, biases, 1-D tensors and routers are F32 whatever the type")
    func alwaysF32() {
        for type in [nil] + GGUFOutputType.allCases.map(Optional.some) {
            let p = GGUFTypePolicy(type: type, layerCount: 2, expertCount: 8, tiedEmbeddings: false)
            for (name, shape) in [("blk.0.attn_norm.weight", [64]), ("blk.0.attn_q_norm.weight", [16]),
                                  ("output_norm.weight", [64]), ("blk.0.attn_q.bias", [64]),
                                  ("blk.0.ffn_gate_inp.weight", [8, 64]), ("blk.0.ffn_gate_inp_shexp.weight", [64])] {
                #expect(p.target(for: name, shape: shape, source: .bfloat16).type == .float32, "\(name) \(String(describing: type))")
            }
        }
        // Without a type, matrices keep the checkpoint dtype.
        let keep = GGUFTypePolicy(type: nil, layerCount: 2, expertCount: 8, tiedEmbeddings: false)
        #expect(keep.target(for: "blk.0.attn_q.weight", shape: [64, 64], source: .bfloat16).type == .bfloat16)
    }

    @Test("Q4_K_M mixes types as llama-quantize does")
    func q4KM() {
        let shape = [1024, 2048]
        func type(_ name: String) -> DType { policy.target(for: name, shape: shape, source: .float32).type }
        #expect(type("output.weight") == .q6_K)
        #expect(type("token_embd.weight") == .q4_K)
        #expect(type("blk.0.attn_q.weight") == .q4_K)
        // use_more_bits(i, 16): layers 0, 1 (first eighth), 14, 15 (last eighth), and i with (i - 2) % 3 == 2.
        #expect((0..<16).filter { GGUFTypePolicy.useMoreBits($0, 16) } == [0, 1, 4, 7, 10, 13, 14, 15])
        #expect(type("blk.4.attn_v.weight") == .q6_K && type("blk.5.attn_v.weight") == .q4_K)
        #expect(type("blk.7.ffn_down_exps.weight") == .q6_K && type("blk.8.ffn_down_exps.weight") == .q4_K)
        #expect(type("blk.0.ffn_down_shexp.weight") == .q6_K && type("blk.0.ffn_up_exps.weight") == .q4_K)
        // Eight experts: attn_v/attn_k Q8_0, attn_output Q5_K.
        let eight = GGUFTypePolicy(type: .q4_k_m, layerCount: 16, expertCount: 8, tiedEmbeddings: true)
        #expect(eight.target(for: "blk.5.attn_v.weight", shape: shape, source: .float32).type == .q8_0)
        #expect(eight.target(for: "blk.5.attn_k.weight", shape: shape, source: .float32).type == .q8_0)
        #expect(eight.target(for: "blk.5.attn_output.weight", shape: shape, source: .float32).type == .q5_K)
        // Tied: the embedding is the output head.
        #expect(eight.target(for: "token_embd.weight", shape: shape, source: .float32).type == .q6_K)
        let q8 = GGUFTypePolicy(type: .q8_0, layerCount: 16, expertCount: 4, tiedEmbeddings: false)
        #expect(q8.target(for: "output.weight", shape: shape, source: .float32).type == .q8_0)
    }

    @Test("rows that are not whole blocks fall back, with a note naming tensor and type")
    func fallback() {
        let (t, note) = policy.target(for: "blk.3.ffn_up_exps.weight", shape: [4, 96, 192], source: .float32)
        #expect(t == .q8_0)
        #expect(note?.contains("blk.3.ffn_up_exps.weight") == true && note?.contains("Q4_K") == true)
        let q4 = GGUFTypePolicy(type: .q4_0, layerCount: 2, expertCount: 4, tiedEmbeddings: false)
        let (t2, note2) = q4.target(for: "blk.0.attn_q.weight", shape: [48, 48], source: .float32)
        #expect(t2 == .float16 && note2?.contains("Q4_0") == true)
        // The output head's Q6_K needs rows of 256; otherwise Q8_0 (llama.cpp's rule, no note).
        let (t3, note3) = policy.target(for: "output.weight", shape: [512, 192], source: .float32)
        #expect(t3 == .q8_0 && note3 == nil)
    }

    func export(_ name: String, type: GGUFOutputType?, kept: [Int: [Int]]) throws -> (URL, ExportReport) {
        let out = try Fixtures.temporaryDirectory()
        let report = try GGUFExport.write(modelDirectory: fixtureDirectory(name), keptExperts: kept, sourceFingerprint: "fp",
                                          type: type, pool: ThreadPool(threads: 2), to: out)
        return (out.appendingPathComponent("model.gguf"), report)
    }

    @Test("a BF16 checkpoint exports its 1-D tensors as F32 (llama.cpp aborts on BF16 norms)")
    func bf16NormsBecomeF32() throws {
        let (url, _) = try export("qwen3_moe_bf16", type: nil, kept: [0: [0, 1, 2, 3], 1: [4, 5, 6, 7]])
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let file = try GGUFFile(url: url)
        for info in file.tensorInfos {
            let oneD = info.dimensions.count == 1 || info.name.hasSuffix("ffn_gate_inp.weight")
            #expect(info.type == (oneD ? .f32 : .bf16), "\(info.name): \(info.type)")
        }
        #expect(try file.string("tokenizer.ggml.pre") == "qwen2")
        #expect(try file.string("general.type") == "model")
    }

    @Test("exports with --type compute close to the f32 pruned model", arguments: [
        (GGUFOutputType.f16, f16ExportTolerance), (.q8_0, q8ExportTolerance), (.q4_k_m, q8ExportTolerance),
    ])
    func typedExport(_ type: GGUFOutputType, _ tolerance: Float) throws {
        let kept: [Int: [Int]] = [0: [5, 1, 6, 2], 1: [0, 7, 3, 4]]
        let (url, report) = try export("qwen3_moe", type: type, kept: kept)
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let file = try GGUFFile(url: url)
        #expect(try file.int("general.file_type") == Int(type.fileType))
        #expect(try file.int("general.quantization_version") == (type.isQuantized ? 2 : nil))
        let types = Set(file.tensorInfos.filter { $0.dimensions.count > 1 && !$0.name.contains("gate_inp") }.map(\.type))
        switch type {
        case .f16: #expect(types == [.f16])
        case .q8_0: #expect(types == [.q8_0])
        default:
            // Hidden size 64: every K-quant falls back to Q8_0 (rows of 64 and 32), each with a note.
            #expect(types == [.q8_0])
            #expect(!report.notes.isEmpty && report.notes.allSatisfy { $0.contains("stored as Q8_0") })
        }
        let golden = try Fixtures.json(FixtureGolden.self, "models/qwen3_moe/golden.json")
        let loaded = try ModelLoader.load(url, options: LoadOptions(threads: 1))
        let pruned = try ModelLoader.load(fixtureDirectory("qwen3_moe"), options: LoadOptions(threads: 1, keptExperts: kept)).model
        let a = try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .all)
        let b = try pruned.forward(golden.input_ids, cache: pruned.makeCache(), logits: .all)
        let error = maxRelativeError(a, b)
        #expect(error > 0 && error <= tolerance, "\(type): \(error)")
    }

    @Test("a conversion keeping every expert writes one file without kept-expert keys and never overwrites")
    func writeFile() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = fixtureDirectory("olmoe")
        let spec = try ModelLoader.spec(at: model)
        let url = dir.appendingPathComponent("olmoe.q8_0.gguf")
        let plan = GGUFExport.allExperts(spec)
        let report = try GGUFExport.writeFile(modelDirectory: model, keptExperts: plan, sourceFingerprint: "fp", type: .q8_0, to: url)
        // The fixture has 2 KV heads for 4 heads, which llama.cpp's OLMoE cannot load: said in a note.
        #expect(report.notes.contains { $0.contains("not in llama.cpp") })
        let file = try GGUFFile(url: url)
        #expect(try file.int("olmoe.expert_count") == spec.moe(spec.moeLayers[0])?.expertCount)
        #expect(file.metadataKeys.allSatisfy { !$0.hasPrefix("premoe.kept_experts") })
        #expect(try file.string("general.name") == "olmoe")
        #expect {
            try GGUFExport.writeFile(modelDirectory: model, keptExperts: plan, sourceFingerprint: "fp", type: .q8_0, to: url)
        } throws: { error in
            guard let e = error as? PreMoeError, case .io(_, let reason) = e else { return false }
            return reason.contains("already exists")
        }
    }
}
