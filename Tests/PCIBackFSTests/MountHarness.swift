// The mount tests drive Linux FUSE with glibc's calls; elsewhere they are not built.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// The harness of the mount tests: it runs the real, built `pcibackfsd` on a fresh temporary
// directory, waits until the tree is served, and always tears it down the way sshfs's test
// suite does (lazy unmount, SIGTERM, SIGKILL after a second, remove the directory). Every wait
// has a deadline, a watchdog kills the daemon if a test overruns (which aborts the FUSE
// connection, so a hung syscall returns ENOTCONN instead of wedging the run), and the client
// helpers issue the exact syscalls real clients issue, reporting the errno of each.

// MARK: - Environment

enum MountEnvironment {
    /// The package root, from this file's location (Tests/PCIBackFSTests/MountHarness.swift).
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The daemon `swift build` produced (not `--show-bin-path`: that re-plans the build).
    static var daemonPath: String { packageRoot + "/.build/debug/pcibackfsd" }

    static var isRoot: Bool { geteuid() == 0 }

    static var hasFUSEDevice: Bool {
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        close(fd)
        return true
    }

    static var canMount: Bool { isRoot && hasFUSEDevice && Tools.find("fusermount3") != nil }

    static var skipMessage: Comment {
        if !isRoot { return "skipped: mount tests need root (the daemon and the clients run as root, as on a dom0)" }
        if !hasFUSEDevice { return "skipped: /dev/fuse is missing or cannot be opened read-write" }
        return "skipped: fusermount3 is not installed (package fuse3)"
    }

    /// The pciutils dumps provided read-only next to the project (never copied into it).
    static var testDataDirectory: String {
        URL(fileURLWithPath: packageRoot).deletingLastPathComponent().path + "/shared/testdata/pciutils"
    }
}

extension Trait where Self == ConditionTrait {
    /// Root and /dev/fuse are needed to mount the daemon; without them the test is skipped.
    static var requiresDaemonMount: Self {
        .enabled(if: MountEnvironment.canMount, MountEnvironment.skipMessage)
    }

    /// A test that also needs an external program (lspci, setpci, driverctl, unshare, ...).
    static func requiresTool(_ name: String) -> Self {
        .enabled(if: Tools.find(name) != nil, "skipped: \(name) is not installed")
    }
}

enum Tools {
    static func find(_ name: String) -> String? {
        if name.hasPrefix("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        for directory in (path + ":/usr/sbin:/sbin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

// MARK: - Errors

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A failed syscall, with the call and the errno it set.
struct SyscallError: Error, Equatable, CustomStringConvertible {
    var call: String
    var path: String
    var errno: Int32
    var description: String { "\(call)(\(path)): \(String(cString: strerror(errno))) (errno \(errno))" }
}

// MARK: - Subprocesses

struct ProcessResult: CustomStringConvertible {
    var status: Int32
    var stdoutBytes: [UInt8]
    var stderr: String
    var timedOut: Bool
    var stdout: String { String(decoding: stdoutBytes, as: UTF8.self) }
    var succeeded: Bool { status == 0 && !timedOut }
    var description: String {
        "exit \(status)\(timedOut ? " (timed out, killed)" : "")\n--- stdout\n\(stdout)--- stderr\n\(stderr)"
    }
}

enum Subprocess {
    /// Starts `executable` (searched in PATH) with stdin from /dev/null and stdout/stderr
    /// redirected to the given files, in its own process group. Returns the pid.
    static func spawn(_ executable: String, _ arguments: [String], stdoutPath: String, stderrPath: String) throws -> pid_t {
        guard let resolved = Tools.find(executable) else { throw HarnessError("\(executable): not found in PATH") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)

        let argv = ([resolved] + arguments).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let status = (argv + [nil]).withUnsafeBufferPointer { buffer in
            posix_spawn(&pid, resolved, &actions, &attributes, buffer.baseAddress!, environ)
        }
        guard status == 0 else { throw HarnessError("posix_spawn \(resolved): \(String(cString: strerror(status)))") }
        return pid
    }

    /// Waits for `pid` until `deadline`; nil if it is still running.
    static func wait(_ pid: pid_t, until deadline: Date) -> Int32? {
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return decode(status) }
            if result < 0 { return -1 }
            if Date() >= deadline { return nil }
            usleep(5_000)
        }
    }

    static func decode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        if signal == 0 { return (status >> 8) & 0xff }
        return 128 + signal
    }

