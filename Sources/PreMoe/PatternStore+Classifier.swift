import Foundation

extension PatternStore {
    /// The fitted task classifier's cache file. Its name starts with a dot, so it is never
    /// listed as a pattern.
    public var classifierURL: URL { directory.appendingPathComponent(".task-classifier.json") }

    /// The task classifier for `patterns`: the cached one when it was fitted on exactly these
    /// patterns' samples with these settings, else a new fit, cached for the next call (a fit
    /// takes seconds; a decision with a fitted classifier takes microseconds).
    /// - Parameters:
    ///   - patterns: the store's patterns for one model.
    ///   - settings: fit settings.
    /// - Returns: nil when some pattern has no retrieval samples (made before they existed).
    /// - Throws: `PreMoeError` for inconsistent samples. A cache that cannot be written is not
    ///   an error (a read-only store still retrieves, fitting each time).
    public func classifier(for patterns: [TaskPattern], settings: TaskClassifier.Settings = .init()) throws -> TaskClassifier? {
        guard !patterns.isEmpty, patterns.allSatisfy({ $0.retrieval != nil }) else { return nil }
        let key = Self.classifierKey(patterns, settings: settings)
        if let data = FileManager.default.contents(atPath: classifierURL.path),
           let cached = try? JSONDecoder().decode(TaskClassifier.self, from: data),
           cached.key == key, cached.version == TaskClassifier.currentVersion
        {
            return cached
        }
        guard let fitted = try Retriever.fitClassifier(patterns, settings: settings, key: key) else { return nil }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        if let data = try? encoder.encode(fitted) { try? writeAtomically(data, to: classifierURL) }
        return fitted
    }

    /// SHA-256 over the settings and every pattern's task, fingerprint and samples.
    static func classifierKey(_ patterns: [TaskPattern], settings: TaskClassifier.Settings) -> String {
        var hash = SHA256()
        hash.update(Data("v\(TaskClassifier.currentVersion);\(settings.description);\(QueryFeatures.name)\n".utf8))
        for pattern in patterns.sorted(by: { $0.task < $1.task }) {
            guard let r = pattern.retrieval else { continue }
            hash.update(Data("\(pattern.task)\n\(pattern.modelFingerprint)\n\(r.dimension)\n".utf8))
            hash.update(Data(r.items.map(String.init).joined(separator: ",").utf8))
            hash.update(Data(r.values.utf8))
            hash.update(Data("\n\((r.contextItems ?? []).map(String.init).joined(separator: ","))\n\(r.contextValues ?? "")".utf8))
        }
        return hash.hexDigest()
    }
}
