/// `premoe serve`: an OpenAI-compatible HTTP server where every request runs with its own
/// task's experts, under one memory budget.
///
/// Endpoints: `POST /v1/chat/completions` and `POST /v1/completions` (JSON or SSE streaming with
/// `stream_options.include_usage`), `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus
/// text). Every request field is either honoured or refused with a 400 in OpenAI's error shape
/// naming it (`APIRequests.swift`).
///
/// Per request: the first user turn goes through the existing `Retriever` (TAER) and picks a
/// stored task's pattern, or the fallback (`full`, or the `generalist` of all stored tasks); the
/// extension field `"premoe": {"task": NAME}` (a stored task, `generalist` or `full`) forces the
/// choice. The response names it: header `x-premoe-task`, and `"premoe": {"task", "decision",
/// "fallback_reason"}` in the body or the final stream chunk.
///
/// One model instance, backbone resident once. Routed experts live in a pool
/// (`ExpertResidency`) under `--budget` (backbone + resident experts + KV caches of running
/// requests); a request pins its experts, missing ones are loaded alone, least recently used
/// unpinned ones are evicted. Each request routes only among its own experts: it carries its own
/// view of the MoE blocks (its experts behind their router rows, exactly as a pruned load builds
/// them), so a stream equals `premoe run`/`generate` with the same experts and seed. The `Engine`
/// thread advances every running request by one batched forward pass per step, each sequence
/// through its own view (`--batch-split` chooses how a step uses the threads).
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import Models
import NIOCore
import PreMoe
import Runtime
import ServiceLifecycle
import Tokenization

/// Errors that stop the server from starting.
public enum ServerError: Error, CustomStringConvertible {
    case budgetTooSmall(String)
    case invalidOption(String)
    case noTokenizer(String)

    public var description: String {
        switch self {
        case .budgetTooSmall(let reason): return "--budget is too small: \(reason)"
        case .invalidOption(let reason): return reason
        case .noTokenizer(let path): return "\(path): no tokenizer in the model; the server needs one"
        }
    }
}

/// How `premoe serve` runs.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 picks a free port (reported to `onReady`).
    public var port = 8080
    /// Bytes for backbone + resident experts + KV caches (nil: no limit, only accounting).
    public var budgetBytes: Int?
    /// Experts a task keeps (as `premoe run --keep`/`--budget`).
    public var taskBudget: ExpertBudget = .fraction(0.5)
    public var allocation: LayerAllocation = .routingMass
    /// `full` or `generalist` for queries no stored task fits.
    public var fallback = "full"
    public var retrievalMethod: RetrievalMethod = .classifier
    /// The bearer key; nil for none.
    public var apiKey: String?
    /// Requests generating at once; more wait in the queue.
    public var maxConcurrency = 8
    /// Requests waiting beyond the running ones before 429.
    public var maxQueue = 32
    public var maxBodyBytes = 1 << 20
    /// Longest prompt in tokens (capped at the model's context).
    public var maxPromptTokens: Int?
    /// Seconds a SIGTERM waits for in-flight requests before cancelling them.
    public var shutdownGraceSeconds = 10.0
    /// Idle keep-alive connections are closed after this many seconds.
    public var idleTimeoutSeconds: Int64 = 30
    /// Open connections at most (more wait in the accept backlog).
    public var maxConnections = 1024
    /// The name in `/v1/models` and responses (default: the model directory's name).
    public var modelName: String?
    public var threads = 0
    /// How batched steps use the threads (default: whichever measures faster).
    public var batchSplit: BatchSplit = .auto

    /// Defaults: 127.0.0.1:8080, no budget, half the experts per task.
    public init() {}
}

/// The server: model, engine, HTTP application.
public final class PreMoeServer: @unchecked Sendable {
    let configuration: ServerConfiguration
    let modelName: String
    let engine: Engine
    let metrics: ServerMetrics
    let tokenizer: Tokenizer
    let spec: DecoderSpec
    let taskNames: [String]
    let eosTokenIDs: [Int]
    /// One line for the log: model, stored tasks, backbone size, budget.
    public let summary: String
    private let lock = NSLock()
    private var serviceGroup: ServiceGroup?

