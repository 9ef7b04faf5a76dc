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

    /// Query feature vectors of the task's calibration prompts in several renderings, for the
    /// task classifier (`TaskClassifier`); absent in patterns made before it existed.
    public struct RetrievalSamples: Codable, Equatable, Sendable {
        /// `QueryFeatures.name`.
        public var features: String
        public var dimension: Int
        /// The calibration item each sample was rendered from.
        public var items: [Int]
        /// `QueryStyle` names used.
        public var renderings: [String]
        /// Base64 of little-endian float16 `[items.count, dimension]`: half the bytes of float32
        /// and more than enough for unit-scaled features (relative error 5e-4).
        public var values: String
        /// The calibration item of each context sample: features of the items' texts that are not
        /// requests (`TaskQuery.context`: passages alone, long answers alone), the classifier's
        /// "none of the tasks" examples. Absent in patterns made before them, and empty for
        /// tasks whose items have no such text.
        public var contextItems: [Int]?
        /// Base64 of little-endian float16 `[contextItems.count, dimension]`.
        public var contextValues: String?

        enum CodingKeys: String, CodingKey {
            case features, dimension, items, renderings, values
            case contextItems = "context_items"
            case contextValues = "context_values"
        }

        public init(features: String, dimension: Int, items: [Int], renderings: [String], vectors: [[Float]],
                    contextItems: [Int] = [], contextVectors: [[Float]] = []) {
            self.features = features
            self.dimension = dimension
            self.items = items
            self.renderings = renderings
            values = Self.encode(vectors)
            if !contextVectors.isEmpty {
                self.contextItems = contextItems
                contextValues = Self.encode(contextVectors)
            }
        }

        /// The vectors, `[items.count][dimension]`.
        /// - Throws: `PreMoeError.invalidPattern` when the data does not hold that many values.
        public func vectors(file: String) throws -> [[Float]] {
            try Self.decode(values, rows: items.count, dimension: dimension, field: "retrieval.values", file: file)
        }

        /// The context vectors, `[contextItems.count][dimension]` (none when absent).
        /// - Throws: `PreMoeError.invalidPattern` when the data does not hold that many values.
        public func contextVectors(file: String) throws -> [[Float]] {
            guard let contextItems, let contextValues else { return [] }
            return try Self.decode(contextValues, rows: contextItems.count, dimension: dimension,
                                   field: "retrieval.context_values", file: file)
        }

        /// Whether `values` (and `context_values`) have the base64 length their counts imply.
        func sizesMatch() -> Bool {
            func matches(_ base64: String, _ rows: Int) -> Bool { base64.utf8.count == (rows * dimension * 2 + 2) / 3 * 4 }
            guard dimension > 0, !items.isEmpty, matches(values, items.count) else { return false }
            switch (contextItems, contextValues) {
            case (nil, nil): return true
            case let (items?, values?): return !items.isEmpty && matches(values, items.count)
            default: return false
            }
        }

        static func encode(_ vectors: [[Float]]) -> String {
            var bytes = [UInt8]()
            bytes.reserveCapacity(vectors.reduce(0) { $0 + $1.count } * 2)
            for vector in vectors {
                for x in vector {
                    let bits = Float16(x).bitPattern
                    bytes.append(UInt8(bits & 0xFF))
                    bytes.append(UInt8(bits >> 8))
                }
            }
            return Data(bytes).base64EncodedString()
        }

        static func decode(_ base64: String, rows: Int, dimension: Int, field: String, file: String) throws -> [[Float]] {
            guard let data = Data(base64Encoded: base64), dimension > 0, data.count == rows * dimension * 2 else {
                throw PreMoeError.invalidPattern(file: file, reason: "\(field) does not hold \(rows) × \(dimension) float16 values")
            }
            return data.withUnsafeBytes { raw in
                (0..<rows).map { r in
                    (0..<dimension).map { i in
                        let o = (r * dimension + i) * 2
                        return Float(Float16(bitPattern: UInt16(raw[o]) | UInt16(raw[o + 1]) << 8))
                    }
                }
            }
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
    /// Per layer (decimal string key), each expert's share of the router's softmax probability
    /// over the calibration tokens (sums to 1 per layer): how much of the routing an expert
    /// carries, whatever the scorer. Used to give layers different expert counts under one budget.
    public var routingMass: [String: [Double]]?
    /// Samples for the task classifier (nil: only the paper's centroid rule can match this task).
    public var retrieval: RetrievalSamples?
    /// Other scorers' per-layer scores from the same calibration pass (scorer name → layer key →
    /// scores by original expert), so a recipe chosen at profile time can rank by them; absent in
    /// patterns made before recipe selection.
    public var scorerScores: [String: [String: [Double]]]?
    /// The recipe chosen per keep level on held-out calibration items (`RecipeSelector`); nil:
    /// the default recipe applies.
    public var recipeSelection: RecipeSelection?

    enum CodingKeys: String, CodingKey {
        case version, task, scorer, layers, signature, source, retrieval
        case scorerScores = "scorer_scores"
        case recipeSelection = "recipe_selection"
        case routingMass = "routing_mass"
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

    /// Routing mass by integer layer index (empty for patterns made before it was stored).
    public var routingMassByLayer: [Int: [Double]] {
        Dictionary(uniqueKeysWithValues: (routingMass ?? [:]).compactMap { key, value in Int(key).map { ($0, value) } })
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
        if let retrieval, !retrieval.sizesMatch() {
            throw PreMoeError.invalidPattern(
                file: file, reason: "retrieval: \(retrieval.items.count) samples (\(retrieval.contextItems?.count ?? 0) context) × "
                    + "\(retrieval.dimension) values do not match the size of 'values' ('context_values')")
        }
        for (name, set) in scorerScores ?? [:] {
            for (key, values) in set {
                guard let l = Int(key), String(l) == key, values.count == expertCount, values.allSatisfy(\.isFinite) else {
                    throw PreMoeError.invalidPattern(
                        file: file, reason: "scorer_scores.\(name).\(key): expected \(expertCount) finite scores of an integer layer key")
                }
            }
        }
        if let selection = recipeSelection {
            guard selection.fullLoss.isFinite else {
                throw PreMoeError.invalidPattern(file: file, reason: "recipe_selection.full_loss is not finite")
            }
            for level in selection.levels {
                guard level.keep > 0, level.keep <= 1, level.losses[level.chosen] != nil,
                      level.losses.allSatisfy({ PruningRecipe(name: $0.key) != nil && $0.value.isFinite })
                else {
                    throw PreMoeError.invalidPattern(
                        file: file, reason: "recipe_selection: level \(level.keep) needs a keep in (0, 1], recipe names "
                            + "'<scores>/<allocation>' with losses, and 'chosen' among them")
                }
            }
        }
        guard signature.values.count == expertCount else {
            throw PreMoeError.invalidPattern(file: file, reason: "signature has \(signature.values.count) values, expected \(expertCount)")
        }
    }
}
