import Foundation
import Models
import PreMoe
import Tokenization

/// Retrieval on held-out queries of the stored tasks, in one rendering, by one method.
public struct RetrievalReport: Codable, Sendable {
    public var method: String
    /// A `QueryStyle` name.
    public var rendering: String
    public var tasks: [String]
    /// `confusion[i][j]`: queries of task i assigned to task j; the extra last column counts
    /// queries that fell back.
    public var confusion: [[Int]]
    /// Share of queries assigned to their own task (a fallback counts as wrong).
    public var accuracy: Double
    /// Share assigned to a task of their own family (`TaskFamilies`); nil when no task has one.
    public var familyAccuracy: Double?
    public var perTask: [String: Double]
    /// Share of in-store queries that fell back.
    public var falseFallbackRate: Double

    enum CodingKeys: String, CodingKey {
        case method, rendering, tasks, confusion, accuracy
        case familyAccuracy = "family_accuracy"
        case perTask = "per_task"
        case falseFallbackRate = "false_fallback_rate"
    }
}

/// Queries of a task that is not in the store: they should fall back.
public struct OutOfStoreReport: Codable, Sendable {
    public var method: String
    public var rendering: String
    public var task: String
    public var queries: Int
    public var fallbackRate: Double
    /// Where the others went.
    public var assigned: [String: Int]

    enum CodingKeys: String, CodingKey {
        case method, rendering, task, queries, assigned
        case fallbackRate = "fallback_rate"
    }
}

/// Everything the retrieval part of a sweep measured.
public struct RetrievalEvaluation: Codable, Sendable {
    public var reports: [RetrievalReport]
    public var outOfStore: [OutOfStoreReport]
    /// Bytes of each task's pattern file, and of its retrieval samples alone.
    public var patternBytes: [String: Int]
    public var sampleBytes: [String: Int]
    /// Task → family used for family accuracy.
    public var families: [String: String]
    /// Mean seconds of one decision after the backbone pass, with the stored tasks, and with a
    /// synthetic store of `syntheticTasks` tasks of the same sample count.
    public var decisionSeconds: Double
    public var syntheticTasks: Int
    public var syntheticDecisionSeconds: Double
    /// The fallback threshold (typicality: the share of in-store queries allowed to fall back).
    public var minTypicality: Double?

    enum CodingKeys: String, CodingKey {
        case reports, families
        case outOfStore = "out_of_store"
        case patternBytes = "pattern_bytes"
        case sampleBytes = "sample_bytes"
        case decisionSeconds = "decision_seconds"
        case syntheticTasks = "synthetic_tasks"
        case syntheticDecisionSeconds = "synthetic_decision_seconds"
        case minTypicality = "min_typicality"
    }
}

/// Families of the public benchmarks the task data ships, for family accuracy: ARC and
/// OpenBookQA ask science questions, PIQA and WinoGrande commonsense, GSM8K math, BoolQ reading.
public enum TaskFamilies {
    public static let known: [String: String] = [
        "ai2_arc": "science", "arc_easy": "science", "arc_challenge": "science", "obqa": "science",
        "openbookqa": "science", "sciq": "science", "piqa": "commonsense", "winogrande": "commonsense",
        "hellaswag": "commonsense", "gsm8k": "math", "boolq": "reading", "wikitext2": "prose",
    ]
}

