import Foundation
import Models
import Runtime
import Tokenization

/// Log-likelihood scoring of text with a model: the shared core of perplexity and
/// multiple-choice accuracy.
public struct LogLikelihoodScorer {
    public let model: DecoderModel
    public let tokenizer: Tokenizer
    /// Longest window a single forward pass sees; longer texts are cut into windows.
    public let window: Int

    public init(model: DecoderModel, tokenizer: Tokenizer, window: Int = 512) {
        self.model = model
        self.tokenizer = tokenizer
        self.window = max(2, min(window, model.spec.maxPositions))
    }

    /// log p(token) of each `targets` position, from a logits row `[vocab]`, via a stable log-softmax.
    static func logProbability(_ logits: ArraySlice<Float>, of token: Int) -> Double {
        let maxLogit = Double(logits.max() ?? 0)
        var sum = 0.0
        for v in logits { sum += exp(Double(v) - maxLogit) }
        return Double(logits[logits.startIndex + token]) - maxLogit - log(sum)
    }

    /// Sum of log p(tokens[i] | tokens[..<i]) for `i` in `scored` (positions ≥ 1), running the
    /// sequence in windows of `window` tokens that overlap by one token, so every position after
    /// the first is scored exactly once, with up to `window - 1` tokens of context.
    func sumLogProbability(_ tokens: [Int], scoring scored: Range<Int>) throws -> (logProbability: Double, count: Int) {
        var total = 0.0
        var count = 0
        var start = 0
        let vocab = model.spec.vocabularySize
        while start < tokens.count - 1 {
            let end = min(tokens.count, start + window)
            let chunk = Array(tokens[start..<end])
            let logits = try model.forward(chunk, cache: model.makeCache(capacity: chunk.count), logits: .all)
            for i in 1..<chunk.count where scored.contains(start + i) {
                total += Self.logProbability(logits[((i - 1) * vocab)..<(i * vocab)], of: chunk[i])
                count += 1
            }
            if end == tokens.count { break }
            start = end - 1  // the boundary token is the next window's first context token
        }
        return (total, count)
    }

    /// Perplexity over documents: exp(mean negative log-likelihood of every predicted token).
    /// - Returns: perplexity and the number of tokens scored.
    public func perplexity(_ documents: [String]) throws -> (perplexity: Double, tokens: Int) {
        var nll = 0.0
        var count = 0
        for doc in documents {
            var ids = tokenizer.encode(doc)
            if let bos = tokenizer.bosTokenID, ids.first != bos { ids.insert(bos, at: 0) }
            guard ids.count >= 2 else { continue }
            let (lp, n) = try sumLogProbability(ids, scoring: 1..<ids.count)
            nll -= lp
            count += n
        }
        guard count > 0 else { throw EvaluationError.noItems("no document has two or more tokens") }
        return (exp(nll / Double(count)), count)
    }

    /// log p(continuation | context), tokenising as harnesses do: the whole string is encoded,
    /// and the continuation is what follows the context's own encoding.
    public func score(context: String, continuation: String) throws -> Double {
        let contextIDs = tokenizer.encode(context)
        let whole = tokenizer.encode(context + continuation)
        var split = contextIDs.count
        // If encoding the whole merged across the boundary, score from the first differing token.
        while split > 0 && (split > whole.count || whole[split - 1] != contextIDs[split - 1]) { split -= 1 }
        split = max(split, 1)
        guard whole.count > split else { return 0 }
        return try sumLogProbability(whole, scoring: split..<whole.count).logProbability
    }
}

/// Outcome of a multiple-choice evaluation.
public struct MultipleChoiceResult: Sendable, Codable {
    public var items: Int
    /// Share where the highest log-likelihood is the gold choice.
    public var accuracy: Double
    /// Same with each score divided by the continuation's UTF-8 byte length (harnesses' acc_norm).
    public var normalizedAccuracy: Double
}

extension LogLikelihoodScorer {
    /// Scores labelled items; unlabelled ones are skipped.
    public func evaluate(_ items: [MultipleChoiceItem]) throws -> MultipleChoiceResult {
        var correct = 0
        var correctNorm = 0
        var n = 0
        for item in items {
            guard let gold = item.gold else { continue }
            var scores: [Double] = []
            var normalized: [Double] = []
            for (context, continuation) in zip(item.contexts, item.continuations) {
                let s = try score(context: context, continuation: continuation)
                scores.append(s)
                normalized.append(s / Double(max(1, continuation.utf8.count)))
            }
            if scores.indices.max(by: { scores[$0] < scores[$1] }) == gold { correct += 1 }
            if normalized.indices.max(by: { normalized[$0] < normalized[$1] }) == gold { correctNorm += 1 }
            n += 1
        }
        guard n > 0 else { throw EvaluationError.noItems("no labelled items") }
        return MultipleChoiceResult(items: n, accuracy: Double(correct) / Double(n),
                                    normalizedAccuracy: Double(correctNorm) / Double(n))
    }

    /// GSM8K-style exact match: greedy generation, final number compared with the gold answer.
    public func exactMatch(_ items: [GenerativeItem], maxTokens: Int = 128) throws -> Double {
        guard !items.isEmpty else { throw EvaluationError.noItems("no generative items") }
        let generator = Generator(model: model, tokenizer: tokenizer)
        var correct = 0
        for item in items {
            let result = try generator.generate(
                promptIDs: tokenizer.encode(item.prompt),
                parameters: GenerationParameters(maxTokens: maxTokens, stop: ["\nQuestion:", "\n\n"]))
            if TaskItems.finalNumber(in: result.text) == item.answer { correct += 1 }
        }
        return Double(correct) / Double(items.count)
    }
}
