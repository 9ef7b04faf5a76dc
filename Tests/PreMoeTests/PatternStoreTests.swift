import Foundation
import PreMoe
import Testing
import TestSupport

@Suite struct PatternStoreTests {
    @Test func saveLoadListRemove() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = PatternStore(directory: dir.appendingPathComponent("nested/store"))
        #expect(try store.list().isEmpty)
        let a = makePattern(task: "gsm8k", scores: [0: [0.5, -0.25, 0], 2: [1, 2, 3]])
        let b = makePattern(task: "boolq", scores: [0: [0, 0, 1], 2: [3, 2, 1]])
        let url = try store.save(a)
        try store.save(b)
        #expect(url.lastPathComponent == "gsm8k.json")
        #expect(try store.load("gsm8k") == a)
        #expect(try store.list().map(\.task) == ["boolq", "gsm8k"])
        // No temporary files stay behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.directory.path).sorted() == ["boolq.json", "gsm8k.json"])
        // Plain JSON with the documented keys.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        #expect(Set(json.keys) == ["version", "model_fingerprint", "model_type", "task", "scorer", "token_count",
                                   "expert_count", "layers", "signature", "created_at"])
        #expect((json["layers"] as? [String: Any])?.keys.sorted() == ["0", "2"])
        #expect(json["created_at"] as? String == "1970-01-01T00:00:00Z")
        // Overwrite in place.
        var changed = a
        changed.tokenCount = 99
        try store.save(changed)
        #expect(try store.load("gsm8k").tokenCount == 99)
        try store.remove("gsm8k")
        #expect(try store.taskNames() == ["boolq"])
        #expect(throws: PreMoeError.self) { try store.remove("gsm8k") }
        #expect(throws: PreMoeError.self) { try store.load("gsm8k") }
    }

    @Test func refusesPatternsOfAnotherModel() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = PatternStore(directory: dir)
        try store.save(makePattern(task: "t", scores: [0: [1, 2]], fingerprint: "aaaa"))
        #expect(try store.load("t", fingerprint: "aaaa").task == "t")
        // Listing skips it (with the reason); loading it by name is an error.
        let (patterns, skipped) = try store.scan(fingerprint: "bbbb")
        #expect(patterns.isEmpty)
        let error = try #require(skipped.first?.error as? PreMoeError)
        guard case .fingerprintMismatch = error else {
            Issue.record("wrong error \(error)")
            return
        }
        #expect("\(error)".contains("another model"))
        #expect(throws: PreMoeError.self) { try store.load("t", fingerprint: "bbbb") }
    }

    @Test func rejectsBadNamesAndBadFiles() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = PatternStore(directory: dir)
        for name in ["", ".hidden", "a/b", "a b", "x,y"] {
            #expect(!PatternStore.isValidTaskName(name))
            #expect(throws: PreMoeError.self) { try store.save(makePattern(task: name, scores: [0: [1]])) }
        }
        #expect(PatternStore.isValidTaskName("ai2_arc-v1.2"))
        try Data("{}".utf8).write(to: dir.appendingPathComponent("broken.json"))
        #expect(throws: PreMoeError.self) { try store.load("broken") }
        var wrongLength = makePattern(task: "w", scores: [0: [1, 2]])
        wrongLength.layers["0"] = [1]
        try store.save(wrongLength)
        #expect(throws: PreMoeError.self) { try store.load("w") }
    }

    @Test func defaultDirectoryIsKeyedByFingerprint() {
        let url = PatternStore.defaultDirectory(fingerprint: "0123456789abcdef0123")
        #expect(url.path.hasSuffix("premoe/patterns/0123456789abcdef"))
    }
}
