import Foundation
import Tokenization
import Models

/// Progress of a profiling run, reported after every forward pass.
public struct ProfileProgress: Sendable {
    public var tokens: Int
    /// The token budget, if any.
    public var targetTokens: Int?
    public var sequences: Int
    public var seconds: Double
    public var tokensPerSecond: Double { seconds > 0 ? Double(tokens) / seconds : 0 }

    public init(tokens: Int, targetTokens: Int?, sequences: Int, seconds: Double) {
        self.tokens = tokens
        self.targetTokens = targetTokens
        self.sequences = sequences
        self.seconds = seconds
    }
}

/// What a profiling run measured.
public struct ProfileResult {
    public let stats: RouterStats
    public let tokens: Int
    public let sequences: Int
    public let seconds: Double
}

/// Streams calibration sequences through the **full** model with `RouterStats` attached
/// (METHODS §1.2: every expert loaded, so each layer sees the original hidden states).
public enum Profiler {
    /// Tokenises texts in order until `budget` tokens are reached (calibration files usually hold
    /// far more text than a budget, so the rest is never tokenised).
    public static func tokenize(_ texts: [String], tokenizer: Tokenizer, budget: Int) -> [[Int]] {
        var sequences: [[Int]] = []
        var total = 0
        for text in texts where total < budget {
            let ids = tokenizer.encode(text)
            total += ids.count
            sequences.append(ids)
        }
        return sequences
    }

    /// The sequences cut to `budget` tokens in all (the last one shortened), as `run` would route them.
    public static func trim(_ sequences: [[Int]], to budget: Int) -> [[Int]] {
        var out: [[Int]] = []
        var total = 0
        for s in sequences where total < budget {
            out.append(Array(s.prefix(budget - total)))
            total += out[out.count - 1].count
        }
        return out
    }

    /// Splits calibration items into a fit fold and a validation fold: the last item of every
    /// group of `every` (items 4, 9, 14, … for 5) validates, the rest fit. Deterministic and
    /// spread over the file, so both folds see the same mix of items.
    /// - Returns: each fold's items with their index in `sequences`.
    public static func folds(_ sequences: [[Int]], every: Int) -> (fit: [(item: Int, tokens: [Int])], validation: [(item: Int, tokens: [Int])]) {
        let every = max(2, every)
        var fit: [(item: Int, tokens: [Int])] = [], validation: [(item: Int, tokens: [Int])] = []
        for (i, s) in sequences.enumerated() where !s.isEmpty {
            if i % every == every - 1 { validation.append((i, s)) } else { fit.append((i, s)) }
        }
        return (fit, validation)
    }

    /// Runs the sequences, each cut into windows of at most `window` tokens (each window its own
    /// forward pass with a fresh cache: no attention across calibration items), until
    /// `maxTokens` tokens have been routed (the last window is shortened to hit it exactly).
    /// - Parameters:
    ///   - model: the full model (experts loaded).
    ///   - sequences: token ids per calibration item.
    ///   - options: what to collect (from the scorer).
    ///   - maxTokens: token budget (nil = everything).
    ///   - window: longest forward pass, in tokens.
    ///   - untilFirstRouter: stop every pass at the first MoE router (no expert runs; enough for
    ///     signatures, and works on a backbone-only model).
    ///   - progress: called after each forward pass.
    /// - Throws: `ModelError` from the forward pass.
    public static func run(model: DecoderModel, sequences: [[Int]], options: StatsOptions, maxTokens: Int? = nil,
                           window: Int = 512, untilFirstRouter: Bool = false,
                           progress: ((ProfileProgress) -> Void)? = nil) throws -> ProfileResult {
        let stopLayer = untilFirstRouter ? model.spec.moeLayers.first : nil
        let stats = RouterStats(spec: model.spec, options: options)
        let previous = model.observer
        model.observer = stats
        defer { model.observer = previous }
        let start = Date()
        let (chunks, items) = windows(sequences, window: window, maxPositions: model.spec.maxPositions, maxTokens: maxTokens)
        var tokens = 0
        for (chunk, item) in chunks {
            try model.forward(chunk, cache: model.makeCache(capacity: chunk.count), logits: .none, stopAfterRouterOf: stopLayer)
            tokens += chunk.count
            progress?(ProfileProgress(tokens: tokens, targetTokens: maxTokens, sequences: item,
                                      seconds: Date().timeIntervalSince(start)))
        }
        return ProfileResult(stats: stats, tokens: tokens, sequences: items, seconds: Date().timeIntervalSince(start))
    }

    /// The forward passes `run` makes: each sequence cut into windows of at most `window` tokens
    /// (and the model's context), until `maxTokens` tokens (the last window shortened to hit it).
    /// - Returns: the windows with the 1-based item each belongs to, and the items touched.
    static func windows(_ sequences: [[Int]], window: Int, maxPositions: Int, maxTokens: Int?)
        -> (windows: [(tokens: [Int], item: Int)], items: Int)
    {
        let window = max(1, min(window, maxPositions))
        var result: [(tokens: [Int], item: Int)] = []
        var tokens = 0
        var items = 0
        outer: for sequence in sequences where !sequence.isEmpty {
            items += 1
            var offset = 0
            while offset < sequence.count {
                var end = min(offset + window, sequence.count)
                if let maxTokens { end = min(end, offset + (maxTokens - tokens)) }
                if end <= offset { break outer }
                result.append((Array(sequence[offset..<end]), items))
                tokens += end - offset
                offset = end
                if let maxTokens, tokens >= maxTokens { break outer }
            }
        }
        return (result, items)
    }

