import Foundation

/// A task's expert pattern: per MoE layer, one importance score per original expert, plus the
/// retrieval signature. Stored as plain JSON (snake_case keys; layers keyed by their index as a
/// string, since JSON keys are strings):
///
/// ```
/// {"version": 1, "model_fingerprint": "…64 hex…", "model_type": "qwen3_moe", "task": "gsm8k",
///  "scorer": {"name": "tcess", "parameters": {"k": 1, "r": -1}}, "token_count": 65536,
///  "expert_count": 128, "layers": {"0": [E scores], "1": […], …},
///  "signature": {"layer": 0, "scorer": {…}, "values": [E]}, "created_at": "2026-…Z",
///  "source": "data/gsm8k/train.jsonl"}
/// ```
public struct TaskPattern: Codable, Equatable, Sendable {
    /// Format version of this file.
    public static let currentVersion = 1

    /// The retrieval key: the first MoE layer's vector of a router-only scorer.
    public struct Signature: Codable, Equatable, Sendable {
        public var layer: Int
        public var scorer: ScorerDescriptor
        public var values: [Double]
        public init(layer: Int, scorer: ScorerDescriptor, values: [Double]) {
            self.layer = layer
            self.scorer = scorer
            self.values = values
        }
    }

    public var version: Int
    /// `ModelFingerprint` of the model the pattern was profiled on.
    public var modelFingerprint: String
    public var modelType: String
    public var task: String
    public var scorer: ScorerDescriptor
    /// Calibration tokens seen (per MoE layer; the same for every layer).
    public var tokenCount: Int
    /// Routed experts per MoE layer in the original model.
    public var expertCount: Int
    /// Scores by layer index (as a decimal string), indexed by original expert.
    public var layers: [String: [Double]]
    public var signature: Signature
    /// ISO 8601, UTC.
    public var createdAt: String
    /// Where the calibration data came from (informational).
    public var source: String?

    enum CodingKeys: String, CodingKey {
        case version, task, scorer, layers, signature, source
        case modelFingerprint = "model_fingerprint"
        case modelType = "model_type"
        case tokenCount = "token_count"
        case expertCount = "expert_count"
        case createdAt = "created_at"
    }

    public init(modelFingerprint: String, modelType: String, task: String, scorer: ScorerDescriptor, tokenCount: Int,
                expertCount: Int, scores: [Int: [Double]], signature: Signature, createdAt: Date = Date(),
                source: String? = nil) {
        version = Self.currentVersion
        self.modelFingerprint = modelFingerprint
        self.modelType = modelType
        self.task = task
        self.scorer = scorer
        self.tokenCount = tokenCount
        self.expertCount = expertCount
        layers = Dictionary(uniqueKeysWithValues: scores.map { (String($0.key), $0.value) })
        self.signature = signature
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        self.createdAt = formatter.string(from: createdAt)
        self.source = source
    }

    /// Scores by integer layer index.
    public var scores: [Int: [Double]] {
        Dictionary(layers.compactMap { key, value in Int(key).map { ($0, value) } }, uniquingKeysWith: { first, _ in first })
    }

    /// MoE layer indices, ascending.
    public var layerIndices: [Int] { scores.keys.sorted() }

    /// Checks internal consistency (every vector has `expertCount` finite values, keys are layers).
    /// - Throws: `PreMoeError.invalidPattern` naming `file`.
    public func validate(file: String) throws {
        guard version == Self.currentVersion else {
            throw PreMoeError.invalidPattern(file: file, reason: "version \(version), expected \(Self.currentVersion)")
        }
        for (key, values) in layers {
            guard let l = Int(key), String(l) == key else {
                throw PreMoeError.invalidPattern(file: file, reason: "layer key '\(key)' is not an integer in canonical form")
            }
            guard values.count == expertCount else {
                throw PreMoeError.invalidPattern(
                    file: file, reason: "layer \(key) has \(values.count) scores, expected expert_count \(expertCount)")
            }
            guard values.allSatisfy(\.isFinite) else {
                throw PreMoeError.invalidPattern(file: file, reason: "layer \(key) has a non-finite score")
            }
        }
        guard signature.values.count == expertCount else {
            throw PreMoeError.invalidPattern(file: file, reason: "signature has \(signature.values.count) values, expected \(expertCount)")
        }
    }
}
