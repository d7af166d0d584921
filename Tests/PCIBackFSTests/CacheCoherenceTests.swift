import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Read-after-write exactness across file descriptors and processes, on the real daemon
// mounted with FUSE. Whatever the daemon does for speed (kernel entry/attribute caches,
// snapshots, fewer round trips), a value written through one descriptor must be what any
// other descriptor or process reads right after write(2) returns, and a driver link change
// must be visible to another process as soon as the store returns.
//
// Self-contained on purpose (its own small harness, all names private): it starts the built
// debug daemon (.build/debug/pcibackfsd) on a fresh temporary directory, waits for the tree,
// and always tears it down with a lazy unmount and SIGTERM/SIGKILL; a watchdog kills the
// daemon if a test overruns, which aborts the FUSE connection so a stuck syscall returns.

private let nic = "0000:03:00.0"
private let pciback = "bus/pci/drivers/pciback"
private let frontendConfig = "fs/pcibackfs/frontends/1/bus/pci/devices/0000:00:00.0/config"

private enum CoherenceEnvironment {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static var daemon: String { packageRoot + "/.build/debug/pcibackfsd" }

    static var canMount: Bool {
        guard geteuid() == 0 else { return false }
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        close(fd)
        return find("fusermount3") != nil
    }

    static func find(_ name: String) -> String? {
        if name.hasPrefix("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in (path + ":/usr/sbin:/usr/bin:/sbin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

private struct CoherenceError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A child process run to completion with a hard timeout; stdout captured.
private struct ChildResult {
    var status: Int32
    var output: String
    var timedOut: Bool
}

private enum Child {
    static func spawn(_ arguments: [String], stdout: String, stderr: String) throws -> pid_t {
        guard let executable = CoherenceEnvironment.find(arguments[0]) else { throw CoherenceError("\(arguments[0]) not found") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        let argv = ([executable] + arguments.dropFirst()).map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let status = (argv + [nil]).withUnsafeBufferPointer { posix_spawn(&pid, executable, &actions, &attributes, $0.baseAddress!, environ) }
        guard status == 0 else { throw CoherenceError("posix_spawn \(executable): \(String(cString: strerror(status)))") }
        return pid
    }

    /// The exit status, or nil if still running at `deadline`.
    static func wait(_ pid: pid_t, until deadline: Date) -> Int32? {
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
            if result < 0 { return -1 }
            if Date() >= deadline { return nil }
            usleep(2_000)
        }
    }

    static func run(_ arguments: [String], timeout: Double = 10) -> ChildResult {
        var template = Array("/tmp/pcibackfs-coherence-run.XXXXXX".utf8CString)
        let directory = mkdtemp(&template).map { String(cString: $0) } ?? "/tmp"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pid: pid_t
        do {
            pid = try spawn(arguments, stdout: directory + "/out", stderr: directory + "/err")
        } catch {
            return ChildResult(status: 127, output: "\(error)", timedOut: false)
        }
        var timedOut = false
        var status = wait(pid, until: Date().addingTimeInterval(timeout))
        if status == nil {
            timedOut = true
            kill(-pid, SIGKILL)
            status = wait(pid, until: Date().addingTimeInterval(5))
        }
        let output = (try? String(contentsOfFile: directory + "/out", encoding: .utf8)) ?? ""
        return ChildResult(status: status ?? -1, output: output, timedOut: timedOut)
    }

    /// `sh -c SCRIPT sh ARGS...`: another process, its own descriptors and path walks.
    static func shell(_ script: String, _ arguments: [String] = []) -> ChildResult {
        run(["sh", "-c", script, "sh"] + arguments)
    }
}

/// The daemon on its own temporary mount point; `stop()` always unmounts lazily and kills it.
private final class CoherenceMount: @unchecked Sendable {
    let root: String
    private let pid: pid_t
    private let work: String
    private let lock = NSLock()
    private var stopped = false

    init(timeout: Double = 10, watchdog: Double = 50) throws {
        let daemon = CoherenceEnvironment.daemon
        guard access(daemon, X_OK) == 0 else { throw CoherenceError("\(daemon) is missing; run `swift build` first") }
        var template = Array("/tmp/pcibackfs-coherence.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CoherenceError("mkdtemp: \(String(cString: strerror(errno)))") }
        work = String(cString: made)
        root = work + "/mnt"
        mkdir(root, 0o755)
        pid = try Child.spawn([daemon, root], stdout: work + "/stdout", stderr: work + "/stderr")
        let deadline = Date().addingTimeInterval(timeout)
        while access(root + "/" + pciback, F_OK) != 0 {
            if let status = Child.wait(pid, until: Date()) {
                stopped = true
                let log = self.log
                cleanUp()
                throw CoherenceError("pcibackfsd exited with status \(status) before serving:\n\(log)")
            }
            if Date() >= deadline {
                let log = self.log
                stop()
                throw CoherenceError("pcibackfsd did not serve \(pciback) within \(timeout) s:\n\(log)")
            }
            usleep(10_000)
        }
        let pid = self.pid
        DispatchQueue.global().asyncAfter(deadline: .now() + watchdog) { [weak self] in
            guard let self, !self.isStopped else { return }
            kill(pid, SIGKILL)  // the test overran: abort the connection so blocked syscalls return
        }
    }

    deinit { stop() }

    var isStopped: Bool { lock.withLock { stopped } }

    var log: String {
        ((try? String(contentsOfFile: work + "/stdout", encoding: .utf8)) ?? "")
            + ((try? String(contentsOfFile: work + "/stderr", encoding: .utf8)) ?? "")
    }

    var isRunning: Bool {
        lock.withLock {
            guard !stopped, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
            return state != "Z" && state != "X"
        }
    }

    func stop() {
        let already: Bool = lock.withLock {
            defer { stopped = true }
            return stopped
        }
        guard !already else { return }
        _ = Child.run(["fusermount3", "-u", "-z", root], timeout: 5)
        kill(pid, SIGTERM)
        if Child.wait(pid, until: Date().addingTimeInterval(1)) == nil {
            kill(pid, SIGKILL)
            _ = Child.wait(pid, until: Date().addingTimeInterval(5))
        }
        cleanUp()
    }

    private func cleanUp() {
        _ = Child.run(["fusermount3", "-u", "-z", root], timeout: 5)
        rmdir(root)
        try? FileManager.default.removeItem(atPath: work)
    }

    func path(_ relative: String) -> String { root + "/" + relative }

    /// open + one write + close, as `echo -n TEXT > FILE` does; returns the errno or 0.
    @discardableResult
    func store(_ text: String, _ relative: String) -> Int32 {
        let fd = open(path(relative), O_WRONLY | O_TRUNC | O_CLOEXEC)
        if fd < 0 { return errno }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let count = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        return count == bytes.count ? 0 : (count < 0 ? errno : EIO)
    }

    /// Seizes the NIC for pciback (unbind from igb, new_slot, bind).
    func seizeNIC() throws {
        for (text, file) in [(nic, "bus/pci/devices/\(nic)/driver/unbind"), (nic, "\(pciback)/new_slot"), (nic, "\(pciback)/bind")] {
            let error = store(text, file)
            guard error == 0 else { throw CoherenceError("echo \(text) > \(file): errno \(error)") }
        }
    }
}

private func withMount<T>(_ body: (CoherenceMount) throws -> T) throws -> T {
    let mount = try CoherenceMount()
    defer { mount.stop() }
    let result = try body(mount)
    #expect(mount.isRunning, "pcibackfsd died during the test:\n\(mount.log)")
    return result
}

// MARK: - Descriptor helpers

private func openFile(_ path: String, _ flags: Int32) throws -> Int32 {
    let fd = open(path, flags | O_CLOEXEC)
    guard fd >= 0 else { throw CoherenceError("open \(path): \(String(cString: strerror(errno)))") }
    return fd
}

private func preadBytes(_ fd: Int32, offset: Int, count: Int) throws -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: max(count, 1))
    let got = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, off_t(offset)) }
    guard got >= 0 else { throw CoherenceError("pread: \(String(cString: strerror(errno)))") }
    return Array(buffer[0..<got])
}

