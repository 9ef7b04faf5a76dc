import Dispatch
import Foundation

#if os(Linux)
import Synchronization
#endif

/// Splits work across a fixed number of threads. Work is divided into contiguous chunks by
/// index, and every index is computed by the same code whatever the thread count, so results
/// never depend on it.
///
/// Two backends, same chunks, same results:
/// - persistent workers (Linux; the default there): `threads - 1` dedicated worker threads that
///   spin briefly after each job (yielding the core to other runnable threads as they spin), then
///   sleep on a condition variable; the caller works too and
///   chunks go to whichever thread claims them first, so a descheduled worker never stalls a job.
///   A decode step is hundreds of small kernel calls, and a worker woken for each one starts it
///   late. Measured on the shared 2-core Zen 3, paired interleaved runs of `premoe bench` (odd
///   rounds one backend first, even rounds the other): demo-model decode 1.29× (13 of 16 pairs
///   faster), the 1.3B bf16 bench GGUF 1.00–1.045× (29 of 44 pairs; memory-bound there);
///   `premoe serve` at 16 streams, where HTTP threads share the cores, within noise (six pairs
///   from 0.90× to 1.13×). One such pool runs one job at a time: a
///   `parallelFor` that finds it busy (another thread, or a nested call from a body) runs its
///   whole job on the calling thread — safe and identical, but serial.
/// - `DispatchQueue.concurrentPerform` (elsewhere, or with `PREMOE_THREAD_POOL=dispatch` in the
///   environment, or `persistentWorkers: false`). Safe to call from several threads at once and
///   from inside a body; a job's second half waits for a libdispatch worker to wake.
public final class ThreadPool: @unchecked Sendable {
    /// Number of threads used by `parallelFor`.
    public let threadCount: Int

    #if os(Linux)
    private let state: PoolState?
    #endif

    /// When true, `minChunk` hints are ignored and every job with at least `threadCount` items
    /// is split into `threadCount` chunks. For tests that check results do not depend on the split.
    public let ignoresMinChunk: Bool

    /// Whether this pool uses its own persistent worker threads (see the type's documentation).
    public var usesPersistentWorkers: Bool {
        #if os(Linux)
        state != nil
        #else
        false
        #endif
    }

    /// How the kernels run on this pool multiply quantized weights (`.exact` unless asked):
    /// the pool is the execution context every kernel call already receives.
    public let quantizedArithmetic: QuantizedArithmetic

    /// A pool of `threads` workers (at least 1).
    /// - Parameters:
    ///   - ignoringMinChunk: split even tiny jobs (testing only; slower).
    ///   - persistentWorkers: use dedicated spinning/sleeping worker threads instead of
    ///     `concurrentPerform` (Linux only; default `persistentWorkersByDefault`). Their threads
    ///     start on the first parallel job.
    ///   - quantizedArithmetic: `.int8` quantizes activations for quantized weights (faster,
    ///     approximate); `.exact` keeps the f32 reference order.
    public init(threads: Int, ignoringMinChunk: Bool = false, persistentWorkers: Bool = ThreadPool.persistentWorkersByDefault,
                quantizedArithmetic: QuantizedArithmetic = .exact) {
        threadCount = max(1, threads)
        ignoresMinChunk = ignoringMinChunk
        self.quantizedArithmetic = quantizedArithmetic
        #if os(Linux)
        state = threadCount > 1 && persistentWorkers ? PoolState(workers: threadCount - 1) : nil
        #endif
    }

    deinit {
        #if os(Linux)
        state?.shutdown()
        #endif
    }

    /// Whether pools use persistent workers unless told: yes, unless the environment sets
    /// `PREMOE_THREAD_POOL=dispatch` (the escape hatch where spinning workers cost more than
    /// they save, e.g. more busy processes than cores). Read once per process.
    public static let persistentWorkersByDefault: Bool =
        ProcessInfo.processInfo.environment["PREMOE_THREAD_POOL"]?.lowercased() != "dispatch"

    /// The backend's name, for benchmark reports: "persistent" or "dispatch".
    public var backendName: String { usesPersistentWorkers ? "persistent" : "dispatch" }

    /// A single-threaded pool: runs everything on the caller's thread.
    public static let serial = ThreadPool(threads: 1)
    private static let serialInt8 = ThreadPool(threads: 1, quantizedArithmetic: .int8)

    /// A single-threaded pool with this pool's arithmetic, for work already spread over threads
    /// (one MoE expert per thread).
    public var serialCompanion: ThreadPool { quantizedArithmetic == .exact ? .serial : Self.serialInt8 }

