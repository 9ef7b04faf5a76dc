import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PreMoe
import Runtime
import Tokenization

/// Hummingbird's basic context plus the connection, so a request can be cancelled when its
/// client goes away (the channel's close future) without reading the connection's next bytes.
struct ServerRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

extension PreMoeServer {
    static let taskHeader = HTTPField.Name("x-premoe-task")!

    /// Registers the endpoints.
    func routes(_ router: Router<ServerRequestContext>) {
        router.get("/health") { _, _ in self.health() }
        router.get("/metrics") { request, _ in
            self.answer(route: "metrics") {
                try self.authorize(request)
                var headers = HTTPFields()
                headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: self.metrics.render())))
            }
        }
        router.get("/v1/models") { request, _ in
            self.answer(route: "models") {
                try self.authorize(request)
                let entry: [String: Any] = ["id": self.modelName, "object": "model", "created": 0, "owned_by": "premoe",
                                            "premoe": ["tasks": self.taskNames]]
                return Self.json(["object": "list", "data": [entry]])
            }
        }
        router.post("/v1/chat/completions") { request, context in await self.completion(request, context, kind: .chat) }
        router.post("/v1/completions") { request, context in await self.completion(request, context, kind: .text) }
    }

    /// Runs `body`, answering an `APIError` in OpenAI's shape, and counts the answer.
    private func answer(route: String, _ body: () throws -> Response) -> Response {
        let response: Response
        do {
            response = try body()
        } catch let error as APIError {
            response = Self.errorResponse(error)
        } catch {
            response = Self.errorResponse(APIError(status: 500, message: "\(error)", type: "server_error"))
        }
        metrics.request(route: route, status: Int(response.status.code))
        return response
    }

    private func health() -> Response {
        let s = engine.snapshot
        let body: [String: Any] = [
            "status": s.accepting ? "ok" : "draining", "model": modelName, "running": s.running, "queued": s.queued,
            "experts_resident": s.residentExperts, "accounted_bytes": s.accountedBytes,
            "peak_accounted_bytes": s.peakAccountedBytes, "budget_bytes": s.budgetBytes ?? NSNull(),
            "expert_cache_hits": s.expertHits, "expert_cache_misses": s.expertMisses, "expert_bytes_loaded": s.bytesLoaded,
            "evictions": s.evictions, "batched_steps": s.batchedSteps, "batched_sequences": s.batchedSequences,
            "largest_batch": s.largestBatch, "resident_set_bytes": ProcessMemory.residentBytes ?? NSNull(), "tasks": taskNames,
            "engine_time": [
                "prompt_steps": s.time.promptSteps, "prompt_step_seconds": s.time.promptStepSeconds,
                "prompts": s.time.prompts, "prompt_tokens": s.time.promptTokens, "prompt_step_decode_rows": s.time.promptStepDecodeRows,
                "decode_steps": s.time.decodeSteps, "decode_step_seconds": s.time.decodeStepSeconds,
                "decode_rows": s.time.decodeRows, "sampling_seconds": s.time.samplingSeconds,
                "emit_seconds": s.time.emitSeconds, "admission_seconds": s.time.admissionSeconds,
                "retrieval_seconds": s.time.retrievalSeconds,
                "sequence_split_steps": s.time.sequenceSplitSteps,
                "split_ms_per_token": Dictionary(uniqueKeysWithValues: s.time.splitMeasurements.map { count, m in
                    (String(count), ["kernels": m.kernels, "sequences": m.sequences, "samples": m.samples] as [String: Any])
                }),
            ] as [String: Any],
        ]
        return Self.json(body, status: s.accepting ? .ok : .serviceUnavailable)
    }

    /// Checks `Authorization: Bearer KEY` when a key is set, in time that depends only on the
    /// key's length.
    func authorize(_ request: Request) throws {
        guard let key = configuration.apiKey else { return }
        let header = request.headers[.authorization] ?? ""
        let given = header.hasPrefix("Bearer ") ? Array(header.utf8.dropFirst(7)) : []
        guard Self.constantTimeEquals(given, Array(key.utf8)) else {
            metrics.rejected("unauthorized")
            throw APIError(status: 401, message: "missing or wrong API key (Authorization: Bearer KEY)",
                           type: "authentication_error", code: "invalid_api_key")
        }
    }

    /// Compares without an early exit: every byte of `expected` is looked at whatever `given` is.
    static func constantTimeEquals(_ given: [UInt8], _ expected: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: given.count ^ expected.count) | (given.count == expected.count ? 0 : 1)
        for i in expected.indices {
            difference |= (i < given.count ? given[i] : 0) ^ expected[i]
        }
        return difference == 0 && !expected.isEmpty
    }

    static func json(_ object: [String: Any], status: HTTPResponse.Status = .ok, headers extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: APIResponses.encode(object))))
    }

    static func errorResponse(_ error: APIError) -> Response {
        var headers = HTTPFields()
        if let retry = error.retryAfter { headers[.retryAfter] = String(retry) }
        return json(error.body, status: HTTPResponse.Status(code: error.status), headers: headers)
    }

    // MARK: Completions

    private func completion(_ request: Request, _ context: ServerRequestContext, kind: CompletionRequest.Kind) async -> Response {
        let route = kind == .chat ? "chat_completions" : "completions"
        let arrival = Date()
        do {
            try authorize(request)
            let body: ByteBuffer
            do {
                body = try await request.body.collect(upTo: configuration.maxBodyBytes)
            } catch {
                metrics.rejected("too_large")
                throw APIError(status: 413, message: "the request body is over \(configuration.maxBodyBytes) bytes (--max-body-bytes)",
                               type: "invalid_request_error", code: "request_too_large")
            }
            let parsed: CompletionRequest
            do {
                parsed = try RequestParser.parse(Data(body.readableBytesView), kind: kind, tasks: taskNames)
            } catch let error as APIError {
                metrics.rejected("invalid")
                throw error
            }
            if let model = parsed.model, model != modelName {
                throw APIError(status: 404, message: "model '\(model)' is not served here; this server serves '\(modelName)'",
                               type: "invalid_request_error", param: "model", code: "model_not_found")
            }
            let job = try makeJob(parsed)
            let submission = try engine.submit(job)
            // A client that goes away (queued, or generating) cancels its request; cancelling a
            // finished one does nothing.
            context.channel.closeFuture.whenComplete { [engine] _ in engine.cancel(submission.id) }
            var starts = submission.start.makeAsyncIterator()
            let first = await starts.next()
            guard case .started(let choice, _) = first else {
                if case .failed(let error) = first { throw error }
                throw APIError(status: 499, message: "the client closed the connection", type: "server_error")
            }
            let reply = Reply(server: self, request: parsed, choice: choice, promptTokens: job.promptIDs.count, arrival: arrival,
                              submission: submission)
            var headers = HTTPFields()
            headers[Self.taskHeader] = choice.task
            if parsed.stream {
                headers[.contentType] = "text/event-stream"
                headers[.cacheControl] = "no-cache"
                metrics.request(route: route, status: 200)
                return Response(status: .ok, headers: headers, body: ResponseBody { writer in try await reply.stream(&writer) })
            }
            let object = try await reply.collect()
            metrics.request(route: route, status: 200)
            return Self.json(object, headers: headers)
        } catch let error as APIError {
            metrics.request(route: route, status: error.status)
            return Self.errorResponse(error)
        } catch {
            metrics.request(route: route, status: 500)
            return Self.errorResponse(APIError(status: 500, message: "\(error)", type: "server_error"))
        }
    }

    /// Renders and tokenises the prompt and checks its length.
    private func makeJob(_ r: CompletionRequest) throws -> GenerationJob {
        var ids: [Int]
        let param = r.kind == .chat ? "messages" : "prompt"
        switch r.kind {
        case .chat:
            guard let template = tokenizer.chatTemplate else {
                throw APIError.invalid("this model has no chat template; use /v1/completions", param: "messages")
            }
            ids = tokenizer.encode(template.format(r.messages))
        case .text:
            if let given = r.promptIDs {
                if let bad = given.first(where: { $0 < 0 || $0 >= spec.vocabularySize }) {
                    throw APIError.invalid("'prompt' token id \(bad) is outside 0..<\(spec.vocabularySize)", param: "prompt")
                }
                ids = given
            } else {
                ids = tokenizer.encode(r.prompt ?? "")
            }
        }
        guard !ids.isEmpty else { throw APIError.invalid("the prompt is empty", param: param) }
        let limit = min(configuration.maxPromptTokens ?? spec.maxPositions, spec.maxPositions)
        guard ids.count <= limit else {
            throw APIError.invalid("the prompt has \(ids.count) tokens; the limit is \(limit)", param: param,
                                   code: "context_length_exceeded")
        }
        // A text completion may arrive already wrapped in the model's chat template: retrieval
        // reads the user's content out of it, as `retrieve` and `run` do.
        let query = r.query.map { tokenizer.encode(TaskQueries.retrievalText($0, chatTemplate: tokenizer.chatTemplate)) }
        let maxTokens = Generator.maxNewTokens(promptCount: ids.count, maxTokens: r.maxTokens ?? spec.maxPositions,
                                               maxPositions: spec.maxPositions)
        let parameters = GenerationParameters(maxTokens: maxTokens, temperature: r.temperature, topP: r.topP,
                                              seed: r.seed ?? UInt64.random(in: 0...UInt64.max), stop: r.stop,
                                              stopAtEOS: !r.ignoreEOS, eosTokenIDs: eosTokenIDs)
        return GenerationJob(promptIDs: ids, queryIDs: query, forcedTask: r.forcedTask, parameters: parameters,
                             topLogprobs: r.topLogprobs)
    }
}

