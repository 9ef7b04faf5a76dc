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
