import CFuse

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process a user starts as `pcibackfsd run ... -- COMMAND`.
///
/// Process tree, and why:
/// ```
/// pcibackfsd run            host's pid namespace; new mount, network (and user) namespaces;
///  │                        relays SIGINT/SIGTERM/SIGHUP; exits with COMMAND's status
///  └─ pcibackfsd (init)     pid 1 of a new pid namespace, parent-death signal SIGKILL:
///      │                    mounts the merged /sys (FUSE) and serves it from its threads
///      └─ COMMAND           parent-death signal SIGKILL
/// ```
/// The daemon and its mounts live only inside the new namespaces: when the init process dies
/// (COMMAND ended, `run` was killed, even by SIGKILL), the kernel kills every process of its pid
/// namespace, and the mount namespace, with the FUSE mount, goes with the last of them.
///
/// `unshare(CLONE_NEWUSER)` fails once a process has threads, so `enterNamespaces` runs first
/// thing, while the Swift process is still single-threaded; the init process is this executable
/// again (a fresh, single-threaded image), started after the unshare so it is born pid 1.
public enum RunSupervisor {
    /// The descriptor on which the init process finds its lifeline: the read end of a pipe
    /// whose write end only `run` holds, so that it reads end-of-file once `run` is gone.
    public static let lifelineDescriptor: Int32 = 3

    /// Enters new mount, network and pid namespaces, and a user namespace in which the caller
    /// is root when it is not root already. Call while the process is single-threaded.
    public static func enterNamespaces() throws(SetupError) {
        let threads = directoryNames("/proc/self/task")?.count ?? 1
        guard threads == 1 else {
            throw SetupError("internal error: \(threads) threads before entering the namespaces (unshare needs one)")
        }
        var flags = CSYS_CLONE_NEWNS | CSYS_CLONE_NEWNET | CSYS_CLONE_NEWPID
        let uid = getuid(), gid = getgid()
        let unprivileged = geteuid() != 0
        if unprivileged { flags |= CSYS_CLONE_NEWUSER }
        guard csys_unshare(flags) == 0 else {
            let error = Errno(errno)
            if unprivileged {
                let why = error.rawValue == ENOSPC || error.rawValue == EUSERS
                    ? "the limit of user namespaces is reached (user.max_user_namespaces, or 32 levels of nesting)"
                    : "this kernel does not let unprivileged users create one"
                throw SetupError("""
                    cannot create a user namespace (\(error)): \(why). Run as root (sudo pcibackfsd run ...), \
                    or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 on Debian \
                    kernels, user.max_user_namespaces > 0, kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu)
                    """)
            }
            throw SetupError("cannot create mount, network and pid namespaces: \(error)")
        }
        if unprivileged {
            // Map ourselves to root inside; setgroups must be denied before an unprivileged
            // process may write its gid_map.
            do throws(Errno) {
                try writeProcFile("/proc/self/uid_map", "0 \(uid) 1\n")
                try writeProcFile("/proc/self/setgroups", "deny\n")
                try writeProcFile("/proc/self/gid_map", "0 \(gid) 1\n")
            } catch {
                throw SetupError("cannot map uid \(uid) to root in the new user namespace: \(error)")
            }
        }
    }

    /// Starts the init process (`initArguments` run from `executable`), relays the
    /// signals that stop `run` to it, and returns the status `run` exits with: the init
    /// process's exit code (COMMAND's status), or 128+N if signal N killed it.
    public static func superviseInit(_ initArguments: [String], executable: String) throws(SetupError) -> Int32 {
        var lifeline: [Int32] = [-1, -1]
        guard pipe(&lifeline) == 0 else { throw SetupError("cannot create a pipe: \(Errno(errno))") }
        _ = fcntl(lifeline[1], F_SETFD, FD_CLOEXEC)
        _ = fcntl(lifeline[0], F_SETFD, FD_CLOEXEC)

        // Blocked before the child exists, so none is lost; waited for below. The child gets
        // them unblocked and at their defaults (ChildProcess.spawn).
        var handled = sigset_t()
        sigemptyset(&handled)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGCHLD] { sigaddset(&handled, signal) }
        let hangupIgnored = isIgnored(SIGHUP)
        var previousMask = sigset_t()
        sigprocmask(SIG_BLOCK, &handled, &previousMask)
        defer { sigprocmask(SIG_SETMASK, &previousMask, nil) }

        let child: pid_t
        do {
            child = try ChildProcess.spawn(initArguments, executable: executable, descriptors: [(lifelineDescriptor, lifeline[0])])
        } catch {
            throw SetupError("cannot start \(initArguments[0]): \(error)")
        }
        close(lifeline[0])
        defer { close(lifeline[1]) }

        var stopRequests = 0
        while true {
            var status: Int32 = 0
            let reaped = waitpid(child, &status, WNOHANG)
            if reaped == child { return ChildProcess.exitCode(waitStatus: status) }
            var info = siginfo_t()
            let signal = sigwaitinfo(&handled, &info)
            guard signal > 0 else { continue }
            switch signal {
            case SIGCHLD:
                continue
            case SIGHUP where hangupIgnored:
                continue
            case _ where sentByTerminal(info):
                // The terminal sent it to its whole foreground group, COMMAND included: how to
                // react is COMMAND's business (an interactive shell ignores ^C).
                continue
            default:
                // The first request is passed on (COMMAND decides how to end); a second one
                // ends the namespace at once.
                stopRequests += 1
                kill(child, stopRequests == 1 ? signal : SIGKILL)
            }
        }
    }

    /// Called first thing by the init process: die with `run`, and stop now if `run` is
    /// already gone (its end of the lifeline is closed).
    public static func bindLifetimeToSupervisor() {
        _ = csys_set_parent_death_signal(SIGKILL)
        var descriptor = pollfd(fd: lifelineDescriptor, events: Int16(POLLIN), revents: 0)
        if poll(&descriptor, 1, 0) == 1, descriptor.revents & Int16(POLLHUP | POLLIN) != 0 { _exit(1) }
        close(lifelineDescriptor)
    }

    /// Whether the kernel sent the signal (a terminal's ^C, ^\\, hang-up) rather than kill(2).
    static func sentByTerminal(_ info: siginfo_t) -> Bool {
        info.si_code == 0x80  // SI_KERNEL
    }

    private static func isIgnored(_ signal: Int32) -> Bool {
        var current = sigaction()
        sigaction(signal, nil, &current)
        // SIG_IGN is the handler value 1.
        return current.__sigaction_handler.sa_handler.map { unsafeBitCast($0, to: Int.self) } == 1
    }
}

func writeProcFile(_ path: String, _ text: String) throws(Errno) {
    let descriptor = open(path, O_WRONLY | O_CLOEXEC)
    guard descriptor >= 0 else { throw Errno(errno) }
    defer { close(descriptor) }
    let written = text.withCString { write(descriptor, $0, strlen($0)) }
    guard written == text.utf8.count else { throw Errno(written < 0 ? errno : EIO) }
}