    /// Runs a command to completion with a hard timeout (the process group is killed when it
    /// expires), capturing stdout, stderr and the exit status.
    static func run(_ executable: String, _ arguments: [String], timeout: Double = 30) -> ProcessResult {
        let directory = Temporary.directory(prefix: "pcibackfs-run")
        defer { Temporary.remove(directory) }
        let outPath = directory + "/stdout"
        let errPath = directory + "/stderr"
        let pid: pid_t
        do {
            pid = try spawn(executable, arguments, stdoutPath: outPath, stderrPath: errPath)
        } catch {
            return ProcessResult(status: 127, stdoutBytes: [], stderr: "\(error)", timedOut: false)
        }
        var timedOut = false
        var status = wait(pid, until: Date().addingTimeInterval(timeout))
        if status == nil {
            timedOut = true
            kill(-pid, SIGKILL)
            status = wait(pid, until: Date().addingTimeInterval(5)) ?? -1
        }
        let out = (try? Data(contentsOf: URL(fileURLWithPath: outPath))).map { [UInt8]($0) } ?? []
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return ProcessResult(status: status ?? -1, stdoutBytes: out, stderr: err, timedOut: timedOut)
    }

    /// `sh -c SCRIPT` with positional parameters.
    static func shell(_ script: String, _ parameters: [String] = [], timeout: Double = 30) -> ProcessResult {
        run("sh", ["-c", script, "sh"] + parameters, timeout: timeout)
    }
}

enum Temporary {
    static func directory(prefix: String) -> String {
        var template = Array("/tmp/\(prefix).XXXXXX".utf8CString)
        guard let result = mkdtemp(&template) else { return "/tmp/\(prefix).\(getpid()).\(UInt32.random(in: 0...UInt32.max))" }
        return String(cString: result)
    }

    static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }
}

// MARK: - Syscall-level clients

/// What one open(2) + write(2) + close(2) did, as a client sees it.
enum EchoResult: Equatable, CustomStringConvertible {
    case written(Int)
    case openFailed(Int32)
    case writeFailed(Int32)

    var description: String {
        switch self {
        case .written(let count): return "written(\(count))"
        case .openFailed(let error): return "openFailed(\(Sys.errnoName(error)))"
        case .writeFailed(let error): return "writeFailed(\(Sys.errnoName(error)))"
        }
    }
}

enum Sys {
    static func errnoName(_ error: Int32) -> String {
        let names: [Int32: String] = [
            EPERM: "EPERM", ENOENT: "ENOENT", EIO: "EIO", ENXIO: "ENXIO", EBADF: "EBADF", EACCES: "EACCES",
            EBUSY: "EBUSY", EEXIST: "EEXIST", ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR",
            EINVAL: "EINVAL", ENOSPC: "ENOSPC", ENOTCONN: "ENOTCONN", EALREADY: "EALREADY",
        ]
        return names[error] ?? "errno \(error)"
    }

    /// How the bytes reach the file.
    enum WriteStyle {
        /// A shell redirect (`echo x > file`): O_WRONLY|O_CREAT|O_TRUNC.
        case shellRedirect
        /// libxl's `sysfs_write_bdf`, libvirt, QEMU: O_WRONLY, no O_TRUNC.
        case plain
    }