private func pwriteBytes(_ fd: Int32, _ bytes: [UInt8], offset: Int) throws {
    let put = bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    guard put == bytes.count else { throw CoherenceError("pwrite returned \(put): \(String(cString: strerror(errno)))") }
}

private func littleEndian(_ bytes: [UInt8]) -> UInt32 {
    bytes.reversed().reduce(0) { $0 << 8 | UInt32($1) }
}

private func bytesOf(_ value: UInt32, width: Int) -> [UInt8] {
    (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }
}

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

// MARK: - Tests

@Suite("Cache coherence: read-after-write across descriptors and processes", .serialized,
       .enabled(if: CoherenceEnvironment.canMount, "skipped: needs root, /dev/fuse and fusermount3"),
       .timeLimit(.minutes(1)))
struct CacheCoherenceTests {
    @Test("dom0 config: a write through one descriptor is read back by another at once, and by a child process")
    func dom0ConfigAcrossDescriptors() throws {
        try withMount { mount in
            let config = mount.path("bus/pci/devices/\(nic)/config")
            let writer = try openFile(config, O_RDWR)
            defer { close(writer) }
            let reader = try openFile(config, O_RDONLY)
            defer { close(reader) }
            // Cache line size (0x0c) is a plain read/write byte; interrupt line (0x3c) too.
            let original = try preadBytes(reader, offset: 0x0c, count: 1)
            #expect(original.count == 1)
            for round in 0..<64 {
                let value = UInt8(truncatingIfNeeded: round &* 37 &+ 1)
                try pwriteBytes(writer, [value], offset: 0x0c)
                #expect(try preadBytes(reader, offset: 0x0c, count: 1) == [value], "round \(round)")
                // The same descriptor, and a dword read covering it.
                #expect(try preadBytes(writer, offset: 0x0c, count: 1) == [value])
                #expect(try preadBytes(reader, offset: 0x0c, count: 4).first == value)
            }
            try pwriteBytes(writer, [0x5a], offset: 0x3c)
            try pwriteBytes(writer, [0x10], offset: 0x0c)
            // Another process, its own open and read, right after the write returned.
            let child = Child.shell("od -An -tx1 -j 12 -N 1 \"$1\"; od -An -tx1 -j 60 -N 1 \"$1\"", [config])
            #expect(child.status == 0 && !child.timedOut)
            #expect(child.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) } == ["10", "5a"])
            // And through the other name of the same file (the device directory path).
            let resolved = try #require(realpath(config, nil))
            defer { free(resolved) }
            let other = try openFile(String(cString: resolved), O_RDONLY)
            defer { close(other) }
            #expect(try preadBytes(other, offset: 0x0c, count: 1) == [0x10])
            #expect(try preadBytes(other, offset: 0x3c, count: 1) == [0x5a])
            try pwriteBytes(writer, original, offset: 0x0c)
            #expect(try preadBytes(reader, offset: 0x0c, count: 1) == original)
        }
    }

