import Foundation
@testable import Models
import Testing
import TestSupport

/// One absurd `config.json` edit (found by attacking the CLI, issue 12) and the field its error
/// must name.
struct AbsurdConfig: CustomStringConvertible, Sendable {
    let fixture: String
    /// Top-level keys replaced by raw JSON text.
    let edits: [String: String]
    let field: String
    var description: String { "\(fixture) \(edits)" }
}

let absurdConfigs: [AbsurdConfig] = [
    AbsurdConfig(fixture: "qwen3_moe", edits: ["hidden_size": "1099511627776"], field: "hidden_size"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["num_hidden_layers": "1e9"], field: "num_hidden_layers"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["num_hidden_layers": "-3"], field: "num_hidden_layers"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["vocab_size": "1099511627776"], field: "vocab_size"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["num_local_experts": "1000000000"], field: "num_experts"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["moe_intermediate_size": "1099511627776"], field: "moe_intermediate_size"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["max_position_embeddings": "0"], field: "max_position_embeddings"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["mlp_only_layers": "[99, -1]"], field: "mlp_only_layers"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["rope_parameters": #"{"rope_theta": 0, "rope_type": "default"}"#],
                 field: "rope_theta"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["rope_parameters": #"{"rope_theta": -10000, "rope_type": "default"}"#],
                 field: "rope_theta"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["rope_parameters": #"{"rope_theta": 1e6, "rope_type": "yarn", "factor": 0}"#],
                 field: "rope_parameters.factor"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["rope_parameters": #"{"rope_theta": 1e6, "rope_type": "linear", "factor": -2}"#],
                 field: "rope_parameters.factor"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["partial_rotary_factor": "1e300"], field: "partial_rotary_factor"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["partial_rotary_factor": "0"], field: "partial_rotary_factor"),
    AbsurdConfig(fixture: "qwen3_moe", edits: ["rms_norm_eps": "1e300"], field: "rms_norm_eps"),
    AbsurdConfig(fixture: "deepseek_v3", edits: ["num_nextn_predict_layers": "-1"], field: "num_nextn_predict_layers"),
    AbsurdConfig(fixture: "deepseek_v3", edits: ["routed_scaling_factor": "1e300"], field: "routed_scaling_factor"),
    AbsurdConfig(fixture: "deepseek_v3", edits: ["kv_lora_rank": "1099511627776"], field: "kv_lora_rank"),
    AbsurdConfig(fixture: "olmoe", edits: ["clip_qkv": "-1"], field: "clip_qkv"),
]

@Suite struct ConfigValidationTests {
    /// The fixture's config with `edits` spliced in as raw JSON (so `1e9` stays `1e9`).
    static func configText(_ c: AbsurdConfig) throws -> Data {
        let data = try Data(contentsOf: Fixtures.url("models/\(c.fixture)/config.json"))
        var object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        for key in c.edits.keys { object.removeValue(forKey: key) }
        var text = String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
        text.removeLast()  // the closing brace
        for (key, raw) in c.edits.sorted(by: { $0.key < $1.key }) { text += ", \"\(key)\": \(raw)" }
        return Data((text + "}").utf8)
    }

    @Test(arguments: absurdConfigs)
    func absurdValueIsRefusedNamingTheField(_ c: AbsurdConfig) throws {
        let data = try Self.configText(c)
        do {
            _ = try ModelRegistry.spec(configData: data, file: "config.json")
            Issue.record("\(c) was accepted")
        } catch let error as ModelError {
            guard case .invalidConfig(let field, _, let file) = error else {
                Issue.record("expected invalidConfig, got \(error)")
                return
            }
            #expect(field == c.field, "\(error)")
            #expect(file == "config.json")
        }
    }

    @Test func everyFixtureConfigStillPasses() throws {
        for name in ["llama", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "mixtral", "olmoe", "deepseek_v2", "deepseek_v3"] {
            let data = try Data(contentsOf: Fixtures.url("models/\(name)/config.json"))
            _ = try ModelRegistry.spec(configData: data, file: "\(name)/config.json")
        }
    }
}
