import Dispatch
import Kernels

/// Wall time of the parts of forward passes, summed per label while attached to a model
/// (`DecoderModel.profiler`): attention, router, routed experts by weight type, shared expert,
/// dense MLP, output head. `premoe bench --profile` prints it per decode token.
///
/// Timing costs two clock reads per part per layer (well under 1% of a decode step); a model
/// without a profiler pays one nil check per part.
public final class ForwardProfiler {
    /// Seconds per label, summed over every pass since `reset()`.
    public private(set) var seconds: [String: Double] = [:]
    /// Labels in the order first seen (the order of a forward pass).
    public private(set) var labels: [String] = []

    public init() {}

    /// Forgets everything measured.
    public func reset() {
        seconds = [:]
        labels = []
    }

    /// Runs `body`, adding its wall time to `label`.
    @discardableResult
    public func measure<T>(_ label: String, _ body: () throws -> T) rethrows -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let result = try body()
        add(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9, to: label)
        return result
    }

    /// Adds `elapsed` seconds to `label`.
    public func add(_ elapsed: Double, to label: String) {
        if seconds[label] == nil { labels.append(label) }
        seconds[label, default: 0] += elapsed
    }
}

/// Times `body` under `label` when a profiler is attached, else just runs it.
@inline(__always)
func profiled<T>(_ profiler: ForwardProfiler?, _ label: @autoclosure () -> String, _ body: () throws -> T) rethrows -> T {
    guard let profiler else { return try body() }
    return try profiler.measure(label(), body)
}

extension GatedMLP {
    /// "Q4_K" when every projection has one type, else "gate/up Q4_K, down Q6_K" style.
    var typeLabel: String {
        let g = gate.weight.dtype.rawValue, u = up.weight.dtype.rawValue, d = down.weight.dtype.rawValue
        if g == u && u == d { return g }
        return g == u ? "gate/up \(g), down \(d)" : "gate \(g), up \(u), down \(d)"
    }
}
