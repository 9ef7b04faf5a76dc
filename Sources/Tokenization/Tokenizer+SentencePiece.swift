import Foundation

extension Tokenizer {
    /// Builds a SentencePiece tokenizer from a GGUF `llama` vocabulary (`tokenizer.ggml.model =
    /// "llama"`: Llama 2, Mistral, Mixtral): tokens with scores, byte tokens `<0x00>`…`<0xFF>`.
    ///
    /// llama.cpp's `llm_tokenizer_spm` repeatedly merges the adjacent pair whose concatenation is
    /// the vocabulary entry with the highest score, and spells a symbol that is not in the
    /// vocabulary as byte tokens. That is byte-level-fallback BPE with merges ranked by the score
    /// of the merged token, which is how Hugging Face's converter turns the same vocabulary into
    /// a `tokenizer.json`; this builds that pipeline: prepend `▁` (when `addSpacePrefix`, at the
    /// start and after each special token, as llama.cpp does), spaces → `▁`, BPE with byte
    /// fallback; decoding reverses it and drops the one leading space.
    ///
    /// - Parameters:
    ///   - vocabulary: `tokenizer.ggml.tokens`; the index is the id.
    ///   - scores: `tokenizer.ggml.scores`, one per token.
    ///   - tokenTypes: `tokenizer.ggml.token_type`; control and unknown tokens become special added
    ///     tokens, user-defined ones plain added tokens; byte tokens are the fallback. Nil: all normal.
    ///   - bosTokenID, eosTokenID, unknownTokenID: `tokenizer.ggml.{bos,eos,unknown}_token_id`.
    ///   - addBOS, addEOS: `tokenizer.ggml.add_{bos,eos}_token` (llama.cpp adds BOS by default).
    ///   - addSpacePrefix: `tokenizer.ggml.add_space_prefix` (default true).
    ///   - chatTemplate: `tokenizer.chat_template`.
    /// - Throws: `TokenizerError.invalidField` when the arrays disagree in length or an id is out
    ///   of range.
    public convenience init(
        sentencePieceVocabulary vocabulary: [String], scores: [Float], tokenTypes: [Int]? = nil,
        bosTokenID: Int? = nil, eosTokenID: Int? = nil, unknownTokenID: Int? = nil,
        addBOS: Bool = true, addEOS: Bool = false, addSpacePrefix: Bool = true, chatTemplate: String? = nil
    ) throws {
        let file = "GGUF metadata"
        for (field, count) in [("tokenizer.ggml.scores", scores.count), ("tokenizer.ggml.token_type", tokenTypes?.count)] {
            if let count, count != vocabulary.count {
                throw TokenizerError.invalidField(field: field, file: file, reason: "\(count) entries for \(vocabulary.count) tokens")
            }
        }
        for (key, id) in [("tokenizer.ggml.bos_token_id", bosTokenID), ("tokenizer.ggml.eos_token_id", eosTokenID),
                          ("tokenizer.ggml.unknown_token_id", unknownTokenID)] {
            if let id, !vocabulary.indices.contains(id) {
                throw TokenizerError.invalidField(field: key, file: file, reason: "id \(id) is outside the vocabulary")
            }
        }
        let types = tokenTypes ?? [Int](repeating: GGUFTokenType.normal.rawValue, count: vocabulary.count)
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabulary.count)
        for (id, token) in vocabulary.enumerated() where vocab[token] == nil { vocab[token] = id }

        // Merges: every split of a mergeable token into two vocabulary entries, best score first;
        // ties by the merged token's id, then the parts' ids (Hugging Face's SentencePieceExtractor).
        let mergeable: (Int) -> Bool = { id in
            let t = GGUFTokenType(rawValue: types[id])
            return t == .normal || t == .userDefined || t == .undefined
        }
        var candidates: [(score: Float, merged: Int, a: Int, b: Int)] = []
        for (id, token) in vocabulary.enumerated() where mergeable(id) {
            let chars = Array(token.unicodeScalars)
            guard chars.count > 1 else { continue }
            for cut in 1..<chars.count {
                let left = String(String.UnicodeScalarView(chars[..<cut]))
                let right = String(String.UnicodeScalarView(chars[cut...]))
                if let a = vocab[left], let b = vocab[right], mergeable(a), mergeable(b) {
                    candidates.append((scores[id], id, a, b))
                }
            }
        }
        candidates.sort { x, y in
            if x.score != y.score { return x.score > y.score }
            if x.merged != y.merged { return x.merged < y.merged }
            return (x.a, x.b) < (y.a, y.b)
        }
        let model = try BPEModel(
            vocab: vocab, merges: candidates.map { (vocabulary[$0.a], vocabulary[$0.b]) },
            unkToken: unknownTokenID.map { vocabulary[$0] }, byteFallback: true, fuseUnk: true, ignoreMerges: false,
            continuingSubwordPrefix: nil, endOfWordSuffix: nil, file: file)

        var added: [AddedToken] = []
        for (id, raw) in types.enumerated() {
            switch GGUFTokenType(rawValue: raw) {
            case .control, .unknown: added.append(AddedToken(id: id, content: vocabulary[id], special: true))
            case .userDefined: added.append(AddedToken(id: id, content: vocabulary[id], special: false))
            default: break
            }
        }
        let space = "\u{2581}"
        var normalizers: [Normalizer] = addSpacePrefix ? [.prepend(space)] : []
        normalizers.append(.replace(.string(" "), space, nil))
        var decoders: [Decoder] = [.replace(space, " "), .byteFallback, .fuse]
        if addSpacePrefix { decoders.append(.strip(content: " ", start: 1, stop: 0)) }
        let prefix = addBOS ? bosTokenID.map { [$0] } ?? [] : []
        let suffix = addEOS ? eosTokenID.map { [$0] } ?? [] : []
        let config = TokenizerConfig(
            bosToken: bosTokenID.map { vocabulary[$0] }, hasBOS: true,
            eosToken: eosTokenID.map { vocabulary[$0] }, chatTemplate: chatTemplate)
        try self.init(
            model: model, normalizer: .sequence(normalizers), preTokenizer: nil,
            postProcessor: prefix.isEmpty && suffix.isEmpty ? nil : .template(prefix: prefix, suffix: suffix),
            decoder: .sequence(decoders), addedTokens: added, config: config)
    }
}