    /// One open, one write of exactly `text`'s bytes, close; the errno of the call that failed.
    static func echo(_ text: String, to path: String, style: WriteStyle = .shellRedirect) -> EchoResult {
        let flags = style == .shellRedirect ? (O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC) : (O_WRONLY | O_CLOEXEC)
        let fd = open(path, flags, 0o644)
        if fd < 0 { return .openFailed(errno) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let count = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if count < 0 { return .writeFailed(errno) }
        return .written(count)
    }

    static func readBytes(_ path: String, chunk: Int = 4096) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SyscallError(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: chunk)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, chunk) }
            if count < 0 { throw SyscallError(call: "read", path: path, errno: errno) }
            if count == 0 { return result }
            result += buffer[0..<count]
            if result.count > 1 << 20 { throw HarnessError("\(path): more than 1 MiB, not a sysfs file") }
        }
    }

    /// `cat FILE`.
    static func cat(_ path: String) throws -> String {
        String(decoding: try readBytes(path), as: UTF8.self)
    }

    /// One read(2) of up to `count` bytes at the start of a fresh open.
    static func readOnce(_ path: String, count: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SyscallError(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: count)
        let got = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, count) }
        if got < 0 { throw SyscallError(call: "read", path: path, errno: errno) }
        return Array(buffer[0..<got])
    }

    /// The errno of open(path, flags), or 0 if it opened.
    static func openError(_ path: String, _ flags: Int32) -> Int32 {
        let fd = open(path, flags | O_CLOEXEC)
        if fd < 0 { return errno }
        close(fd)
        return 0
    }

    static func linkStatus(_ path: String) -> Result<Glibc.stat, SyscallError> {
        var info = Glibc.stat()
        if lstat(path, &info) != 0 { return .failure(SyscallError(call: "lstat", path: path, errno: errno)) }
        return .success(info)
    }

    static func fileStatus(_ path: String) -> Result<Glibc.stat, SyscallError> {
        var info = Glibc.stat()
        if stat(path, &info) != 0 { return .failure(SyscallError(call: "stat", path: path, errno: errno)) }
        return .success(info)
    }

    /// The errno lstat(2) gives, or 0.
    static func lstatError(_ path: String) -> Int32 {
        switch linkStatus(path) {
        case .success: return 0
        case .failure(let error): return error.errno
        }
    }

    /// The errno stat(2) gives, or 0.
    static func statError(_ path: String) -> Int32 {
        switch fileStatus(path) {
        case .success: return 0
        case .failure(let error): return error.errno
        }
    }

    static func readlink(_ path: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = Glibc.readlink(path, &buffer, buffer.count - 1)
        if count < 0 { throw SyscallError(call: "readlink", path: path, errno: errno) }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func realpath(_ path: String) throws -> String {
        guard let resolved = Glibc.realpath(path, nil) else { throw SyscallError(call: "realpath", path: path, errno: errno) }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// readdir(3) of a directory, without "." and "..".
    static func list(_ path: String) throws -> [String] {
        guard let directory = opendir(path) else { throw SyscallError(call: "opendir", path: path, errno: errno) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            // The name in place (an entry is only as long as its name; copying pointee overreads).
            let offset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
            let name = String(cString: UnsafeRawPointer(entry).advanced(by: offset).assumingMemoryBound(to: CChar.self))
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// pread(2) on a fresh descriptor.
    static func pread(_ path: String, offset: Int, count: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SyscallError(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        return try pread(fd: fd, path: path, offset: offset, count: count)
    }

    static func pread(fd: Int32, path: String = "fd", offset: Int, count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max(count, 1))
        let got = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, off_t(offset)) }
        if got < 0 { throw SyscallError(call: "pread", path: path, errno: errno) }
        return Array(buffer[0..<got])
    }

    /// A little-endian config register of `width` bytes through pread(2).
    static func configRead(_ path: String, offset: Int, width: Int) throws -> UInt32 {
        let bytes = try pread(path, offset: offset, count: width)
        guard bytes.count == width else { throw HarnessError("\(path): short pread of \(bytes.count)/\(width) at \(offset)") }
        return bytes.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// One pwrite(2) of a little-endian `width`-byte value; returns the byte count written.
    @discardableResult
    static func configWrite(_ path: String, offset: Int, width: Int, value: UInt32) throws -> Int {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw SyscallError(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        let bytes = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }
        let count = bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, width, off_t(offset)) }
        if count < 0 { throw SyscallError(call: "pwrite", path: path, errno: errno) }
        return count
    }
}

// MARK: - The daemon under test

/// One running `pcibackfsd` on its own temporary mount point.
final class DaemonMount: @unchecked Sendable {
    /// The mount point, resolved (realpath), so that it compares with `realpath` results.
    let root: String
    let arguments: [String]
    private let pid: pid_t
    private let workDirectory: String
    private let lock = NSLock()
    private var stopped = false