    /// Calls `body(range)` on disjoint chunks covering `0..<count`, in parallel.
    /// - Parameters:
    ///   - count: number of work items (e.g. output rows).
    ///   - minChunk: smallest chunk worth a thread; small jobs run inline.
    ///   - body: processes one contiguous range of items.
    public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threadCount, max(1, count / max(1, ignoresMinChunk ? 1 : minChunk)))
        if chunks == 1 {
            body(0..<count)
            return
        }
        #if os(Linux)
        if let state {
            if state.tryRun(count: count, chunks: chunks, body) { return }
            body(0..<count)  // pool busy (concurrent or nested call): run inline, same results
            return
        }
        #endif
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                let lo = count * c / chunks
                let hi = count * (c + 1) / chunks
                if lo < hi { body(lo..<hi) }
            }
        }
    }

    /// Calls `body(i)` once for every `i` in `0..<count`, handing tasks to threads one at a time
    /// (a thread that finishes early takes the next), at most `threadCount` at once.
    ///
    /// For independent tasks of uneven size, such as the experts of one MoE layer, each computed
    /// serially into its own output: which thread runs a task never changes its result, so
    /// results do not depend on the thread count. Tasks are started in index order.
    /// - Parameters:
    ///   - count: number of tasks.
    ///   - body: runs task `i`; must not depend on other tasks of the same call.
    public func forEachTask(_ count: Int, _ body: (Int) -> Void) {
        guard count > 0 else { return }
        if threadCount == 1 || count == 1 {
            for i in 0..<count { body(i) }
            return
        }
        #if os(Linux)
        if let state {
            // One chunk per task: the persistent workers already claim chunks dynamically.
            if state.tryRun(count: count, chunks: count, { r in for i in r { body(i) } }) { return }
            for i in 0..<count { body(i) }  // pool busy: inline, same results
            return
        }
        let next = TaskCounter()
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: min(threadCount, count)) { _ in
                while true {
                    let i = next.value.add(1, ordering: .relaxed).oldValue
                    if i >= count { break }
                    body(i)
                }
            }
        }
        #else
        let lanes = min(threadCount, count)
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: lanes) { c in
                var i = c
                while i < count {
                    body(i)
                    i += lanes
                }
            }
        }
        #endif
    }
}

#if os(Linux)
/// The shared "next task" index of one `forEachTask` call on the `concurrentPerform` backend.
private final class TaskCounter: @unchecked Sendable {
    let value = Atomic<Int>(0)
}
#endif

#if os(Linux)
/// Shared state of the persistent workers.
///
/// A job is `chunks` fixed ranges of `0..<count`. The caller publishes the job fields, then one
/// atomic word `claim` = generation (high 32 bits) | chunks (16) | next unclaimed chunk (16),
/// with release ordering. The caller and any awake worker claim chunks by compare-and-swap on
/// that word, so a claim is only ever taken for the job whose generation it read; a worker that
/// wakes late finds the generation gone or nothing left and does nothing. The caller runs chunks
/// too (all of them if the workers are asleep or descheduled), then waits until `done` equals
/// `chunks`: the job's closure never outlives the call, and a claimed chunk keeps the job's
/// fields stable until it is done. Which thread runs a chunk never changes the result.
private final class PoolState: @unchecked Sendable {
    let workers: Int
    let claim = Atomic<Int>(0)
    let done = Atomic<Int>(0)
    let busy = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
    var started = false
    var generation = 0

    // Job fields, written by the caller before publishing.
    var jobBody: ((Range<Int>) -> Void)?
    var jobCount = 0

    // Sleeping workers wait here.
    var mutex = pthread_mutex_t()
    var cond = pthread_cond_t()
    var sleepers = 0

    /// How long an idle worker spins before it sleeps (`PREMOE_SPIN_US` overrides, in µs). Timed
    /// rather than counted: the earlier 4,000 spins lasted 50-100 µs on Zen 3 but far less on
    /// Zen 5, where workers then slept between a decode step's jobs and paid a futex wake-up
    /// each time. Bench model decode on Zen 5 (2 threads, 5-7 interleaved runs, medians): Q8_0
    /// 153-164 tok/s with the count, 166-177 spinning 200 or 1,000 µs; Q4_0 211 against 235-250.
    static let spinNanoseconds: UInt64 =
        (ProcessInfo.processInfo.environment["PREMOE_SPIN_US"].flatMap { UInt64($0) } ?? 1_000) * 1_000