    @Test("frontend config: the guest's BAR sizing state is shared by every descriptor and process")
    func frontendConfigAcrossDescriptors() throws {
        try withMount { mount in
            try mount.seizeNIC()
            #expect(mount.store("1 \(nic)\n", "fs/pcibackfs/attach") == 0)
            let config = mount.path(frontendConfig)
            let writer = try openFile(config, O_RDWR)
            defer { close(writer) }
            let reader = try openFile(config, O_RDONLY)
            defer { close(reader) }
            let bar0 = 0x10
            let original = littleEndian(try preadBytes(reader, offset: bar0, count: 4))
            #expect(original != 0 && original != 0xffff_ffff)
            for _ in 0..<16 {
                // All-ones: the guest sizes BAR0 (128 KiB of 32-bit memory).
                try pwriteBytes(writer, bytesOf(0xffff_ffff, width: 4), offset: bar0)
                let sizing = littleEndian(try preadBytes(reader, offset: bar0, count: 4))
                #expect(sizing & 0xffff_fff0 == 0xfffe_0000)
                let child = Child.shell("od -An -tx4 -j 16 -N 4 \"$1\"", [config])
                #expect(child.output.trimmingCharacters(in: .whitespacesAndNewlines) == String(sizing, radix: 16))
                // The original value ends sizing.
                try pwriteBytes(writer, bytesOf(original, width: 4), offset: bar0)
                #expect(littleEndian(try preadBytes(reader, offset: bar0, count: 4)) == original)
            }
            // dom0's view of the hardware BAR never moved.
            let host = try openFile(mount.path("bus/pci/devices/\(nic)/config"), O_RDONLY)
            defer { close(host) }
            #expect(littleEndian(try preadBytes(host, offset: bar0, count: 4)) & 0xffff_fff0 == original & 0xffff_fff0)
        }
    }

