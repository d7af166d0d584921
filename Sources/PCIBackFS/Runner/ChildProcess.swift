#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Starting and reaping the processes of `pcibackfsd run`.
enum ChildProcess {
    /// The signals `run` handles itself; children start with them at their defaults and
    /// unblocked, whatever the parent did with them.
    static let relayedSignals: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGPIPE]

    /// posix_spawn(p) of `arguments` with default dispositions for `relayedSignals`, an empty
    /// signal mask, and `descriptors` (child descriptor ← parent descriptor) dup'ed in.
    /// `executable` is the file to run (default `arguments[0]`).
    static func spawn(_ arguments: [String], executable: String? = nil, searchPath: Bool = false,
                      descriptors: [(child: Int32, parent: Int32)] = []) throws(Errno) -> pid_t {
        precondition(!arguments.isEmpty)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in relayedSignals { sigaddset(&defaults, signal) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (child, parent) in descriptors { posix_spawn_file_actions_adddup2(&actions, parent, child) }

        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let result: Int32 = argv.withUnsafeBufferPointer { argvBuffer in
            let argvPointer = UnsafePointer(argvBuffer.baseAddress!)
            return searchPath
                ? posix_spawnp(&pid, executable ?? arguments[0], &actions, &attributes, argvPointer, Glibc.environ)
                : posix_spawn(&pid, executable ?? arguments[0], &actions, &attributes, argvPointer, Glibc.environ)
        }
        guard result == 0 else { throw Errno(result) }
        return pid
    }

    /// Runs `arguments` (looked up in PATH) to completion; its exit code, 128+N for signal N.
    static func runToCompletion(_ arguments: [String]) throws(Errno) -> Int32 {
        let pid = try spawn(arguments, searchPath: true)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw Errno(errno) }
        }
        return exitCode(waitStatus: status)
    }

    /// A shell's `$?` for a wait status: the exit code, or 128+N when signal N ended it.
    static func exitCode(waitStatus status: Int32) -> Int32 {
        let signal = status & 0x7f
        if signal == 0 { return (status >> 8) & 0xff }
        return 128 + signal
    }
}
