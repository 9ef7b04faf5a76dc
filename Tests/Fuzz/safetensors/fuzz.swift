// libFuzzer target: the safetensors reader (8-byte length, JSON header, offsets, dtypes).
import Formats
import Foundation
import Kernels

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let url = scratchFile(input(bytes, count), ext: "safetensors")
    for policy in [SafetensorsFile.MisalignmentPolicy.copy, .reject] {
        guard let file = try? SafetensorsFile(url: url, misalignment: policy) else { continue }
        for name in file.tensorNames {
            guard let tensor = try? file.tensor(name) else { continue }
            if tensor.count <= 1 << 16 { _ = tensor.toFloatArray() }
        }
    }
    return 0
}
