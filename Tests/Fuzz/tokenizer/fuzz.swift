// libFuzzer target: tokenizer.json (normalizers, pre-tokenizers, BPE model, added tokens,
// post-processor, decoder), then a round trip through it.
import Foundation
import Tokenization

let probe = "Hello wörld, 123 <|im_start|>user\n  tabs\tand ünïcödé 🙂 <s></s>"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard let tokenizer = try? Tokenizer(data: input(bytes, count)) else { return 0 }
    let ids = tokenizer.encode(probe)
    _ = tokenizer.decode(ids)
    _ = tokenizer.decode(ids, skipSpecialTokens: true)
    _ = tokenizer.decode([0, 1, tokenizer.vocabularySize - 1, -1, Int.max])
    return 0
}
