import Foundation
import Models
import Testing
import TestSupport

/// Copies a fixture model into a fresh directory so a test can break it.
func copyFixture(_ name: String) throws -> URL {
    let dir = try Fixtures.temporaryDirectory()
    let target = dir.appendingPathComponent(name)
    try FileManager.default.copyItem(at: Fixtures.url("models/\(name)"), to: target)
    return target
}

func editConfig(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
    let url = dir.appendingPathComponent("config.json")
    var object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
    edit(&object)
    try JSONSerialization.data(withJSONObject: object).write(to: url)
}

@Suite struct LoadingErrorTests {
    @Test func unknownModelTypeIsRefusedWithTheSupportedList() throws {
        let dir = try copyFixture("qwen3")
        try editConfig(dir) { $0["model_type"] = "gpt_bigcode" }
        // Remove the weights: the type must be refused before any weight file is opened.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("model.safetensors"))
        let error = try #require(throws: ModelError.self) { try ModelLoader.load(dir) }
        let text = "\(error)"
        #expect(text.contains("gpt_bigcode") && text.contains("qwen3_moe") && text.contains("mixtral"))
        #expect(ModelRegistry.supports("olmoe"))
        #expect(!ModelRegistry.supports("gpt_bigcode"))
    }

    @Test(arguments: [
        ("num_attention_heads", -1 as Any, "num_attention_heads"),
        ("num_key_value_heads", 3 as Any, "num_key_value_heads"),
        ("hidden_size", "wide" as Any, "hidden_size"),
        ("hidden_act", "gelu" as Any, "hidden_act"),
    ])
    func invalidConfigNamesTheField(_ field: String, _ value: Any, _ expected: String) throws {
        let dir = try copyFixture("qwen3")
        try editConfig(dir) { $0[field] = value }
        let error = try #require(throws: ModelError.self) { try ModelLoader.load(dir) }
        #expect("\(error)".contains(expected), "\(error)")
    }

    @Test func unsupportedRoPEKindIsRefused() throws {
        let dir = try copyFixture("qwen3")
        try editConfig(dir) { $0["rope_parameters"] = ["rope_type": "longrope", "rope_theta": 10000.0] }
        let error = try #require(throws: ModelError.self) { try ModelLoader.load(dir) }
        #expect("\(error)".contains("longrope"))
    }

    @Test func missingTensorsAreReportedTogether() throws {
        let dir = try copyFixture("qwen3_moe")
        // Claim a layer the checkpoint does not have: all its tensors are missing, reported at once.
        try editConfig(dir) { $0["num_hidden_layers"] = 3 }
        let error = try #require(throws: ModelError.self) { try ModelLoader.load(dir) }
        guard case .weightProblems(let problems, _) = error else {
            Issue.record("expected weightProblems, got \(error)")
            return
        }
        #expect(problems.count > 5)
        #expect("\(error)".contains("model.layers.2.self_attn.q_proj.weight"))
    }

    @Test func missingDirectoryAndMissingShardFail() throws {
        #expect(throws: ModelError.self) { try ModelLoader.load(URL(fileURLWithPath: "/nonexistent/model")) }
        let dir = try copyFixture("qwen3_moe_sharded")
        let shards = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("model-0000") }
        try FileManager.default.removeItem(at: dir.appendingPathComponent(try #require(shards.sorted().last)))
        #expect(throws: (any Error).self) { try ModelLoader.load(dir) }
    }

    @Test func tokenIDsOutsideTheVocabularyAndEmptyInputThrow() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3"))
        let model = loaded.model
        #expect(throws: ModelError.self) { try model.forward([model.spec.vocabularySize], cache: model.makeCache()) }
        #expect(throws: ModelError.self) { try model.forward([-1], cache: model.makeCache()) }
        #expect(throws: ModelError.self) { try model.forward([], cache: model.makeCache()) }
    }
}

@Suite struct BackboneOnlyTests {
    @Test func runningPastTheFirstRouterWithoutExpertsThrows() throws {
        let loaded = try ModelLoader.load(Fixtures.url("models/qwen3_moe"), options: LoadOptions(threads: 1, loadExperts: false))
        let model = loaded.model
        let first = try #require(model.spec.moeLayers.first)
        do {
            _ = try model.forward([1, 2, 3], cache: model.makeCache(), logits: .last)
            Issue.record("a backbone-only model ran its MoE layers")
        } catch let error as ModelError {
            guard case .expertsNotLoaded(let layer) = error else {
                Issue.record("expected expertsNotLoaded, got \(error)")
                return
            }
            #expect(layer == first)
        }
        // Up to the router is what retrieval needs, and still works.
        _ = try model.forward([1, 2, 3], cache: model.makeCache(), logits: .none, stopAfterRouterOf: first)
    }

    @Test func moeOfALayerOutsideTheModelIsNil() throws {
        let spec = try ModelLoader.spec(at: Fixtures.url("models/qwen3_moe"))
        #expect(spec.moe(spec.layerCount) == nil)
        #expect(spec.moe(-1) == nil)
        #expect(spec.moe(0) != nil)
    }
}
