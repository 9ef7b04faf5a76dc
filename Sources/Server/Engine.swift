import Foundation
import Kernels
import Models
import PreMoe
import Runtime
import Tokenization

/// A request as the engine runs it.
struct GenerationJob: Sendable {
    var promptIDs: [Int]
    /// The first user turn's ids (what retrieval sees); nil when there is none.
    var queryIDs: [Int]?
    var forcedTask: String?
    var parameters: GenerationParameters
    /// nil: no log-probabilities; n: the sampled token's and n alternatives.
    var topLogprobs: Int?
}

/// The log-probability of one sampled token and its best alternatives.
struct TokenLogprob: Sendable {
    struct Alternative: Sendable {
        var token: String
        var logprob: Float
        var bytes: [UInt8]
    }
    var token: String
    var logprob: Float
    var bytes: [UInt8]
    var top: [Alternative]
}

/// What the engine tells a request's handler, in order: `started` (or `failed`), any number of
/// `token`s, then `finished` (or `failed`).
enum EngineEvent: Sendable {
    case started(TaskChoice, admittedAfter: Double)
    case token(text: String, logprob: TokenLogprob?)
    case finished(FinishReason, promptTokens: Int, completionTokens: Int)
    case failed(APIError)
}

/// Counters the engine keeps (read under its lock).
struct EngineSnapshot: Sendable {
    var running = 0
    var queued = 0
    var residentExperts = 0
    var accountedBytes = 0
    var peakAccountedBytes = 0
    var budgetBytes: Int?
    var expertHits = 0
    var expertMisses = 0
    var bytesLoaded = 0
    var evictions = 0
    var accepting = true
    /// Batched forward passes run, and the sequences they advanced (their ratio is the mean batch).
    var batchedSteps = 0
    var batchedSequences = 0
    /// The most sequences one forward pass advanced.
    var largestBatch = 0
    /// Where the engine thread's time went (seconds since start, wall clock).
    var time = EngineTime()
}

/// The engine thread's time, split the way serving throughput is analysed: forward passes that
/// ran a prompt (with whatever decode rows rode along), forward passes of decode rows only,
/// sampling (and detokenizing, stop strings, log-probabilities), and handing the tokens to the
/// streams. Admission and expert loading make the rest of the busy time; retrieval runs on the
/// request handlers' threads (`retrievalSeconds`).
struct EngineTime: Sendable {
    /// Forward passes that held at least one prompt, their seconds, the prompts and their
    /// tokens, and the one-token rows of decoding sequences they also advanced.
    var promptSteps = 0
    var promptStepSeconds = 0.0
    var prompts = 0
    var promptTokens = 0
    var promptStepDecodeRows = 0
    /// Forward passes of decode rows only, their seconds and rows.
    var decodeSteps = 0
    var decodeStepSeconds = 0.0
    var decodeRows = 0
    /// Sampling every row of a step (the streams in parallel on the model's threads).
    var samplingSeconds = 0.0
    /// Emitting tokens and finishing requests.
    var emitSeconds = 0.0
    /// The budget check and admission (expert loading included).
    var admissionSeconds = 0.0
    /// Retrieval probes, summed over the request handlers' threads that ran them (beside the
    /// engine thread's steps, not part of its time).
    var retrievalSeconds = 0.0
    /// Forward passes that ran their sequences dealt over the threads (`BatchSplit.sequences`).
    var sequenceSplitSteps = 0
    /// `SplitChooser.measurements` (with `--batch-split auto`).
    var splitMeasurements: [Int: (kernels: Double, sequences: Double, samples: [Int])] = [:]
}

/// One model, many requests: a dedicated thread owns the model's forward passes and runs, in
/// turn, admission under the memory budget and one step (prefill or one decode token) of every
/// running request, so streams advance together. Retrieval runs before, on the submitting
/// request's thread, beside the steps (`submit`). A step is one batched forward pass
/// over all running requests (`DecoderModel.forward(batch:)`), each sequence routed through its
/// own expert view (its experts behind its own router rows) and attending to its own KV cache.
final class Engine: @unchecked Sendable {
    private final class Active {
        let id: UInt64
        let job: GenerationJob
        /// `started` or `failed`, then finished (what the handler waits for before it answers).
        let start: AsyncStream<EngineEvent>.Continuation
        /// Everything after `started`.
        let continuation: AsyncStream<EngineEvent>.Continuation
        var started = false
        let submitted: Date
        /// The task and experts retrieval chose (before the request reached the engine).
        let choice: TaskChoice
        var cacheBytes = 0
        var session: GenerationSession?
        /// Its experts are pinned and its KV cache reserved.
        var pinned = false
        var view: [Int: MoEBlock] = [:]
        init(id: UInt64, job: GenerationJob, choice: TaskChoice, submitted: Date,
             start: AsyncStream<EngineEvent>.Continuation, continuation: AsyncStream<EngineEvent>.Continuation) {
            self.id = id
            self.job = job
            self.choice = choice
            self.submitted = submitted
            self.start = start
            self.continuation = continuation
        }

