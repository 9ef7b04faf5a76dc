/// Keys and values of every layer for the positions seen so far, stored in f32
/// `[positions, kvHeads · headDim]` per layer. Grows by doubling; never shrinks.
public final class KVCache {
    /// Positions stored (the next token goes at this position).
    public private(set) var count = 0
    let layers: Int
    let keyWidth: Int
    let valueWidth: Int
    private(set) var capacity: Int
    /// Most positions it will ever hold (the model's `maxPositions`); growth stops there.
    let maxCapacity: Int
    private(set) var keys: [UnsafeMutablePointer<Float>]
    private(set) var values: [UnsafeMutablePointer<Float>]

    /// An empty cache for `layers` layers.
    public init(layers: Int, keyWidth: Int, valueWidth: Int, initialCapacity: Int = 64, maxCapacity: Int = .max) {
        self.layers = layers
        self.keyWidth = keyWidth
        self.valueWidth = valueWidth
        self.maxCapacity = max(1, maxCapacity)
        capacity = min(max(1, initialCapacity), self.maxCapacity)
        let positions = capacity
        keys = (0..<layers).map { _ in .allocate(capacity: positions * keyWidth) }
        values = (0..<layers).map { _ in .allocate(capacity: positions * valueWidth) }
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    /// Makes room for `extra` more positions.
    func reserve(_ extra: Int) {
        let needed = count + extra
        guard needed > capacity else { return }
        var newCapacity = capacity
        while newCapacity < needed { newCapacity *= 2 }
        // Callers refuse contexts past maxPositions first; past it, grow exactly to need.
        newCapacity = max(needed, min(newCapacity, maxCapacity))
        for l in 0..<layers {
            let k = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * keyWidth)
            k.update(from: keys[l], count: count * keyWidth)
            keys[l].deallocate()
            keys[l] = k
            let v = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * valueWidth)
            v.update(from: values[l], count: count * valueWidth)
            values[l].deallocate()
            values[l] = v
        }
        capacity = newCapacity
    }

    /// Marks `n` more positions as filled (after every layer wrote them).
    func advance(_ n: Int) { count += n }

    /// Forgets everything from position `position` on (e.g. to reuse a shared prompt prefix).
    public func truncate(to position: Int) { count = min(count, max(0, position)) }

    /// Bytes held.
    public var byteCount: Int { capacity * (keyWidth + valueWidth) * 4 * layers }
}