    static let readyMarker = "bus/pci/drivers/pciback"

    /// Starts the daemon with `options` and waits (≤ `timeout` s) until the tree is served
    /// (`ready` appears: a machine without pciback has no readyMarker).
    /// A watchdog kills the daemon after `watchdog` seconds whatever the test is doing.
    init(_ options: [String] = [], ready: String = DaemonMount.readyMarker, timeout: Double = 10, watchdog: Double = 55) throws {
        let daemon = MountEnvironment.daemonPath
        guard access(daemon, X_OK) == 0 else {
            throw HarnessError("the daemon is not built: \(daemon) is missing; run `swift build` first")
        }
        workDirectory = Temporary.directory(prefix: "pcibackfs-mount")
        // mkdtemp makes it 0700; other users (the non-root tests) must be able to reach the mount.
        chmod(workDirectory, 0o755)
        let mountPoint = workDirectory + "/mnt"
        mkdir(mountPoint, 0o755)
        root = (try? Sys.realpath(mountPoint)) ?? mountPoint
        arguments = [root] + options
        pid = try Subprocess.spawn(daemon, arguments, stdoutPath: workDirectory + "/stdout",
                                   stderrPath: workDirectory + "/stderr")
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if access(root + "/" + ready, F_OK) == 0 { break }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                stopped = true
                let log = daemonLog
                cleanUp()
                throw DaemonExited(status: Subprocess.decode(status), log: log, arguments: arguments)
            }
            if Date() >= deadline {
                let log = daemonLog
                stop()
                throw HarnessError("pcibackfsd \(arguments.joined(separator: " ")) did not serve \(ready) "
                                   + "within \(timeout) s\n\(log)")
            }
            usleep(10_000)
        }
        let pid = self.pid
        DispatchQueue.global().asyncAfter(deadline: .now() + watchdog) { [weak self] in
            guard let self, !self.isStopped else { return }
            // The test overran: abort the connection so blocked syscalls return.
            kill(pid, SIGKILL)
        }
    }

    /// The daemon ended before serving: its status and what it printed.
    struct DaemonExited: Error, CustomStringConvertible {
        var status: Int32
        var log: String
        var arguments: [String]
        var description: String {
            "pcibackfsd \(arguments.dropFirst().joined(separator: " ")) exited with status \(status) before mounting:\n\(log)"
        }
    }

    deinit { stop() }

    var isStopped: Bool { lock.withLock { stopped } }

    var daemonLog: String {
        let out = (try? String(contentsOfFile: workDirectory + "/stdout", encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: workDirectory + "/stderr", encoding: .utf8)) ?? ""
        return out + err
    }

    /// Whether the daemon is still running (it has not crashed or exited). Looks at
    /// /proc/<pid>/stat without reaping, so that stop() still collects the status.
    var isRunning: Bool {
        lock.withLock {
            guard !stopped, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")")
            else { return false }
            let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
            return state != "Z" && state != "X"
        }
    }

    /// Lazy unmount, SIGTERM, SIGKILL after 1 s, reap, remove the directory. Idempotent.
    func stop() {
        let alreadyStopped: Bool = lock.withLock {
            defer { stopped = true }
            return stopped
        }
        guard !alreadyStopped else { return }
        _ = Subprocess.run("fusermount3", ["-u", "-z", root], timeout: 5)
        kill(pid, SIGTERM)
        if Subprocess.wait(pid, until: Date().addingTimeInterval(1)) == nil {
            kill(pid, SIGKILL)
            _ = Subprocess.wait(pid, until: Date().addingTimeInterval(5))
        }
        cleanUp()
    }

    private func cleanUp() {
        _ = Subprocess.run("fusermount3", ["-u", "-z", root], timeout: 5)
        rmdir(root)
        Temporary.remove(workDirectory)
    }

    // MARK: Paths and clients, relative to the mount point

    func path(_ relative: String) -> String {
        relative.isEmpty ? root : root + "/" + relative
    }

    func cat(_ relative: String) throws -> String { try Sys.cat(path(relative)) }

    func echo(_ text: String, _ relative: String, style: Sys.WriteStyle = .shellRedirect) -> EchoResult {
        Sys.echo(text, to: path(relative), style: style)
    }

    /// libxl's `sysfs_write_bdf`: O_WRONLY, the BDF without a newline, one write.
    func libxlWrite(_ bdf: String, _ relative: String) -> EchoResult {
        Sys.echo(bdf, to: path(relative), style: .plain)
    }

    func readlink(_ relative: String) throws -> String { try Sys.readlink(path(relative)) }

    func exists(_ relative: String) -> Bool { Sys.lstatError(path(relative)) == 0 }

    func list(_ relative: String) throws -> [String] { try Sys.list(path(relative)) }

    /// The driver a device is bound to (the basename of its `driver` link), or nil.
    func driver(of bdf: String) -> String? {
        guard let target = try? readlink("bus/pci/devices/\(bdf)/driver") else { return nil }
        return String(target.split(separator: "/").last ?? "")
    }

    /// A config register of a device as dom0 sees it (unfiltered).
    func hostConfig(_ bdf: String, _ offset: Int, _ width: Int) throws -> UInt32 {
        try Sys.configRead(path("bus/pci/devices/\(bdf)/config"), offset: offset, width: width)
    }

    /// A config register of a frontend's device, through pciback's filter.
    func guestConfig(_ domain: Int, _ vbdf: String, _ offset: Int, _ width: Int) throws -> UInt32 {
        try Sys.configRead(path("fs/pcibackfs/frontends/\(domain)/bus/pci/devices/\(vbdf)/config"), offset: offset, width: width)
    }

    @discardableResult
    func guestConfigWrite(_ domain: Int, _ vbdf: String, _ offset: Int, _ width: Int, _ value: UInt32) throws -> Int {
        try Sys.configWrite(path("fs/pcibackfs/frontends/\(domain)/bus/pci/devices/\(vbdf)/config"), offset: offset,
                            width: width, value: value)
    }

    /// One pci_op: write the line, read the result back from the same descriptor at offset 0.
    func pciOp(_ domain: Int, _ line: String) throws -> (err: Int32, value: UInt32, text: String) {
        let file = path("fs/pcibackfs/frontends/\(domain)/pci_op")
        let fd = open(file, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw SyscallError(call: "open", path: file, errno: errno) }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        if written < 0 { throw SyscallError(call: "write", path: file, errno: errno) }
        let text = String(decoding: try Sys.pread(fd: fd, path: file, offset: 0, count: 4096), as: UTF8.self)
        let lastLine = text.split(separator: "\n").last.map(String.init) ?? ""
        let words = lastLine.split(separator: " ")
        guard words.count >= 4, words[0] == "err", let err = Int32(words[1]), words[2] == "value",
              words[3].hasPrefix("0x"), let value = UInt32(words[3].dropFirst(2), radix: 16)
        else { throw HarnessError("pci_op \(line): unexpected result \(text.debugDescription)") }
        return (err, value, text)
    }

    /// lspci/setpci with `-A linux-sysfs -O sysfs.path=<mount>/<sysfsPath>` in front of `arguments`.
    func pciutils(_ tool: String, _ arguments: [String], sysfsPath: String = "bus/pci", timeout: Double = 30) -> ProcessResult {
        Subprocess.run(tool, ["-A", "linux-sysfs", "-O", "sysfs.path=" + path(sysfsPath)] + arguments, timeout: timeout)
    }
}

/// Runs `body` with a daemon started with `options`, and always tears it down.
func withDaemon<T>(_ options: [String] = [], ready: String = DaemonMount.readyMarker, _ body: (DaemonMount) throws -> T) throws -> T {
    let mount = try DaemonMount(options, ready: ready)
    defer { mount.stop() }
    let result = try body(mount)
    #expect(mount.isRunning, "pcibackfsd died during the test:\n\(mount.daemonLog)")
    return result
}

// MARK: - Small parsers

enum Hex {
    static func parse(_ text: String) -> UInt64? {
        var trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("0x") || trimmed.hasPrefix("0X") { trimmed.removeFirst(2) }
        return UInt64(trimmed, radix: 16)
    }

    static func format(_ value: UInt64, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

#endif
