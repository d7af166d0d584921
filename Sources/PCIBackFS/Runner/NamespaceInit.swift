import CFuse
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The init process of `pcibackfsd run`: pid 1 of the new pid namespace, in the new mount and
/// network namespaces. It lays the merged `/sys` over the host's, starts COMMAND, reaps
/// orphans as a pid 1 must, and ends when COMMAND ends (see `RunSupervisor` for the tree).
public final class NamespaceInit: Sendable {
    private let hostRoot: HostSysfs
    private let hostSubmounts: [String]
    private let warnings = Locked<[String]>([])

    /// Makes every mount private, mounts this pid namespace's /proc with `/proc/bus/pci`
    /// hidden, and opens the host's /sys before anything covers it. Blocks the signals that
    /// the init process handles on its own thread (so every later thread inherits the mask).
    public init() throws(SetupError) {
        var handled = NamespaceInit.handledSignals
        pthread_sigmask(SIG_BLOCK, &handled, nil)
        guard mount("none", "/", nil, UInt(MS_REC | MS_PRIVATE), nil) == 0 else {
            throw SetupError("cannot make the mounts of the new namespace private: \(Errno(errno))")
        }
        if mount("proc", "/proc", "proc", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), nil) != 0 {
            warnings.withLock { $0.append("kept the host's /proc (a new one could not be mounted: \(Errno(errno)))") }
        }
        var info = stat()
        if stat("/proc/bus/pci", &info) == 0,
           mount("none", "/proc/bus/pci", "tmpfs", UInt(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), "mode=0555,size=4k") != 0 {
            throw SetupError("cannot hide /proc/bus/pci: \(Errno(errno))")
        }
        do {
            hostRoot = try HostSysfs.open("/sys")
        } catch {
            throw SetupError("cannot open the host's /sys: \(error)")
        }
        hostSubmounts = Self.submounts(of: "/sys")
    }

    static var handledSignals: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGCHLD] { sigaddset(&set, signal) }
        return set
    }

    /// The host's /sys as the merged tree reads it.
    public var host: HostSysfs { hostRoot }

    /// Messages about what could not be set up exactly (printed by the caller).
    public var setupWarnings: [String] { warnings.withLock { $0 } }

    /// Notes a setup problem for `setupWarnings`.
    public func warn(_ message: String) { warnings.withLock { $0.append(message) } }

    /// Brings `lo` up, so the namespace's network is usable like a host's.
    public func bringUpLoopback() {
        if (try? ChildProcess.runToCompletion(["ip", "link", "set", "lo", "up"])) != 0 {
            warnings.withLock { $0.append("could not bring up lo (is iproute2 installed?)") }
        }
    }

    /// Binds every host submount of /sys (cgroup, debugfs, tracefs, bpf, ...) back at its place
    /// on top of the merged tree, so those stay the real file systems. Runs while the merged
    /// tree is being served (each mount looks its mount point up through it).
    func bindHostSubmounts() {
        for submount in hostSubmounts {
            let source = "/proc/self/fd/\(hostRoot.rootDescriptor)/\(submount)"
            if mount(source, "/sys/" + submount, nil, UInt(MS_BIND | MS_REC), nil) != 0 {
                warnings.withLock { $0.append("cannot bind the host's /sys/\(submount) back: \(Errno(errno))") }
            }
        }
    }

    /// Mount points below `root` (relative to it) that are not below another one: an rbind of
    /// each carries the rest along.
    static func submounts(of root: String) -> [String] {
        let points = Set(MountInfo.entries().map(\.mountPoint).filter { $0.hasPrefix(root + "/") }
            .map { String($0.dropFirst(root.count + 1)) })
        return points.filter { point in
            !points.contains { other in other != point && point.hasPrefix(other + "/") }
        }.sorted()
    }

    /// Serves `model` on /sys, runs `command` once it is served, and returns COMMAND's status
    /// (128+N when signal N ended it) after tearing the mount down. SIGINT, SIGTERM and SIGHUP
    /// (from `run`) are passed on to COMMAND.
    public func serve(_ model: any FileSystemModel, options: FUSEServer.Options, command: [String],
                      executable: String) throws(SetupError) -> Int32 {
        var options = options
        options.installsSignalHandlers = false
        let server = FUSEServer(model: model, options: options)
        do {
            try server.mount(at: "/sys")
        } catch {
            throw SetupError("cannot mount the merged /sys: \(error)")
        }
        defer { server.unmount() }
        let outcome = Locked<Int32?>(nil)
        let failure = Locked<SetupError?>(nil)
        do {
            try server.run(onReady: {
                Thread.detachNewThread { [self] in
                    bindHostSubmounts()
                    do throws(SetupError) {
                        let status = try superviseCommand(["pcibackfsd", RunSupervisor.execVerb] + command, executable: executable)
                        outcome.withLock { $0 = status }
                    } catch {
                        failure.withLock { $0 = error }
                    }
                    server.exit()
                }
            })
        } catch {
            throw SetupError("serving the merged /sys failed: \(error)")
        }
        if let error = failure.withLock({ $0 }) { throw error }
        return outcome.withLock { $0 } ?? 1
    }

    /// Spawns COMMAND (through the exec trampoline, which sets its parent-death signal), reaps
    /// every child until it exits, and relays stop signals to it.
    private func superviseCommand(_ arguments: [String], executable: String) throws(SetupError) -> Int32 {
        let command: pid_t
        do {
            command = try ChildProcess.spawn(arguments, executable: executable)
        } catch {
            throw SetupError("cannot start \(arguments.dropFirst(2).first ?? ""): \(error)")
        }
        var handled = Self.handledSignals
        while true {
            // Reap everything: orphans of the namespace are ours as its pid 1.
            var status: Int32 = 0
            while true {
                let pid = waitpid(-1, &status, WNOHANG)
                if pid <= 0 { break }
                if pid == command { return ChildProcess.exitCode(waitStatus: status) }
            }
            var info = siginfo_t()
            let signal = sigwaitinfo(&handled, &info)
            // `run` passes stop requests on with kill(2); a terminal's reached COMMAND itself.
            if signal > 0 && signal != SIGCHLD && !RunSupervisor.sentByTerminal(info) { kill(command, signal) }
        }
    }
}

extension RunSupervisor {
    /// argv[1] of the init process: `pcibackfsd __run-init [options] -- COMMAND...`.
    public static let initVerb = "__run-init"

    /// argv[1] of the trampoline that becomes COMMAND: `pcibackfsd __exec COMMAND ARGS...`.
    public static let execVerb = "__exec"

    /// The trampoline: sets the parent-death signal (which survives execve), then becomes
    /// COMMAND. Never returns; 127 when COMMAND is not found, 126 when it cannot be run.
    public static func execCommand(_ command: [String]) -> Never {
        _ = csys_set_parent_death_signal(SIGKILL)
        guard let name = command.first else { _exit(127) }
        let argv = command.map { strdup($0) } + [nil]
        execvp(name, argv)
        let error = errno
        let message = "pcibackfsd run: \(name): \(Errno(error))\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        _exit(error == ENOENT ? 127 : 126)
    }
}
