import Kernels
@testable import Models
import Testing

/// `gatherRows` copies whole rows in the requested order, for float and block-quantized types.
@Suite struct GatherRowsTests {
    @Test(arguments: [DType.float32, .float16, .q8_0, .q4_K])
    func rowsAreCopiedWholeInOrder(dtype: DType) {
        let cols = 512  // two Q4_K blocks, sixteen Q8_0 blocks
        let rows = 3
        let rowBytes = dtype.byteCount(elements: cols)
        let buffer = TensorBuffer(byteCount: rows * rowBytes)
        for i in 0..<(rows * rowBytes) { buffer.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i * 7 + i / rowBytes), toByteOffset: i, as: UInt8.self) }
        let tensor = Tensor(dtype: dtype, shape: [rows, cols], data: UnsafeRawPointer(buffer.pointer), owner: buffer)
        let gathered = gatherRows(tensor, [2, 0])
        #expect(gathered.shape == [2, cols])
        for (slot, source) in [2, 0].enumerated() {
            let got = UnsafeRawBufferPointer(start: gathered.data + slot * rowBytes, count: rowBytes)
            let want = UnsafeRawBufferPointer(start: tensor.data + source * rowBytes, count: rowBytes)
            #expect(Array(got) == Array(want), "row \(source) of \(dtype)")
        }
    }

    /// A router sliced to kept experts keeps each kept row's bias with it (gpt-oss's router bias).
    @Test func linearRowsCarryTheirBias() {
        let buffer = TensorBuffer(byteCount: 3 * 2 * 4)
        let w = buffer.pointer.bindMemory(to: Float.self, capacity: 6)
        for i in 0..<6 { w[i] = Float(i) }
        let router = Linear(weight: Tensor(dtype: .float32, shape: [3, 2], data: UnsafeRawPointer(buffer.pointer), owner: buffer),
                            bias: [10, 11, 12])
        let sliced = router.rows([2, 0])
        #expect(sliced.bias == [12, 10])
        #expect(sliced.weight.shape == [2, 2])
        let rows = sliced.weight.data.bindMemory(to: Float.self, capacity: 4)
        #expect((0..<4).map { rows[$0] } == [4, 5, 0, 1])
        #expect(router.rows([0, 1, 2]).weight.data == router.weight.data)
    }
}
