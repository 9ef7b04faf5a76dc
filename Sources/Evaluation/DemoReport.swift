import Foundation
import PreMoe

/// One task's calibration: its pattern and heatmap.
public struct DemoProfile: Codable, Sendable {
    public var task: String
    public var tokens: Int
    public var sequences: Int
    public var seconds: Double
    public var patternFile: String
    public var heatmapFile: String
    /// MoE layer indices, one per row of `importance`.
    public var layers: [Int]
    /// `[layer][expert]`: TCESS scaled to [0, 1] within each layer.
    public var importance: [[Double]]

    enum CodingKeys: String, CodingKey {
        case task, tokens, sequences, seconds, layers, importance
        case patternFile = "pattern_file"
        case heatmapFile = "heatmap_png"
    }
}

/// One held-out prompt matched against the stored patterns.
public struct DemoRetrieval: Codable, Sendable {
    /// The task the prompt comes from.
    public var task: String
    public var prompt: String
    /// The `QueryStyle` the prompt was sent in.
    public var rendering: String
    public var retrieved: String?
    public var distance: Double
    public var correct: Bool
    /// Every task, nearest first.
    public var candidates: [RetrievalCandidate]
}

/// Held-out perplexity of `task` on the model pruned with `pattern`'s experts to `keep`.
public struct DemoQuality: Codable, Sendable {
    public var task: String
    /// The task whose pattern chose the experts; nil for the full model.
    public var pattern: String?
    public var keep: Double
    public var expertsPerLayer: Int
    public var perplexity: Double
    /// Held-out texts scored, and their tokens.
    public var items: Int
    public var tokens: Int

    enum CodingKeys: String, CodingKey {
        case task, pattern, keep, perplexity, items, tokens
        case expertsPerLayer = "experts_per_layer"
    }
}

/// One model of the comparison, loaded from disk with only its experts.
public struct DemoLevel: Codable, Sendable {
    public var keep: Double
    public var expertsPerLayer: Int
    /// Routed-expert bytes read from the checkpoint for this load.
    public var expertBytesLoaded: Int
    /// Weights held: backbone plus the kept experts.
    public var modelBytes: Int
    public var backboneBytes: Int
    /// Peak resident memory of the process while this model was loaded and used (the peak is
    /// reset before each load where the OS allows it; see `peakIsPerLevel`).
    public var peakResidentBytes: Int?
    public var peakIsPerLevel: Bool
    public var loadSeconds: Double
    public var promptTokens: Int
    public var prefillSeconds: Double
    public var prefillTokensPerSecond: Double
    public var generatedTokens: Int
    public var decodeSeconds: Double
    public var decodeTokensPerSecond: Double
    public var text: String
    /// nil when the evaluation task has no held-out text.
    public var perplexity: Double?

    enum CodingKeys: String, CodingKey {
        case keep, perplexity, text
        case expertsPerLayer = "experts_per_layer"
        case expertBytesLoaded = "expert_bytes_loaded"
        case modelBytes = "model_bytes"
        case backboneBytes = "backbone_bytes"
        case peakResidentBytes = "peak_rss_bytes"
        case peakIsPerLevel = "peak_rss_per_level"
        case loadSeconds = "load_seconds"
        case promptTokens = "prompt_tokens"
        case prefillSeconds = "prefill_seconds"
        case prefillTokensPerSecond = "prefill_tokens_per_second"
        case generatedTokens = "generated_tokens"
        case decodeSeconds = "decode_seconds"
        case decodeTokensPerSecond = "decode_tokens_per_second"
    }
}

/// The full model and its pruned versions answering one prompt.
public struct DemoComparison: Codable, Sendable {
    public var prompt: String
    /// The task the prompt comes from (nil for a prompt given on the command line).
    public var task: String?
    public var retrievedTask: String?
    public var distance: Double
    /// The task whose held-out perplexity is reported (the retrieved one).
    public var evaluationTask: String
    public var evaluationItems: Int
    public var levels: [DemoLevel]

    enum CodingKeys: String, CodingKey {
        case prompt, task, distance, levels
        case retrievedTask = "retrieved_task"
        case evaluationTask = "evaluation_task"
        case evaluationItems = "evaluation_items"
    }
}

