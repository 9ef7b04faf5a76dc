import Kernels
import Testing

@Suite struct TensorTests {
    @Test func rowsOfAVectorAreItsElements() {
        let t = Tensor.owned([1, 2, 3, 4], shape: [4])
        #expect(t.rowLength == 1)
        #expect(t.rows(2..<3).toFloatArray() == [3])
    }

    @Test func rowsOfAStackedTensorAreContiguousSlices() {
        let t = Tensor.owned((0..<24).map(Float.init), shape: [2, 3, 4], dtype: .bfloat16)
        #expect(t.rowLength == 12)
        let second = t.rows(1..<2)
        #expect(second.shape == [1, 3, 4])
        #expect(second.toFloatArray() == (12..<24).map(Float.init))
        #expect(second.reshaped([3, 4]).rows(1..<2).toFloatArray() == (16..<20).map(Float.init))
    }
}
