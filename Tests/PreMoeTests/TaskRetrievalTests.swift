import Formats
import Foundation
import Models
@testable import PreMoe
import Testing
import TestSupport
import Tokenization

@Suite struct TaskQueriesTests {
    func write(_ rows: [[String: Any]]) throws -> URL {
        let dir = try Fixtures.taskDataDirectory(["t": ["test": rows]])
        return dir.appendingPathComponent("t/test.jsonl")
    }

    @Test func queriesCarryQuestionOptionsAndPassageButNoAnswer() throws {
        let url = try write([
            ["question": "Which is a gas?", "choices": ["text": ["ice", "steam"], "label": ["A", "B"]], "answerKey": "B"],
            ["question_stem": "Fog forms near", "choices": ["text": ["a marsh", "a desert"], "label": ["A", "B"]], "answerKey": "A"],
            ["goal": "open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0],
            ["sentence": "Ann gave Bo a gift because _ was kind.", "option1": "Ann", "option2": "Bo", "answer": "1"],
            ["passage": "Water boils at 100 C.", "question": "does water boil at 100 c", "answer": true],
            ["question": "What is 2+2?", "answer": "2+2=4\n#### 4"],
            ["text": ""],
            ["text": " Some prose . "],
            ["question": "How far did Ann walk?", "answer": "Ann walked three miles in the morning and two more in the evening, so five miles.\n#### 5"],
            ["messages": [["role": "user", "content": "Tell me about tides."],
                          ["role": "assistant", "content": "Tides rise and fall twice a day because the moon and the sun pull on the oceans."]]],
        ])
        let queries = try TaskQueries.read(url)
        #expect(queries.count == 9)
        #expect(queries[0] == TaskQuery(question: "Which is a gas?", options: ["ice", "steam"],
                                        calibration: "Question: Which is a gas?\nAnswer:"))
        #expect(queries[1].options == ["a marsh", "a desert"])
        #expect(queries[2].options == ["twist the lid", "eat the lid"])
        #expect(queries[3].question.contains("_") && queries[3].options == ["Ann", "Bo"])
        #expect(queries[4].passage == "Water boils at 100 C." && queries[4].question == "Does water boil at 100 c?")
        #expect(queries[5].question == "What is 2+2?" && queries[5].options.isEmpty)
        #expect(queries[6].question == "Some prose .")
        // Context texts: a passage alone, answers of at least `minimumContextWords` words alone.
        #expect(queries[4].context == ["Water boils at 100 C."])
        #expect(queries[5].context.isEmpty && queries[0].context.isEmpty && queries[6].context.isEmpty)
        #expect(queries[3].context.isEmpty)
        #expect(queries[7].context.count == 1 && queries[7].context[0].hasPrefix("Ann walked three miles"))
        #expect(queries[8].question == "Tell me about tides." && queries[8].context.count == 1)
        for q in queries {
            for style in QueryStyle.allCases {
                let text = TaskQueries.render(q, style: style, chatTemplate: nil)
                #expect(!text.contains("steam\nAnswer") && !text.contains("#### 4") && !text.contains(" yes")
                    && !text.contains("#### 5") && !text.contains("the moon and the sun"))
            }
        }
    }

    @Test func everyStyleRendersTheQueryItsOwnWay() {
        let q = TaskQuery(question: "Which is a gas?", options: ["ice", "steam."], calibration: "Question: Which is a gas?\nAnswer:")
        let chatML = ChatTemplate(source: "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        #expect(TaskQueries.render(q, style: .raw, chatTemplate: chatML) == "Which is a gas?\nA. ice\nB. steam.")
        #expect(TaskQueries.render(q, style: .chat, chatTemplate: chatML)
            == "<|im_start|>user\nWhich is a gas?\nA. ice\nB. steam.<|im_end|>\n<|im_start|>assistant\n")
        #expect(TaskQueries.render(q, style: .lowercase, chatTemplate: nil) == "which is a gas?\na. ice\nb. steam.")
        #expect(TaskQueries.render(q, style: .bare, chatTemplate: nil) == "Which is a gas\nA. ice\nB. steam")
        #expect(TaskQueries.render(q, style: .instruction, chatTemplate: nil, instruction: "Answer this:")
            == "Answer this: Which is a gas?\nA. ice\nB. steam.")
        #expect(TaskQueries.render(q, style: .calibration, chatTemplate: nil) == "Question: Which is a gas?\nAnswer:")
        #expect(TaskQueries.render(q, style: .raw, chatTemplate: nil, layout: 1) == "Which is a gas?\n(A) ice\n(B) steam.")
        // Training and evaluation instructions never overlap.
        #expect(Set(TaskQueries.trainingInstructions).isDisjoint(with: TaskQueries.evaluationInstructions))
        #expect(TaskQueries.trainingRenderings(q, item: 3, chatTemplate: nil).count == QueryStyle.allCases.count)
    }
}

