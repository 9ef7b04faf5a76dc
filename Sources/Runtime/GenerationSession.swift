import Foundation
import Models
import Tokenization

/// One generation advanced a token at a time, so a scheduler can interleave several sequences
/// on one model (`premoe serve`). `Generator.generate` is a loop over `step()`: a server's
/// stream and a single-request generation make the same tokens by construction.
///
/// The session owns its KV cache and sampler; the model is shared and runs one forward pass at a
/// time. `step()` runs the session's own pass; a scheduler instead runs the `pendingTokens` of
/// many sessions in one `DecoderModel.forward(batch:)` (each with its own expert view) and hands
/// each its logits with `step(logits:)`: the same tokens either way.
public final class GenerationSession {
    /// What one `step()` produced.
    public struct Step {
        /// The token sampled, nil when the step ended the generation without one (EOS, a stop
        /// string found in the pending text, or the token budget already spent).
        public var token: Int?
        /// Text that became final with this step (may be empty: a held-back possible stop string
        /// or an incomplete UTF-8 sequence).
        public var text: String
        /// The logits `[vocab]` the token was sampled from (after the repetition penalty), for
        /// log-probabilities; empty when no forward pass ran.
        public var logits: [Float]
        /// Set when the generation ended with this step.
        public var finishReason: FinishReason?
    }

    public let model: DecoderModel
    public let promptIDs: [Int]
    public let parameters: GenerationParameters
    /// Tokens this generation may produce (`Generator.maxNewTokens`).
    public let maxNewTokens: Int
    /// The sequence's KV cache, sized for prompt + `maxNewTokens` (it never grows).
    public let cache: KVCache
    /// Tokens sampled so far (EOS excluded).
    public private(set) var output: [Int] = []
    /// Text so far (after a stop string: cut before it).
    public private(set) var text = ""
    public private(set) var finishReason: FinishReason?
    /// Seconds of the prompt's forward pass; 0 until the first step.
    public private(set) var prefillSeconds: Double = 0
    /// When the prompt's forward pass ended (decode time is measured from here).
    public private(set) var prefillEnd: Date?

    private var sampler: Sampler
    private let eos: Set<Int>
    private var detokenizer: StreamingDetokenizer?
    private var emitted = 0  // characters of `text` already returned
    private let maxStop: Int
    private var prefilled = false

    /// Prepares a generation; no model work happens until the first `step()`.
    /// - Parameters:
    ///   - model: the model to run (shared; one forward pass at a time).
    ///   - tokenizer: for text and the default end-of-sequence ids; nil gives tokens only.
    ///   - promptIDs: the prompt, already tokenised (non-empty).
    ///   - parameters: sampling and stopping settings.
    /// - Throws: `ModelError.emptyInput` for an empty prompt, `.contextTooLong` for a prompt longer
    ///   than the model's `maxPositions`.
    public init(model: DecoderModel, tokenizer: Tokenizer?, promptIDs: [Int], parameters: GenerationParameters) throws {
        guard !promptIDs.isEmpty else { throw ModelError.emptyInput("the prompt has no tokens") }
        let limit = model.spec.maxPositions
        guard promptIDs.count <= limit else {
            throw ModelError.contextTooLong(positions: promptIDs.count, limit: limit,
                                            reason: "the prompt alone is longer than the model's max_position_embeddings")
        }
        self.model = model
        self.promptIDs = promptIDs
        self.parameters = parameters
        maxNewTokens = Generator.maxNewTokens(promptCount: promptIDs.count, maxTokens: parameters.maxTokens,
                                              maxPositions: limit)
        sampler = Sampler(temperature: parameters.temperature, topK: parameters.topK, topP: parameters.topP,
                          seed: parameters.seed)
        eos = Set(parameters.stopAtEOS ? parameters.eosTokenIDs ?? tokenizer?.eosTokenIDs ?? [] : [])
        cache = model.makeCache(capacity: promptIDs.count + maxNewTokens)
        detokenizer = tokenizer.map { StreamingDetokenizer(tokenizer: $0, skipSpecialTokens: true) }
        maxStop = parameters.stop.map(\.count).max() ?? 0
    }