        /// Sends an event to whichever stream is current.
        func emit(_ event: EngineEvent) {
            if started {
                continuation.yield(event)
                return
            }
            start.yield(event)
            if case .started = event {
                started = true
                start.finish()
            }
        }
    }

    let model: DecoderModel
    let tokenizer: Tokenizer
    let residency: ExpertResidency
    let selector: TaskSelector
    let maxConcurrency: Int
    let maxQueue: Int
    let metrics: ServerMetrics
    /// How batched steps use the threads (engine thread only).
    private var split: SplitChooser

    private let condition = NSCondition()
    // Guarded by `condition`:
    private var incoming: [Active] = []
    private var cancelled: Set<UInt64> = []
    private var inFlight = 0
    private var nextID: UInt64 = 0
    private var accepting = true
    private var stopping = false
    private var snapshotValue = EngineSnapshot()
    // Engine thread only:
    private var waiting: [Active] = []
    private var running: [Active] = []
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    init(model: DecoderModel, tokenizer: Tokenizer, residency: ExpertResidency, selector: TaskSelector,
         maxConcurrency: Int, maxQueue: Int, metrics: ServerMetrics, batchSplit: BatchSplit = .auto) {
        self.model = model
        self.tokenizer = tokenizer
        self.residency = residency
        self.selector = selector
        self.maxConcurrency = maxConcurrency
        self.maxQueue = maxQueue
        self.metrics = metrics
        split = SplitChooser(mode: batchSplit, threads: model.pool.threadCount)
        snapshotValue.budgetBytes = residency.budget
        snapshotValue.accountedBytes = residency.accountedBytes
        snapshotValue.peakAccountedBytes = residency.peakAccountedBytes
    }

    /// Starts the engine thread.
    func start() {
        let thread = Thread { [self] in
            loop()
            finished.signal()
        }
        thread.name = "premoe-engine"
        thread.stackSize = 8 << 20
        self.thread = thread
        thread.start()
    }

    /// What `submit` hands back.
    struct Submission: Sendable {
        /// For `cancel`.
        var id: UInt64
        /// One event: `started` or `failed`.
        var start: AsyncStream<EngineEvent>
        /// After `started`: tokens, then `finished` or `failed`.
        var events: AsyncStream<EngineEvent>
    }

    /// Queues a request once retrieval has chosen its task. The probe runs here, on the caller's
    /// thread, while the engine thread goes on stepping the running requests: a new request
    /// never holds up the others' tokens for its probe (a layer-0 pass over its query).
    /// - Returns: its id and its event streams.
    /// - Throws: `APIError` 429 with `Retry-After` when running + queued reach the limits, 503
    ///   while shutting down, 500 when retrieval fails.
    func submit(_ job: GenerationJob) throws -> Submission {
        let submitted = Date()
        condition.lock()
        guard accepting else {
            condition.unlock()
            throw APIError(status: 503, message: "the server is shutting down", type: "server_error", code: "shutting_down",
                           retryAfter: 5)
        }
        guard inFlight < maxConcurrency + maxQueue else {
            condition.unlock()
            metrics.rejected("queue_full")
            throw APIError(status: 429, message: "too many requests: \(maxConcurrency) running and \(maxQueue) queued "
                + "(--max-concurrency, --max-queue); retry later", type: "rate_limit_error", code: "queue_full", retryAfter: 1)
        }
        inFlight += 1  // the slot is held while retrieval runs
        condition.unlock()

        let probeStart = DispatchTime.now().uptimeNanoseconds
        let choice: TaskChoice
        do {
            choice = try selector.choose(model: model, query: job.queryIDs, forced: job.forcedTask)
        } catch {
            condition.lock()
            inFlight -= 1
            condition.unlock()
            throw APIError(status: 500, message: "retrieval failed: \(error)", type: "server_error")
        }
        metrics.decision(task: choice.task, decision: choice.decision)
        let (startStream, start) = AsyncStream<EngineEvent>.makeStream(bufferingPolicy: .unbounded)
        let (stream, continuation) = AsyncStream<EngineEvent>.makeStream(bufferingPolicy: .unbounded)
        condition.lock()
        defer { condition.unlock() }
        snapshotValue.time.retrievalSeconds += Self.seconds(since: probeStart)
        guard !stopping else {  // the engine thread may be gone: nothing would answer
            inFlight -= 1
            throw APIError(status: 503, message: "the server is shutting down", type: "server_error", code: "shutting_down",
                           retryAfter: 5)
        }
        nextID += 1
        incoming.append(Active(id: nextID, job: job, choice: choice, submitted: submitted, start: start,
                               continuation: continuation))
        condition.signal()
        return Submission(id: nextID, start: startStream, events: stream)
    }