@Suite struct TaskClassifierTests {
    /// Three well separated clusters in 6 dimensions, several "renderings" per item.
    func clusters(items: Int, seed: UInt64) -> [RetrievalSample] {
        var random = TestRandom(seed: seed)
        var samples: [RetrievalSample] = []
        for task in 0..<3 {
            for item in 0..<items {
                for _ in 0..<3 {
                    var x = (0..<6).map { _ in random.float(-0.5, 0.5) }
                    x[task] += 3
                    samples.append(RetrievalSample(task: task, item: item, features: x))
                }
            }
        }
        return samples
    }

    @Test func fitsSeparableTasksAndFallsBackFarFromAllOfThem() throws {
        let train = clusters(items: 20, seed: 1)
        let classifier = try TaskClassifier.fit(tasks: ["a", "b", "c"], samples: train, features: "test")
        let scorer = try #require(try classifier.typicality?.scorer())
        let test = clusters(items: 10, seed: 2)
        var correct = 0, fellBack = 0
        for s in test {
            let d = try classifier.decide(s.features, typicality: scorer)
            if d.best == s.task { correct += 1 }
            if try #require(d.typicality) < classifier.minTypicality { fellBack += 1 }
            #expect(abs(d.probabilities.reduce(0, +) - 1) < 1e-9)
        }
        #expect(correct == test.count)
        #expect(fellBack <= test.count / 10, "held-out in-store samples should rarely fall back")
        // A point in a direction no task uses falls back, and so does one between two tasks.
        let far = try classifier.decide([0, 0, 0, 0, 0, 3], typicality: scorer)
        #expect(try #require(far.typicality) < classifier.minTypicality)
        let between = try classifier.decide([1.5, 1.5, 0, 0, 0, 0], typicality: scorer)
        #expect(try #require(between.typicality) < classifier.minTypicality)
        // Wrong lengths and non-finite samples are refused.
        #expect(throws: PreMoeError.self) { try classifier.decide([1, 2]) }
        var bad = train
        bad[0].features[0] = .nan
        #expect(throws: PreMoeError.self) { try TaskClassifier.fit(tasks: ["a", "b", "c"], samples: bad, features: "test") }
        #expect(throws: PreMoeError.self) { try TaskClassifier.fit(tasks: ["a", "b", "c", "d"], samples: train, features: "test") }
    }

