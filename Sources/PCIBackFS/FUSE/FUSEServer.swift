import CFuse

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Serves a `FileSystemModel` at a mount point through libfuse's low-level API.
///
/// Lifecycle:
/// ```
/// let server = FUSEServer(model: tree, options: .init(allowOther: true))
/// try server.mount(at: "/run/pcibackfs/sys")
/// let why = try server.run(onReady: { notifySystemdReady() })   // blocks
/// server.unmount()
/// ```
/// `run()` returns when the file system is unmounted from outside (`umount`,
/// `fusermount3 -u`), when `exit()` is called from another thread, or when SIGINT, SIGTERM or
/// SIGHUP arrives (if `installsSignalHandlers`). The file system stays mounted after `exit()`
/// or a signal until `unmount()` (or deinit).
public final class FUSEServer: Sendable {
    public struct Options: Sendable, Equatable {
        /// `allow_other`: let users other than the mounting one see the tree.
        public var allowOther: Bool
        /// Upper bound of libfuse worker threads.
        public var maxThreads: Int
        /// One /dev/fuse descriptor per worker thread.
        public var cloneFD: Bool
        /// libfuse's request trace on standard error (`-d`).
        public var debug: Bool
        /// `fsname=` (first column of /proc/mounts).
        public var fsName: String
        /// `subtype=` (the type shows as `fuse.<subtype>`).
        public var subtype: String
        /// `auto_unmount`: fusermount3 unmounts if the daemon dies.
        public var autoUnmount: Bool
        /// Have `run()` install libfuse's handlers (INT, TERM and HUP end the loop, PIPE is
        /// ignored) and remove them when it returns. Only one session per process can own them.
        public var installsSignalHandlers: Bool

        public init(
            allowOther: Bool = false,
            maxThreads: Int = 8,
            cloneFD: Bool = true,
            debug: Bool = false,
            fsName: String = "pcibackfs",
            subtype: String = "pcibackfs",
            autoUnmount: Bool = false,
            installsSignalHandlers: Bool = true
        ) {
            self.allowOther = allowOther
            self.maxThreads = maxThreads
            self.cloneFD = cloneFD
            self.debug = debug
            self.fsName = fsName
            self.subtype = subtype
            self.autoUnmount = autoUnmount
            self.installsSignalHandlers = installsSignalHandlers
        }

        /// The `-o` list handed to libfuse. `default_permissions` is always on: the kernel
        /// checks the mode bits the model reports.
        var mountOptionList: String {
            var list = ["default_permissions", "fsname=\(Self.escape(fsName))", "subtype=\(Self.escape(subtype))"]
            if allowOther { list.append("allow_other") }
            if autoUnmount { list.append("auto_unmount") }
            return list.joined(separator: ",")
        }

        /// libfuse's option parser splits at commas; a backslash escapes the next character.
        static func escape(_ value: String) -> String {
            var escaped = ""
            for character in value {
                if character == "," || character == "\\" { escaped.append("\\") }
                escaped.append(character)
            }
            return escaped
        }
    }

    /// Why `run()` returned.
    public enum Termination: Sendable, Equatable {
        /// The file system was unmounted (or the connection aborted) from outside.
        case unmounted
        /// `exit()` was called.
        case exitRequested
        /// One of the signals handled by libfuse's handlers arrived.
        case signal(Int32)
    }

    public let model: any FileSystemModel
    public let options: Options

    private let dispatcher: FUSEDispatcher
    private let state = Locked(State())

    private struct State {
        var session: Session?
        var mountPoint: String?
        var isRunning = false
        var exitRequested = false
        /// Counts run() calls, so a signal watcher knows when its run() has ended.
        var generation = 0
        /// pthread_t of the thread inside `run()`, to catch `unmount()` from that thread.
        var loopThread: pthread_t?
    }

    /// A `struct fuse_session *`. libfuse is built to be used from many threads; what needs
    /// protecting is the lifecycle (create, run, destroy), which `state` serialises.
    private struct Session: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    public init(model: any FileSystemModel, options: Options = Options()) {
        self.model = model
        self.options = options
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.dispatcher = FUSEDispatcher(model: model, timestamp: now.tv_sec)
    }

    deinit {
        // run() keeps `self` alive, so the loop can't be running here.
        if let session = state.withLock({ $0.session }) {
            teardown(session)
        }
    }

    /// The canonical mount point while mounted.
    public var mountPoint: String? {
        state.withLock { $0.mountPoint }
    }