    /// Bytes a session's KV cache holds for this prompt length and budget (what `init` allocates).
    public static func cacheBytes(spec: DecoderSpec, promptCount: Int, maxTokens: Int) -> Int {
        let new = Generator.maxNewTokens(promptCount: promptCount, maxTokens: maxTokens, maxPositions: spec.maxPositions)
        let capacity = min(max(1, promptCount + new), spec.maxPositions)
        return capacity * (spec.cacheKeyWidth + spec.cacheValueWidth) * 4 * spec.layerCount
    }

    /// Runs one forward pass (the prompt on the first call, the last token after) and samples
    /// one token; the last step also flushes the held-back text.
    /// - Returns: what the step produced; after the end, an empty step with the finish reason.
    /// - Throws: `ModelError` from the forward pass, `GenerationError.noFiniteLogit`.
    public func step() throws -> Step {
        guard let tokens = pendingTokens else { return try step(logits: []) }
        let start = Date()
        let logits = try model.forward(tokens, cache: cache, logits: .last)
        return try step(logits: logits, forwardSeconds: Date().timeIntervalSince(start))
    }

    /// What the next step's forward pass runs on `cache`: the prompt first, then the last token
    /// sampled; nil when the next step needs no forward pass (the generation is over or its
    /// token budget is spent). A scheduler batches these across sessions
    /// (`DecoderModel.forward(batch:)`) and hands each session its logits with `step(logits:)`.
    public var pendingTokens: [Int]? {
        if finishReason != nil { return nil }
        if !prefilled { return promptIDs }
        if output.count < maxNewTokens, let last = output.last { return [last] }
        return nil
    }

    /// Finishes a step whose forward pass ran elsewhere: samples from `logits`, the last row's
    /// logits `[vocab]` of `pendingTokens` run on `cache` (empty when `pendingTokens` was nil).
    /// - Parameter forwardSeconds: the pass's wall time (the prompt's is `prefillSeconds`).
    /// - Returns: what the step produced; after the end, an empty step with the finish reason.
    /// - Throws: `GenerationError.noFiniteLogit`.
    public func step(logits: [Float], forwardSeconds: Double = 0) throws -> Step {
        if let finishReason { return Step(token: nil, text: "", logits: [], finishReason: finishReason) }
        var logits = logits
        if !prefilled {
            prefilled = true
            prefillEnd = Date()
            prefillSeconds = forwardSeconds
        }
        guard output.count < maxNewTokens, !logits.isEmpty else {
            return Step(token: nil, text: finish(.length), logits: logits, finishReason: .length)
        }
        if parameters.repetitionPenalty != 1 {  // no history array to build on every step otherwise
            Sampler.penalizeRepetitions(&logits, history: promptIDs + output, penalty: parameters.repetitionPenalty)
        }
        guard let next = sampler.sample(logits) else {
            throw GenerationError.noFiniteLogit(position: promptIDs.count + output.count)
        }
        if eos.contains(next) {
            return Step(token: nil, text: finish(.eos), logits: logits, finishReason: .eos)
        }
        output.append(next)
        if var d = detokenizer {
            text += d.append(next)
            detokenizer = d
        }
        if let range = parameters.stop.compactMap({ text.range(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            text = String(text[..<range.lowerBound])
            return Step(token: next, text: finish(.stop), logits: logits, finishReason: .stop)
        }
        // Hold back a tail that could still become a stop string.
        var piece = ""
        let safe = max(emitted, text.count - max(0, maxStop - 1))
        if safe > emitted {
            piece = String(text.dropFirst(emitted).prefix(safe - emitted))
            emitted = safe
        }
        if output.count == maxNewTokens {
            return Step(token: next, text: piece + finish(.length), logits: logits, finishReason: .length)
        }
        return Step(token: next, text: piece, logits: logits, finishReason: nil)
    }

    /// Ends the generation (a caller that stops early passes `.stop`).
    /// - Returns: the text not yet returned: after `.length` or `.eos` the detokenizer's tail
    ///   too; after `.stop` only what was held back (as `Generator` always did).
    @discardableResult
    public func finish(_ reason: FinishReason) -> String {
        guard finishReason == nil else { return "" }
        finishReason = reason
        if reason != .stop, var d = detokenizer { text += d.finish() }
        let rest = text.count > emitted ? String(text.dropFirst(emitted)) : ""
        emitted = text.count
        return rest
    }
}
