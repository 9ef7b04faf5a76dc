import Foundation
import Models
import PreMoe
import TestSupport

/// The parts of a model fixture's `golden.json` these tests use.
struct FixtureGolden: Decodable {
    let input_ids: [Int]
    let logits: [[Float]]
}

/// Model fixtures with MoE layers that the engine loads.
let moeFixtures = [
    "qwen3_moe", "qwen3_moe_fused", "qwen2_moe", "mixtral", "olmoe", "deepseek_v2", "deepseek_v3", "deepseek_v3_fp8", "glm4_moe", "gpt_oss", "gpt_oss_mxfp4",
]

func fixtureDirectory(_ name: String) -> URL { Fixtures.url("models/\(name)") }

func loadFixture(_ name: String, options: LoadOptions = LoadOptions(threads: 1)) throws -> LoadedModel {
    try ModelLoader.load(fixtureDirectory(name), options: options)
}

/// Forwards observer calls to several observers.
final class TeeObserver: RouterObserver {
    let observers: [RouterObserver]
    init(_ observers: [RouterObserver]) { self.observers = observers }
    var wantsExpertOutputs: Bool { observers.contains { $0.wantsExpertOutputs } }
    func routerDidRoute(_ event: RouterEvent) { observers.forEach { $0.routerDidRoute(event) } }
    func expertDidCompute(_ event: ExpertOutputEvent) {
        observers.forEach { if $0.wantsExpertOutputs { $0.expertDidCompute(event) } }
    }
}

/// Copies every router event: logits `[T, held]`, the selected rows and the row → expert map.
final class EventLog: RouterObserver {
    struct Event {
        let layer: Int, tokens: Int, held: Int, topK: Int, ids: [Int]
        let logits: [Float], selected: [Int], weights: [Float]
    }
    var events: [Event] = []
    var outputs: [(layer: Int, expert: Int, weights: [Float], norms: [Double])] = []
    let wantsOutputs: Bool
    init(wantsOutputs: Bool = false) { self.wantsOutputs = wantsOutputs }
    var wantsExpertOutputs: Bool { wantsOutputs }
    func routerDidRoute(_ e: RouterEvent) {
        events.append(Event(
            layer: e.layer, tokens: e.tokenCount, held: e.expertCount, topK: e.topK, ids: e.expertIDs,
            logits: Array(UnsafeBufferPointer(start: e.logits, count: e.tokenCount * e.expertCount)),
            selected: Array(UnsafeBufferPointer(start: e.selected, count: e.tokenCount * e.topK)),
            weights: Array(UnsafeBufferPointer(start: e.weights, count: e.tokenCount * e.topK))))
    }
    func expertDidCompute(_ e: ExpertOutputEvent) {
        let norms = (0..<e.tokens.count).map { r -> Double in
            var s: Double = 0
            for i in 0..<e.hidden { s += Double(e.outputs[r * e.hidden + i]) * Double(e.outputs[r * e.hidden + i]) }
            return s.squareRoot()
        }
        outputs.append((e.layer, e.expertID, e.weights, norms))
    }
}

/// A small pattern with the given per-layer scores (signature = the first layer's scores).
func makePattern(task: String, scores: [Int: [Double]], fingerprint: String = "f00d", tokens: Int = 10) -> TaskPattern {
    let first = scores.keys.min() ?? 0
    return TaskPattern(modelFingerprint: fingerprint, modelType: "qwen3_moe", task: task,
                       scorer: TCESSScorer().descriptor, tokenCount: tokens, expertCount: scores[first]?.count ?? 0,
                       scores: scores, signature: .init(layer: first, scorer: TCESSScorer().descriptor,
                                                        values: scores[first] ?? []),
                       createdAt: Date(timeIntervalSince1970: 0))
}
