import ArgumentParser
import Foundation
import PreMoe
import Server

extension BatchSplit: ExpressibleByArgument {}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An OpenAI-compatible server: every request runs with its own task's experts, under one memory budget.",
        discussion: """
            Endpoints: POST /v1/chat/completions, POST /v1/completions (stream with SSE), GET /v1/models, \
            GET /health, GET /metrics. The first user turn picks the task (the store's patterns); \
            "premoe": {"task": NAME|"generalist"|"full"} in a request forces it; the response names it in \
            the x-premoe-task header and a "premoe" field. SIGTERM drains in-flight requests for \
            --shutdown-grace seconds, then cancels the rest and exits 0.
            """)
    @OptionGroup var options: ModelOptions
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Memory for backbone + resident experts + KV caches (8GiB, 512MiB, bytes); default: no limit.")
    var budget: String?
    @Option(help: "Experts a task keeps per MoE layer: a count (32) or a percentage (50%).") var keep = "50%"
    @Option(help: "Experts per layer: selected (default: the recipe each task's profile chose), routing-mass or uniform.")
    var allocation: LayerAllocation = .selected
    @Option(help: "When no stored task fits: full (every expert) or generalist (all stored tasks' patterns combined).")
    var fallback = "full"
    @Option(help: "Address to bind (default: loopback only).") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port, printed on start).") var port = 8080
    @Option(name: .customLong("api-key-file"), help: "File holding the key clients must send as 'Authorization: Bearer KEY'.")
    var apiKeyFile: String?
    @Option(name: .customLong("max-concurrency"), help: "Requests generating at once.") var maxConcurrency = 8
    @Option(name: .customLong("max-queue"), help: "Requests waiting beyond those before a 429.") var maxQueue = 32
    @Option(name: .customLong("max-body-bytes"), help: "Largest request body (413 beyond).") var maxBodyBytes = 1 << 20
    @Option(name: .customLong("max-prompt-tokens"), help: "Longest prompt (400 beyond; default: the model's context).")
    var maxPromptTokens: Int?
    @Option(name: .customLong("shutdown-grace"), help: "Seconds in-flight requests get after SIGTERM.") var shutdownGrace = 10.0
    @Option(name: .customLong("model-name"), help: "Model id in /v1/models (default: the model directory's name).")
    var modelName: String?
    @Option(name: .customLong("batch-split"),
            help: "How a batched step uses the threads: kernels (each matmul split), sequences (each thread runs whole sequences) or auto (whichever measures faster; the same tokens either way).")
    var batchSplit: BatchSplit = .auto

    func validate() throws {
        if let budget { _ = try ExpertBudget(budget: budget) }
        _ = try ExpertBudget(keep: keep)
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535") }
        if maxConcurrency < 1 || maxConcurrency > 4096 { throw ValidationError("--max-concurrency must be in 1...4096") }
        if maxQueue < 0 || maxQueue > 1_000_000 { throw ValidationError("--max-queue must be in 0...1000000") }
        if maxBodyBytes < 1024 { throw ValidationError("--max-body-bytes must be at least 1024") }
        if let maxPromptTokens, maxPromptTokens < 1 { throw ValidationError("--max-prompt-tokens must be ≥ 1") }
        if !(shutdownGrace >= 0 && shutdownGrace <= 3600) { throw ValidationError("--shutdown-grace must be in 0...3600") }
        if !["full", "generalist"].contains(fallback) { throw ValidationError("--fallback must be full or generalist") }
    }

    /// The CLI's root command is synchronous: the server runs in a task while this thread waits.
    func run() throws {
        final class Outcome: @unchecked Sendable { var error: Error? }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let command = self
        Task {
            do { try await command.serve() } catch { outcome.error = error }
            done.signal()
        }
        done.wait()
        if let error = outcome.error { throw error }
    }

    private func serve() async throws {
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        if let budget, case .bytes(let bytes) = try ExpertBudget(budget: budget) { config.budgetBytes = bytes }
        config.taskBudget = try ExpertBudget(keep: keep)
        config.allocation = allocation
        config.fallback = fallback
        if let apiKeyFile {
            let key = try String(contentsOfFile: apiKeyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !key.isEmpty else { throw CLIError(description: "\(apiKeyFile): the API key file is empty") }
            config.apiKey = key
        }
        config.maxConcurrency = maxConcurrency
        config.maxQueue = maxQueue
        config.maxBodyBytes = maxBodyBytes
        config.maxPromptTokens = maxPromptTokens
        config.shutdownGraceSeconds = shutdownGrace
        config.modelName = modelName
        config.threads = options.threads
        config.batchSplit = batchSplit
        let store = storeOptions.store.map { URL(fileURLWithPath: $0) }
        let server = try PreMoeServer(model: options.url, store: store, configuration: config)
        printError(server.summary)
        try await server.run { port in printError("listening on http://\(host):\(port)") }
        printError("stopped")
    }
}