    /// The statistics of `run`, computed layer by layer: the windows advance through the model
    /// together, one layer at a time, so every weight byte is read once per group of windows
    /// instead of once per window (a model larger than memory is read once per profile when all
    /// windows fit in `memoryBytes`), and the feed-forward layers run on thousands of tokens at
    /// once. Layers after the last MoE layer are not run.
    /// - Parameters:
    ///   - memoryBytes: the budget for what the pass holds at once: the embedding matrix, the
    ///     largest layer's weights and the activations (`[tokens, hidden]` floats, three buffers);
    ///     windows are grouped so the activations fit the rest, each group read through the
    ///     model once.
    ///   - releaseWeights: drop each layer's mapped weight pages once a group has passed it, so
    ///     resident memory stays about one layer (costs a re-read per group).
    /// - Throws: `PreMoeError.invalidBudget` when one layer and one window do not fit
    ///   `memoryBytes` (the message says how much they need), `ModelError` from the model.
    public static func runLayerwise(model: DecoderModel, sequences: [[Int]], options: StatsOptions, maxTokens: Int? = nil,
                                    window: Int = 512, memoryBytes: Int = 1 << 30, releaseWeights: Bool = false,
                                    progress: ((ProfileProgress) -> Void)? = nil) throws -> ProfileResult {
        let spec = model.spec
        let stats = RouterStats(spec: spec, options: options)
        guard let lastMoE = spec.moeLayers.last else { throw PreMoeError.unsupported("the model has no MoE layer to profile") }
        let previous = model.observer
        model.observer = stats
        defer { model.observer = previous }
        let start = Date()
        let (chunks, items) = windows(sequences, window: window, maxPositions: spec.maxPositions, maxTokens: maxTokens)
        let bytesPerToken = 3 * LayerwiseBatch.bytes(tokens: 1, hiddenSize: spec.hiddenSize)
        let resident = model.embedding.byteCount + (0...lastMoE).map { model.weightBytes(layer: $0) }.max()!
        let tokenBudget = max(0, memoryBytes - resident) / bytesPerToken
        if let longest = chunks.map(\.tokens.count).max(), longest > tokenBudget {
            throw PreMoeError.invalidBudget(
                "--memory \(memoryBytes) bytes: the embedding and the largest layer take \(resident) bytes and a window "
                    + "of \(longest) tokens \(longest * bytesPerToken) more, \(resident + longest * bytesPerToken) in all "
                    + "(lower --window or raise --memory)")
        }
        var groups: [[[Int]]] = [[]]
        var groupTokens = 0
        for (chunk, _) in chunks {
            if groupTokens + chunk.count > tokenBudget {
                groups.append([])
                groupTokens = 0
            }
            groups[groups.count - 1].append(chunk)
            groupTokens += chunk.count
        }
        let total = chunks.reduce(0) { $0 + $1.tokens.count }
        var done = 0.0
        for group in groups where !group.isEmpty {
            let batch = try model.beginLayerwise(group)
            for _ in 0...lastMoE {
                try model.advance(batch, chunkTokens: 4096, releaseWeights: releaseWeights)
                done += Double(batch.tokenCount) / Double(lastMoE + 1)
                progress?(ProfileProgress(tokens: Int(done.rounded()), targetTokens: total, sequences: items,
                                          seconds: Date().timeIntervalSince(start)))
            }
        }
        return ProfileResult(stats: stats, tokens: total, sequences: items, seconds: Date().timeIntervalSince(start))
    }

    /// Turns statistics into a pattern: every MoE layer's scores and the signature (the first MoE
    /// layer's vector of `scorer.signatureScorer`).
    /// - Parameters:
    ///   - signatureStats: statistics for the signature alone, when it should come from other
    ///     text than the scores (prompts only, as queries will be); nil uses `stats`.
    /// - Throws: `PreMoeError.unsupported` for a model without MoE layers.
    public static func makePattern(stats: RouterStats, scorer: ExpertScorer, spec: DecoderSpec, fingerprint: String,
                                   task: String, source: String? = nil, signatureStats: RouterStats? = nil,
                                   createdAt: Date = Date()) throws -> TaskPattern {
        guard let first = spec.moeLayers.first, let firstStats = stats.layers[first],
              let signatureLayerStats = (signatureStats ?? stats).layers[first]
        else {
            throw PreMoeError.unsupported("the model has no MoE layer to profile")
        }
        var scores: [Int: [Double]] = [:]
        for (l, layerStats) in stats.layers { scores[l] = scorer.scores(layerStats) }
        let signatureScorer = scorer.signatureScorer
        let signature = TaskPattern.Signature(layer: first, scorer: signatureScorer.descriptor,
                                              values: signatureScorer.scores(signatureLayerStats))
        var pattern = TaskPattern(modelFingerprint: fingerprint, modelType: spec.modelType, task: task,
                                  scorer: scorer.descriptor, tokenCount: firstStats.tokenCount,
                                  expertCount: firstStats.expertCount, scores: scores, signature: signature,
                                  createdAt: createdAt, source: source)
        var mass: [String: [Double]] = [:]
        for (l, layerStats) in stats.layers {
            let total = layerStats.probabilityMass.reduce(0, +)
            mass[String(l)] = layerStats.probabilityMass.map { total > 0 ? $0 / total : 0 }
        }
        pattern.routingMass = mass
        return pattern
    }
}
