import Foundation

/// Turns a stream of token ids into text pieces as they arrive, never splitting a UTF-8 sequence.
///
/// Byte-level and byte-fallback tokens can end in the middle of a character; decoding such a
/// prefix yields U+FFFD, so output is held back until the text decodes cleanly. Each step decodes
/// only a short window (the last emitted chunk plus what is pending), the method of
/// text-generation-inference's `decode_token`: decoders such as `Strip` and `Metaspace` treat the
/// first token specially, and keeping the previous chunk in the window makes the pieces
/// concatenate to `decode(allIDs)`.
public struct StreamingDetokenizer: Sendable {
    /// The tokenizer whose `decode` defines the text.
    public let tokenizer: Tokenizer
    /// Whether special tokens are dropped from the text.
    public let skipSpecialTokens: Bool
    private var ids: [Int] = []
    private var prefixOffset = 0
    private var readOffset = 0

    /// - Parameters:
    ///   - tokenizer: the tokenizer whose ids will be fed.
    ///   - skipSpecialTokens: drop special tokens from the text, as `decode` does.
    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one id.
    /// - Returns: newly completed text, possibly empty.
    public mutating func append(_ id: Int) -> String {
        ids.append(id)
        let prefix = tokenizer.decode(Array(ids[prefixOffset..<readOffset]), skipSpecialTokens: skipSpecialTokens)
        let full = tokenizer.decode(Array(ids[prefixOffset...]), skipSpecialTokens: skipSpecialTokens)
        let prefixCount = prefix.unicodeScalars.count
        let fullScalars = full.unicodeScalars
        guard fullScalars.count > prefixCount, fullScalars.last != "\u{FFFD}" else { return "" }
        prefixOffset = readOffset
        readOffset = ids.count
        return String(scalars: fullScalars.dropFirst(prefixCount))
    }

    /// Returns whatever is still held back (incomplete sequences come out as U+FFFD) and resets.
    public mutating func finish() -> String {
        let prefix = tokenizer.decode(Array(ids[prefixOffset..<readOffset]), skipSpecialTokens: skipSpecialTokens)
        let full = tokenizer.decode(Array(ids[prefixOffset...]), skipSpecialTokens: skipSpecialTokens)
        ids.removeAll()
        prefixOffset = 0
        readOffset = 0
        let prefixCount = prefix.unicodeScalars.count
        guard full.unicodeScalars.count > prefixCount else { return "" }
        return String(scalars: full.unicodeScalars.dropFirst(prefixCount))
    }
}
