#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A value behind a pthread mutex, with the `withLock` shape of `Synchronization.Mutex`.
/// Copies share one lock and value (like a class reference).
///
/// Why not `Mutex`: on Linux it is built on futexes inside an uninstrumented module, so
/// ThreadSanitizer sees none of its ordering and reports every access behind it as a race.
/// pthread mutexes are intercepted by the sanitizer, and cost the same uncontended.
public struct Locked<Value>: @unchecked Sendable {
    /// The value and the mutex in one allocation (a handle per open file has one of these).
    private final class Storage: ManagedBuffer<Value, pthread_mutex_t> {
        deinit {
            _ = withUnsafeMutablePointers { _, mutex in pthread_mutex_destroy(mutex) }
        }
    }

    private let storage: Storage

    public init(_ initialValue: sending Value) {
        // ManagedBuffer keeps the header and elements in place: the mutex never moves, as
        // pthread_mutex_t requires, and the value needs no exclusivity check of a class property.
        let buffer = Storage.create(minimumCapacity: 1) { _ in initialValue }
        storage = unsafeDowncast(buffer, to: Storage.self)
        storage.withUnsafeMutablePointers { _, mutex in
            mutex.initialize(to: pthread_mutex_t())
            _ = pthread_mutex_init(mutex, nil)
        }
    }

    /// Runs `body` with the lock held. `body` must not call back into the same lock.
    @inline(__always)
    public func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        try storage.withUnsafeMutablePointers { (value, mutex) throws(E) -> Result in
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return try body(&value.pointee)
        }
    }
}
