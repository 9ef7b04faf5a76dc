#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One growable Float buffer per thread for kernels' temporary blocks (the f32 copy of a weight
/// block in prefill). Allocating it per call cost a `mmap`/`munmap` pair and fresh page faults
/// every time (glibc maps blocks over 128 KiB), thousands of times per prefill; this keeps one
/// per thread, grown on demand and freed when the thread exits.
enum ThreadScratch {
    private final class Box {
        var pointer: UnsafeMutablePointer<Float>
        var capacity: Int
        init(_ capacity: Int) {
            self.capacity = capacity
            pointer = .allocate(capacity: capacity)
        }
        deinit { pointer.deallocate() }
    }

    private static let key = makeKey()
    /// A second slot for raw bytes (quantized activations), so a kernel holding one may use the other.
    private static let byteKey = makeKey()

    private static func makeKey() -> pthread_key_t {
        var key = pthread_key_t()
        let status = pthread_key_create(&key) { raw in
            #if canImport(Glibc)
            guard let raw else { return }
            #endif
            Unmanaged<Box>.fromOpaque(raw).release()
        }
        precondition(status == 0, "pthread_key_create failed (\(status))")
        return key
    }

    /// This thread's buffer, holding at least `count` floats (contents unspecified). Valid until
    /// the next call on the same thread; callers must not nest uses.
    static func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        buffer(key, count)
    }

    /// This thread's byte buffer, at least `count` bytes, 32-byte aligned (same rules as `floats`).
    static func bytes(_ count: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(buffer(byteKey, (count + 3) / 4 + 8)).alignedUp(toMultipleOf: 32)
    }

    private static func buffer(_ key: pthread_key_t, _ count: Int) -> UnsafeMutablePointer<Float> {
        if let raw = pthread_getspecific(key) {
            let box = Unmanaged<Box>.fromOpaque(raw).takeUnretainedValue()
            if box.capacity < count {
                box.pointer.deallocate()
                box.pointer = .allocate(capacity: count)
                box.capacity = count
            }
            return box.pointer
        }
        let box = Box(max(count, 1024))
        pthread_setspecific(key, Unmanaged.passRetained(box).toOpaque())
        return box.pointer
    }
}