/// Measures retrieval as queries arrive: each stored task's held-out queries in every
/// `QueryStyle` (evaluation instructions, never the training ones), and queries of tasks not in
/// the store, for both methods.
public enum RetrievalBenchmark {
    /// - Parameters:
    ///   - patterns: the stored tasks (with retrieval samples for the classifier).
    ///   - queries: held-out queries per stored task.
    ///   - outOfStore: queries per task that is not stored.
    /// - Throws: model and retrieval errors.
    public static func run(model: DecoderModel, tokenizer: Tokenizer, patterns: [TaskPattern],
                           queries: [String: [TaskQuery]], outOfStore: [String: [TaskQuery]],
                           progress: (String) -> Void = { _ in }) throws -> RetrievalEvaluation {
        let topK = model.spec.moeLayers.first.flatMap { model.spec.moe($0)?.topK } ?? 1
        let classifier = try Retriever.fitClassifier(patterns)
        var retrievers = [try Retriever(patterns: patterns, method: .centroid, modelTopK: topK)]
        if let classifier {
            retrievers.insert(try Retriever(patterns: patterns, method: .classifier, classifier: classifier, modelTopK: topK), at: 0)
        }
        let tasks = patterns.map(\.task)
        let families = TaskFamilies.known.filter { tasks.contains($0.key) }
        let longest = max(1, model.spec.maxPositions)
        var reports: [RetrievalReport] = []
        var decisionTime = 0.0
        var decisions = 0
        func probe(_ text: String) throws -> Retriever.Probe? {
            let ids = Array(tokenizer.encode(TaskQueries.retrievalText(text, chatTemplate: tokenizer.chatTemplate)).prefix(longest))
            return ids.isEmpty ? nil : try retrievers[0].probe(model: model, tokens: ids)
        }
        for style in QueryStyle.allCases {
            progress("[retrieval] \(style.rawValue)")
            var confusion = [[[Int]]](repeating: [[Int]](repeating: [Int](repeating: 0, count: tasks.count + 1),
                                                         count: tasks.count), count: retrievers.count)
            for (i, task) in tasks.enumerated() {
                for (n, query) in (queries[task] ?? []).enumerated() {
                    let instruction = TaskQueries.evaluationInstructions[n % TaskQueries.evaluationInstructions.count]
                    let text = TaskQueries.render(query, style: style, chatTemplate: tokenizer.chatTemplate,
                                                  instruction: instruction)
                    guard let probe = try probe(text) else { continue }
                    for (m, retriever) in retrievers.enumerated() {
                        let result = try retriever.decide(probe)
                        decisionTime += result.matchSeconds
                        decisions += 1
                        confusion[m][i][result.task.flatMap { tasks.firstIndex(of: $0) } ?? tasks.count] += 1
                    }
                }
            }
            for (m, retriever) in retrievers.enumerated() {
                reports.append(report(method: retriever.method.rawValue, rendering: style.rawValue, tasks: tasks,
                                      confusion: confusion[m], families: families))
            }
        }
        var outReports: [OutOfStoreReport] = []
        for task in outOfStore.keys.sorted() {
            progress("[retrieval] out of store: \(task)")
            for style in [QueryStyle.raw, .chat] {
                var fallbacks = [Int](repeating: 0, count: retrievers.count)
                var assigned = [[String: Int]](repeating: [:], count: retrievers.count)
                var count = 0
                for query in outOfStore[task] ?? [] {
                    let text = TaskQueries.render(query, style: style, chatTemplate: tokenizer.chatTemplate)
                    guard let probe = try probe(text) else { continue }
                    count += 1
                    for (m, retriever) in retrievers.enumerated() {
                        if let chosen = try retriever.decide(probe).task {
                            assigned[m][chosen, default: 0] += 1
                        } else {
                            fallbacks[m] += 1
                        }
                    }
                }
                for (m, retriever) in retrievers.enumerated() {
                    outReports.append(OutOfStoreReport(
                        method: retriever.method.rawValue, rendering: style.rawValue, task: task, queries: count,
                        fallbackRate: count > 0 ? Double(fallbacks[m]) / Double(count) : 0, assigned: assigned[m]))
                }
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var patternBytes: [String: Int] = [:]
        var sampleBytes: [String: Int] = [:]
        for pattern in patterns {
            patternBytes[pattern.task] = (try? encoder.encode(pattern).count) ?? 0
            sampleBytes[pattern.task] = pattern.retrieval?.values.utf8.count ?? 0
        }
        let synthetic = 100
        return RetrievalEvaluation(
            reports: reports, outOfStore: outReports, patternBytes: patternBytes, sampleBytes: sampleBytes,
            families: families, decisionSeconds: decisions > 0 ? decisionTime / Double(decisions) : 0,
            syntheticTasks: synthetic,
            syntheticDecisionSeconds: try syntheticDecisionSeconds(tasks: synthetic, patterns: patterns),
            minTypicality: classifier?.minTypicality)
    }

    static func report(method: String, rendering: String, tasks: [String], confusion: [[Int]],
                       families: [String: String]) -> RetrievalReport {
        var correct = 0, familyCorrect = 0, total = 0, fallbacks = 0
        var perTask: [String: Double] = [:]
        for (i, task) in tasks.enumerated() {
            let n = confusion[i].reduce(0, +)
            total += n
            correct += confusion[i][i]
            fallbacks += confusion[i][tasks.count]
            perTask[task] = n > 0 ? Double(confusion[i][i]) / Double(n) : 0
            for (j, other) in tasks.enumerated() where families[task] != nil && families[task] == families[other] {
                familyCorrect += confusion[i][j]
            }
        }
        let share = { (x: Int) in total > 0 ? Double(x) / Double(total) : 0 }
        return RetrievalReport(method: method, rendering: rendering, tasks: tasks, confusion: confusion,
                               accuracy: share(correct), familyAccuracy: families.isEmpty ? nil : share(familyCorrect),
                               perTask: perTask, falseFallbackRate: share(fallbacks))
    }

    /// Mean decision time of a classifier over `tasks` tasks with the stored patterns' feature
    /// length, fallback included (random values: the time does not depend on them).
    static func syntheticDecisionSeconds(tasks: Int, patterns: [TaskPattern]) throws -> Double {
        guard let d = patterns.compactMap(\.retrieval).first?.dimension else { return 0 }
        var generator = SystemRandomNumberGenerator()
        func vector(_ n: Int) -> [Float] { (0..<n).map { _ in Float.random(in: -1...1, using: &generator) } }
        let k = min(d, TypicalityModel.maxDimension)
        var factor = vector(k * (k + 1) / 2).map(Double.init)
        for i in 0..<k { factor[i * (i + 1) / 2 + i] = 1 }
        let typicality = TypicalityModel(
            dimension: d, projected: k, ridge: TypicalityModel.defaultRidge, factor: TypicalityModel.encode(factor),
            whitenedMeans: (0..<tasks).map { _ in vector(k) }, inStore: vector(1000).sorted())
        let classifier = TaskClassifier(
            features: QueryFeatures.name, tasks: (0..<tasks).map { "t\($0)" },
            mean: [Float](repeating: 0, count: d), scale: [Float](repeating: 1, count: d),
            weights: (0..<tasks).map { _ in vector(d) }, bias: [Float](repeating: 0, count: tasks), minTypicality: 0.05,
            typicality: typicality, key: "")
        let scorer = try typicality.scorer()
        let queries = (0..<20).map { _ in vector(d) }
        let start = Date()
        for q in queries { _ = try classifier.decide(q, typicality: scorer) }
        return Date().timeIntervalSince(start) / Double(queries.count)
    }
}