    /// The distance is the smallest squared Mahalanobis distance to a task mean under the pooled
    /// within-task covariance plus the ridge: checked against a direct 2-D computation.
    @Test func typicalityDistanceIsThePooledMahalanobisDistance() throws {
        // Two tasks in 2-D; rows chosen so the pooled covariance is easy to write down.
        let rows: [[Float]] = [[1, 0], [-1, 0], [0, 2], [0, -2], [5, 1], [3, 1], [4, 3], [4, -1]]
        let labels = [0, 0, 0, 0, 1, 1, 1, 1]
        let model = try #require(TypicalityModel.fit(rows: rows.flatMap { $0 }, labels: labels, items: Array(0..<8), tasks: 2,
                                                     dimension: 2, ridge: 0.5))
        // Means (0,0) and (4,1); centred rows are the same for both tasks: (±1,0), (0,±2).
        // Pooled covariance: sum of outer products / (n − tasks) = diag(4, 16) / 6; plus ridge.
        let variance = [4.0 / 6 + 0.5, 16.0 / 6 + 0.5]
        let scorer = try model.scorer()
        for q in [[Float(2), 0.5], [-3, 4], [4, 1]] {
            let expected = [[0.0, 0.0], [4.0, 1.0]].map { m in
                zip(zip(q, m), variance).reduce(0.0) { $0 + (Double($1.0.0) - $1.0.1) * (Double($1.0.0) - $1.0.1) / $1.1 }
            }.min()!
            #expect(abs(scorer.distance(q) - expected) < 1e-5 * max(1, expected), "query \(q)")
        }
        // Typicality is the share of out-of-fold in-store distances at least as large.
        let d = scorer.distance([2, 0.5])
        let share = Double(model.inStore.filter { $0 >= Float(d) }.count) / Double(model.inStore.count)
        #expect(scorer.typicality([2, 0.5]) == share)
        #expect(model.inStore == model.inStore.sorted() && model.inStore.count == 8)
        // A damaged factor is refused with a message that says how to recover.
        var damaged = model
        damaged.factor = "AAAA"
        #expect(throws: PreMoeError.self) { try damaged.scorer() }
    }

    /// A classifier written before the typicality fallback (a SEAP profile's router) has no
    /// `min_typicality` and no typicality model: it loads with the default threshold, and a file
    /// missing a field it cannot do without is still refused.
    @Test func classifierWithoutTypicalityFieldsLoads() throws {
        let train = clusters(items: 6, seed: 2)
        var fitted = try TaskClassifier.fit(tasks: ["a", "b", "c"], samples: train, features: "test")
        fitted.typicality = nil
        var object = try #require(JSONSerialization.jsonObject(with: JSONEncoder().encode(fitted)) as? [String: Any])
        object["min_typicality"] = nil
        object["typicality"] = nil
        let old = try JSONDecoder().decode(TaskClassifier.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(old.minTypicality == TaskClassifier.Settings().minTypicality)
        #expect(old.typicality == nil && old.weights == fitted.weights && old.tasks == fitted.tasks)
        object["weights"] = nil
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(TaskClassifier.self, from: JSONSerialization.data(withJSONObject: object))
        }
    }

    /// Features longer than the covariance's limit are folded by the hashing projection, which
    /// keeps norms close (Johnson–Lindenstrauss-style) and is the same on every call.
    /// Context samples (the tasks' material without a request) in a region of their own: a query
    /// there falls back through the "none" class although it is typical enough, and held-out
    /// in-store queries rarely do.
    @Test func noneClassLearnsTheTasksMaterialWithoutARequest() throws {
        let train = clusters(items: 20, seed: 3)
        var random = TestRandom(seed: 4)
        func contextPoint() -> [Float] {
            var x = (0..<6).map { _ in random.float(-0.5, 0.5) }
            x[0] += 1.5
            x[3] += 1.5
            return x
        }
        let context = (0..<30).map { _ in contextPoint() }
        let classifier = try TaskClassifier.fit(tasks: ["a", "b", "c"], samples: train, features: "test", context: context)
        #expect(classifier.noneWeights?.count == 6 && classifier.noneBias != nil)
        let plain = try TaskClassifier.fit(tasks: ["a", "b", "c"], samples: train, features: "test")
        #expect(plain.noneWeights == nil && plain.noneBias == nil)
        // The typicality model is fitted on the in-store samples alone, with or without context.
        #expect(classifier.typicality == plain.typicality)
        var inStoreNone = 0
        let test = clusters(items: 10, seed: 5)
        for s in test {
            let d = try classifier.decide(s.features)
            let none = try #require(d.noneProbability)
            #expect(abs(d.probabilities.reduce(0, +) + none - 1) < 1e-9)
            if none > d.probabilities[d.best] { inStoreNone += 1 }
            #expect(d.best == s.task)
        }
        #expect(inStoreNone <= test.count / 20)
        var contextNone = 0
        for _ in 0..<20 {
            let d = try classifier.decide(contextPoint())
            if try #require(d.noneProbability) > d.probabilities[d.best] { contextNone += 1 }
        }
        #expect(contextNone >= 18, "held-out context points should read as none of the tasks")
        // Round trip, and a damaged none class is refused.
        let encoded = try JSONEncoder().encode(classifier)
        let decoded = try JSONDecoder().decode(TaskClassifier.self, from: encoded)
        #expect(decoded.noneWeights == classifier.noneWeights && decoded.noneBias == classifier.noneBias)
        var object = try #require(try JSONSerialization.jsonObject(with: encoded) as? [String: Any])
        object["none_weights"] = [1.0, 2.0]
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(TaskClassifier.self, from: JSONSerialization.data(withJSONObject: object))
        }
        #expect(throws: PreMoeError.self) {
            try TaskClassifier.fit(tasks: ["a", "b", "c"], samples: train, features: "test", context: [[1, 2]])
        }
    }

    @Test func hashingProjectionIsDeterministicAndKeepsNorms() {
        var random = TestRandom(seed: 3)
        let d = 4096, k = 1024
        let x = (0..<d).map { _ in random.float(-1, 1) }
        let a = TypicalityModel.project(rows: x, n: 1, from: d, to: k)
        #expect(a == TypicalityModel.project(rows: x, n: 1, from: d, to: k))
        let norm = x.reduce(0.0) { $0 + Double($1 * $1) }
        let projected = a.reduce(0.0) { $0 + $1 * $1 }
        #expect(abs(projected / norm - 1) < 0.15)
    }
}