    /// True while `run()` is inside the libfuse loop.
    public var isRunning: Bool {
        state.withLock { $0.isRunning }
    }

    /// Creates the libfuse session and mounts it at `path` (an existing directory). Requests
    /// from other processes wait in the kernel until `run()` starts serving them.
    public func mount(at path: String) throws(Errno) {
        try state.withLock { state throws(Errno) in
            guard state.session == nil else { throw .resourceBusy }
            let mountPoint = try Self.canonicalDirectory(path)

            var arguments = fuse_args(argc: 0, argv: nil, allocated: 0)
            defer { fuse_opt_free_args(&arguments) }
            var list = ["pcibackfsd"]
            if options.debug { list.append("-d") }
            list += ["-o", options.mountOptionList]
            for argument in list where fuse_opt_add_arg(&arguments, argument) != 0 {
                throw .outOfMemory
            }

            var operations = FUSEOperations.make()
            // libfuse copies the operations table; the dispatcher outlives the session (self owns both).
            guard let pointer = cfuse_session_new(&arguments, &operations, dispatcher.userdata) else {
                throw .invalidArgument // libfuse has printed which option it rejected
            }
            errno = 0
            guard fuse_session_mount(pointer, mountPoint) == 0 else {
                let error = errno
                fuse_session_destroy(pointer)
                throw Errno(error > 0 ? error : EIO)
            }
            dispatcher.attach(session: pointer)
            state.session = Session(pointer: pointer)
            state.mountPoint = mountPoint
        }
    }

