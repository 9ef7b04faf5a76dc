import Foundation
import Models
import Testing
import TestSupport

/// Reference outputs written by `scripts/make_model_fixtures.py` (transformers, float32 eager).
struct Golden: Decodable {
    struct Greedy: Decodable {
        let prompt_ids: [Int]
        let tokens: [Int]
    }
    struct Router: Decodable {
        let layer: Int
        let logits: [[Float]]
        let selected: [[Int]]
        let weights: [[Float]]
    }
    let input_ids: [Int]
    let logits: [[Float]]
    let greedy: Greedy
    let router: Router?
}

/// max |Δ| / max |reference| allowed against the float32 reference. Our sums run in a different
/// order than PyTorch's and RoPE angles use Foundation's cos/sin; observed errors are ~1e-6.
let parityTolerance: Float = 1e-4

/// Every family the engine supports, as saved by transformers 5.23.
let parityFixtures = [
    "llama", "llama_tied", "qwen2", "qwen3", "qwen3_moe", "qwen3_moe_fused", "qwen3_moe_sharded",
    "qwen3_moe_bf16", "qwen2_moe", "mixtral", "olmoe", "deepseek_v2", "deepseek_v3", "deepseek_v3_fp8", "glm4_moe", "gpt_oss", "gpt_oss_mxfp4",
]

/// `count` greedy tokens after `prompt`, one forward pass per token through the KV cache
/// (argmax, ties to the lower id).
func greedyDecode(_ model: DecoderModel, prompt: [Int], count: Int) throws -> [Int] {
    let cache = model.makeCache()
    var logits = try model.forward(prompt, cache: cache, logits: .last)
    var tokens: [Int] = []
    for _ in 0..<count {
        var best = 0
        for i in logits.indices where logits[i] > logits[best] { best = i }
        tokens.append(best)
        logits = try model.forward([best], cache: cache, logits: .last)
    }
    return tokens
}

/// Records the router calls of one layer.
final class RouterRecorder: RouterObserver {
    let layer: Int
    var logits: [[Float]] = []
    var selected: [[Int]] = []
    var weights: [[Float]] = []
    init(layer: Int) { self.layer = layer }
    func routerDidRoute(_ event: RouterEvent) {
        guard event.layer == layer else { return }
        for t in 0..<event.tokenCount {
            logits.append(Array(UnsafeBufferPointer(start: event.logits + t * event.expertCount, count: event.expertCount)))
            selected.append((0..<event.topK).map { event.expertIDs[event.selected[t * event.topK + $0]] })
            weights.append(Array(UnsafeBufferPointer(start: event.weights + t * event.topK, count: event.topK)))
        }
    }
}

@Suite struct ParityTests {
    func load(_ name: String) throws -> (LoadedModel, Golden) {
        let dir = Fixtures.url("models/\(name)")
        let golden = try Fixtures.json(Golden.self, "models/\(name)/golden.json")
        return (try ModelLoader.load(dir, options: LoadOptions(threads: 2)), golden)
    }

    @Test(arguments: parityFixtures)
    func logitsOfEveryPositionMatchReference(_ name: String) throws {
        let (loaded, golden) = try load(name)
        let model = loaded.model
        let logits = try model.forward(golden.input_ids, cache: model.makeCache(), logits: .all)
        let error = maxRelativeError(logits, golden.logits.flatMap { $0 })
        #expect(error <= parityTolerance, "\(name): max relative error \(error)")
    }

    @Test(arguments: parityFixtures)
    func greedyDecodingWithKVCacheMatchesReference(_ name: String) throws {
        let (loaded, golden) = try load(name)
        let tokens = try greedyDecode(loaded.model, prompt: golden.greedy.prompt_ids, count: golden.greedy.tokens.count)
        #expect(tokens == golden.greedy.tokens, "\(name)")
    }

    @Test(arguments: parityFixtures.filter { !["llama", "llama_tied", "qwen2", "qwen3"].contains($0) })
    func routerObserverSeesReferenceLogitsAndChoices(_ name: String) throws {
        let (loaded, golden) = try load(name)
        let router = try #require(golden.router)
        let recorder = RouterRecorder(layer: router.layer)
        loaded.model.observer = recorder
        try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .none)
        #expect(recorder.selected == router.selected)
        #expect(maxRelativeError(recorder.logits.flatMap { $0 }, router.logits.flatMap { $0 }) <= parityTolerance)
        #expect(maxRelativeError(recorder.weights.flatMap { $0 }, router.weights.flatMap { $0 }) <= parityTolerance)
    }

    @Test func stoppingAtTheFirstRouterRunsNoExpert() throws {
        let dir = Fixtures.url("models/qwen3_moe")
        let golden = try Fixtures.json(Golden.self, "models/qwen3_moe/golden.json")
        let loaded = try ModelLoader.load(dir, options: LoadOptions(threads: 1, loadExperts: false))
        let first = try #require(loaded.model.spec.moeLayers.first)
        let recorder = RouterRecorder(layer: first)
        loaded.model.observer = recorder
        let cache = loaded.model.makeCache()
        let out = try loaded.model.forward(golden.input_ids, cache: cache, stopAfterRouterOf: first)
        #expect(out.isEmpty)
        #expect(cache.count == 0)
        if golden.router?.layer == first {
            #expect(recorder.selected == golden.router?.selected)
        }
        #expect(loaded.model.weightBytes.experts == 0)
    }
}

@Suite struct ExpertLoadingTests {
    @Test(arguments: ["qwen3_moe", "qwen3_moe_fused", "qwen2_moe", "mixtral", "deepseek_v2", "deepseek_v3", "deepseek_v3_fp8", "glm4_moe", "gpt_oss", "gpt_oss_mxfp4"])
    func backboneOnlyLoadThenExpertsGivesTheFullModel(_ name: String) throws {
        let golden = try Fixtures.json(Golden.self, "models/\(name)/golden.json")
        let loaded = try ModelLoader.load(Fixtures.url("models/\(name)"), options: LoadOptions(threads: 1, loadExperts: false))
        #expect(loaded.model.weightBytes.experts == 0)
        try loaded.loadExperts(kept: [:], copy: true)
        let logits = try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .all)
        #expect(maxRelativeError(logits, golden.logits.flatMap { $0 }) <= parityTolerance)
    }

    @Test func permutedExpertOrderKeepsTheLogits() throws {
        // Holding every expert in another router-row order must not change anything: routing
        // speaks in original indices.
        let name = "qwen3_moe"
        let golden = try Fixtures.json(Golden.self, "models/\(name)/golden.json")
        let spec = try ModelLoader.spec(at: Fixtures.url("models/\(name)"))
        var kept: [Int: [Int]] = [:]
        for l in spec.moeLayers { kept[l] = Array((0..<(spec.moe(l)!.expertCount)).reversed()) }
        let loaded = try ModelLoader.load(Fixtures.url("models/\(name)"), options: LoadOptions(threads: 1, keptExperts: kept))
        let logits = try loaded.model.forward(golden.input_ids, cache: loaded.model.makeCache(), logits: .all)
        #expect(maxRelativeError(logits, golden.logits.flatMap { $0 }) <= parityTolerance)
    }
}
