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

    /// A fresh temporary directory, removed by the caller (or left for the OS to clean).
    public static func temporaryDirectory(_ prefix: String = "premoe-test") throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(prefix)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// Relative error of `actual` against `expected`: max |Δ| / max |expected|, the measure the
/// parity fixtures are judged by (a per-element relative error explodes on near-zero logits).
public func maxRelativeError(_ actual: [Float], _ expected: [Float]) -> Float {
    precondition(actual.count == expected.count, "length mismatch \(actual.count) vs \(expected.count)")
    var maxDiff: Float = 0
    var maxRef: Float = 0
    for i in 0..<actual.count {
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
