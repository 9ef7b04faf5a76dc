import Foundation

extension Tokenizer {
    /// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
    public enum GGUFTokenType: Int, Sendable {
        case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// The GGUF `tokenizer.ggml.pre` names this initializer understands, each mapped to the
    /// `tokenizer.json` pipeline the model family ships with.
    public static let supportedGGUFPreTokenizers = [
        "gpt2", "default", "smollm", "starcoder", "qwen2", "llama-bpe", "llama3",
    ]

    /// Builds a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.model = "gpt2"`).
    ///
    /// - Parameters:
    ///   - vocabulary: `tokenizer.ggml.tokens`; the index is the id.
    ///   - merges: `tokenizer.ggml.merges`, `"a b"` strings in rank order.
    ///   - tokenTypes: `tokenizer.ggml.token_type` (raw values of `GGUFTokenType`); control tokens
    ///     become special added tokens, user-defined ones plain added tokens. Nil: all normal.
    ///   - preTokenizer: `tokenizer.ggml.pre` (`qwen2`, `llama-bpe`, `smollm`, `gpt2`, ...).
    ///   - bosTokenID: `tokenizer.ggml.bos_token_id`.
    ///   - eosTokenID: `tokenizer.ggml.eos_token_id`.
    ///   - addBOS: `tokenizer.ggml.add_bos_token`: put BOS before every encoded sequence.
    ///   - chatTemplate: `tokenizer.chat_template`, used to detect ChatML.
    /// - Throws: `TokenizerError.unsupported` for an unknown pre-tokenizer name,
    ///   `invalidField`/`mergeReferencesUnknownToken` for inconsistent metadata.
    public convenience init(
        vocabulary: [String], merges: [String], tokenTypes: [Int]? = nil, preTokenizer: String,
        bosTokenID: Int? = nil, eosTokenID: Int? = nil, addBOS: Bool = false,
        chatTemplate: String? = nil
    ) throws {
        let file = "GGUF metadata"
        if let tokenTypes, tokenTypes.count != vocabulary.count {
            throw TokenizerError.invalidField(
                field: "tokenizer.ggml.token_type", file: file,
                reason: "\(tokenTypes.count) types for \(vocabulary.count) tokens")
        }
        for (key, id) in [("tokenizer.ggml.bos_token_id", bosTokenID), ("tokenizer.ggml.eos_token_id", eosTokenID)] {
            if let id, !vocabulary.indices.contains(id) {
                throw TokenizerError.invalidField(field: key, file: file, reason: "id \(id) is outside the vocabulary")
            }
        }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabulary.count)
        for (id, token) in vocabulary.enumerated() where vocab[token] == nil { vocab[token] = id }
        let pairs = try merges.enumerated().map { i, m -> (String, String) in
            let parts = m.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw TokenizerError.invalidField(
                    field: "tokenizer.ggml.merges[\(i)]", file: file,
                    reason: "expected \"a b\", got \(m.debugDescription)")
            }
            return (String(parts[0]), String(parts[1]))
        }

        let byteLevelNoRegex = PreTokenizer.byteLevel(addPrefixSpace: false, useRegex: false)
        var normalizer: Normalizer?
        let pre: PreTokenizer
        var ignoreMerges = false
        switch preTokenizer {
        case "gpt2", "default":
            pre = .byteLevel(addPrefixSpace: false, useRegex: true)
        case "smollm", "starcoder":
            pre = .sequence([.digits(individual: true), .byteLevel(addPrefixSpace: false, useRegex: true)])
        case "qwen2":
            normalizer = .nfc
            pre = .sequence([.split(.qwenLlama(digitRun: 1), .isolated, invert: false), byteLevelNoRegex])
        case "llama-bpe", "llama3":
            ignoreMerges = true
            pre = .sequence([.split(.qwenLlama(digitRun: 3), .isolated, invert: false), byteLevelNoRegex])
        default:
            throw TokenizerError.unsupported(component: "GGUF tokenizer.ggml.pre", type: preTokenizer, file: file)
        }

        let model = try BPEModel(
            vocab: vocab, merges: pairs, unkToken: nil, byteFallback: false, fuseUnk: false,
            ignoreMerges: ignoreMerges, continuingSubwordPrefix: nil, endOfWordSuffix: nil,
            file: file)
        var added: [AddedToken] = []
        for (id, raw) in (tokenTypes ?? []).enumerated() {
            switch GGUFTokenType(rawValue: raw) {
            case .control: added.append(AddedToken(id: id, content: vocabulary[id], special: true))
            case .userDefined: added.append(AddedToken(id: id, content: vocabulary[id], special: false))
            default: break
            }
        }
        let config = TokenizerConfig(
            bosToken: bosTokenID.map { vocabulary[$0] }, hasBOS: true,
            eosToken: eosTokenID.map { vocabulary[$0] }, chatTemplate: chatTemplate)
        let post: PostProcessor? = addBOS ? bosTokenID.map { .template(prefix: [$0], suffix: []) } : nil
        try self.init(
            model: model, normalizer: normalizer, preTokenizer: pre, postProcessor: post,
            decoder: .byteLevel, addedTokens: added, config: config)
    }
}
