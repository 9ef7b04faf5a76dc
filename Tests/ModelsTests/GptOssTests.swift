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
