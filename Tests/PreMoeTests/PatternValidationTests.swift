import Foundation
import Models
import PreMoe
import Testing
import TestSupport

/// One edit of a valid pattern for the `qwen3_moe` fixture (2 MoE layers × 8 experts) and what
/// its error must mention (cases from attacking `run` and `prune`, issue 12).
struct BrokenPattern: CustomStringConvertible, Sendable {
    let name: String
    let mentions: String
    let edit: @Sendable (inout TaskPattern) -> Void
    var description: String { name }
}

let brokenPatterns: [BrokenPattern] = [
    BrokenPattern(name: "a MoE layer missing", mentions: "MoE layer 1 is missing") { $0.layers["1"] = nil },
    BrokenPattern(name: "extra layer 99", mentions: "layer 99 is not a MoE layer") { $0.layers["99"] = $0.layers["0"] },
    BrokenPattern(name: "expert_count 4 for 8 experts", mentions: "expert_count 4") { p in
        p.expertCount = 4
        p.layers = p.layers.mapValues { Array($0.prefix(4)) }
        p.signature.values = Array(p.signature.values.prefix(4))
    },
    BrokenPattern(name: "negative token count", mentions: "token_count -5") { $0.tokenCount = -5 },
    BrokenPattern(name: "unknown signature scorer", mentions: "signature.scorer") { $0.signature.scorer.name = "oracle" },
    BrokenPattern(name: "unknown scorer", mentions: "scorer: invalid scorer") { $0.scorer.name = "oracle" },
    BrokenPattern(name: "scorer k = 1e300", mentions: "k must be an integer") { $0.scorer.parameters["k"] = 1e300 },
    BrokenPattern(name: "signature values 1e308", mentions: "signature.values[0]") { $0.signature.values[0] = 1e308 },
    BrokenPattern(name: "score 1e308", mentions: "layers.1[2]") { $0.layers["1"]![2] = 1e308 },
    BrokenPattern(name: "signature on layer 1", mentions: "signature.layer 1") { $0.signature.layer = 1 },
    BrokenPattern(name: "layer key 01", mentions: "canonical") { $0.layers["01"] = $0.layers["1"] },
    BrokenPattern(name: "another model type", mentions: "model_type 'mixtral'") { $0.modelType = "mixtral" },
]

@Suite struct PatternValidationTests {
    static func spec() throws -> DecoderSpec { try ModelLoader.spec(at: fixtureDirectory("qwen3_moe")) }

    static func valid() -> TaskPattern {
        makePattern(task: "t", scores: [0: (0..<8).map { Double($0) / 8 }, 1: (0..<8).map { 1 - Double($0) / 8 }])
    }

    @Test func validPatternPasses() throws {
        try Self.valid().validate(against: try Self.spec(), file: "t.json")
    }

    @Test(arguments: brokenPatterns)
    func brokenPatternIsRefusedNamingTheField(_ c: BrokenPattern) throws {
        var pattern = Self.valid()
        c.edit(&pattern)
        do {
            try pattern.validate(against: try Self.spec(), file: "t.json")
            Issue.record("\(c.name) was accepted")
        } catch let error as PreMoeError {
            #expect("\(error)".contains(c.mentions), "\(error)")
            #expect("\(error)".contains("t.json"))
        }
    }

    @Test func storeAppliesTheModelCheckOnLoadAndSkipsOnList() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = PatternStore(directory: dir)
        var missing = Self.valid()
        missing.task = "missing"
        missing.layers["1"] = nil
        try store.save(missing)
        try store.save(Self.valid())
        #expect(throws: PreMoeError.self) { try store.load("missing", spec: try Self.spec()) }
        let (patterns, skipped) = try store.scan(spec: try Self.spec())
        #expect(patterns.map(\.task) == ["t"])
        #expect(skipped.map { URL(fileURLWithPath: $0.file).lastPathComponent } == ["missing.json"])
    }

    /// One junk `.json` (or a foreign pattern) in a store must not take the whole store down:
    /// it is skipped with a warning through `PreMoeLog`; naming it still fails clearly.
    @Test func junkFileIsSkippedWithAWarning() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = PatternStore(directory: dir)
        try store.save(Self.valid())
        try Data(#"{"name": "not a pattern"}"#.utf8).write(to: dir.appendingPathComponent("package.json"))
        try Data([0xFF, 0x00, 0x7B]).write(to: dir.appendingPathComponent("binary.json"))
        let warnings = WarningLog()
        let previous = PreMoeLog.handler
        PreMoeLog.handler = { warnings.append($0) }
        defer { PreMoeLog.handler = previous }
        #expect(try store.list(spec: try Self.spec()).map(\.task) == ["t"])
        let logged = warnings.messages.filter { $0.contains(dir.path) }  // tests run in parallel
        #expect(logged.count == 2)
        #expect(logged.contains { $0.contains("package.json") && $0.contains("not a valid task pattern") })
        #expect(throws: PreMoeError.self) { try store.load("package") }
    }
}

/// Collects warnings from `PreMoeLog` (thread-safe).
final class WarningLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ message: String) { lock.withLock { stored.append(message) } }
    var messages: [String] { lock.withLock { stored } }
}