    /// Serves requests on up to `options.maxThreads` threads until the file system is
    /// unmounted, `exit()` is called, or a handled signal arrives.
    ///
    /// `onReady` runs on the calling thread once the mount exists and the signal handlers are
    /// in place, right before the loop starts: the moment to tell a supervisor (sd_notify
    /// READY=1). Requests made before the loop starts wait in the kernel, they don't fail.
    @discardableResult
    public func run(onReady: () -> Void = {}) throws(Errno) -> Termination {
        let (session, generation) = try state.withLock { state throws(Errno) -> (Session, Int) in
            guard let session = state.session else { throw Errno(ENOTCONN) }
            guard !state.isRunning else { throw .resourceBusy }
            state.isRunning = true
            state.loopThread = pthread_self()
            state.generation += 1
            return (session, state.generation)
        }
        defer {
            state.withLock { state in
                state.isRunning = false
                state.exitRequested = false
                state.loopThread = nil
            }
        }

        let handlesSignals = options.installsSignalHandlers
        if handlesSignals {
            // libfuse installs a handler only where the disposition is SIG_DFL. A daemon started
            // with `&` from a script inherits SIGINT ignored, yet INT and TERM must always stop
            // it; HUP keeps an inherited SIG_IGN (nohup).
            signal(SIGINT, SIG_DFL)
            signal(SIGTERM, SIG_DFL)
            guard fuse_set_signal_handlers(session.pointer) == 0 else { throw .ioError }
        }
        defer {
            if handlesSignals { fuse_remove_signal_handlers(session.pointer) }
        }
        // Make this thread a receiver of INT, TERM and HUP while the loop runs (libfuse's
        // workers block them), whatever mask the caller's thread had; restored afterwards.
        var callerMask = sigset_t()
        if handlesSignals {
            var handled = sigset_t()
            sigemptyset(&handled)
            for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&handled, signal) }
            pthread_sigmask(SIG_UNBLOCK, &handled, &callerMask)
            watchForSignals(generation: generation)
        }
        defer {
            if handlesSignals { pthread_sigmask(SIG_SETMASK, &callerMask, nil) }
        }

        onReady()
        let threads = UInt32(clamping: max(1, options.maxThreads))
        let result = cfuse_session_loop_mt(session.pointer, threads, options.cloneFD ? 1 : 0)

        if state.withLock({ $0.exitRequested }) { return .exitRequested }
        if result < 0 { throw Errno(-result) }
        if result > 0 { return .signal(result) }
        return .unmounted
    }

    /// Asks a running loop to stop; `run()` then returns `.exitRequested`. Safe from any
    /// thread, including a request handler; does not wait. Before `run()`, makes the next
    /// `run()` return at once. The file system stays mounted (see `unmount()`).
    public func exit() {
        // Flag the session under the lock, so unmount() can't destroy it meanwhile.
        let wakeAt = state.withLock { state -> String? in
            guard let session = state.session else { return nil }
            state.exitRequested = true
            fuse_session_exit(session.pointer)
            return state.isRunning ? state.mountPoint : nil
        }
        // libfuse 3.14 only notices the flag when a worker finishes a request (or a signal
        // interrupts the loop's wait). Send it a harmless request from a throwaway thread, so
        // that this never blocks, even when called from inside a handler.
        if let wakeAt {
            Self.poke(wakeAt)
        }
    }

    /// Stops the loop if it is running (waiting for `run()` to return), then unmounts and
    /// destroys the session. Idempotent. Must not be called from a request handler or from
    /// `onReady`, since it waits for the loop to end.
    public func unmount() {
        var lastPoke: UInt64 = 0
        while true {
            let action = state.withLock { state -> UnmountStep in
                guard let session = state.session else { return .done }
                if state.isRunning {
                    if let thread = state.loopThread, pthread_equal(thread, pthread_self()) != 0 {
                        return .calledFromLoop
                    }
                    return .waitForLoop
                }
                state.session = nil
                state.mountPoint = nil
                return .teardown(session)
            }
            switch action {
            case .done:
                return
            case .calledFromLoop:
                preconditionFailure("FUSEServer.unmount() called on the thread running the loop")
            case .teardown(let session):
                teardown(session)
                return
            case .waitForLoop:
                let now = Self.monotonicMilliseconds()
                if now - lastPoke >= 1000 {
                    exit()
                    lastPoke = now
                }
                usleep(2000)
            }
        }
    }

    /// libfuse's handlers only set the session's exit flag. The loop notices at once when the
    /// signal lands on the thread inside `run()` (its wait is interrupted), but a process-wide
    /// signal may be delivered to any other thread that doesn't block it. This watcher checks
    /// the flag every 100 ms while this run lasts and wakes the loop the way `exit()` does.
    private func watchForSignals(generation: Int) {
        let started = Self.startDetachedThread { [self] in
            while true {
                usleep(100_000)
                let check = state.withLock { state -> SignalCheck in
                    guard state.isRunning, state.generation == generation,
                          let session = state.session, let mountPoint = state.mountPoint
                    else { return .runEnded }
                    return fuse_session_exited(session.pointer) != 0 ? .exitFlagged(mountPoint) : .keepWatching
                }
                switch check {
                case .runEnded:
                    return
                case .keepWatching:
                    continue
                case .exitFlagged(let mountPoint):
                    Self.poke(mountPoint)
                    return
                }
            }
        }
        if !started {
            FUSELog.warning("no signal watcher thread: signals reach the loop only through its own thread")
        }
    }

    private enum SignalCheck {
        case runEnded, keepWatching, exitFlagged(String)
    }

    private enum UnmountStep {
        case done, calledFromLoop, waitForLoop, teardown(Session)
    }

    private func teardown(_ session: Session) {
        dispatcher.attach(session: nil)
        fuse_session_unmount(session.pointer)
        fuse_session_destroy(session.pointer)
    }

    // MARK: Helpers

    private static func canonicalDirectory(_ path: String) throws(Errno) -> String {
        guard let resolved = realpath(path, nil) else { throw Errno(errno) }
        defer { free(resolved) }
        var attributes = stat()
        guard stat(resolved, &attributes) == 0 else { throw Errno(errno) }
        guard attributes.st_mode & S_IFMT == S_IFDIR else { throw .notDirectory }
        return String(cString: resolved)
    }

    /// statfs(2) on the mount point always becomes a STATFS request, so one worker wakes up,
    /// sees the exit flag and ends the loop (libfuse 3.14 drops a request it reads after the
    /// flag is set; this one is then answered with ENOTCONN when the session is destroyed).
    /// Runs on a detached thread so that the caller never waits for the file system.
    private static func poke(_ mountPoint: String) {
        let started = startDetachedThread {
            var statistics = statvfs()
            _ = statvfs(mountPoint, &statistics)
        }
        if !started {
            FUSELog.warning("could not start a thread to wake the loop")
        }
    }

    /// A plain detached pthread (no Foundation in the library).
    private static func startDetachedThread(_ body: @escaping @Sendable () -> Void) -> Bool {
        let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { argument in
            Unmanaged<ThreadBody>.fromOpaque(argument!).takeRetainedValue().body()
            return nil
        }, box)
        guard created == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(box).release()
            return false
        }
        pthread_detach(thread)
        return true
    }

    private final class ThreadBody: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    private static func monotonicMilliseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec / 1_000_000)
    }
}
