import Foundation

/// Errors from reading a model's configuration or weights, or from running it.
public enum ModelError: Error, CustomStringConvertible {
    /// `model_type` is not one the registry knows.
    case unsupportedModelType(String, supported: [String], file: String)
    /// A config field is missing, has the wrong type, or breaks an invariant.
    case invalidConfig(field: String, reason: String, file: String)
    /// A feature this engine does not implement (a RoPE kind, a sliding window, an activation).
    case unsupportedFeature(String, file: String)
    /// Strict loading found problems; all of them are listed.
    case weightProblems([WeightProblem], directory: String)
    /// No `config.json`, no weights, or an unreadable path.
    case notAModel(path: String, reason: String)
    /// A token id outside `0..<vocabularySize`.
    case tokenOutOfRange(id: Int, vocabularySize: Int)
    /// An empty input where tokens are needed.
    case emptyInput(String)
    /// The context would exceed what the model or its sliding window supports.
    case contextTooLong(positions: Int, limit: Int, reason: String)
    /// A MoE layer ran on a model loaded without its routed experts (`loadExperts: false`).
    case expertsNotLoaded(layer: Int)

    public var description: String {
        switch self {
        case .unsupportedModelType(let type, let supported, let file):
            return "\(file): model_type '\(type)' is not supported; supported types: \(supported.joined(separator: ", "))"
        case .invalidConfig(let field, let reason, let file):
            return "\(file): field '\(field)': \(reason)"
        case .unsupportedFeature(let what, let file):
            return "\(file): unsupported: \(what)"
        case .weightProblems(let problems, let directory):
            let lines = problems.prefix(50).map { "  - \($0)" }.joined(separator: "\n")
            let more = problems.count > 50 ? "\n  … and \(problems.count - 50) more" : ""
            return "\(directory): \(problems.count) weight problem(s):\n\(lines)\(more)"
        case .notAModel(let path, let reason):
            return "\(path): not a model: \(reason)"
        case .tokenOutOfRange(let id, let vocabularySize):
            return "token id \(id) is outside the vocabulary (0..<\(vocabularySize))"
        case .emptyInput(let what):
            return "empty input: \(what)"
        case .contextTooLong(let positions, let limit, let reason):
            return "context of \(positions) positions exceeds \(limit): \(reason)"
        case .expertsNotLoaded(let layer):
            return "layer \(layer): the routed experts are not loaded (backbone-only model); "
                + "load them with LoadedModel.loadExperts(kept:copy:) before running past the first router"
        }
    }
}

/// One problem found while mapping checkpoint tensors to the model.
public enum WeightProblem: CustomStringConvertible, Sendable {
    case missing(String)
    case unexpected(String)
    case wrongShape(String, expected: [Int], actual: [Int])
    case unreadable(String, reason: String)

    public var description: String {
        switch self {
        case .missing(let name): return "missing tensor '\(name)'"
        case .unexpected(let name): return "unexpected tensor '\(name)' (not used by this architecture)"
        case .wrongShape(let name, let expected, let actual):
            return "tensor '\(name)' has shape \(actual), expected \(expected)"
        case .unreadable(let name, let reason): return "tensor '\(name)': \(reason)"
        }
    }
}