    /// Cancels a request (client gone): it is dropped at the next step, its KV cache freed and its
    /// experts unpinned.
    func cancel(_ id: UInt64) {
        condition.lock()
        cancelled.insert(id)
        condition.signal()
        condition.unlock()
    }

    /// Stops taking requests (new ones get 503); running and queued ones go on.
    func stopAccepting() {
        condition.lock()
        accepting = false
        condition.unlock()
    }

    /// Cancels everything in flight and ends the engine thread once it is idle.
    /// - Parameter wait: block until the thread has ended.
    func stop(wait: Bool) {
        condition.lock()
        accepting = false
        stopping = true
        condition.signal()
        condition.unlock()
        if wait, thread != nil { finished.wait() }
    }

    /// Requests running or queued.
    var inFlightCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return inFlight
    }

    /// Counters for /health and /metrics.
    var snapshot: EngineSnapshot {
        condition.lock()
        defer { condition.unlock() }
        var s = snapshotValue
        s.accepting = accepting
        return s
    }

    // MARK: - Engine thread

    private func loop() {
        while true {
            condition.lock()
            while incoming.isEmpty && cancelled.isEmpty && waiting.isEmpty && running.isEmpty && !stopping {
                condition.wait()
            }
            let arrivals = incoming
            incoming = []
            let gone = cancelled
            cancelled = []
            let stop = stopping
            condition.unlock()

            if stop {
                for a in arrivals + waiting + running {
                    end(a, with: .failed(APIError(status: 503, message: "the server shut down before this request finished",
                                                  type: "server_error", code: "shutting_down")))
                }
                waiting = []
                running = []
                publish()
                return
            }
            var fresh = arrivals
            if !gone.isEmpty {
                for a in (fresh + waiting + running) where gone.contains(a.id) {
                    metrics.cancelled()
                    end(a, with: nil)
                }
                fresh.removeAll { gone.contains($0.id) }
                waiting.removeAll { gone.contains($0.id) }
                running.removeAll { gone.contains($0.id) }
            }
            let admission = DispatchTime.now().uptimeNanoseconds
            for a in fresh { prepare(a) }
            admit()
            let seconds = Self.seconds(since: admission)
            condition.lock()
            snapshotValue.time.admissionSeconds += seconds
            condition.unlock()
            stepAll()
            publish()
        }
    }

    /// The budget check for a new request (retrieval chose its experts in `submit`); it then
    /// waits for admission.
    private func prepare(_ a: Active) {
        let choice = a.choice
        a.cacheBytes = GenerationSession.cacheBytes(spec: model.spec, promptCount: a.job.promptIDs.count,
                                                    maxTokens: a.job.parameters.maxTokens)
        let alone = residency.bytesAlone(experts: choice.experts, cacheBytes: a.cacheBytes)
        if let budget = residency.budget, alone.total > budget {
            metrics.rejected("over_budget")
            let count = choice.experts.values.reduce(0) { $0 + $1.count }
            end(a, with: .failed(APIError(
                status: 503,
                message: "this request needs \(formatBytes(alone.total)) (\(alone.total) bytes): backbone "
                    + "\(formatBytes(residency.backboneBytes)) + \(count) experts of task '\(choice.task)' "
                    + "\(formatBytes(alone.experts)) + KV cache \(formatBytes(a.cacheBytes)) for "
                    + "\(a.job.promptIDs.count) prompt + \(a.job.parameters.maxTokens) new tokens; --budget is "
                    + "\(formatBytes(budget)) (\(budget) bytes). Lower max_tokens or raise --budget.",
                type: "server_error", code: "over_budget")))
            return
        }
        waiting.append(a)
    }

    /// Admits waiting requests in arrival order while slots and memory allow.
    private func admit() {
        while running.count < maxConcurrency, let a = waiting.first {
            let choice = a.choice
            do {
                let outcome = try residency.admit(experts: choice.experts, cacheBytes: a.cacheBytes)
                guard case .admitted(let hits, let misses, let bytes) = outcome else { return }
                waiting.removeFirst()
                a.pinned = true
                metrics.experts(hits: hits, misses: misses, bytesLoaded: bytes)
                a.view = residency.view(task: choice.task, experts: choice.experts)
                a.session = try GenerationSession(model: model, tokenizer: tokenizer, promptIDs: a.job.promptIDs,
                                                  parameters: a.job.parameters)
                running.append(a)
                a.emit(.started(choice, admittedAfter: Date().timeIntervalSince(a.submitted)))
            } catch {
                if waiting.first === a { waiting.removeFirst() }
                end(a, with: .failed(APIError(status: 500, message: "loading experts failed: \(error)", type: "server_error")))
            }
        }
    }

    /// One step of every running request: the prompts of newly admitted requests and the last
    /// token of every decoding one run as one batched forward pass, each sequence through its
    /// own expert view, then each request samples from its own logits (the requests at the same
    /// time on the model's threads: each session owns its sampler and text, so the tokens are
    /// those of one request sampled alone).
    private func stepAll() {
        var batch: [(a: Active, session: GenerationSession, entry: BatchEntry)] = []
        var idle: [(a: Active, session: GenerationSession)] = []
        var promptTokens = 0
        var prompts = 0
        for a in running {
            guard let session = a.session else { continue }
            guard let tokens = session.pendingTokens else {
                idle.append((a, session))
                continue
            }
            do {
                try model.validate(tokens, cache: session.cache)
                batch.append((a, session, BatchEntry(tokens: tokens, cache: session.cache, moe: a.view, logits: .last)))
                if session.prefillEnd == nil {
                    prompts += 1
                    promptTokens += tokens.count
                }
            } catch {
                end(a, with: .failed(APIError(status: 500, message: "generation failed: \(error)", type: "server_error")))
            }
        }
        // Kernels or sequences over the threads, whichever measured faster for this shape of
        // step (the same tokens either way); a batch that cannot be dealt evenly splits kernels.
        let tokenCounts = batch.map(\.entry.tokens.count)
        let dealt = BatchLanes.deal(tokenCounts: tokenCounts, lanes: model.pool.threadCount).count > 1
        let lanes = dealt ? split.lanes(sequences: batch.count, prompt: prompts > 0) : 1
        let start = DispatchTime.now().uptimeNanoseconds
        let pass = Result { try model.forward(batch: batch.map(\.entry), lanes: lanes) }
        let seconds = Self.seconds(since: start)
        if dealt {
            split.record(sequences: batch.count, prompt: prompts > 0, lanes: lanes, seconds: seconds,
                         tokens: tokenCounts.reduce(0, +))
        }

        // Sample every row; a failed pass fails every request in it.
        let sampleStart = DispatchTime.now().uptimeNanoseconds
        var work = batch.indices.map { i in (a: batch[i].a, session: batch[i].session, logits: pass.map { $0[i] }) }
        work += idle.map { (a: $0.a, session: $0.session, logits: .success([Float]())) }
        var steps = [Result<(GenerationSession.Step, TokenLogprob?), Error>?](repeating: nil, count: work.count)
        steps.withUnsafeMutableBufferPointer { steps in
            model.pool.forEachTask(work.count) { i in
                steps[i] = Result {
                    let step = try work[i].session.step(logits: try work[i].logits.get(), forwardSeconds: seconds)
                    let logprob = step.token.flatMap { token in
                        work[i].a.job.topLogprobs.map { Self.logprob(token: token, logits: step.logits, top: $0, tokenizer: tokenizer) }
                    }
                    return (step, logprob)
                }
            }
        }
        let sampling = Self.seconds(since: sampleStart)

        let emitStart = DispatchTime.now().uptimeNanoseconds
        var still: [Active] = []
        for (w, result) in zip(work, steps) {
            let a = w.a
            do {
                guard let result else { throw EngineFailure.notSampled }
                let (step, logprob) = try result.get()
                if step.token != nil || !step.text.isEmpty {
                    a.emit(.token(text: step.text, logprob: logprob))
                }
                if let reason = step.finishReason {
                    end(a, with: .finished(reason, promptTokens: a.job.promptIDs.count, completionTokens: w.session.output.count))
                } else {
                    still.append(a)
                }
            } catch {
                end(a, with: .failed(APIError(status: 500, message: "generation failed: \(error)", type: "server_error")))
            }
        }
        running = still
        let emitting = Self.seconds(since: emitStart)

        condition.lock()
        if !batch.isEmpty {
            snapshotValue.batchedSteps += 1
            snapshotValue.batchedSequences += batch.count
            snapshotValue.largestBatch = max(snapshotValue.largestBatch, batch.count)
            if lanes > 1 { snapshotValue.time.sequenceSplitSteps += 1 }
            if dealt && prompts == 0 { snapshotValue.time.splitMeasurements = split.measurements }
            if promptTokens > 0 {
                snapshotValue.time.promptSteps += 1
                snapshotValue.time.promptStepSeconds += seconds
                snapshotValue.time.prompts += prompts
                snapshotValue.time.promptTokens += promptTokens
                snapshotValue.time.promptStepDecodeRows += batch.count - prompts
            } else {
                snapshotValue.time.decodeSteps += 1
                snapshotValue.time.decodeStepSeconds += seconds
                snapshotValue.time.decodeRows += batch.count
            }
        }
        snapshotValue.time.samplingSeconds += sampling
        snapshotValue.time.emitSeconds += emitting
        condition.unlock()
    }

    /// A row `forEachTask` did not reach (it runs every index; this only guards the invariant).
    private enum EngineFailure: Error, CustomStringConvertible {
        case notSampled

        var description: String { "a running request was not sampled in its step" }
    }

    private static func seconds(since start: UInt64) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// Ends a request: releases what it holds and closes its events (with `event` last, if any).
    private func end(_ a: Active, with event: EngineEvent?) {
        if a.pinned {
            residency.release(experts: a.choice.experts, cacheBytes: a.cacheBytes)
            a.pinned = false
            a.session = nil
            a.view = [:]
        }
        if let event { a.emit(event) }
        a.start.finish()
        a.continuation.finish()
        condition.lock()
        inFlight -= 1
        condition.unlock()
    }

    private func publish() {
        let r = residency
        condition.lock()
        snapshotValue.running = running.count
        snapshotValue.queued = waiting.count + incoming.count
        snapshotValue.residentExperts = r.residentCount
        snapshotValue.accountedBytes = r.accountedBytes
        snapshotValue.peakAccountedBytes = r.peakAccountedBytes
        snapshotValue.expertHits = r.hits
        snapshotValue.expertMisses = r.misses
        snapshotValue.bytesLoaded = r.bytesLoaded
        snapshotValue.evictions = r.evictions
        let s = snapshotValue
        condition.unlock()
        metrics.residency(s)
    }

    /// Log-probabilities from the logits the token was sampled from (the model's distribution,
    /// before temperature and top-p, as OpenAI reports them).
    static func logprob(token: Int, logits: [Float], top: Int, tokenizer: Tokenizer) -> TokenLogprob {
        var maxLogit = -Float.infinity
        for v in logits where v > maxLogit { maxLogit = v }
        var sum: Double = 0
        for v in logits where !v.isNaN { sum += exp(Double(v - maxLogit)) }
        let logZ = Double(maxLogit) + log(sum)
        func entry(_ id: Int) -> TokenLogprob.Alternative {
            let text = tokenizer.decode([id])
            return .init(token: text, logprob: Float(Double(logits[id]) - logZ), bytes: Array(text.utf8))
        }
        // The `top` best in the shared ranking (larger first, ties to the lower id), NaN left out:
        // one selection pass instead of sorting the vocabulary every token.
        let best = top > 0 ? logits.withUnsafeBufferPointer { values in
            values.baseAddress.map { Kernels.topK($0, count: values.count, k: top) } ?? []
        }.filter { !logits[$0].isNaN } : []
        let chosen = entry(token)
        return TokenLogprob(token: chosen.token, logprob: chosen.logprob, bytes: chosen.bytes, top: best.map(entry))
    }
}
