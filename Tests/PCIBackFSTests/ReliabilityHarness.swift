// Helpers of the reliability suites (BadInputTests, AccessControlTests), on top of MountHarness:
// one daemon shared by a whole suite (started and torn down by a scoping trait), a hard deadline
// per operation that aborts the FUSE connection, raw syscalls that report errno, and running a
// command as the unprivileged user `nobody`.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing
import PCIBackFS

// MARK: - One daemon for a suite

/// The daemon of the running suite, with the FUSE connection its hard deadlines abort.
final class SharedMount: Sendable {
    let mount: DaemonMount
    /// `/sys/fs/fuse/connections/<minor>` of this mount, if fusectl is mounted.
    let connection: String?

    init(_ mount: DaemonMount) {
        self.mount = mount
        var info = Glibc.stat()
        if stat(mount.root, &info) == 0 {
            // glibc's gnu_dev_minor.
            let device = UInt64(info.st_dev)
            let minor = (device & 0xff) | ((device >> 12) & 0xffff_ff00)
            let path = "/sys/fs/fuse/connections/\(minor)"
            connection = access(path + "/abort", W_OK) == 0 ? path : nil
        } else {
            connection = nil
        }
    }

    @TaskLocal static var current: SharedMount?

    /// Runs `body`; if it has not returned after `seconds`, the FUSE connection is aborted so that
    /// the hung syscall returns ENOTCONN (and the daemon is killed if the abort is impossible),
    /// and the overrun is recorded. The daemon is then unusable: later cases fail fast.
    func withDeadline<T>(_ what: @autoclosure () -> String, seconds: Double = 10, _ body: () throws -> T) rethrows -> T {
        let fired = DeadlineFlag()
        let connection = self.connection
        let mount = self.mount
        let item = DispatchWorkItem {
            fired.value.withLock { $0 = true }
            if let connection {
                let fd = open(connection + "/abort", O_WRONLY | O_CLOEXEC)
                if fd >= 0 {
                    _ = "1".withCString { Glibc.write(fd, $0, 1) }
                    close(fd)
                    return
                }
            }
            mount.stop()
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: item)
        defer {
            item.cancel()
            if fired.value.withLock({ $0 }) {
                Issue.record("\(what()) did not complete within \(seconds) s: the FUSE connection was aborted")
            }
        }
        return try body()
    }
}

private final class DeadlineFlag: Sendable {
    let value = Locked(false)
}

/// Starts one daemon (with `options`) around a whole suite, runs `prepare` on it, exposes it as
/// `SharedMount.current` to the suite's tests, and after the last one checks that it still serves
/// (a final `cat`) before the harness's teardown: lazy unmount, SIGTERM, SIGKILL.
struct SharedDaemonTrait: SuiteTrait, TestScoping {
    var options: [String]
    /// The harness's watchdog: the daemon is killed whatever the tests are doing after this.
    var watchdog: Double
    var prepare: @Sendable (SharedMount) throws -> Void

    var isRecursive: Bool { false }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        // Without root and /dev/fuse the suite's condition trait skips every test.
        guard MountEnvironment.canMount else {
            try await function()
            return
        }
        let mount = try DaemonMount(options, watchdog: watchdog)
        defer { mount.stop() }
        let shared = SharedMount(mount)
        try shared.withDeadline("preparing the shared daemon", seconds: 30) { try prepare(shared) }
        try await SharedMount.$current.withValue(shared) { try await function() }
        let profile = shared.withDeadline("the final cat") { try? mount.cat("fs/pcibackfs/profile") }
        #expect(profile?.isEmpty == false, "the daemon no longer serves a plain cat after the suite:\n\(mount.daemonLog)")
        #expect(mount.isRunning, "pcibackfsd died during the suite:\n\(mount.daemonLog)")
    }
}

extension Trait where Self == SharedDaemonTrait {
    static func sharedDaemon(_ options: [String] = [], watchdog: Double = 900,
                             prepare: @escaping @Sendable (SharedMount) throws -> Void = { _ in }) -> Self {
        SharedDaemonTrait(options: options, watchdog: watchdog, prepare: prepare)
    }
}

// MARK: - Raw syscalls

/// What one raw operation on a file gave, as a client sees it.
enum RawOutcome: Sendable, Equatable, CustomStringConvertible {
    /// The transfer returned this count (bytes written, or bytes read).
    case count(Int)
    /// read/write/pread/pwrite failed with this errno.
    case failure(Int32)
    /// open(2) failed with this errno.
    case openFailure(Int32)
    /// A pci_op line was taken (the write's count) and the op's result line.
    case result(Int, String)