/// One started completion: turns engine events into an OpenAI body or SSE chunks.
private struct Reply: Sendable {
    let server: PreMoeServer
    let request: CompletionRequest
    let choice: TaskChoice
    let promptTokens: Int
    let arrival: Date
    let submission: Engine.Submission
    let id: String
    let created = Int(Date().timeIntervalSince1970)

    init(server: PreMoeServer, request: CompletionRequest, choice: TaskChoice, promptTokens: Int, arrival: Date,
         submission: Engine.Submission) {
        self.server = server
        self.request = request
        self.choice = choice
        self.promptTokens = promptTokens
        self.arrival = arrival
        self.submission = submission
        id = (request.kind == .chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.lowercased()
    }

    private var object: String { request.kind == .chat ? "chat.completion" : "text_completion" }

    /// Times the tokens for /metrics.
    private final class Clock: @unchecked Sendable {
        var last: Date?
        func tick(_ metrics: ServerMetrics, arrival: Date) {
            let now = Date()
            if let last { metrics.interToken(now.timeIntervalSince(last)) } else { metrics.firstToken(after: now.timeIntervalSince(arrival)) }
            last = now
        }
    }

    /// Waits for the whole completion (cancelled if the client goes away).
    func collect() async throws -> [String: Any] {
        var text = request.echo ? request.prompt ?? "" : ""
        var logprobs: [TokenLogprob] = []
        var finish = FinishReason.length
        var completion = 0
        let clock = Clock()
        for await event in submission.events {
            switch event {
            case .token(let piece, let logprob):
                text += piece
                clock.tick(server.metrics, arrival: arrival)
                if let logprob { logprobs.append(logprob) }
            case .finished(let reason, _, let completionTokens):
                finish = reason
                completion = completionTokens
            case .failed(let error):
                throw error
            case .started:
                continue
            }
        }
        server.metrics.tokens(prompt: promptTokens, completion: completion)
        var choiceBody: [String: Any] = ["index": 0, "finish_reason": APIResponses.finishReason(finish)]
        switch request.kind {
        case .chat:
            choiceBody["message"] = ["role": "assistant", "content": text]
            choiceBody["logprobs"] = request.topLogprobs == nil ? NSNull() : APIResponses.chatLogprobs(logprobs)
        case .text:
            choiceBody["text"] = text
            choiceBody["logprobs"] = request.topLogprobs == nil ? NSNull() : APIResponses.textLogprobs(logprobs, offset: 0)
        }
        return ["id": id, "object": object, "created": created, "model": server.modelName, "choices": [choiceBody],
                "usage": APIResponses.usage(prompt: promptTokens, completion: completion),
                "premoe": APIResponses.premoe(choice)]
    }

    /// A chunk with one choice (and `usage: null` when usage comes at the end).
    private func chunk(_ choiceBody: [String: Any], extra: [String: Any] = [:]) -> Data {
        var body: [String: Any] = ["id": id, "object": request.kind == .chat ? "chat.completion.chunk" : "text_completion",
                                   "created": created, "model": server.modelName, "choices": [choiceBody]]
        if request.includeUsage { body["usage"] = NSNull() }
        for (k, v) in extra { body[k] = v }
        return APIResponses.event(body)
    }

    private func piece(_ text: String, logprob: TokenLogprob?, offset: Int, finish: String?) -> [String: Any] {
        var body: [String: Any] = ["index": 0, "finish_reason": finish ?? NSNull()]
        switch request.kind {
        case .chat:
            body["delta"] = finish == nil ? ["content": text] : [String: Any]()
            body["logprobs"] = logprob.map { APIResponses.chatLogprobs([$0]) } ?? NSNull()
        case .text:
            body["text"] = text
            body["logprobs"] = logprob.map { APIResponses.textLogprobs([$0], offset: offset) } ?? NSNull()
        }
        return body
    }

    /// Writes the SSE stream; a failed write (client gone) cancels the request.
    func stream(_ writer: inout any ResponseBodyWriter) async throws {
        let metrics = server.metrics
        let clock = Clock()
        var completion = 0
        var offset = 0
        do {
            if request.kind == .chat {
                var first = piece("", logprob: nil, offset: 0, finish: nil)
                first["delta"] = ["role": "assistant", "content": ""]
                try await writer.write(ByteBuffer(bytes: chunk(first)))
            } else if request.echo, let prompt = request.prompt {
                try await writer.write(ByteBuffer(bytes: chunk(piece(prompt, logprob: nil, offset: 0, finish: nil))))
                offset = prompt.count
            }
            for await event in submission.events {
                switch event {
                case .token(let text, let logprob):
                    clock.tick(metrics, arrival: arrival)
                    if text.isEmpty && logprob == nil { continue }
                    try await writer.write(ByteBuffer(bytes: chunk(piece(text, logprob: logprob, offset: offset, finish: nil))))
                    offset += text.count
                case .finished(let reason, _, let completionTokens):
                    completion = completionTokens
                    metrics.tokens(prompt: promptTokens, completion: completionTokens)
                    let last = piece("", logprob: nil, offset: offset, finish: APIResponses.finishReason(reason))
                    try await writer.write(ByteBuffer(bytes: chunk(last, extra: ["premoe": APIResponses.premoe(choice)])))
                case .failed(let error):
                    try await writer.write(ByteBuffer(bytes: APIResponses.event(error.body)))
                case .started:
                    continue
                }
            }
            if request.includeUsage {
                var body: [String: Any] = ["id": id, "object": request.kind == .chat ? "chat.completion.chunk" : "text_completion",
                                           "created": created, "model": server.modelName, "choices": [Any]()]
                body["usage"] = APIResponses.usage(prompt: promptTokens, completion: completion)
                try await writer.write(ByteBuffer(bytes: APIResponses.event(body)))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        } catch {
            server.engine.cancel(submission.id)
            throw error
        }
    }
}