    @Test("driver links: another process sees unbind and bind as soon as the store returns")
    func driverLinksAcrossProcesses() throws {
        try withMount { mount in
            let link = "bus/pci/devices/\(nic)/driver"
            let probe = "readlink \"$1\" || echo none; [ -e \"$2\" ] && echo igb-has-it || echo igb-lacks-it; " +
                "[ -e \"$3\" ] && echo pciback-has-it || echo pciback-lacks-it"
            let paths = [mount.path(link), mount.path("bus/pci/drivers/igb/\(nic)"), mount.path("\(pciback)/\(nic)")]
            // Warm every cache there is (this process and a child) before changing anything.
            var buffer = [CChar](repeating: 0, count: 4096)
            #expect(readlink(mount.path(link), &buffer, 4095) > 0)
            #expect(Child.shell(probe, paths).output == "../../../../bus/pci/drivers/igb\nigb-has-it\npciback-lacks-it\n")

            for round in 0..<8 {
                #expect(mount.store(nic, "bus/pci/drivers/igb/unbind") == 0)
                #expect(Child.shell(probe, paths).output == "none\nigb-lacks-it\npciback-lacks-it\n", "round \(round)")
                #expect(access(mount.path(link), F_OK) != 0 && errno == ENOENT)
                #expect(access(mount.path("bus/pci/drivers/igb/\(nic)"), F_OK) != 0)

                if round == 0 { #expect(mount.store(nic, "\(pciback)/new_slot") == 0) }
                #expect(mount.store(nic, "\(pciback)/bind") == 0)
                #expect(Child.shell(probe, paths).output == "../../../../bus/pci/drivers/pciback\nigb-lacks-it\npciback-has-it\n")
                let length = readlink(mount.path(link), &buffer, 4095)
                #expect(length > 0 && text(buffer[0..<length].map { UInt8(bitPattern: $0) }) == "../../../../bus/pci/drivers/pciback")
                // Listings agree with the links.
                let listing = Child.shell("ls \"$1\"", [mount.path(pciback)])
                #expect(listing.output.split(separator: "\n").contains(Substring(nic)))

                #expect(mount.store(nic, "\(pciback)/unbind") == 0)
                #expect(Child.shell(probe, paths).output == "none\nigb-lacks-it\npciback-lacks-it\n")
                #expect(mount.store(nic, "bus/pci/drivers/igb/bind") == 0)
                #expect(Child.shell(probe, paths).output == "../../../../bus/pci/drivers/igb\nigb-has-it\npciback-lacks-it\n")
            }
        }
    }

    @Test("attribute content: a reader opened before a store sees the new list when it re-reads at offset 0")
    func attributeSnapshotsRefreshAtOffsetZero() throws {
        try withMount { mount in
            try mount.seizeNIC()
            let permissive = mount.path("\(pciback)/permissive")
            let early = try openFile(permissive, O_RDONLY)
            defer { close(early) }
            #expect(try preadBytes(early, offset: 0, count: 4096).isEmpty)
            let childBefore = Child.shell("cat \"$1\"", [permissive])
            #expect(childBefore.status == 0 && childBefore.output.isEmpty)

            #expect(mount.store(nic + "\n", "\(pciback)/permissive") == 0)
            // Re-read at offset 0 on the descriptor opened before the store.
            #expect(text(try preadBytes(early, offset: 0, count: 4096)) == "\(nic)\n")
            // lseek(0) + read, the way `cat` after a rewind does it.
            #expect(lseek(early, 0, SEEK_SET) == 0)
            var buffer = [UInt8](repeating: 0, count: 4096)
            let got = buffer.withUnsafeMutableBytes { Glibc.read(early, $0.baseAddress, 4096) }
            #expect(got == nic.utf8.count + 1 && text(Array(buffer[0..<max(got, 0)])) == "\(nic)\n")
            // Other processes and fresh descriptors agree.
            #expect(Child.shell("cat \"$1\"", [permissive]).output == "\(nic)\n")

            // The same for allow_interrupt_control, and for slots after remove_slot.
            let allow = mount.path("\(pciback)/allow_interrupt_control")
            let allowReader = try openFile(allow, O_RDONLY)
            defer { close(allowReader) }
            #expect(try preadBytes(allowReader, offset: 0, count: 4096).isEmpty)
            #expect(mount.store(nic, "\(pciback)/allow_interrupt_control") == 0)
            #expect(text(try preadBytes(allowReader, offset: 0, count: 4096)) == "\(nic)\n")
            #expect(Child.shell("cat \"$1\"", [allow]).output == "\(nic)\n")

            let slots = mount.path("\(pciback)/slots")
            let slotsReader = try openFile(slots, O_RDONLY)
            defer { close(slotsReader) }
            #expect(text(try preadBytes(slotsReader, offset: 0, count: 4096)).contains(nic))
            #expect(mount.store(nic, "\(pciback)/remove_slot") == 0)
            #expect(!text(try preadBytes(slotsReader, offset: 0, count: 4096)).contains(nic))
            #expect(!Child.shell("cat \"$1\"", [slots]).output.contains(nic))
        }
    }
}
