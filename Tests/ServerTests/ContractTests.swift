import Foundation
import Testing
@testable import Server

/// One default server (the tiny fixture model, two stored tasks, no budget) shared by the contract tests.
actor SharedServer {
    static let instance = SharedServer()
    private var running: RunningServer?

    func get() async throws -> RunningServer {
        if let running { return running }
        let started = try await RunningServer.start()
        running = started
        return started
    }
}

private func shared() async throws -> RunningServer { try await SharedServer.instance.get() }

@Suite struct ContractTests {
    @Test func healthAndModels() async throws {
        let s = try await shared()
        let health = try await s.send(.GET, "/health")
        #expect(health.status == 200)
        #expect(health.json["status"] as? String == "ok")
        #expect((health.json["tasks"] as? [String])?.sorted() == ["boolq", "full", "generalist", "gsm8k"])
        let models = try await s.send(.GET, "/v1/models")
        #expect(models.status == 200)
        #expect(models.json["object"] as? String == "list")
        let data = try #require(models.json["data"] as? [[String: Any]])
        #expect(data.map { $0["id"] as? String } == [DemoStore.modelName])
    }

    @Test func chatCompletionNamesItsTaskAndCountsTokens() async throws {
        let s = try await shared()
        let reply = try await s.post("/v1/chat/completions", RunningServer.chat(
            "Tom has 3 apples and buys 4 more. How many apples does he have?", ["temperature": 0, "max_tokens": 6]))
        #expect(reply.status == 200, "\(reply.text)")
        #expect(reply.json["object"] as? String == "chat.completion")
        let message = try #require(((reply.json["choices"] as? [[String: Any]])?.first?["message"]) as? [String: Any])
        #expect(message["role"] as? String == "assistant")
        let usage = try #require(reply.usage)
        #expect(usage["prompt_tokens"]! > 0 && usage["completion_tokens"]! <= 6)
        #expect(usage["total_tokens"] == usage["prompt_tokens"]! + usage["completion_tokens"]!)
        #expect(reply.finishReason == "length" || reply.finishReason == "stop")
        let premoe = try #require(reply.json["premoe"] as? [String: Any])
        let header = try #require(reply.headers.first(name: "x-premoe-task"))
        #expect(premoe["task"] as? String == header)
        #expect(["retrieved", "fallback"].contains(premoe["decision"] as? String ?? ""))
    }

    @Test(arguments: ["max_tokens", "max_completion_tokens"])
    func tokenLimitIsHonoured(field: String) async throws {
        let s = try await shared()
        let reply = try await s.post("/v1/chat/completions", RunningServer.chat(
            "Write a long story about a dragon.", ["temperature": 0, field: 3, "premoe": ["task": "full"]]))
        #expect(reply.status == 200)
        let completion = try #require(reply.usage?["completion_tokens"])
        #expect(completion <= 3)
        #expect(reply.finishReason == "stop" || completion == 3)
    }

    @Test func streamWithUsageEqualsTheNonStreamedAnswer() async throws {
        let s = try await shared()
        let base = RunningServer.chat("Is the sky blue? Answer yes or no.", ["temperature": 0.9, "seed": 7, "max_tokens": 12])
        let whole = try await s.post("/v1/chat/completions", base)
        var streamed = base
        streamed["stream"] = true
        streamed["stream_options"] = ["include_usage": true]
        let stream = try await s.post("/v1/chat/completions", streamed)
        #expect(stream.status == 200)
        #expect(stream.headers.first(name: "content-type") == "text/event-stream")
        #expect(stream.text.hasSuffix("data: [DONE]\n\n"))
        let events = stream.events
        let first = try #require((events.first?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])
        #expect(first["role"] as? String == "assistant")
        #expect(stream.streamedText == whole.content)
        // The last chunk with a choice has the finish reason and the task; then usage with no choices.
        let withChoices = events.filter { !(($0["choices"] as? [Any]) ?? []).isEmpty }
        let last = try #require(withChoices.last)
        #expect((last["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String == whole.finishReason)
        #expect((last["premoe"] as? [String: Any])?["task"] as? String == stream.headers.first(name: "x-premoe-task"))
        let usageEvent = try #require(events.last)
        #expect((usageEvent["choices"] as? [Any])?.isEmpty == true)
        #expect(usageEvent["usage"] as? [String: Int] == whole.usage)
        #expect(withChoices.allSatisfy { $0["usage"] is NSNull })
    }