@Suite struct TaskRetrievalTests {
    /// Two tasks of clearly different vocabulary, several items each.
    func calibrations() -> [TaskCalibration] {
        let weather = ["The sun is hot today.", "Rain falls on the cold hills.", "Wind and snow in the north.",
                       "A warm sunny day with clouds.", "Storms bring rain and thunder.", "The weather is cold and wet."]
        let numbers = ["1 2 3 4 5", "10 20 30 40", "7 8 9 10 11 12", "3 + 4 = 7", "100 200 300", "42 17 99 5"]
        return [
            TaskCalibration(task: "weather", texts: weather, queries: weather.map { TaskQuery(question: $0) }),
            TaskCalibration(task: "numbers", texts: numbers, queries: numbers.map { TaskQuery(question: $0) }),
        ]
    }

    @Test func classifierRetrievesUnseenQueriesFromTheBackboneAloneReadingNoExpertByte() throws {
        let loaded = try loadFixture("qwen3_moe")
        let tokenizer = try #require(loaded.tokenizer)
        let fingerprint = try ModelFingerprint.compute(loaded)
        let store = PatternStore(directory: try Fixtures.temporaryDirectory("premoe-classifier"))
        defer { try? FileManager.default.removeItem(at: store.directory) }
        for calibration in calibrations() {
            let result = try TaskProfiling.profile(model: loaded.model, tokenizer: tokenizer, fingerprint: fingerprint,
                                                   calibration: calibration, scorers: [TCESSScorer()])
            let pattern = result.patterns[0]
            let samples = try #require(pattern.retrieval)
            #expect(samples.items.count == calibration.queries.count * QueryStyle.allCases.count)
            #expect(samples.dimension == 4 * 64 + 8)
            #expect(try samples.vectors(file: "x").allSatisfy { $0.count == 4 * 64 + 8 && $0.allSatisfy(\.isFinite) })
            #expect(samples.contextItems == nil && samples.contextValues == nil, "these queries have no context texts")
            #expect(pattern.routingMassByLayer.values.allSatisfy { abs($0.reduce(0, +) - 1) < 1e-9 })
            try store.save(pattern)
        }
        let patterns = try store.list(fingerprint: fingerprint)
        let classifier = try #require(try store.classifier(for: patterns))
        #expect(classifier.tasks == ["numbers", "weather"])
        #expect(FileManager.default.fileExists(atPath: store.classifierURL.path))
        // The cache is reused as long as the patterns are the same.
        let cachedAgain = try #require(try store.classifier(for: patterns))
        #expect(cachedAgain.key == classifier.key && cachedAgain.weights == classifier.weights)

        let backbone = try Reconstruction.loadBackbone(fixtureDirectory("qwen3_moe"), threads: 1)
        let checkpoint = try #require(backbone.checkpoint as? SafetensorsCheckpoint)
        let retriever = try Retriever(patterns: patterns, method: .classifier, classifier: classifier, modelTopK: 2)
        for (prompt, task) in [("Cold rain and a strong wind tonight.", "weather"), ("5 6 7 8 9 10", "numbers")] {
            let result = try retriever.retrieve(model: backbone.model, tokens: tokenizer.encode(prompt))
            #expect(result.candidates.first?.task == task, "\(prompt)")
            #expect(result.method == .classifier)
            #expect(result.confidence.map { $0 > 0.5 && $0 <= 1 } == true)
        }
        #expect(checkpoint.bytesRead == 0, "retrieval must not read expert bytes")
        // An impossible confidence makes every query fall back, saying why.
        var strict = retriever
        strict.minConfidence = 1.5
        let none = try strict.retrieve(model: backbone.model, tokens: tokenizer.encode("The sun is hot today."))
        #expect(none.task == nil && none.fallbackReason?.contains("probability") == true)
    }

