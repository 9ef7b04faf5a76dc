import Foundation
import Models
import Tokenization

/// Settings of one generation.
public struct GenerationParameters: Sendable {
    public var maxTokens: Int
    public var temperature: Float
    public var topK: Int
    public var topP: Float
    /// transformers' repetition penalty over the prompt and the output (1 = off).
    public var repetitionPenalty: Float
    public var seed: UInt64
    /// Generation stops after any of these strings appears in the output (it is not included).
    public var stop: [String]
    /// Stop at end-of-sequence tokens.
    public var stopAtEOS: Bool
    /// The end-of-sequence ids; nil uses the tokenizer's.
    public var eosTokenIDs: [Int]?

    public init(maxTokens: Int = 64, temperature: Float = 0, topK: Int = 0, topP: Float = 1, repetitionPenalty: Float = 1,
                seed: UInt64 = 0,
                stop: [String] = [], stopAtEOS: Bool = true, eosTokenIDs: [Int]? = nil) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
        self.stop = stop
        self.stopAtEOS = stopAtEOS
        self.eosTokenIDs = eosTokenIDs
    }
}

/// Why generation ended.
public enum FinishReason: String, Sendable, Codable {
    case length, stop, eos
}

/// What a generation produced, with timings.
public struct GenerationResult: Sendable {
    public var tokens: [Int]
    public var text: String
    public var finishReason: FinishReason
    public var promptTokens: Int
    /// Seconds spent on the prompt (prefill), including the first token's logits.
    public var prefillSeconds: Double
    /// Seconds spent producing tokens after the first.
    public var decodeSeconds: Double
}

/// Errors of the generation loop.
public enum GenerationError: Error, CustomStringConvertible {
    /// Every logit of a row is NaN: the model produced garbage (corrupt weights or config).
    case noFiniteLogit(position: Int)

    public var description: String {
        switch self {
        case .noFiniteLogit(let position):
            return "position \(position): every logit is NaN, so no token can be chosen; the weights or the "
                + "config (RoPE, norms) are likely corrupt"
        }
    }
}

/// Runs the prefill/decode loop of a model with a tokenizer.
public final class Generator {
    public let model: DecoderModel
    public let tokenizer: Tokenizer?

    public init(model: DecoderModel, tokenizer: Tokenizer?) {
        self.model = model
        self.tokenizer = tokenizer
    }

    /// Tokens a generation can produce after `promptCount` prompt tokens: `maxTokens`, capped so
    /// that the context stays within `maxPositions` (the last token is sampled, never run, so a
    /// full context yields `maxPositions - promptCount + 1`).
    public static func maxNewTokens(promptCount: Int, maxTokens: Int, maxPositions: Int) -> Int {
        max(0, min(maxTokens, maxPositions - promptCount + 1))
    }

    /// Generates from prompt token ids, streaming text pieces to `onText` as they become valid UTF-8.
    /// - Parameters:
    ///   - promptIDs: the prompt, already tokenised (non-empty).
    ///   - onText: called with each new piece of text; return false to stop early.
    ///   At most `maxNewTokens(promptCount:maxTokens:)` tokens are generated: the context never
    ///   outgrows the model's `maxPositions`, and the KV cache is sized to that, not to `maxTokens`.
    /// - Throws: `ModelError` for empty prompts, ids out of range or a prompt longer than the
    ///   model's context (before any work); `GenerationError` for logits without a number.
    public func generate(promptIDs: [Int], parameters: GenerationParameters,
                         onText: (String) -> Bool = { _ in true }) throws -> GenerationResult {
        let session = try GenerationSession(model: model, tokenizer: tokenizer, promptIDs: promptIDs, parameters: parameters)
        while session.finishReason == nil {
            let step = try session.step()
            if !step.text.isEmpty && !onText(step.text) {
                let rest = session.finish(.stop)
                if !rest.isEmpty { _ = onText(rest) }
            }
        }
        let decodeStart = session.prefillEnd ?? Date()
        return GenerationResult(
            tokens: session.output, text: session.text, finishReason: session.finishReason ?? .length,
            promptTokens: promptIDs.count, prefillSeconds: session.prefillSeconds,
            decodeSeconds: Date().timeIntervalSince(decodeStart))
    }
}