    var description: String {
        switch self {
        case .count(let count): return "count \(count)"
        case .failure(let error): return "failed \(Sys.errnoName(error))"
        case .openFailure(let error): return "open failed \(Sys.errnoName(error))"
        case .result(let count, let line): return "count \(count), result \(line.debugDescription)"
        }
    }
}

enum Raw {
    /// open(flags), then write(2) (or pwrite(2) at `offset`) of `bytes` in one call, close.
    static func write(_ path: String, _ bytes: [UInt8], at offset: Int? = nil, flags: Int32 = O_WRONLY) -> RawOutcome {
        let fd = Glibc.open(path, flags | O_CLOEXEC)
        if fd < 0 { return .openFailure(errno) }
        defer { close(fd) }
        return transfer(fd, bytes, at: offset)
    }

    static func transfer(_ fd: Int32, _ bytes: [UInt8], at offset: Int?) -> RawOutcome {
        let count = bytes.withUnsafeBytes { buffer -> Int in
            if let offset { return Glibc.pwrite(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
            return Glibc.write(fd, buffer.baseAddress, buffer.count)
        }
        return count < 0 ? .failure(errno) : .count(count)
    }

    /// pread(2) of `count` bytes at `offset` on a fresh O_RDONLY descriptor.
    static func read(_ path: String, offset: Int, count: Int) -> (RawOutcome, [UInt8]) {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return (.openFailure(errno), []) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: max(count, 1))
        let got = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, off_t(offset)) }
        if got < 0 { return (.failure(errno), []) }
        return (.count(got), Array(buffer[0..<got]))
    }

    /// Only open(2) with `flags`, then close.
    static func open(_ path: String, flags: Int32) -> RawOutcome {
        let fd = Glibc.open(path, flags | O_CLOEXEC)
        if fd < 0 { return .openFailure(errno) }
        close(fd)
        return .count(0)
    }
}

// MARK: - As another user

/// Runs commands as `nobody` (uid/gid 65534, no supplementary groups) through setpriv, and turns
/// the messages of coreutils and the shell back into the errno they print.
enum Unprivileged {
    static let uid = 65534

    static var available: Bool { Tools.find("setpriv") != nil && Tools.find("dd") != nil }

    static func run(_ command: [String], timeout: Double = 10) -> ProcessResult {
        Subprocess.run("setpriv", ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", "--"] + command, timeout: timeout)
    }

    /// `dd if=PATH bs=65536 count=1` (one read(2) of up to 64 KiB at the start): the bytes, or
    /// the errno of the open or the read.
    static func read(_ path: String) -> Result<[UInt8], ErrnoMessage> {
        let result = run(["dd", "if=" + path, "bs=65536", "count=1", "status=none"])
        if result.succeeded { return .success(result.stdoutBytes) }
        return .failure(ErrnoMessage(result))
    }

    /// A shell redirect, as a user would type it: `printf %s TEXT > PATH` (O_WRONLY|O_CREAT|O_TRUNC).
    static func echo(_ text: String, to path: String) -> Result<Void, ErrnoMessage> {
        let result = run(["sh", "-c", "printf %s \"$1\" > \"$2\"", "sh", text, path])
        if result.succeeded { return .success(()) }
        return .failure(ErrnoMessage(result))
    }

    /// `dd of=PATH conv=notrunc` of TEXT (O_WRONLY|O_CREAT, no O_TRUNC), as libxl-style writers do.
    static func write(_ text: String, to path: String) -> Result<Void, ErrnoMessage> {
        let result = run(["sh", "-c", "printf %s \"$1\" | dd of=\"$2\" conv=notrunc status=none", "sh", text, path])
        if result.succeeded { return .success(()) }
        return .failure(ErrnoMessage(result))
    }
}

/// The errno a failed command reported, recovered from its `strerror` text (the last
/// ": message" of standard error), with the raw text for the failure message.
struct ErrnoMessage: Error, Equatable, CustomStringConvertible {
    var errno: Int32?
    var text: String

    init(_ result: ProcessResult) {
        text = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        let message = text.components(separatedBy: ": ").last ?? text
        errno = ErrnoMessage.byMessage[message]
    }

    static let byMessage: [String: Int32] = {
        var table: [String: Int32] = [:]
        for number in Int32(1)...Int32(133) {
            if let text = strerror(number) { table[String(cString: text)] = number }
        }
        return table
    }()

    var description: String { "\(errno.map(Sys.errnoName) ?? "unknown errno"): \(text)" }
}
#endif