    /// Items with a passage store its features as context samples, the classifier gets a none
    /// class from them, and the retriever names it when it is the reason to fall back.
    @Test func passagesBecomeContextSamplesAndANoneClass() throws {
        let loaded = try loadFixture("qwen3_moe")
        let tokenizer = try #require(loaded.tokenizer)
        let passages = ["The river floods every spring and the farmers move their sheep to the hills above the valley.",
                        "Old mills stood along the river, grinding grain for the villages of the valley and the hills.",
                        "In winter the valley is quiet; snow covers the hills and the river freezes near the mills."]
        let questions = ["Does the river flood in spring?", "Did mills grind grain?", "Does the river freeze?"]
        let reading = TaskCalibration(task: "reading", texts: passages,
                                      queries: zip(passages, questions).map { TaskQuery(passage: $0, question: $1, context: [$0]) })
        var patterns = [try TaskProfiling.profile(model: loaded.model, tokenizer: tokenizer, fingerprint: "f", calibration: reading,
                                                  scorers: [TCESSScorer()]).patterns[0]]
        let samples = try #require(patterns[0].retrieval)
        #expect(samples.contextItems == [0, 1, 2])
        #expect(try samples.contextVectors(file: "x").count == 3)
        try patterns[0].validate(file: "reading")
        // Sizes that do not match are refused.
        var damaged = patterns[0]
        damaged.retrieval?.contextItems = [0, 1]
        #expect(throws: PreMoeError.self) { try damaged.validate(file: "reading") }
        patterns.append(try TaskProfiling.profile(model: loaded.model, tokenizer: tokenizer, fingerprint: "f",
                                                  calibration: calibrations()[1], scorers: [TCESSScorer()]).patterns[0])
        let classifier = try #require(try Retriever.fitClassifier(patterns))
        #expect(classifier.noneWeights != nil)
        var retriever = try Retriever(patterns: patterns, method: .classifier, classifier: classifier, modelTopK: 2)
        retriever.minTypicality = 0  // only the none class can make it fall back
        let passage = try retriever.retrieve(model: loaded.model, tokens: tokenizer.encode(passages[0]))
        #expect(passage.task == nil && passage.fallbackReason?.contains("without a request") == true,
                "a calibration passage alone reads as none of the tasks")
        let query = try retriever.retrieve(model: loaded.model, tokens: tokenizer.encode(passages[0] + "\n\n" + questions[0]))
        #expect(query.task == "reading", "\(query.fallbackReason ?? "")")
    }

    @Test func changedPatternsRefitTheCachedClassifier() throws {
        let loaded = try loadFixture("qwen3_moe")
        let tokenizer = try #require(loaded.tokenizer)
        let store = PatternStore(directory: try Fixtures.temporaryDirectory("premoe-refit"))
        defer { try? FileManager.default.removeItem(at: store.directory) }
        var patterns: [TaskPattern] = []
        for calibration in calibrations() {
            patterns.append(try TaskProfiling.profile(model: loaded.model, tokenizer: tokenizer, fingerprint: "f",
                                                      calibration: calibration, scorers: [TCESSScorer()],
                                                      settings: .init(retrievalQueries: 3)).patterns[0])
        }
        let first = try #require(try store.classifier(for: patterns))
        let fewer = try #require(try store.classifier(for: [patterns[0], patterns[1]].map { p in
            var p = p
            p.retrieval = TaskPattern.RetrievalSamples(
                features: p.retrieval!.features, dimension: p.retrieval!.dimension,
                items: Array(p.retrieval!.items.prefix(6)),
                renderings: p.retrieval!.renderings, vectors: Array(try p.retrieval!.vectors(file: "x").prefix(6)))
            return p
        }))
        #expect(first.key != fewer.key)
        // Patterns made before retrieval samples existed: no classifier, a clear error from the retriever.
        var old = patterns
        old[0].retrieval = nil
        #expect(try store.classifier(for: old) == nil)
    }
}
