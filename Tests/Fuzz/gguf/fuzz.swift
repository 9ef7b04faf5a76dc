// libFuzzer target: the GGUF reader, then what the model loader builds from its metadata (the
// config adapter and the tokenizer), and every tensor view.
import Formats
import Foundation
import Kernels
import Models
import Tokenization

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let url = scratchFile(input(bytes, count), ext: "gguf")
    guard let file = try? GGUFFile(url: url) else { return 0 }
    for info in file.tensorInfos {
        guard let tensor = try? file.tensor(info.name) else { continue }
        if tensor.count <= 1 << 16 { _ = tensor.toFloatArray() }
        if let rows = info.shape.first, rows > 0 { _ = try? file.readRows(info.name, rows: 0..<1) }
    }
    // What ModelLoader.ggufSpec does, on the file already open.
    if let config = try? GGUFModelConfig(file: file),
       var (spec, _) = try? ModelRegistry.spec(configData: config.configData, file: url.path) {
        try? config.adjust(&spec, file: url.path)
    }
    if let tokenizer = try? Tokenizer.fromGGUF(file) {
        _ = tokenizer.decode(tokenizer.encode("Hello wörld 123 <|im_start|>"))
    }
    return 0
}