    @Test func stopStringCutsTheOutput() async throws {
        let s = try await shared()
        let body = RunningServer.chat("Count: one, two, three,", ["temperature": 0, "max_tokens": 16, "premoe": ["task": "full"]])
        let free = try #require(try await s.post("/v1/chat/completions", body).content)
        try #require(free.count >= 6, "the greedy answer is too short to cut: '\(free)'")
        let stop = String(free.dropFirst(3).prefix(2))
        var stopped = body
        stopped["stop"] = [stop]
        let reply = try await s.post("/v1/chat/completions", stopped)
        let cut = try #require(reply.content)
        #expect(cut == String(free[..<free.range(of: stop)!.lowerBound]))
        #expect(reply.finishReason == "stop")
    }

    @Test func seedMakesSamplingReproducible() async throws {
        let s = try await shared()
        let body = RunningServer.chat("Tell me about rivers.", ["temperature": 1.0, "top_p": 0.9, "seed": 1234, "max_tokens": 10])
        let a = try await s.post("/v1/chat/completions", body)
        let b = try await s.post("/v1/chat/completions", body)
        #expect(a.status == 200)
        #expect(a.content == b.content)
    }

    @Test func logprobsListEverySampledToken() async throws {
        let s = try await shared()
        let reply = try await s.post("/v1/chat/completions", RunningServer.chat(
            "Is water wet?", ["temperature": 0, "max_tokens": 5, "logprobs": true, "top_logprobs": 2]))
        #expect(reply.status == 200)
        let choice = try #require((reply.json["choices"] as? [[String: Any]])?.first)
        let content = try #require((choice["logprobs"] as? [String: Any])?["content"] as? [[String: Any]])
        #expect(content.count == reply.usage?["completion_tokens"])
        for entry in content {
            let logprob = try #require(entry["logprob"] as? Double)
            let top = try #require(entry["top_logprobs"] as? [[String: Any]])
            #expect(top.count == 2)
            #expect(logprob <= 0)
            // Greedy: the sampled token is the most likely one.
            #expect(abs((top[0]["logprob"] as? Double ?? 1) - logprob) < 1e-6)
        }
    }

    @Test func forcedTaskIsReported() async throws {
        let s = try await shared()
        for task in ["full", "gsm8k", "generalist"] {
            let reply = try await s.post("/v1/chat/completions", RunningServer.chat("hi", ["max_tokens": 1, "premoe": ["task": task]]))
            #expect(reply.headers.first(name: "x-premoe-task") == task)
            #expect((reply.json["premoe"] as? [String: Any])?["decision"] as? String == "forced")
        }
        let unknown = try await s.post("/v1/chat/completions", RunningServer.chat("hi", ["premoe": ["task": "nope"]]))
        #expect(unknown.status == 400)
        #expect(unknown.errorParam == "premoe.task")
    }

    @Test func textCompletionsStreamAndEcho() async throws {
        let s = try await shared()
        let body: [String: Any] = ["model": DemoStore.modelName, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0]
        let whole = try await s.post("/v1/completions", body)
        #expect(whole.status == 200)
        #expect(whole.json["object"] as? String == "text_completion")
        let text = try #require((whole.json["choices"] as? [[String: Any]])?.first?["text"] as? String)
        var streamed = body
        streamed["stream"] = true
        #expect(try await s.post("/v1/completions", streamed).streamedText == text)
        var echoed = body
        echoed["echo"] = true
        let echo = try await s.post("/v1/completions", echoed)
        #expect((echo.json["choices"] as? [[String: Any]])?.first?["text"] as? String == "The capital of France is" + text)
        let ids = try await s.post("/v1/completions", ["prompt": [1, 2, 3], "max_tokens": 2])
        #expect(ids.status == 200)
    }

