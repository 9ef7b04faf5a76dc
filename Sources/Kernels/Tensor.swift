/// A read-only view of a stored tensor: element type, shape (row-major, slowest axis first) and
/// the bytes, which live in a memory-mapped file or an owned buffer that `owner` keeps alive.
///
/// Weights are computed on straight from this storage (f32, f16 or bf16); nothing is widened
/// to a second f32 copy.
public struct Tensor: @unchecked Sendable {
    /// Element type of the bytes.
    public let dtype: DType
    /// Shape, slowest axis first (PyTorch order): a linear layer's weight is `[out, in]`.
    public let shape: [Int]
    /// First byte of the first element.
    public let data: UnsafeRawPointer
    /// Keeps the underlying storage (mapping or buffer) alive as long as any view exists.
    public let owner: AnyObject?

    /// Wraps existing storage. `data` must hold `shape.product * dtype.byteSize` bytes.
    public init(dtype: DType, shape: [Int], data: UnsafeRawPointer, owner: AnyObject?) {
        self.dtype = dtype
        self.shape = shape
        self.data = data
        self.owner = owner
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Number of bytes.
    public var byteCount: Int { dtype.byteCount(elements: count) }
    /// Length of the slowest axis (rows of a matrix, experts of a stacked tensor).
    public var rows: Int { shape.first ?? 1 }
    /// Elements per slice of the slowest axis (the row length of a matrix).
    public var rowLength: Int { shape.count <= 1 ? 1 : shape.dropFirst().reduce(1, *) }

    /// A view of rows `range` of the slowest axis: one expert of a stacked `[E, …]` tensor, or a
    /// block of rows of a matrix. No bytes are copied.
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "row range \(range) outside 0..<\(rows)")
        var newShape = shape
        if newShape.isEmpty { newShape = [1] }
        newShape[0] = range.count
        return Tensor(
            dtype: dtype, shape: newShape,
            data: data + range.lowerBound * dtype.byteCount(elements: rowLength), owner: owner)
    }

    /// The same bytes seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(dtype: dtype, shape: newShape, data: data, owner: owner)
    }

    /// Element `index` (flat, row-major) widened to Float. For tests and small tensors only.
    public func scalar(at index: Int) -> Float {
        switch dtype {
        case .float32: return data.load(fromByteOffset: index * 4, as: Float.self)
        case .float16: return f16ToFloat(data.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))
        case .bfloat16: return bf16ToFloat(data.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K:
            let format = dtype.quantizedFormat!
            return withUnsafeTemporaryAllocation(of: Float.self, capacity: format.blockSize) { block in
                QuantizedReference.dequantizeBlock(format, data + index / format.blockSize * format.blockBytes, into: block.baseAddress!)
                return block[index % format.blockSize]
            }
        }
    }

    /// All elements widened to Float. Meant for small tensors (norm weights, biases, tests).
    public func toFloatArray() -> [Float] {
        var result = [Float](repeating: 0, count: count)
        result.withUnsafeMutableBufferPointer { out in
            convertToFloat(self, into: out.baseAddress!, count: count)
        }
        return result
    }
}

/// An owned, aligned heap buffer that a `Tensor` can point into.
public final class TensorBuffer: @unchecked Sendable {
    /// Start of the allocation (64-byte aligned).
    public let pointer: UnsafeMutableRawPointer
    /// Size in bytes.
    public let byteCount: Int

    /// Allocates `byteCount` zeroed bytes.
    public init(byteCount: Int) {
        self.byteCount = byteCount
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
    }

    /// Allocates `byteCount` bytes aligned to `alignment` (a power of two ≥ 64) and leaves them
    /// unset, for a buffer a file read fills at once (zeroing 600 MB of experts first costs a
    /// pass over memory and faults every page in before the read does).
    public init(uninitializedByteCount byteCount: Int, alignment: Int = 64) {
        precondition(alignment >= 64 && alignment & (alignment - 1) == 0, "alignment \(alignment)")
        self.byteCount = byteCount
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: alignment)
    }

    deinit { pointer.deallocate() }
}

extension Tensor {
    /// A new owned tensor holding `values` as `dtype` (rounded to nearest even for f16/bf16).
    public static func owned(_ values: [Float], shape: [Int], dtype: DType = .float32) -> Tensor {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        let buffer = TensorBuffer(byteCount: dtype.byteCount(elements: values.count))
        switch dtype {
        case .float32:
            let p = buffer.pointer.bindMemory(to: Float.self, capacity: values.count)
            for i in 0..<values.count { p[i] = values[i] }
        case .float16:
            let p = buffer.pointer.bindMemory(to: UInt16.self, capacity: values.count)
            for i in 0..<values.count { p[i] = floatToF16(values[i]) }
        case .bfloat16:
            let p = buffer.pointer.bindMemory(to: UInt16.self, capacity: values.count)
            for i in 0..<values.count { p[i] = floatToBF16(values[i]) }
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K:
            values.withUnsafeBufferPointer {
                QuantizedReference.quantize(dtype.quantizedFormat!, $0.baseAddress!, count: values.count, into: buffer.pointer)
            }
        }
        return Tensor(dtype: dtype, shape: shape, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }
}

/// Storage whose pages can be dropped and read back on demand: a read-only file mapping. Owned
/// buffers do not conform (dropping their pages would lose the data).
public protocol ReleasableStorage: AnyObject {
    /// Drops the resident pages that lie wholly inside `count` bytes at `start`.
    func releasePages(from start: UnsafeRawPointer, count: Int)
}

extension Tensor {
    /// Drops this tensor's resident pages when it views a file mapping (the next touch reads
    /// them from the file again); does nothing for owned storage. Profiling a model larger than
    /// memory calls it once a layer is done, so resident memory stays about one layer.
    public func releasePages() {
        (owner as? ReleasableStorage)?.releasePages(from: data, count: byteCount)
    }
}
