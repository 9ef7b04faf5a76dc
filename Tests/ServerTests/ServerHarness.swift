import AsyncHTTPClient
import Foundation
import Models
import NIOCore
import NIOHTTP1
import PreMoe
@testable import Server
import TestSupport
import Tokenization

/// The tiny Qwen3-MoE fixture (2 layers, 8 experts, ChatML tokens: fast in debug builds) with
/// Qwen3's real chat template beside it, and a two-task pattern store profiled from the
/// repository's task data (256 calibration tokens and 8 retrieval queries per task), made once per
/// test process. `scripts/openai_client_check.py` and `scripts/serve_load_test.py` drive the demo model.
enum DemoStore {
    static let repository = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent()
    static let model: URL = {
        do { return try withChatTemplate(Fixtures.url("models/qwen3_moe"), template: "Qwen-Qwen3-0.6B.jinja") } catch {
            preconditionFailure("could not prepare the server's test model: \(error)")
        }
    }()
    static let modelName = "qwen3_moe"
    static let tasks = ["gsm8k", "boolq"]

    private static let lock = NSLock()
    nonisolated(unsafe) private static var made: Result<URL, Error>?

    /// The store directory (profiled on first use).
    static func store() throws -> URL {
        try lock.withLock {
            if let made { return try made.get() }
            let result = Result { try profile() }
            made = result
            return try result.get()
        }
    }

    /// A directory of links to `fixture`'s files plus a `tokenizer_config.json` holding the
    /// committed chat template `template` (the model fixtures carry no template of their own).
    private static func withChatTemplate(_ fixture: URL, template: String) throws -> URL {
        // Named as the fixture: the server names its model after the directory.
        let directory = try Fixtures.temporaryDirectory("premoe-serve-model").appendingPathComponent(fixture.lastPathComponent)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        for name in try FileManager.default.contentsOfDirectory(atPath: fixture.path) {
            try FileManager.default.createSymbolicLink(
                at: directory.appendingPathComponent(name), withDestinationURL: fixture.appendingPathComponent(name))
        }
        let source = try String(contentsOf: Fixtures.url("chat_templates/\(template)"), encoding: .utf8)
        let config: [String: Any] = ["chat_template": source, "eos_token": "<|im_end|>"]
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("tokenizer_config.json"))
        return directory
    }

    private static func profile() throws -> URL {
        let loaded = try ModelLoader.load(model, options: LoadOptions(threads: 2))
        guard let tokenizer = loaded.tokenizer else { throw ServerError.noTokenizer(model.path) }
        let fingerprint = try ModelFingerprint.compute(loaded)
        let store = PatternStore(directory: try Fixtures.temporaryDirectory("premoe-serve-store"))
        let topK = loaded.model.spec.moe(loaded.model.spec.moeLayers[0])?.topK ?? 1
        for task in tasks {
            let calibration = try TaskCalibration.read(
                task: task, file: repository.appendingPathComponent("data/tasks/\(task)/train.jsonl"),
                chatTemplate: tokenizer.chatTemplate)
            let result = try TaskProfiling.profile(
                model: loaded.model, tokenizer: tokenizer, fingerprint: fingerprint, calibration: calibration,
                scorers: [try Scorers.make("tcess", modelTopK: topK)],
                settings: TaskProfiling.Settings(maxTokens: 256, window: 128, retrievalQueries: 8))
            _ = try store.save(result.patterns[0])
        }
        return store.directory
    }
}

/// A server on 127.0.0.1 with a free port, and a client for it.
final class RunningServer: @unchecked Sendable {
    let server: PreMoeServer
    let port: Int
    let task: Task<Void, Error>
    static let client = HTTPClient(eventLoopGroupProvider: .singleton)

    private init(server: PreMoeServer, port: Int, task: Task<Void, Error>) {
        self.server = server
        self.port = port
        self.task = task
    }

    /// Starts a server on the demo model and store.
    static func start(_ configure: (inout ServerConfiguration) -> Void = { _ in }) async throws -> RunningServer {
        var config = ServerConfiguration()
        config.port = 0
        config.threads = 2
        config.maxPromptTokens = 200
        configure(&config)
        let server = try PreMoeServer(model: DemoStore.model, store: try DemoStore.store(), configuration: config)
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let task = Task { try await server.run { continuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw ServerError.invalidOption("the server did not start") }
        return RunningServer(server: server, port: port, task: task)
    }

    func stop() async {
        await server.shutdown()
        _ = try? await task.value
    }

    struct Reply {
        var status: Int
        var headers: HTTPHeaders
        var body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
        /// `error.param` of an OpenAI error body.
        var errorParam: String? { (json["error"] as? [String: Any])?["param"] as? String }
        /// The JSON objects of an SSE body, in order (without `[DONE]`).
        var events: [[String: Any]] {
            text.components(separatedBy: "\n\n").compactMap { block in
                guard block.hasPrefix("data: "), !block.hasPrefix("data: [DONE]") else { return nil }
                return try? JSONSerialization.jsonObject(with: Data(block.dropFirst(6).utf8)) as? [String: Any]
            }
        }
    }

    /// Sends a request and reads the whole answer.
    func send(_ method: HTTPMethod = .POST, _ path: String, body: Data? = nil, headers: [(String, String)] = [],
              timeout: Int64 = 60) async throws -> Reply {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await Self.client.execute(request, timeout: .seconds(timeout))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return Reply(status: Int(response.status.code), headers: response.headers, body: Data(bytes.readableBytesView))
    }

    /// POSTs a JSON object.
    func post(_ path: String, _ object: [String: Any], headers: [(String, String)] = []) async throws -> Reply {
        try await send(.POST, path, body: try JSONSerialization.data(withJSONObject: object), headers: headers)
    }

    /// A chat request body with one user turn.
    static func chat(_ content: String, _ extra: [String: Any] = [:]) -> [String: Any] {
        var body: [String: Any] = ["model": DemoStore.modelName, "messages": [["role": "user", "content": content]]]
        for (k, v) in extra { body[k] = v }
        return body
    }
}

extension RunningServer.Reply {
    /// The chat message text of a non-streamed answer.
    var content: String? {
        ((json["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
    }
    var finishReason: String? { (json["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
    var usage: [String: Int]? { json["usage"] as? [String: Int] }
    /// The concatenated `delta.content` (chat) or `text` (completions) of a stream.
    var streamedText: String {
        events.compactMap { event -> String? in
            guard let choice = (event["choices"] as? [[String: Any]])?.first else { return nil }
            return (choice["delta"] as? [String: Any])?["content"] as? String ?? choice["text"] as? String
        }.joined()
    }
}
