// Re-encoding a tensor in another element type: f32/f16/bf16 rounding and GGML block
// quantization (QuantizedReference / KQuantizer), row by row so a large tensor is never widened to
// f32 all at once.

extension Tensor {
    /// Whether this tensor can be stored as `target`: GGML rows (the fastest axis) must be a whole
    /// number of the target's blocks.
    public func canConvert(to target: DType) -> Bool {
        (shape.last ?? 1) % target.blockSize == 0
    }

    /// A new owned tensor with this tensor's values stored as `target` (same shape). f16/bf16
    /// round to nearest even; block types are quantized by `QuantizedReference.quantize` (K-quants
    /// by `KQuantizer`).
    /// Quantized sources are dequantized first. Returns `self` when the dtype already matches.
    /// - Parameters:
    ///   - target: the element type to store.
    ///   - pool: threads; rows are split into chunks, so the bytes do not depend on the thread count.
    /// - Precondition: `canConvert(to: target)` (callers check and report the tensor by name).
    public func converted(to target: DType, pool: ThreadPool = .serial) -> Tensor {
        if target == dtype { return self }
        precondition(canConvert(to: target), "row length \(shape.last ?? 1) is not a whole number of \(target) blocks")
        let rowLength = Swift.max(1, shape.last ?? 1)
        let rowCount = count / rowLength
        let matrix = reshaped([rowCount, rowLength])
        let outRowBytes = target.byteCount(elements: rowLength)
        let buffer = TensorBuffer(byteCount: target.byteCount(elements: count))
        let base = buffer.pointer
        // ~256K values per chunk: enough work per hand-off, a bounded f32 scratch per thread.
        let rowsPerChunk = Swift.max(1, 262_144 / rowLength)
        let chunks = (rowCount + rowsPerChunk - 1) / rowsPerChunk
        pool.parallelFor(chunks) { range in
            for c in range {
                let r0 = c * rowsPerChunk, r1 = Swift.min(rowCount, r0 + rowsPerChunk)
                let values = matrix.rows(r0..<r1).toFloatArray()
                values.withUnsafeBufferPointer { v in
                    guard let src = v.baseAddress else { return }
                    let out = base + r0 * outRowBytes
                    Self.encode(src, count: v.count, as: target, into: out)
                }
            }
        }
        return Tensor(dtype: target, shape: shape, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }

    /// Writes `count` floats as `target` (whole blocks for block types).
    static func encode(_ src: UnsafePointer<Float>, count: Int, as target: DType, into out: UnsafeMutableRawPointer) {
        switch target {
        case .float32:
            out.copyMemory(from: src, byteCount: count * 4)
        case .float16:
            let p = out.bindMemory(to: UInt16.self, capacity: count)
            for i in 0..<count { p[i] = floatToF16(src[i]) }
        case .bfloat16:
            let p = out.bindMemory(to: UInt16.self, capacity: count)
            for i in 0..<count { p[i] = floatToBF16(src[i]) }
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K:
            if let format = target.quantizedFormat { QuantizedReference.quantize(format, src, count: count, into: out) }
        }
    }
}
