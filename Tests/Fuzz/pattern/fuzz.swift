// libFuzzer target: a stored task pattern, checked against a model spec, then everything a
// command does with an accepted one (ranking, plans for every kind of budget, distances).
import Foundation
import Models
import PreMoe

/// Two MoE layers of eight experts (the qwen3_moe fixture's shape), built once.
let spec: DecoderSpec? = {
    let config = #"{"model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,"#
        + #" "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512, "intermediate_size": 128,"#
        + #" "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32}"#
    return try? ModelRegistry.spec(configData: Data(config.utf8), file: "config.json").0
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard let spec, let pattern = try? JSONDecoder().decode(TaskPattern.self, from: input(bytes, count)) else { return 0 }
    _ = pattern.layerIndices
    guard (try? pattern.validate(against: spec, file: "fuzz.json")) != nil else { return 0 }
    let sizes = ModelSizes(backboneBytes: 1000, expertBytes: [0: [Int](repeating: 10, count: 8), 1: [Int](repeating: 10, count: 8)])
    for budget in [ExpertBudget.count(3), .fraction(0.5), .bytes(1100)] {
        _ = try? PruningPlan.make(patterns: [pattern, pattern], budget: budget, sizes: sizes)
    }
    for metric in DistanceMetric.allCases { _ = metric.distance(pattern.signature.values, pattern.signature.values) }
    return 0
}
