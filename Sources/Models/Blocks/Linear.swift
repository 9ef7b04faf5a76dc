import Foundation
import Kernels

/// A linear layer `y = x Wᵀ + b` computed straight from the stored weight (any dtype).
public struct Linear: @unchecked Sendable {
    /// `[out, in]`, row-major.
    public let weight: Tensor
    /// Optional bias `[out]`, widened to f32 at load time (it is small).
    public let bias: [Float]?

    public init(weight: Tensor, bias: [Float]? = nil) {
        self.weight = weight
        self.bias = bias
    }

    public var outFeatures: Int { weight.shape[0] }
    public var inFeatures: Int { weight.shape[1] }

    /// This projection restricted to output rows `indices`, in that order: weight rows and bias
    /// entries together (a router sliced to the kept experts). Itself when `indices` is every row.
    public func rows(_ indices: [Int]) -> Linear {
        if indices == Array(0..<outFeatures) { return self }
        return Linear(weight: gatherRows(weight, indices), bias: bias?.indexed(indices))
    }

    /// `y[t, :] = W x[t, :] + b` for `tokens` rows.
    /// - Parameters:
    ///   - x: `[tokens, in]`.
    ///   - y: `[tokens, out]`, overwritten.
    func apply(_ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        matmul(x, tokens: tokens, weight: weight, into: y, pool: pool)
        addBias(to: y, tokens: tokens)
    }

    /// Adds the bias, if any, to `tokens` output rows.
    private func addBias(to y: UnsafeMutablePointer<Float>, tokens: Int) {
        guard let bias else { return }
        let n = outFeatures
        bias.withUnsafeBufferPointer { b in
            for t in 0..<tokens {
                let row = y + t * n
                for o in 0..<n { row[o] += b[o] }
            }
        }
    }
}

extension Linear {
    /// `ys[i] = layers[i](x)` for layers reading the same `x` (q, k and v): one hand-off to the
    /// pool for all of them where the kernels allow it (`matmulGroup`), the same results as one
    /// `apply` per layer.
    static func apply(_ layers: [Linear], _ x: UnsafePointer<Float>, tokens: Int, into ys: [UnsafeMutablePointer<Float>],
                      pool: ThreadPool) {
        matmulGroup(x, tokens: tokens, weights: layers.map(\.weight), into: ys, pool: pool)
        for (layer, y) in zip(layers, ys) { layer.addBias(to: y, tokens: tokens) }
    }
}

/// How a gated MLP combines its gate and up projections.
public enum GatedActivation: Sendable, Equatable {
    /// `silu(gate) ⊙ up` (SwiGLU).
    case silu
    /// gpt-oss's clamped SwiGLU (`GptOssExperts._apply_gate`): `gate = min(gate, limit)`,
    /// `up = clamp(up, -limit, limit)`, `(up + 1) ⊙ gate ⊙ sigmoid(alpha · gate)`.
    case clampedSwiGLU(alpha: Float, limit: Float)
}

/// A SwiGLU feed-forward: `down(silu(gate(x)) ⊙ up(x))`. Used for dense layers, routed experts
/// and shared experts alike.
public struct GatedMLP: @unchecked Sendable {
    public let gate: Linear
    public let up: Linear
    public let down: Linear
    /// How gate and up combine (SwiGLU unless the family says otherwise).
    public let activation: GatedActivation

    public init(gate: Linear, up: Linear, down: Linear, activation: GatedActivation = .silu) {
        self.gate = gate
        self.up = up
        self.down = down
        self.activation = activation
    }

    public var intermediateSize: Int { gate.outFeatures }

    /// Bytes of weight storage.
    public var byteCount: Int { weights.reduce(0) { $0 + $1.byteCount } }

    /// The three projection weights.
    public var weights: [Tensor] { [gate.weight, up.weight, down.weight] }

    /// Floats of the projections' biases (gpt-oss's experts; 0 for most families).
    public var biasCount: Int { [gate, up, down].reduce(0) { $0 + ($1.bias?.count ?? 0) } }

    /// `y = MLP(x)` for `tokens` rows; `scratch` must hold `2 · tokens · intermediateSize` floats.
    /// On return its first `tokens · intermediateSize` floats hold down_proj's input (observers
    /// read it there).
    func apply(
        _ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>,
        scratch: UnsafeMutablePointer<Float>, pool: ThreadPool
    ) {
        let inner = tokens * intermediateSize
        let g = scratch
        let u = scratch + inner
        if gate.bias == nil && up.bias == nil {
            // One pass over x for both projections (decode streams the two weights together).
            matmulPair(x, tokens: tokens, first: gate.weight, second: up.weight, into: g, u, pool: pool)
        } else {
            gate.apply(x, tokens: tokens, into: g, pool: pool)
            up.apply(x, tokens: tokens, into: u, pool: pool)
        }
        switch activation {
        case .silu:
            siluMul(g, u, into: g, count: inner)
        case .clampedSwiGLU(let alpha, let limit):
            for i in 0..<inner {
                let gi = min(g[i], limit)
                let ui = min(max(u[i], -limit), limit)
                g[i] = (ui + 1) * (gi / (1 + Foundation.exp(-alpha * gi)))
            }
        }
        down.apply(g, tokens: tokens, into: y, pool: pool)
    }
}
