import Foundation
import Models
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A directory of task patterns, one `<task>.json` per task. Every write goes to a temporary
/// file in the same directory that is then renamed over the destination, so readers see the old
/// pattern or the new one, never a torn file.
public struct PatternStore: Sendable {
    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    /// `$XDG_CACHE_HOME/premoe/patterns/<first 16 hex of fingerprint>` (`~/.cache/…` without
    /// XDG_CACHE_HOME): one store per model, so patterns of different models never mix.
    public static func defaultDirectory(fingerprint: String) -> URL {
        let env = ProcessInfo.processInfo.environment
        let cache = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache")
        return cache.appendingPathComponent("premoe/patterns/\(fingerprint.prefix(16))", isDirectory: true)
    }

    /// Whether `name` can be a task (and file) name: `[A-Za-z0-9._-]+`, not starting with `.`.
    public static func isValidTaskName(_ name: String) -> Bool {
        !name.isEmpty && !name.hasPrefix(".") && name.count <= 200
            && name.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || "._-".unicodeScalars.contains($0) }
    }

    /// The file of `task`.
    public func url(for task: String) -> URL { directory.appendingPathComponent("\(task).json") }

    /// Writes `pattern` atomically as `<task>.json`, creating the directory if needed.
    /// - Returns: the file written.
    /// - Throws: `PreMoeError.invalidTaskName`, `.io`.
    @discardableResult
    public func save(_ pattern: TaskPattern) throws -> URL {
        guard Self.isValidTaskName(pattern.task) else { throw PreMoeError.invalidTaskName(pattern.task) }
        let destination = url(for: pattern.task)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do {
            data = try encoder.encode(pattern)
        } catch {
            throw PreMoeError.io(path: destination.path, reason: "\(error)")
        }
        try writeAtomically(data, to: destination)
        return destination
    }

    /// Writes `data` (plus a final newline) to a temporary file in the store directory, then
    /// renames it over `destination`.
    /// - Throws: `PreMoeError.io`.
    func writeAtomically(_ data: Data, to destination: URL) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var data = data
            data.append(0x0A)
            let temporary = directory.appendingPathComponent(".\(destination.lastPathComponent).tmp-\(UUID().uuidString)")
            try data.write(to: temporary)
            guard rename(temporary.path, destination.path) == 0 else {
                let reason = String(cString: strerror(errno))
                try? FileManager.default.removeItem(at: temporary)
                throw PreMoeError.io(path: destination.path, reason: "rename failed: \(reason)")
            }
        } catch let error as PreMoeError {
            throw error
        } catch {
            throw PreMoeError.io(path: destination.path, reason: "\(error)")
        }
    }

    /// Task names stored, sorted.
    public func taskNames() throws -> [String] {
        guard FileManager.default.fileExists(atPath: directory.path) else { return [] }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw PreMoeError.io(path: directory.path, reason: "\(error)")
        }
        return names.filter { $0.hasSuffix(".json") && !$0.hasPrefix(".") }.map { String($0.dropLast(5)) }.sorted()
    }

    /// Reads one pattern.
    /// - Parameters:
    ///   - task: its name.
    ///   - fingerprint: when given, a pattern made for another model is refused.
    ///   - spec: when given, the pattern is checked against the model (`validate(against:file:)`).
    /// - Throws: `PreMoeError.patternNotFound`, `.invalidPattern`, `.fingerprintMismatch`.
    public func load(_ task: String, fingerprint: String? = nil, spec: DecoderSpec? = nil) throws -> TaskPattern {
        guard Self.isValidTaskName(task) else { throw PreMoeError.invalidTaskName(task) }
        let file = url(for: task)
        guard let data = FileManager.default.contents(atPath: file.path) else {
            throw PreMoeError.patternNotFound(task: task, store: directory.path, available: (try? taskNames()) ?? [])
        }
        let pattern: TaskPattern
        do {
            pattern = try JSONDecoder().decode(TaskPattern.self, from: data)
        } catch {
            throw PreMoeError.invalidPattern(file: file.path, reason: "\(error)")
        }
        try pattern.validate(file: file.path)
        if let fingerprint, pattern.modelFingerprint != fingerprint {
            throw PreMoeError.fingerprintMismatch(task: task, file: file.path, pattern: pattern.modelFingerprint,
                                                  model: fingerprint)
        }
        if let spec { try pattern.validate(against: spec, file: file.path) }
        return pattern
    }

    /// Every usable stored pattern, sorted by task. A file that is not a valid pattern (foreign
    /// JSON, a pattern of another model, one that does not fit `spec`) is skipped with a warning
    /// through `PreMoeLog`, so one bad file does not disable the whole store; `load` of that task
    /// still throws.
    /// - Parameters:
    ///   - fingerprint: when given, patterns made for another model are skipped.
    ///   - spec: when given, patterns that do not fit the model are skipped.
    /// - Throws: `PreMoeError.io` when the directory cannot be read.
    public func list(fingerprint: String? = nil, spec: DecoderSpec? = nil) throws -> [TaskPattern] {
        let (patterns, skipped) = try scan(fingerprint: fingerprint, spec: spec)
        for s in skipped {
            let text = "\(s.error)"
            PreMoeLog.warning(text.contains(s.file) ? "skipping a pattern file: \(text)" : "skipping \(s.file): \(text)")
        }
        return patterns
    }

    /// `list` without the logging: the usable patterns and every skipped file with its error.
    /// - Throws: `PreMoeError.io` when the directory cannot be read.
    public func scan(fingerprint: String? = nil, spec: DecoderSpec? = nil) throws
        -> (patterns: [TaskPattern], skipped: [(file: String, error: Error)])
    {
        var patterns: [TaskPattern] = []
        var skipped: [(file: String, error: Error)] = []
        for task in try taskNames() {
            do {
                patterns.append(try load(task, fingerprint: fingerprint, spec: spec))
            } catch {
                skipped.append((url(for: task).path, error))
            }
        }
        return (patterns, skipped)
    }

    /// Deletes a pattern.
    /// - Throws: `PreMoeError.patternNotFound`, `.io`.
    public func remove(_ task: String) throws {
        guard Self.isValidTaskName(task) else { throw PreMoeError.invalidTaskName(task) }
        let file = url(for: task)
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw PreMoeError.patternNotFound(task: task, store: directory.path, available: (try? taskNames()) ?? [])
        }
        do {
            try FileManager.default.removeItem(at: file)
        } catch {
            throw PreMoeError.io(path: file.path, reason: "\(error)")
        }
    }
}
