import Foundation
import Testing
import TestSupport

/// The `premoe seap eval --json` contract (used by checks outside this repository): the row
/// fields, their types, sparsity-0 dense rows for every method, and `null` where there is no value.
@Suite struct SEAPCLITests {
    static let fields: Set<String> = ["task", "method", "sparsity", "accuracy", "accuracy_norm", "perplexity",
                                      "decode_tokens_per_second", "weight_bytes"]

    func arcRow(_ i: Int) -> [String: Any] {
        ["id": "q\(i)", "question": "Which one is item \(i)?", "answerKey": "B",
         "choices": ["text": ["stone", "water \(i)", "sun"], "label": ["A", "B", "C"]]]
    }

    @Test func evalJSONKeepsTheContract() throws {
        let data = try Fixtures.taskDataDirectory([
            "ai2_arc": ["train": (0..<6).map(arcRow), "test": (10..<12).map(arcRow)],
            "wikitext2": ["test": (0..<8).map { ["text": " line \($0) of some prose about rivers and hills .\n"] }],
        ])
        let result = try CLI.run([
            "seap", "eval", Fixtures.url("models/llama").path, "--tasks", "ai2_arc", "--sparsity", "50%",
            "--scores", "wifv,random", "--data-dir", data.path, "--split", "test", "--calibration-split", "train",
            "--max-examples", "2", "--calibration-count", "3", "--router-prompts", "0", "--json",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let rows = try #require(try result.json()["rows"] as? [[String: Any]])
        #expect(rows.count == 4)  // (dense + 50%) × (wifv, random)
        for row in rows {
            #expect(Set(row.keys) == Self.fields)
            #expect(row["perplexity"] is Double && row["accuracy"] is Double && row["weight_bytes"] is Int)
        }
        let dense = rows.filter { ($0["sparsity"] as? Double) == 0 }
        #expect(Set(dense.compactMap { $0["method"] as? String }) == ["wifv", "random"])
        let pruned = try #require(rows.first { ($0["sparsity"] as? Double) == 0.5 })
        #expect((pruned["weight_bytes"] as? Int ?? 0) < (dense[0]["weight_bytes"] as? Int ?? 0))

        let wiki = try CLI.run([
            "seap", "eval", Fixtures.url("models/llama").path, "--tasks", "wikitext2", "--sparsity", "20%", "--scores", "wifv",
            "--data-dir", data.path, "--max-examples", "2", "--calibration-count", "2", "--router-prompts", "0", "--json",
        ])
        #expect(wiki.status == 0, "\(wiki.stderr)")
        let wikiRows = try #require(try wiki.json()["rows"] as? [[String: Any]])
        #expect(wikiRows.allSatisfy { Set($0.keys) == Self.fields && $0["accuracy"] is NSNull })
    }

    /// `NAME+bc` / `NAME-bc` rows: the same mask with FLAP's bias compensation forced on or off.
    /// SEAP's `wifv` compensates by default (it equals `wifv+bc`), `wanda` does not (`wanda-bc`).
    @Test func compensatedScoresAddRows() throws {
        let data = try Fixtures.taskDataDirectory([
            "wikitext2": ["test": (0..<8).map { ["text": " line \($0) of some prose about rivers and hills .\n"] }],
        ])
        let result = try CLI.run([
            "seap", "eval", Fixtures.url("models/llama").path, "--tasks", "wikitext2", "--sparsity", "50%",
            "--scores", "wifv,wifv+bc,wifv-bc,wanda,wanda-bc,wanda+bc", "--data-dir", data.path, "--max-examples", "2", "--calibration-count", "2",
            "--router-prompts", "0", "--json",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let rows = try #require(try result.json()["rows"] as? [[String: Any]])
        func perplexity(_ method: String) -> Double? {
            rows.first { $0["method"] as? String == method && ($0["sparsity"] as? Double) == 0.5 }?["perplexity"] as? Double
        }
        let seap = try #require(perplexity("wifv")), compensated = try #require(perplexity("wifv+bc"))
        let plain = try #require(perplexity("wifv-bc"))
        #expect(seap == compensated)
        #expect(plain != compensated)
        let wanda = try #require(perplexity("wanda"))
        #expect(wanda == (try #require(perplexity("wanda-bc"))))
        #expect(wanda != (try #require(perplexity("wanda+bc"))))
        #expect(rows.contains { $0["method"] as? String == "wifv-bc" && ($0["sparsity"] as? Double) == 0 })

        let bad = try CLI.run(["seap", "eval", Fixtures.url("models/llama").path, "--scores", "wifv+xy"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("wifv+xy"))
    }

    @Test func badSparsityIsRefusedByName() throws {
        let result = try CLI.run(["seap", "eval", Fixtures.url("models/llama").path, "--sparsity", "120%"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--sparsity"))
    }
}
