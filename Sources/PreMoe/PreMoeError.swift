import Foundation

/// Errors of profiling, pattern storage, retrieval, pruning plans and export.
public enum PreMoeError: Error, CustomStringConvertible {
    /// A pattern was made for another model (different config or router weights).
    case fingerprintMismatch(task: String, file: String, pattern: String, model: String)
    /// No pattern of that name in the store.
    case patternNotFound(task: String, store: String, available: [String])
    /// A pattern file that is not valid pattern JSON.
    case invalidPattern(file: String, reason: String)
    /// A task name that cannot be a file name.
    case invalidTaskName(String)
    /// The store has no pattern to retrieve from.
    case emptyStore(String)
    /// A calibration data file that cannot be read or has an unknown record shape.
    case invalidData(file: String, line: Int?, reason: String)
    /// A `--keep` / `--budget` value that cannot be parsed or met.
    case invalidBudget(String)
    /// An unknown scorer or a bad scorer parameter.
    case invalidScorer(String)
    /// Anything else about the model that makes the request impossible (no MoE layer, ...).
    case unsupported(String)
    /// File system trouble.
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case .fingerprintMismatch(let task, let file, let pattern, let model):
            return "\(file): pattern '\(task)' was made for another model (fingerprint \(pattern.prefix(16))…, "
                + "this model is \(model.prefix(16))…); profile the task again for this model"
        case .patternNotFound(let task, let store, let available):
            let list = available.isEmpty ? "the store is empty" : "available: \(available.joined(separator: ", "))"
            return "\(store): no pattern for task '\(task)' (\(list))"
        case .invalidPattern(let file, let reason):
            return "\(file): not a valid task pattern: \(reason)"
        case .invalidTaskName(let name):
            return "invalid task name '\(name)': use letters, digits, '.', '_' or '-' (not starting with '.'); "
                + "several tasks are separated by ','"
        case .emptyStore(let store):
            return "\(store): no usable task pattern (files that are not valid patterns for this model are skipped "
                + "with a warning); run `premoe profile` first"
        case .invalidData(let file, let line, let reason):
            return "\(file)\(line.map { ":\($0)" } ?? ""): \(reason)"
        case .invalidBudget(let reason):
            return "invalid pruning budget: \(reason)"
        case .invalidScorer(let reason):
            return "invalid scorer: \(reason)"
        case .unsupported(let reason):
            return reason
        case .io(let path, let reason):
            return "\(path): \(reason)"
        }
    }
}
