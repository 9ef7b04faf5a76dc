import Dispatch

/// Micro-benchmarks for `premoe bench` and manual tuning. Never called from unit tests.
public enum KernelBenchmark {
    /// One decode-style matmul (`tokens: 1`) over a random `[rows, cols]` weight.
    /// - Returns: seconds per call (best of `iterations` after one warm-up) and the weight bytes
    ///   streamed per second.
    public static func gemv(rows: Int, cols: Int, dtype: DType, threads: Int, iterations: Int = 20)
        -> (secondsPerCall: Double, gbPerSecond: Double)
    {
        let r = matmulTiming(tokens: 1, rows: rows, cols: cols, dtype: dtype, threads: threads, iterations: iterations)
        return (r.secondsPerCall, Double(rows * cols * dtype.byteSize) / r.secondsPerCall / 1e9)
    }

    /// One prefill-style matmul over `tokens` tokens.
    /// - Returns: seconds per call (best of `iterations`) and GFLOP/s (2 · tokens · rows · cols).
    public static func prefill(tokens: Int, rows: Int, cols: Int, dtype: DType, threads: Int, iterations: Int = 5)
        -> (secondsPerCall: Double, gflops: Double)
    {
        let r = matmulTiming(tokens: tokens, rows: rows, cols: cols, dtype: dtype, threads: threads, iterations: iterations)
        return (r.secondsPerCall, 2 * Double(tokens * rows * cols) / r.secondsPerCall / 1e9)
    }

    /// Cost of one `parallelFor` with trivial work on a pool of `threads` (the per-kernel
    /// hand-off overhead that decode pays hundreds of times per token).
    public static func parallelForOverhead(threads: Int, persistentWorkers: Bool = false, iterations: Int = 10_000) -> Double {
        let pool = ThreadPool(threads: threads, persistentWorkers: persistentWorkers)
        let sink = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        defer { sink.deallocate() }
        sink.initialize(repeating: 0, count: 64)
        for _ in 0..<100 { pool.parallelFor(threads) { r in sink[r.lowerBound * 16] &+= 1 } }
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<iterations { pool.parallelFor(threads) { r in sink[r.lowerBound * 16] &+= 1 } }
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 / Double(iterations)
    }

    /// A decode-like stream of `calls` back-to-back bf16 GEMVs over `copies` distinct
    /// `[rows, cols]` weights: what the pool's hand-off cost matters for. Returns microseconds
    /// per call (best of 3 passes).
    public static func decodeSequence(
        rows: Int, cols: Int, calls: Int = 400, copies: Int = 16, threads: Int, persistentWorkers: Bool = false
    ) -> Double {
        let values = [Float](repeating: 0.25, count: rows * cols)
        let weights = (0..<max(1, copies)).map { _ in Tensor.owned(values, shape: [rows, cols], dtype: .bfloat16) }
        let x = [Float](repeating: 0.5, count: cols)
        var y = [Float](repeating: 0, count: rows)
        let pool = ThreadPool(threads: threads, persistentWorkers: persistentWorkers)
        var best = Double.infinity
        y.withUnsafeMutableBufferPointer { y in
            for w in weights { matmul(x, tokens: 1, weight: w, into: y.baseAddress!, pool: pool) }
            for _ in 0..<3 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                for c in 0..<calls { matmul(x, tokens: 1, weight: weights[c % weights.count], into: y.baseAddress!, pool: pool) }
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3 / Double(max(1, calls)))
            }
        }
        return best
    }

    /// Weights are cycled through enough copies to exceed the last-level cache (decode streams
    /// far more weight bytes per token than any cache holds), unless one copy is already large.
    static func matmulTiming(tokens: Int, rows: Int, cols: Int, dtype: DType, threads: Int, iterations: Int)
        -> (secondsPerCall: Double, Void)
    {
        var state: UInt32 = 0x1234_5678
        func next() -> Float {
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(Int32(bitPattern: state) >> 8) / Float(1 << 23)
        }
        let bytes = rows * cols * dtype.byteSize
        let copies = tokens == 1 ? max(1, min(64, (96 << 20) / max(1, bytes))) : 1
        let first = (0..<(rows * cols)).map { _ in next() }
        let weights = (0..<copies).map { _ in Tensor.owned(first, shape: [rows, cols], dtype: dtype) }
        let x = UnsafeMutablePointer<Float>.allocate(capacity: tokens * cols)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: tokens * rows)
        defer { x.deallocate(); y.deallocate() }
        for i in 0..<(tokens * cols) { x[i] = next() }
        let pool = ThreadPool(threads: threads)
        for w in weights { matmul(x, tokens: tokens, weight: w, into: y, pool: pool) }
        var best = Double.infinity
        for _ in 0..<max(1, iterations) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            for w in weights { matmul(x, tokens: tokens, weight: w, into: y, pool: pool) }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 / Double(copies))
        }
        return (best, ())
    }

    /// Memory read bandwidth: `threads` threads sum disjoint parts of one `megabytes` buffer
    /// (far larger than any cache), each walking `streamsPerThread` parts of its range at once
    /// (decode kernels read several weight rows at a time). The buffer is written first, so its
    /// pages are mapped; the result is the best of `repetitions` passes, in GB/s (10^9 bytes).
    /// The same measure as `../shared/tools/membw.c`'s "read" and "read4".
    public static func readBandwidth(threads: Int, megabytes: Int = 512, streamsPerThread: Int = 1, repetitions: Int = 5)
        -> Double
    {
        let floats = max(1, megabytes) << 18
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        defer { buffer.deallocate() }
        let pool = ThreadPool(threads: threads)
        pool.parallelFor(floats, minChunk: 1 << 16) { r in
            (buffer + r.lowerBound).initialize(repeating: 1, count: r.count)
        }
        let streams = max(1, streamsPerThread)
        let sink = UnsafeMutablePointer<Float>.allocate(capacity: 16 * max(1, threads))
        defer { sink.deallocate() }
        var best = Double.infinity
        for _ in 0..<max(1, repetitions) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            pool.parallelFor(max(1, threads)) { chunks in
                for c in chunks {
                    let lo = floats * c / max(1, threads), hi = floats * (c + 1) / max(1, threads)
                    let part = (hi - lo) / streams / 32 * 32
                    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
                    var i = 0
                    while i < part {
                        for s in 0..<streams {
                            let p = buffer + lo + s &* part + i
                            a0 += load8(p); a1 += load8(p + 8); a2 += load8(p + 16); a3 += load8(p + 24)
                        }
                        i &+= 32
                    }
                    sink[c * 16] = hsum8(a0 + a1 + a2 + a3)
                }
            }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        let bytesRead = Double((floats / max(1, threads) / streams / 32 * 32) * streams * max(1, threads) * 4)
        return bytesRead / best / 1e9
    }
}