    @Test func metricsExposePrometheusText() async throws {
        let s = try await shared()
        _ = try await s.post("/v1/chat/completions", RunningServer.chat("hello", ["max_tokens": 2]))
        let metrics = try await s.send(.GET, "/metrics")
        #expect(metrics.status == 200)
        for name in ["premoe_requests_total", "premoe_prompt_tokens_total", "premoe_completion_tokens_total",
                     "premoe_time_to_first_token_seconds_bucket", "premoe_inter_token_latency_seconds",
                     "premoe_experts_resident", "premoe_expert_bytes_loaded_total", "premoe_retrieval_decisions_total",
                     "premoe_accounted_bytes"] {
            #expect(metrics.text.contains(name), "\(name) missing")
        }
    }

    /// Every refused input gets a 400 in OpenAI's error shape naming the field.
    @Test(arguments: [
        (#"{"messages": [{"role": "user", "content": "hi"}], "foo": 1}"#, "foo"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "n": 2}"#, "n"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 3}"#, "temperature"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#, "temperature"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}"#, "top_p"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}"#, "max_tokens"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}"#, "max_tokens"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}"#, "seed"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "stop": [1]}"#, "stop"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "stop": ["a","b","c","d","e"]}"#, "stop"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}"#, "top_logprobs"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": true}}"#, "stream_options"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"x": 1}}"#, "stream_options.x"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 0.5}"#, "presence_penalty"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "tools": []}"#, "tools"),
        (#"{"messages": [{"role": "user", "content": "hi", "name": "x"}]}"#, "messages[0].name"),
        (#"{"messages": [{"role": "tool", "content": "hi"}]}"#, "messages[0].role"),
        (#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#, "messages[0].content[0].type"),
        (#"{"messages": "hi"}"#, "messages"),
        (#"{"messages": []}"#, "messages"),
        (#"{}"#, "messages"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "model": 3}"#, "model"),
        (#"{"messages": [{"role": "user", "content": "hi"}], "premoe": 3}"#, "premoe"),
    ])
    func badFieldIsRefusedByName(body: String, param: String) async throws {
        let s = try await shared()
        let reply = try await s.send(.POST, "/v1/chat/completions", body: Data(body.utf8))
        #expect(reply.status == 400, "\(reply.text)")
        let error = try #require(reply.json["error"] as? [String: Any])
        #expect(error["param"] as? String == param, "\(reply.text)")
        #expect(error["type"] as? String == "invalid_request_error")
        #expect(error["message"] is String && error.keys.contains("code"))
    }

    @Test(arguments: ["{", "[1, 2]", #"{"messages": [{"role": "user", "content": "a"}], "messages": []}"#, "nul", ""])
    func malformedJSONIsA400(body: String) async throws {
        let s = try await shared()
        let reply = try await s.send(.POST, "/v1/chat/completions", body: Data(body.utf8))
        #expect(reply.status == 400)
        #expect((reply.json["error"] as? [String: Any])?["type"] as? String == "invalid_request_error")
    }

    @Test func unknownModelIs404() async throws {
        let s = try await shared()
        var body = RunningServer.chat("hi")
        body["model"] = "gpt-4"
        let reply = try await s.post("/v1/chat/completions", body)
        #expect(reply.status == 404)
        #expect(reply.errorParam == "model")
    }

    @Test func promptOverTheLimitNamesTheLimit() async throws {
        let s = try await shared()
        let reply = try await s.post("/v1/chat/completions", RunningServer.chat(String(repeating: "apple banana ", count: 300)))
        #expect(reply.status == 400)
        let message = try #require((reply.json["error"] as? [String: Any])?["message"] as? String)
        #expect(message.contains("limit is 200"))
        #expect(reply.errorParam == "messages")
    }

    @Test func oversizedBodyIs413AndTheServerGoesOn() async throws {
        let s = try await shared()
        let big = Data(#"{"messages": [{"role": "user", "content": ""#.utf8) + Data(repeating: 0x61, count: 2 << 20)
            + Data(#""}]}"#.utf8)
        let reply = try? await s.send(.POST, "/v1/chat/completions", body: big)
        if let reply { #expect(reply.status == 413) }  // or the server closed the connection mid-upload
        #expect(try await s.send(.GET, "/health").status == 200)
    }
}
