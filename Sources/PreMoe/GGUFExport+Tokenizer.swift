import Formats
import Foundation

extension GGUFExport {
    /// `tokenizer.ggml.*` from `tokenizer.json` (byte-level BPE, as the converter's `gpt2`
    /// model), `tokenizer_config.json` and the config's special token ids. Writes nothing for
    /// a missing or non-BPE tokenizer.
    static func tokenizerMetadata(modelDirectory: URL, config: JSONValue, into writer: inout GGUFWriter) throws {
        let url = modelDirectory.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: url.path) else { return }
        let tok = try JSONValue(contentsOf: url)
        guard tok["model"]?["type"]?.stringValue == "BPE", let vocab = tok["model"]?["vocab"]?.objectValue else { return }
        var byID: [Int: (String, Int)] = [:]  // id → (token, GGUF token type)
        for (token, id) in vocab { if let id = id.intValue { byID[id] = (token, 1) } }
        for added in tok["added_tokens"]?.arrayValue ?? [] {
            guard let id = added["id"]?.intValue, let content = added["content"]?.stringValue else { continue }
            byID[id] = (content, added["special"]?.boolValue == true ? 3 : 4)
        }
        let size = max((byID.keys.max() ?? -1) + 1, config["vocab_size"]?.intValue ?? 0)
        var tokens: [String] = []
        var types: [Int] = []
        for id in 0..<size {
            if let (t, type) = byID[id] {
                tokens.append(t)
                types.append(type)
            } else {
                tokens.append("[PAD\(id)]")  // the converter's filler for unused ids
                types.append(5)
            }
        }
        let merges: [String] = (tok["model"]?["merges"]?.arrayValue ?? []).compactMap { m in
            if let s = m.stringValue { return s }
            if let pair = m.arrayValue?.compactMap(\.stringValue), pair.count == 2 { return pair.joined(separator: " ") }
            return nil
        }
        writer.set("tokenizer.ggml.model", .string("gpt2"))
        writer.set("tokenizer.ggml.pre", .string(preTokenizerName(tok["pre_tokenizer"])))
        writer.set("tokenizer.ggml.tokens", .strings(tokens))
        writer.set("tokenizer.ggml.token_type", .int32s(types))
        writer.set("tokenizer.ggml.merges", .strings(merges))
        func tokenID(_ key: String) -> Int? {
            config[key]?.intValue ?? config[key]?.arrayValue?.first?.intValue
        }
        if let bos = tokenID("bos_token_id"), bos < size { writer.set("tokenizer.ggml.bos_token_id", .uint32(UInt32(bos))) }
        if let eos = tokenID("eos_token_id"), eos < size { writer.set("tokenizer.ggml.eos_token_id", .uint32(UInt32(eos))) }
        let tokConfigURL = modelDirectory.appendingPathComponent("tokenizer_config.json")
        let tokConfig = FileManager.default.fileExists(atPath: tokConfigURL.path) ? try? JSONValue(contentsOf: tokConfigURL) : nil
        writer.set("tokenizer.ggml.add_bos_token", .bool(tokConfig?["add_bos_token"]?.boolValue ?? false))
        var template = tokConfig?["chat_template"]?.stringValue
        let jinja = modelDirectory.appendingPathComponent("chat_template.jinja")
        if template == nil, let data = FileManager.default.contents(atPath: jinja.path) { template = String(decoding: data, as: UTF8.self) }
        if let template { writer.set("tokenizer.chat_template", .string(template)) }
    }

    /// llama.cpp's `tokenizer.ggml.pre` for a `tokenizer.json` pre-tokenizer (the names of
    /// `llama-vocab.cpp`; the converter picks them by hashing a test tokenisation, we by the
    /// pre-tokenizer's shape): the Qwen2 split (single digits) → `qwen2`, the Llama 3 split
    /// (digit runs of 1–3) → `llama-bpe`, individual digits before the GPT-2 regex → `smollm`,
    /// else `gpt-2`.
    static func preTokenizerName(_ pre: JSONValue?) -> String {
        var regexes: [String] = []
        func walk(_ v: JSONValue?) {
            switch v {
            case .object(let members)?:
                if let r = members["Regex"]?.stringValue { regexes.append(r) }
                for m in members.values { walk(m) }
            case .array(let elements)?:
                for e in elements { walk(e) }
            default: break
            }
        }
        walk(pre)
        if regexes.contains(where: { $0.contains("\\p{N}{1,3}") }) { return "llama-bpe" }
        if regexes.contains(where: { $0.contains("\\p{N}") }) { return "qwen2" }
        if case .string("Digits")? = pre?["pretokenizers"]?.arrayValue?.first?["type"] { return "smollm" }
        return "gpt-2"
    }
}