    /// An idle worker gives its core away (`sched_yield`) every this many spins while it spins
    /// (`PREMOE_SPIN_YIELD` overrides; 0 never): the threads that share the cores (a server's
    /// HTTP threads, the engine thread itself after a preemption) run at once instead of waiting
    /// for the worker's time slice. Measured on the 2-core Zen 5 (2026-12-03), interleaved:
    /// demo-model decode 5,368-5,909 tok/s yielding every 64 spins against 4,304-4,793 never
    /// (4 of 4 pairs); `premoe serve`, 16 streams, 4,914-5,005 against 3,887-3,923 tokens/s
    /// (and 4,760 against 4,463), one stream 2,931-3,384 against 2,823-2,955.
    static let yieldEvery = ProcessInfo.processInfo.environment["PREMOE_SPIN_YIELD"].flatMap { Int($0) } ?? 64

    init(workers: Int) {
        self.workers = workers
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    func startWorkers() {
        started = true
        for w in 0..<workers {
            let thread = Thread { [self] in self.workerLoop() }
            thread.name = "premoe-kernels-\(w + 1)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    @inline(__always) static func generation(_ word: Int) -> Int { word >> 32 }

    /// Claims the next chunk of job `gen`, or returns nil when it has none left or is gone.
    @inline(__always)
    func claimChunk(generation gen: Int) -> (chunk: Int, chunks: Int)? {
        var word = claim.load(ordering: .acquiring)
        while true {
            let chunks = (word >> 16) & 0xFFFF
            let next = word & 0xFFFF
            guard Self.generation(word) == gen, next < chunks else { return nil }
            let (exchanged, original) = claim.compareExchange(
                expected: word, desired: word + 1, ordering: .acquiringAndReleasing)
            if exchanged { return (next, chunks) }
            word = original
        }
    }

    @inline(__always)
    func range(_ chunk: Int, of chunks: Int) -> Range<Int> {
        let count = jobCount
        return (count * chunk / chunks)..<(count * (chunk + 1) / chunks)
    }

    func tryRun(count: Int, chunks: Int, _ body: (Range<Int>) -> Void) -> Bool {
        guard chunks <= 0xFFFF,
            busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else { return false }
        if !started { startWorkers() }
        withoutActuallyEscaping(body) { body in
            jobBody = body
            jobCount = count
            done.store(0, ordering: .relaxed)
            generation = (generation + 1) & 0x7FFF_FFFF
            let gen = generation
            claim.store((gen << 32) | (chunks << 16), ordering: .releasing)
            pthread_mutex_lock(&mutex)
            if sleepers > 0 { pthread_cond_broadcast(&cond) }
            pthread_mutex_unlock(&mutex)

            while let (chunk, chunks) = claimChunk(generation: gen) {
                let r = range(chunk, of: chunks)
                if !r.isEmpty { body(r) }
                done.add(1, ordering: .releasing)
            }
            var spins = 0
            while done.load(ordering: .acquiring) != chunks {
                spins += 1
                if spins > 1000 { sched_yield() }
            }
            jobBody = nil
        }
        busy.store(false, ordering: .releasing)
        return true
    }

    func workerLoop() {
        var seen = 0
        while true {
            var word = claim.load(ordering: .acquiring)
            var spins = 0
            let spinStart = DispatchTime.now().uptimeNanoseconds
            while Self.generation(word) == seen {
                if stopping.load(ordering: .relaxed) { return }
                spins += 1
                if Self.yieldEvery > 0, spins % Self.yieldEvery == 0 { sched_yield() }
                // The clock is read once per 64 spins.
                if spins & 63 == 0, DispatchTime.now().uptimeNanoseconds &- spinStart > Self.spinNanoseconds {
                    pthread_mutex_lock(&mutex)
                    sleepers += 1
                    while Self.generation(claim.load(ordering: .acquiring)) == seen
                        && !stopping.load(ordering: .relaxed)
                    {
                        pthread_cond_wait(&cond, &mutex)
                    }
                    sleepers -= 1
                    pthread_mutex_unlock(&mutex)
                    spins = 0
                }
                word = claim.load(ordering: .acquiring)
            }
            if stopping.load(ordering: .relaxed) { return }
            seen = Self.generation(word)
            work(generation: seen)
        }
    }

    /// Runs chunks of job `gen` while any are left.
    func work(generation gen: Int) {
        while let (chunk, chunks) = claimChunk(generation: gen) {
            // The claimed, unfinished chunk pins the job: its fields are stable until `done`.
            runClaimed(chunk, of: chunks)
            done.add(1, ordering: .releasing)
        }
    }

    /// A separate, never-inlined function so that the worker's reference to the job's closure
    /// is released before it reports the chunk done (the caller's `withoutActuallyEscaping`
    /// checks that nothing kept the closure).
    @inline(never)
    func runClaimed(_ chunk: Int, of chunks: Int) {
        let r = range(chunk, of: chunks)
        if !r.isEmpty, let body = jobBody { body(r) }
    }

    func shutdown() {
        stopping.store(true, ordering: .releasing)
        pthread_mutex_lock(&mutex)
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
    }
}
#endif
