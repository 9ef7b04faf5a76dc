import Foundation
import Prometheus
import Runtime

/// The server's Prometheus metrics (text exposition at `GET /metrics`): requests, tokens in and
/// out, time to first token and per-token latency, experts resident, bytes loaded, retrieval
/// decisions by task, rejections. One registry per server, so tests can run several.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let promptTokens: Counter
    private let completionTokens: Counter
    private let timeToFirstToken: ValueHistogram
    private let perToken: ValueHistogram
    private let residentExperts: Gauge
    private let accountedBytes: Gauge
    private let budgetBytes: Gauge
    private let residentSetBytes: Gauge
    private let bytesLoaded: Counter
    private let expertHits: Counter
    private let expertMisses: Counter
    private let cancellations: Counter
    private let running: Gauge
    private let queued: Gauge

    private static let latencyBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

    /// swift-prometheus's descriptor for a metric named whole (no namespace or unit split off).
    private static func named(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    init() {
        promptTokens = registry.makeCounter(descriptor: Self.named("premoe_prompt_tokens_total",
            "Prompt tokens of admitted requests."))
        completionTokens = registry.makeCounter(descriptor: Self.named("premoe_completion_tokens_total",
            "Tokens generated."))
        timeToFirstToken = registry.makeValueHistogram(descriptor: Self.named("premoe_time_to_first_token_seconds",
            "From the request's arrival to its first generated token."), buckets: Self.latencyBuckets)
        perToken = registry.makeValueHistogram(descriptor: Self.named("premoe_inter_token_latency_seconds",
            "Between consecutive generated tokens of one request."), buckets: Self.latencyBuckets)
        residentExperts = registry.makeGauge(descriptor: Self.named("premoe_experts_resident",
            "Routed experts held in memory."))
        accountedBytes = registry.makeGauge(descriptor: Self.named("premoe_accounted_bytes",
            "Backbone + resident experts + reserved KV caches (never above the budget)."))
        budgetBytes = registry.makeGauge(descriptor: Self.named("premoe_budget_bytes", "--budget (0: none)."))
        residentSetBytes = registry.makeGauge(descriptor: Self.named("premoe_process_resident_bytes",
            "The process's RSS (VmRSS)."))
        bytesLoaded = registry.makeCounter(descriptor: Self.named("premoe_expert_bytes_loaded_total",
            "Expert bytes read (delta loads)."))
        expertHits = registry.makeCounter(descriptor: Self.named("premoe_expert_cache_hits_total",
            "Experts a request needed that were resident."))
        expertMisses = registry.makeCounter(descriptor: Self.named("premoe_expert_cache_misses_total",
            "Experts a request needed that had to be loaded."))
        cancellations = registry.makeCounter(descriptor: Self.named("premoe_requests_cancelled_total",
            "Requests whose client went away."))
        running = registry.makeGauge(descriptor: Self.named("premoe_requests_running", "Requests generating now."))
        queued = registry.makeGauge(descriptor: Self.named("premoe_requests_queued",
            "Requests waiting for a slot or memory."))
    }

    /// Counts a finished HTTP request by route and status.
    func request(route: String, status: Int) {
        registry.makeCounter(descriptor: Self.named("premoe_requests_total", "HTTP requests answered."),
                             labels: [("route", route), ("status", String(status))]).increment()
    }

    /// Counts a refused request by reason (`queue_full`, `over_budget`, `unauthorized`, `invalid`, `too_large`).
    func rejected(_ reason: String) {
        registry.makeCounter(descriptor: Self.named("premoe_rejections_total", "Requests refused."),
                             labels: [("reason", reason)]).increment()
    }

    /// Counts a retrieval decision.
    func decision(task: String, decision: String) {
        registry.makeCounter(descriptor: Self.named("premoe_retrieval_decisions_total",
                                                    "Task chosen per request (retrieved, forced or fallback)."),
                             labels: [("task", task), ("decision", decision)]).increment()
    }

    func tokens(prompt: Int, completion: Int) {
        promptTokens.increment(by: Int64(prompt))
        completionTokens.increment(by: Int64(completion))
    }

    func firstToken(after seconds: Double) { timeToFirstToken.record(seconds) }
    func interToken(_ seconds: Double) { perToken.record(seconds) }
    func cancelled() { cancellations.increment() }

    func experts(hits: Int, misses: Int, bytesLoaded bytes: Int) {
        expertHits.increment(by: Int64(hits))
        expertMisses.increment(by: Int64(misses))
        bytesLoaded.increment(by: Int64(bytes))
    }

    /// Copies the engine's residency figures into the gauges.
    func residency(_ s: EngineSnapshot) {
        residentExperts.set(Int64(s.residentExperts))
        accountedBytes.set(Int64(s.accountedBytes))
        budgetBytes.set(Int64(s.budgetBytes ?? 0))
        running.set(Int64(s.running))
        queued.set(Int64(s.queued))
    }

    /// The exposition text (RSS sampled now).
    func render() -> String {
        if let rss = ProcessMemory.residentBytes { residentSetBytes.set(Int64(rss)) }
        return registry.emitToString()
    }
}