/// Everything the demo measured.
public struct DemoReport: Codable, Sendable {
    public var model: String
    public var fingerprint: String
    public var moeLayers: [Int]
    public var experts: Int
    public var topK: Int
    public var calibrationTokens: Int
    public var profiles: [DemoProfile] = []
    public var retrieval: [DemoRetrieval] = []
    public var retrievalAccuracy: Double?
    public var quality: [DemoQuality] = []
    public var comparison: DemoComparison?
    public var files: [String] = []
    /// Seconds per stage (`load`, `profile`, `retrieval`, `quality`, `comparison`, `total`).
    public var seconds: [String: Double] = [:]

    enum CodingKeys: String, CodingKey {
        case model, fingerprint, experts, profiles, retrieval, quality, comparison, files, seconds
        case moeLayers = "moe_layers"
        case topK = "top_k"
        case calibrationTokens = "calibration_tokens"
        case retrievalAccuracy = "retrieval_accuracy"
    }
}

// MARK: - JSON

// Explicit encoders so that absent values are written as `null` (the synthesized ones leave the
// key out), which keeps the summary's shape the same on every run.

extension DemoRetrieval {
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(task, forKey: .task)
        try c.encode(prompt, forKey: .prompt)
        try c.encode(rendering, forKey: .rendering)
        try c.encode(retrieved, forKey: .retrieved)
        try c.encode(distance, forKey: .distance)
        try c.encode(correct, forKey: .correct)
        try c.encode(candidates, forKey: .candidates)
    }
}

extension DemoQuality {
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(task, forKey: .task)
        try c.encode(pattern, forKey: .pattern)
        try c.encode(keep, forKey: .keep)
        try c.encode(expertsPerLayer, forKey: .expertsPerLayer)
        try c.encode(perplexity, forKey: .perplexity)
        try c.encode(items, forKey: .items)
        try c.encode(tokens, forKey: .tokens)
    }
}

extension DemoLevel {
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(keep, forKey: .keep)
        try c.encode(expertsPerLayer, forKey: .expertsPerLayer)
        try c.encode(expertBytesLoaded, forKey: .expertBytesLoaded)
        try c.encode(modelBytes, forKey: .modelBytes)
        try c.encode(backboneBytes, forKey: .backboneBytes)
        try c.encode(peakResidentBytes, forKey: .peakResidentBytes)
        try c.encode(peakIsPerLevel, forKey: .peakIsPerLevel)
        try c.encode(loadSeconds, forKey: .loadSeconds)
        try c.encode(promptTokens, forKey: .promptTokens)
        try c.encode(prefillSeconds, forKey: .prefillSeconds)
        try c.encode(prefillTokensPerSecond, forKey: .prefillTokensPerSecond)
        try c.encode(generatedTokens, forKey: .generatedTokens)
        try c.encode(decodeSeconds, forKey: .decodeSeconds)
        try c.encode(decodeTokensPerSecond, forKey: .decodeTokensPerSecond)
        try c.encode(text, forKey: .text)
        try c.encode(perplexity, forKey: .perplexity)
    }
}

extension DemoComparison {
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(prompt, forKey: .prompt)
        try c.encode(task, forKey: .task)
        try c.encode(retrievedTask, forKey: .retrievedTask)
        try c.encode(distance, forKey: .distance)
        try c.encode(evaluationTask, forKey: .evaluationTask)
        try c.encode(evaluationItems, forKey: .evaluationItems)
        try c.encode(levels, forKey: .levels)
    }
}

extension DemoReport {
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model)
        try c.encode(fingerprint, forKey: .fingerprint)
        try c.encode(moeLayers, forKey: .moeLayers)
        try c.encode(experts, forKey: .experts)
        try c.encode(topK, forKey: .topK)
        try c.encode(calibrationTokens, forKey: .calibrationTokens)
        try c.encode(profiles, forKey: .profiles)
        try c.encode(retrieval, forKey: .retrieval)
        try c.encode(retrievalAccuracy, forKey: .retrievalAccuracy)
        try c.encode(quality, forKey: .quality)
        try c.encode(comparison, forKey: .comparison)
        try c.encode(files, forKey: .files)
        try c.encode(seconds, forKey: .seconds)
    }
}