    /// Loads the backbone and the store's patterns and prepares the engine (no expert is loaded
    /// until a request needs it).
    /// - Parameters:
    ///   - model: a model directory or `.gguf` file.
    ///   - store: the pattern store (nil: the default for this model; none there: every request
    ///     runs the full model).
    /// - Throws: model, store and `ServerError` errors.
    public init(model: URL, store: URL?, configuration: ServerConfiguration) throws {
        self.configuration = configuration
        let loaded = try Reconstruction.loadBackbone(model, threads: configuration.threads)
        guard let tokenizer = loaded.tokenizer else { throw ServerError.noTokenizer(model.path) }
        self.tokenizer = tokenizer
        spec = loaded.model.spec
        eosTokenIDs = loaded.eosTokenIDs
        modelName = configuration.modelName ?? model.deletingPathExtension().lastPathComponent
        let fingerprint = try ModelFingerprint.compute(loaded)
        let patternStore = PatternStore(directory: store ?? PatternStore.defaultDirectory(fingerprint: fingerprint))
        let patterns = FileManager.default.fileExists(atPath: patternStore.directory.path)
            ? try patternStore.list(fingerprint: fingerprint, spec: spec) : []
        var retriever: Retriever?
        if !patterns.isEmpty {
            let spec = loaded.model.spec
            let topK = spec.moeLayers.first.flatMap { spec.moe($0)?.topK } ?? 1
            let classifier = configuration.retrievalMethod == .classifier ? try patternStore.classifier(for: patterns) : nil
            retriever = try Retriever(patterns: patterns, method: classifier == nil ? .centroid : .classifier,
                                      classifier: classifier, modelTopK: topK, storeName: patternStore.directory.path)
        }
        guard let fallback = TaskSelector.Fallback(rawValue: configuration.fallback) else {
            throw ServerError.invalidOption("--fallback must be full or generalist, got '\(configuration.fallback)'")
        }
        let sizes = ModelSizes.measure(loaded.checkpoint, spec: spec)
        let selector = TaskSelector(spec: spec, patterns: patterns, retriever: retriever, budget: configuration.taskBudget,
                                    allocation: configuration.allocation, fallback: fallback, sizes: sizes)
        for task in selector.taskNames { _ = try selector.experts(for: task) }  // plan errors now, not per request
        taskNames = selector.taskNames
        let residency = try ExpertResidency(loaded: loaded, budget: configuration.budgetBytes, sizes: sizes)
        metrics = ServerMetrics()
        engine = Engine(model: loaded.model, tokenizer: tokenizer, residency: residency, selector: selector,
                        maxConcurrency: configuration.maxConcurrency, maxQueue: configuration.maxQueue, metrics: metrics,
                        batchSplit: configuration.batchSplit)
        summary = ("serving \(modelName): \(patterns.count) stored tasks (\(taskNames.joined(separator: ", "))), "
            + "backbone \(formatBytes(residency.backboneBytes))"
            + (configuration.budgetBytes.map { ", budget \(formatBytes($0))" } ?? ", no budget"))
    }

    /// Runs until SIGTERM/SIGINT or `shutdown()`: stops accepting, lets in-flight requests finish
    /// for `shutdownGraceSeconds`, cancels the rest, returns.
    /// - Parameter onReady: called with the bound port once the server listens.
    /// - Throws: bind and server errors.
    public func run(onReady: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        engine.start()
        var logger = Logger(label: "premoe-serve")
        logger.logLevel = .warning
        let router = Router(context: ServerRequestContext.self)
        routes(router)
        let app = Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: .seconds(configuration.idleTimeoutSeconds))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil,
                                 availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections)),
            onServerRunning: { channel in onReady(channel.localAddress?.port ?? 0) },
            logger: logger)
        let drain = DrainService(engine: engine, grace: configuration.shutdownGraceSeconds)
        // The drain service is last, so a graceful shutdown reaches it first: it empties the
        // engine within the grace period, then the HTTP server closes its (now idle) connections.
        let group = ServiceGroup(configuration: .init(services: [app, drain], gracefulShutdownSignals: [.sigterm, .sigint],
                                                      logger: logger))
        lock.withLock { serviceGroup = group }
        defer { engine.stop(wait: true) }
        try await group.run()
    }

    /// Starts the graceful shutdown that SIGTERM starts.
    public func shutdown() async {
        let group = lock.withLock { serviceGroup }
        await group?.triggerGracefulShutdown()
    }
}

/// Waits for the graceful shutdown, then drains the engine: no new requests, in-flight ones get
/// the grace period, then are cancelled.
private struct DrainService: Service {
    let engine: Engine
    let grace: Double

    func run() async throws {
        try? await gracefulShutdown()
        engine.stopAccepting()
        let deadline = Date().addingTimeInterval(grace)
        while engine.inFlightCount > 0 && Date() < deadline {
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        engine.stop(wait: false)
        while engine.inFlightCount > 0 {  // the engine ends every request at its next turn
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }
}
