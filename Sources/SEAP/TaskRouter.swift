import Foundation
import Models
import PreMoe
import Tokenization

/// SEAP's task router (METHODS §6.6): the mean input embedding of a prompt's tokens, classified
/// by PreMoe's `TaskClassifier` (multinomial logistic regression fitted in Swift), trained on the
/// tasks' calibration queries in every training rendering (`TaskQueries.trainingRenderings`),
/// balanced to the smallest task.
public struct SEAPRouter: Codable, Sendable {
    /// Feature definition recorded in the classifier.
    public static let features = "embed-mean/v1"
    public var classifier: TaskClassifier

    public init(classifier: TaskClassifier) { self.classifier = classifier }

    /// The task names in classifier order.
    public var tasks: [String] { classifier.tasks }

    /// Fits the router.
    /// - Parameters:
    ///   - queries: task → calibration queries (no answers).
    ///   - chatTemplate: for the chat rendering.
    /// - Throws: `PreMoeError` from the fit, `ModelError` for ids out of range.
    public static func fit(model: DecoderModel, tokenizer: Tokenizer, queries: [String: [TaskQuery]],
                           settings: TaskClassifier.Settings = .init()) throws -> SEAPRouter {
        let tasks = queries.keys.sorted()
        let smallest = tasks.map { queries[$0]!.count }.min() ?? 0
        var samples: [RetrievalSample] = []
        for (t, task) in tasks.enumerated() {
            for (item, query) in queries[task]!.prefix(smallest).enumerated() {
                for text in TaskQueries.trainingRenderings(query, item: item, chatTemplate: tokenizer.chatTemplate) {
                    let ids = Array(tokenizer.encode(text).prefix(model.spec.maxPositions))
                    guard !ids.isEmpty else { continue }
                    samples.append(RetrievalSample(task: t, item: item, features: try QueryFeatures.meanInputEmbedding(model: model, tokens: ids)))
                }
            }
        }
        var settings = settings
        settings.fitsTypicality = false  // the router always names a task
        let classifier = try TaskClassifier.fit(tasks: tasks, samples: samples, features: features, settings: settings)
        return SEAPRouter(classifier: classifier)
    }

    /// The task a prompt belongs to, and its probability.
    /// - Throws: `ModelError` for ids out of range, `PreMoeError` for a feature-length mismatch.
    public func route(_ prompt: String, model: DecoderModel, tokenizer: Tokenizer) throws -> (task: String, probability: Double) {
        let ids = Array(tokenizer.encode(prompt).prefix(model.spec.maxPositions))
        guard !ids.isEmpty else { throw SEAPError.invalidSetting("an empty prompt cannot be routed") }
        let decision = try classifier.decide(try QueryFeatures.meanInputEmbedding(model: model, tokens: ids))
        return (classifier.tasks[decision.best], decision.probabilities[decision.best])
    }

    /// Accuracy on held-out queries rendered in `style` (`.raw`: as people type them).
    public func accuracy(_ queries: [String: [TaskQuery]], style: QueryStyle, model: DecoderModel, tokenizer: Tokenizer) throws
        -> (accuracy: Double, count: Int)
    {
        var correct = 0, total = 0
        for (task, list) in queries {
            for query in list {
                let text = TaskQueries.render(query, style: style, chatTemplate: tokenizer.chatTemplate)
                if try route(text, model: model, tokenizer: tokenizer).task == task { correct += 1 }
                total += 1
            }
        }
        return (total > 0 ? Double(correct) / Double(total) : 0, total)
    }
}
