import Foundation

/// Byte-pair-encoding model: vocabulary, merge ranks and the per-word merge loop of
/// `tokenizers`' `BPE` (`models/bpe/word.rs`), including `byte_fallback`, `fuse_unk`,
/// `ignore_merges` and `continuing_subword_prefix` / `end_of_word_suffix`.
final class BPEModel: @unchecked Sendable {
    /// Token string → id.
    let vocab: [String: Int]
    /// Id → token string; nil for ids the vocabulary skips.
    let idToToken: [String?]
    /// `(left id << 32) | right id` → (rank, merged id).
    let merges: [UInt64: (rank: Int32, id: Int32)]
    let unkTokenID: Int?
    let byteFallback: Bool
    let fuseUnk: Bool
    let ignoreMerges: Bool
    let continuingSubwordPrefix: String?
    let endOfWordSuffix: String?
    /// Ids of the `<0xXX>` tokens when `byte_fallback` is on.
    private let byteTokenIDs: [Int?]

    private let cacheLock = NSLock()
    private var cache: [String: [Int]] = [:]
    /// Cached words are short; the cap keeps memory flat while profiling megabytes of text.
    private static let cacheCapacity = 100_000
    private static let maxCachedWordLength = 256

    /// Builds the model.
    /// - Parameters:
    ///   - vocab: token → id.
    ///   - merges: merge pairs in rank order (rank 0 merges first).
    ///   - file: file name for error messages.
    /// - Throws: `TokenizerError.mergeReferencesUnknownToken` when a merge names a missing token.
    init(
        vocab: [String: Int], merges: [(String, String)], unkToken: String?, byteFallback: Bool, fuseUnk: Bool,
        ignoreMerges: Bool, continuingSubwordPrefix: String?, endOfWordSuffix: String?, file: String
    ) throws {
        self.vocab = vocab
        let maxID = vocab.values.max() ?? -1
        var idToToken = [String?](repeating: nil, count: maxID + 1)
        for (token, id) in vocab where id >= 0 { idToToken[id] = token }
        self.idToToken = idToToken
        var table: [UInt64: (rank: Int32, id: Int32)] = [:]
        table.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard let ia = vocab[a] else {
                throw TokenizerError.mergeReferencesUnknownToken(merge: "\(a) \(b)", token: a, file: file)
            }
            guard let ib = vocab[b] else {
                throw TokenizerError.mergeReferencesUnknownToken(merge: "\(a) \(b)", token: b, file: file)
            }
            var right = Substring(b)
            if let prefix = continuingSubwordPrefix, right.hasPrefix(prefix) { right = right.dropFirst(prefix.count) }
            let merged = a + right
            guard let im = vocab[merged] else {
                throw TokenizerError.mergeReferencesUnknownToken(merge: "\(a) \(b)", token: merged, file: file)
            }
            let key = UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))
            // A duplicated merge keeps its last rank, as tokenizers' HashMap collect does.
            table[key] = (Int32(rank), Int32(im))
        }
        self.merges = table
        if let unkToken {
            guard let id = vocab[unkToken] else {
                throw TokenizerError.invalidField(
                    field: "model.unk_token", file: file,
                    reason: "'\(unkToken)' is not in the vocabulary")
            }
            unkTokenID = id
        } else {
            unkTokenID = nil
        }
        self.byteFallback = byteFallback
        self.fuseUnk = fuseUnk
        self.ignoreMerges = ignoreMerges
        self.continuingSubwordPrefix = continuingSubwordPrefix.flatMap { $0.isEmpty ? nil : $0 }
        self.endOfWordSuffix = endOfWordSuffix.flatMap { $0.isEmpty ? nil : $0 }
        self.byteTokenIDs = (0..<256).map { vocab[String(format: "<0x%02X>", $0)] }
    }

    /// Token ids for one pre-tokenized word.
    func tokenize(_ word: String) -> [Int] {
        if word.isEmpty { return [] }
        if ignoreMerges, let id = vocab[word] { return [id] }
        let cacheable = word.utf8.count <= BPEModel.maxCachedWordLength
        if cacheable {
            cacheLock.lock()
            let hit = cache[word]
            cacheLock.unlock()
            if let hit { return hit }
        }
        let ids = mergeWord(word)
        if cacheable {
            cacheLock.lock()
            if cache.count >= BPEModel.cacheCapacity { cache.removeAll(keepingCapacity: true) }
            cache[word] = ids
            cacheLock.unlock()
        }
        return ids
    }

    private struct Symbol {
        var id: Int32
        var prev: Int32
        var next: Int32
        var alive: Bool
    }

    /// Min-heap entry ordered by (rank, position), as `tokenizers` orders its merge queue.
    private struct Candidate: Comparable {
        var rank: Int32
        var pos: Int32
        var newID: Int32
        static func < (a: Candidate, b: Candidate) -> Bool { a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos }
    }

    private func mergeWord(_ word: String) -> [Int] {
        // Initial symbols: one per scalar (with prefix/suffix), byte fallback, or (fused) unk.
        var ids: [Int32] = []
        ids.reserveCapacity(word.unicodeScalars.count)
        var pendingUnk = false
        let scalars = Array(word.unicodeScalars)
        for (i, scalar) in scalars.enumerated() {
            var s = String(scalar)
            if i > 0, let prefix = continuingSubwordPrefix { s = prefix + s }
            if i == scalars.count - 1, let suffix = endOfWordSuffix { s += suffix }
            if let id = vocab[s] {
                if pendingUnk, let unk = unkTokenID { ids.append(Int32(unk)) }
                pendingUnk = false
                ids.append(Int32(id))
                continue
            }
            if byteFallback {
                let bytes = Array(s.utf8)
                let fallback = bytes.compactMap { byteTokenIDs[Int($0)] }
                if fallback.count == bytes.count {
                    // tokenizers leaves a pending unk in place across byte-fallback symbols.
                    ids.append(contentsOf: fallback.map { Int32($0) })
                    continue
                }
            }
            if let unk = unkTokenID {
                if pendingUnk && !fuseUnk { ids.append(Int32(unk)) }
                pendingUnk = true
            }
        }
        if pendingUnk, let unk = unkTokenID { ids.append(Int32(unk)) }
        if ids.count < 2 { return ids.map(Int.init) }

        var symbols = ids.enumerated().map { i, id in
            Symbol(id: id, prev: Int32(i - 1), next: i + 1 < ids.count ? Int32(i + 1) : -1, alive: true)
        }
        var heap = Heap<Candidate>()
        for i in 0..<(symbols.count - 1) {
            if let m = merges[pairKey(symbols[i].id, symbols[i + 1].id)] {
                heap.push(Candidate(rank: m.rank, pos: Int32(i), newID: m.id))
            }
        }
        while let top = heap.pop() {
            let pos = Int(top.pos)
            guard symbols[pos].alive, symbols[pos].next >= 0 else { continue }
            let nextPos = Int(symbols[pos].next)
            // Skip stale entries: the pair at `pos` must still merge into the same token.
            guard let m = merges[pairKey(symbols[pos].id, symbols[nextPos].id)], m.id == top.newID else { continue }
            symbols[pos].id = top.newID
            symbols[pos].next = symbols[nextPos].next
            symbols[nextPos].alive = false
            if symbols[pos].next >= 0 { symbols[Int(symbols[pos].next)].prev = Int32(pos) }
            if symbols[pos].prev >= 0 {
                let prev = Int(symbols[pos].prev)
                if let m = merges[pairKey(symbols[prev].id, symbols[pos].id)] {
                    heap.push(Candidate(rank: m.rank, pos: Int32(prev), newID: m.id))
                }
            }
            if symbols[pos].next >= 0 {
                if let m = merges[pairKey(symbols[pos].id, symbols[Int(symbols[pos].next)].id)] {
                    heap.push(Candidate(rank: m.rank, pos: Int32(pos), newID: m.id))
                }
            }
        }
        return symbols.compactMap { $0.alive ? Int($0.id) : nil }
    }

    @inline(__always) private func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }
}

/// A binary min-heap.
struct Heap<Element: Comparable> {
    private var items: [Element] = []

    mutating func push(_ e: Element) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[i] < items[parent] {
                items.swapAt(i, parent)
                i = parent
            } else {
                break
            }
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1
                let r = l + 1
                var m = i
                if l < items.count && items[l] < items[m] { m = l }
                if r < items.count && items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
