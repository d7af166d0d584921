// The mount tests drive Linux FUSE with glibc's calls; elsewhere they are not built.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing

@testable import PCIBackFS

// Issue "A whole /sys that unmodified tools believe", items 5 and 6.
//
// Item 5: what sysfs answers for what it does not allow (namespace changes), link counts and
// sizes as kernfs reports them, and descriptors held across changes (a removed device's files:
// fstat works, read and write give ENODEV, getdents of its directory lists nothing, as
// kernfs_fop_readdir does for a removed node; measured the same on a removed cgroup2 directory,
// which is kernfs too).
// Item 6: `fs/pcibackfs/reset` takes the machine back to its start state without a remount.

private let nic = "0000:03:00.0"
private let nicSibling = "0000:03:00.1"
private let nicSiblingDirectory = "devices/pci0000:00/0000:00:1c.1/0000:03:00.1"
private let python = "/usr/bin/python3"
/// O_PATH (Glibc does not export it to Swift).
private let pathOnly: Int32 = 0o10000000

// MARK: - The errno table

/// One namespace change and what /sys answers, measured on this machine's /sys (Linux 6.x) as
/// root and as nobody (setpriv --reuid=65534 --regid=65534 --clear-groups).
struct NamespaceCase: Sendable, CustomTestStringConvertible {
    var name: String
    /// A python expression; `D` is a device directory, `A` its `vendor`, `B` its `device`.
    var call: String
    var root: String
    var nobody: String
    var testDescription: String { name }
}

private let namespaceCases: [NamespaceCase] = [
    .init(name: "open(O_CREAT) of a missing name", call: "os.open(D + '/new', os.O_CREAT | os.O_WRONLY, 0o644)",
          root: "EACCES", nobody: "EACCES"),
    .init(name: "open(O_CREAT|O_EXCL) of a missing name",
          call: "os.open(D + '/new', os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)", root: "EACCES", nobody: "EACCES"),
    .init(name: "open(O_CREAT|O_EXCL) of an attribute", call: "os.open(A, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)",
          root: "EEXIST", nobody: "EEXIST"),
    .init(name: "mkdir of a missing name", call: "os.mkdir(D + '/new')", root: "EPERM", nobody: "EACCES"),
    .init(name: "mkdir of an attribute's name", call: "os.mkdir(A)", root: "EEXIST", nobody: "EEXIST"),
    .init(name: "unlink of an attribute", call: "os.unlink(A)", root: "EPERM", nobody: "EACCES"),
    .init(name: "unlink of a missing name", call: "os.unlink(D + '/new')", root: "ENOENT", nobody: "ENOENT"),
    .init(name: "unlink of a directory", call: "os.unlink(R + '/bus/pci/drivers')", root: "EISDIR", nobody: "EACCES"),
    .init(name: "rmdir of a directory", call: "os.rmdir(R + '/bus/pci/slots')", root: "EPERM", nobody: "EACCES"),
    .init(name: "rmdir of an attribute", call: "os.rmdir(A)", root: "ENOTDIR", nobody: "EACCES"),
    .init(name: "rmdir of a missing name", call: "os.rmdir(D + '/new')", root: "ENOENT", nobody: "ENOENT"),
    .init(name: "rename of an attribute to a new name", call: "os.rename(A, D + '/new')", root: "EPERM", nobody: "EACCES"),
    .init(name: "rename of an attribute over another", call: "os.rename(A, B)", root: "EPERM", nobody: "EACCES"),
    .init(name: "rename of a directory", call: "os.rename(R + '/bus/pci/slots', R + '/bus/pci/new')",
          root: "EPERM", nobody: "EACCES"),
    .init(name: "rename of a missing name", call: "os.rename(D + '/new', D + '/new2')", root: "ENOENT", nobody: "ENOENT"),
    .init(name: "renameat2(RENAME_NOREPLACE)", call: "renameat2(A, D + '/new', 1)", root: "EINVAL", nobody: "EACCES"),
    .init(name: "renameat2(RENAME_EXCHANGE)", call: "renameat2(A, B, 2)", root: "EINVAL", nobody: "EACCES"),
    .init(name: "renameat2 without flags", call: "renameat2(A, D + '/new', 0)", root: "EPERM", nobody: "EACCES"),
    .init(name: "symlink to a new name", call: "os.symlink('vendor', D + '/new')", root: "EPERM", nobody: "EACCES"),
    .init(name: "symlink over an attribute", call: "os.symlink('vendor', B)", root: "EEXIST", nobody: "EEXIST"),
    .init(name: "link to a new name", call: "os.link(A, D + '/new')", root: "EPERM", nobody: "EPERM"),
    .init(name: "link over an attribute", call: "os.link(A, B)", root: "EEXIST", nobody: "EEXIST"),
    .init(name: "mknod of a regular file", call: "os.mknod(D + '/new', 0o100644)", root: "EACCES", nobody: "EACCES"),
    .init(name: "mknod of a fifo", call: "os.mkfifo(D + '/new')", root: "EPERM", nobody: "EACCES"),
    .init(name: "mknod over an attribute", call: "os.mknod(A, 0o100644)", root: "EEXIST", nobody: "EEXIST"),
]

/// Runs one case's call under `root` (a mount, or /sys) and prints "OK" or the errno's name.
private func namespaceAnswer(_ item: NamespaceCase, root: String, device: String, asNobody: Bool) -> String {
    let script = """
        import ctypes, errno, os, sys
        R, D = sys.argv[1], sys.argv[1] + '/bus/pci/devices/' + sys.argv[2]
        A, B = D + '/vendor', D + '/device'
        libc = ctypes.CDLL(None, use_errno=True)
        def renameat2(old, new, flags):
            if libc.syscall(316, -100, old.encode(), -100, new.encode(), flags) < 0:
                raise OSError(ctypes.get_errno(), 'renameat2')
        try:
            \(item.call)
            print('OK')
        except OSError as error:
            print(errno.errorcode[error.errno])
        """
    let command = [python, "-c", script, root, device]
    let result = asNobody ? Unprivileged.run(command) : Subprocess.run(command[0], Array(command.dropFirst()))
    return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
}

private var pythonAvailable: Bool { access(python, X_OK) == 0 }

@Suite("sysfs's answers: namespace changes (root and nobody, --allow-other)", .serialized, .requiresDaemonMount,
       .enabled(if: Unprivileged.available && pythonAvailable, "skipped: setpriv or /usr/bin/python3 missing"),
       .timeLimit(.minutes(3)), .sharedDaemon(["--allow-other"]))
struct NamespaceAnswerTests {
    @Test("root gets what /sys gives", arguments: namespaceCases)
    func asRoot(_ item: NamespaceCase) throws {
        let shared = try #require(SharedMount.current, "no shared daemon")
        let got = shared.withDeadline(item.name) { namespaceAnswer(item, root: shared.mount.root, device: "0000:00:05.0", asNobody: false) }
        #expect(got == item.root)
        #expect(shared.mount.exists("bus/pci/devices/0000:00:05.0/vendor"))
        #expect(!shared.mount.exists("bus/pci/devices/0000:00:05.0/new"))
    }

    @Test("nobody gets what /sys gives", arguments: namespaceCases)
    func asNobody(_ item: NamespaceCase) throws {
        let shared = try #require(SharedMount.current, "no shared daemon")
        let got = shared.withDeadline(item.name) { namespaceAnswer(item, root: shared.mount.root, device: "0000:00:05.0", asNobody: true) }
        #expect(got == item.nobody)
    }

    /// The table is this machine's /sys: every call fails there, so nothing is changed.
    @Test("the table is what this machine's /sys answers", arguments: namespaceCases)
    func oracle(_ item: NamespaceCase) throws {
        let devices = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/bus/pci/devices").sorted()) ?? []
        guard let device = devices.first else { return }
        #expect(namespaceAnswer(item, root: "/sys", device: device, asNobody: false) == item.root)
        #expect(namespaceAnswer(item, root: "/sys", device: device, asNobody: true) == item.nobody)
    }
}

// MARK: - Link counts and sizes

struct LinkCountCase: Sendable, CustomTestStringConvertible {
    var path: String
    var links: Int
    var testDescription: String { "\(path): \(links)" }
}

@Suite("sysfs's answers: link counts and sizes", .serialized, .requiresDaemonMount, .timeLimit(.minutes(2)))
struct LinkCountTests {
    static let cases: [LinkCountCase] = [
        .init(path: "", links: 9),                                   // block, bus, class, dev, devices, fs, module
        .init(path: "bus", links: 3),
        .init(path: "bus/pci", links: 5),                            // devices, drivers, slots (as /sys)
        .init(path: "bus/pci/devices", links: 2),                    // links only
        .init(path: "bus/pci/drivers", links: 9),                    // 7 drivers
        .init(path: "bus/pci/drivers/pciback", links: 2),
        .init(path: "devices/pci0000:00", links: 9),                 // 6 functions on the root bus, pci_bus
        .init(path: "devices/pci0000:00/pci_bus", links: 3),         // 0000:00
        .init(path: "devices/pci0000:00/pci_bus/0000:00", links: 2), // no power/
        .init(path: "devices/pci0000:00/0000:00:1c.1", links: 5),    // 03:00.0, 03:00.1, pci_bus
        .init(path: "devices/pci0000:00/0000:00:1c.1/pci_bus", links: 3),  // 0000:03
        .init(path: "devices/pci0000:00/0000:00:1c.1/0000:03:00.0", links: 3),  // net
        .init(path: "devices/pci0000:00/0000:00:1c.1/0000:03:00.0/net", links: 3),
        .init(path: "module/xen_pciback", links: 6),                 // drivers, holders, parameters, sections
        .init(path: "fs/pcibackfs", links: 3),
        .init(path: "fs/pcibackfs/frontends", links: 2),
    ]

    @Test("a directory links 2 + its subdirectories and has size 0", arguments: cases)
    func directory(_ item: LinkCountCase) throws {
        try withDaemon { (mount: DaemonMount) throws in
            let info = try Sys.linkStatus(mount.path(item.path)).get()
            #expect(Int(info.st_nlink) == item.links)
            #expect(info.st_size == 0)
            let subdirectories = try mount.list(item.path).filter { name in
                (try? Sys.linkStatus(mount.path(item.path.isEmpty ? name : item.path + "/" + name)).get().st_mode & S_IFMT) == S_IFDIR
            }
            #expect(Int(info.st_nlink) == 2 + subdirectories.count)
        }
    }

    @Test("symlinks have size 0 and one link; attributes 4096", arguments: [
        ("bus/pci/devices/\(nic)", S_IFLNK, 0), ("bus/pci/devices/\(nic)/driver", S_IFLNK, 0),
        ("bus/pci/drivers/igb/module", S_IFLNK, 0), ("bus/pci/devices/\(nic)/vendor", S_IFREG, 4096),
    ])
    func sizes(_ path: String, _ type: mode_t, _ size: Int) throws {
        try withDaemon { (mount: DaemonMount) throws in
            let info = try Sys.linkStatus(mount.path(path)).get()
            #expect(info.st_mode & S_IFMT == type)
            #expect(info.st_size == size)
            #expect(info.st_nlink == 1)
        }
    }

    @Test("link counts follow attach and remove, even with the directory's attributes cached")
    func dynamic() throws {
        try withDaemon { (mount: DaemonMount) throws in
            func links(_ path: String) throws -> Int { Int(try Sys.linkStatus(mount.path(path)).get().st_nlink) }
            #expect(try links("fs/pcibackfs/frontends") == 2)
            #expect(try links("devices/pci0000:00/0000:00:1c.1") == 5)
            try seizeNIC(mount)
            #expect(mount.echo("5 \(nic)", "fs/pcibackfs/attach") == .written(14))
            #expect(try links("fs/pcibackfs/frontends") == 3)
            #expect(mount.echo("1", "bus/pci/devices/\(nicSibling)/remove") == .written(1))
            #expect(try links("devices/pci0000:00/0000:00:1c.1") == 4)
        }
    }
}

private func seizeNIC(_ mount: DaemonMount, _ bdf: String = nic) throws {
    for (text, path) in [(bdf, "bus/pci/devices/\(bdf)/driver/unbind"), (bdf, "bus/pci/drivers/pciback/new_slot"),
                         (bdf, "bus/pci/drivers/pciback/bind")] {
        let result = mount.libxlWrite(text, path)
        guard result == .written(bdf.utf8.count) else { throw HarnessError("\(path) <- \(text): \(result)") }
    }
}

// MARK: - Descriptors held across changes

/// How a device's nodes go away under open descriptors.
enum Disappearance: String, Sendable, CaseIterable, CustomTestStringConvertible {
    case remove, vanishFault, reset
    var testDescription: String { rawValue }

    func perform(_ mount: DaemonMount) -> EchoResult {
        switch self {
        case .remove: return mount.echo("1", "bus/pci/devices/\(nicSibling)/remove")
        case .vanishFault: return mount.echo("\(nicSibling) vanish", "fs/pcibackfs/faults")
        case .reset: return mount.echo("1", "fs/pcibackfs/reset")
        }
    }
}

@Suite("sysfs's answers: descriptors held across changes", .serialized, .requiresDaemonMount, .timeLimit(.minutes(2)))
struct HeldDescriptorTests {
    @Test("a vanished device's open files: fstat works, read and write give ENODEV, its directory lists nothing",
          arguments: Disappearance.allCases)
    func vanished(_ how: Disappearance) throws {
        try withDaemon { (mount: DaemonMount) throws in
            let directory = mount.path(nicSiblingDirectory)
            let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            let vendor = open(directory + "/vendor", O_RDONLY | O_CLOEXEC)
            let config = open(directory + "/config", O_RDWR | O_CLOEXEC)
            let enable = open(directory + "/enable", O_RDWR | O_CLOEXEC)
            defer { for fd in [dfd, vendor, config, enable] { close(fd) } }
            try #require(dfd >= 0 && vendor >= 0 && config >= 0 && enable >= 0)
            #expect(try Sys.pread(fd: vendor, offset: 0, count: 16) == Array("0x8086\n".utf8))
            #expect(try entries(dfd).contains("config"))

            #expect(how.perform(mount) != .openFailed(ENOENT))
            var info = stat()
            #expect(fstat(vendor, &info) == 0 && info.st_size == 4096)
            #expect(fstat(config, &info) == 0)
            #expect(fstat(dfd, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR)
            #expect(readError(vendor) == ENODEV)
            #expect(readError(config) == ENODEV)
            #expect(writeError(config, [0], at: 0x3c) == ENODEV)
            #expect(writeError(enable, Array("1".utf8), at: 0) == ENODEV)
            #expect(try entries(dfd).isEmpty)
            // The name comes back (rescan, or the reset's machine): old descriptors stay dead,
            // new ones work.
            if how != .reset { _ = mount.echo("1", "bus/pci/rescan") }
            #expect(try mount.cat(nicSiblingDirectory + "/vendor") == "0x8086\n")
            #expect(readError(vendor) == ENODEV)
            #expect(try entries(dfd).isEmpty)
        }
    }

    @Test("an O_PATH descriptor on `driver` answers fstat across unbind and bind to pciback (size 0, as sysfs)")
    func driverLinkDescriptor() throws {
        try withDaemon { (mount: DaemonMount) throws in
            let fd = open(mount.path("bus/pci/devices/\(nic)/driver"), pathOnly | O_NOFOLLOW | O_CLOEXEC)
            defer { close(fd) }
            try #require(fd >= 0)
            var info = stat()
            #expect(fstat(fd, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK && info.st_size == 0)
            try seizeNIC(mount)
            #expect(fstat(fd, &info) == 0 && info.st_mode & S_IFMT == S_IFLNK && info.st_size == 0)
            #expect(try mount.readlink("bus/pci/devices/\(nic)/driver") == "../../../../bus/pci/drivers/pciback")
        }
    }

    /// Names the kernel has cached (dentries, symlink targets, for an hour) must be dropped by
    /// the daemon when a store changes them, or the old answer sticks.
    @Test("`driver` through paths the kernel has cached: gone after unbind, the new target after bind")
    func cachedDriverLink() throws {
        try withDaemon { (mount: DaemonMount) throws in
            let driver = "bus/pci/devices/\(nic)/driver"
            #expect(try mount.readlink(driver) == "../../../../bus/pci/drivers/igb")
            #expect(Sys.lstatError(mount.path(driver)) == 0)
            #expect(mount.exists("bus/pci/drivers/igb/\(nic)"))
            #expect(mount.libxlWrite(nic, "bus/pci/drivers/igb/unbind") == .written(12))
            #expect(Sys.lstatError(mount.path(driver)) == ENOENT)
            #expect(!mount.exists("bus/pci/drivers/igb/\(nic)"))
            #expect(mount.libxlWrite(nic, "bus/pci/drivers/pciback/new_slot") == .written(12))
            #expect(mount.libxlWrite(nic, "bus/pci/drivers/pciback/bind") == .written(12))
            #expect(try mount.readlink(driver) == "../../../../bus/pci/drivers/pciback")
            #expect(try mount.realpath(driver) == mount.path("bus/pci/drivers/pciback"))
        }
    }
}

private func entries(_ fd: Int32) throws -> [String] {
    let copy = dup(fd)
    guard copy >= 0, let directory = fdopendir(copy) else { throw HarnessError("fdopendir: \(errno)") }
    defer { closedir(directory) }
    rewinddir(directory)
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

private func readError(_ fd: Int32) -> Int32 {
    var buffer = [UInt8](repeating: 0, count: 64)
    return buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, 64, 0) } < 0 ? errno : 0
}

private func writeError(_ fd: Int32, _ bytes: [UInt8], at offset: Int) -> Int32 {
    bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) } < 0 ? errno : 0
}

extension DaemonMount {
    func realpath(_ relative: String) throws -> String { try Sys.realpath(path(relative)) }
}

// MARK: - Reset

@Suite("fs/pcibackfs/reset: back to the start state without a remount", .serialized, .requiresDaemonMount,
       .timeLimit(.minutes(3)))
struct ResetTests {
    /// Seizes the NIC, exports it to domain 5, makes the guest write its command register
    /// (a trace verdict and a pci_op result), and arms a fault.
    static func dirty(_ mount: DaemonMount) throws {
        try seizeNIC(mount)
        #expect(mount.echo("5 \(nic)", "fs/pcibackfs/attach") == .written(14))
        #expect(try mount.pciOp(5, "conf_write 00:00.0 0x04 2 0x0407").err == 0)
        #expect(mount.echo("0000:00:05.0 reset sticky", "fs/pcibackfs/faults") == .written(25))
        #expect(mount.echo("1", "bus/pci/devices/\(nicSibling)/remove") == .written(1))
        #expect(try !mount.cat("fs/pcibackfs/trace").isEmpty)
        #expect(try !mount.cat("fs/pcibackfs/log").isEmpty)
    }

    /// What a fresh daemon shows, for the files a reset must restore.
    static let watched = ["bus/pci/drivers/pciback/slots", "fs/pcibackfs/trace", "fs/pcibackfs/log", "fs/pcibackfs/faults",
                          "bus/pci/devices/\(nic)/enable"]

    static func view(_ mount: DaemonMount) throws -> [String] {
        var lines = try watched.map { "\($0): " + (try mount.cat($0)) }
        lines.append("frontends: \(try mount.list("fs/pcibackfs/frontends").sorted())")
        lines.append("igb: \(try mount.list("bus/pci/drivers/igb").sorted())")
        lines.append("devices: \(try mount.list("bus/pci/devices").sorted())")
        lines.append("driver: \(try mount.readlink("bus/pci/devices/\(nic)/driver"))")
        lines.append("config: \(try Sys.pread(mount.path("bus/pci/devices/\(nic)/config"), offset: 0, count: 256))")
        return lines
    }

    @Test("writing 1 restores the start state: bindings, frontends, devices, faults, trace and log empty")
    func restores() throws {
        try withDaemon { (mount: DaemonMount) throws in
            let fresh = try Self.view(mount)
            try Self.dirty(mount)
            #expect(try Self.view(mount) != fresh)
            #expect(mount.echo("1", "fs/pcibackfs/reset") == .written(1))
            #expect(try Self.view(mount) == fresh)
            #expect(try mount.cat("fs/pcibackfs/trace") == "")
            #expect(try mount.cat("fs/pcibackfs/log") == "")
            #expect(!mount.exists("fs/pcibackfs/frontends/5"))
            // The machine works as after a start: the trace counts from 1 again.
            try seizeNIC(mount)
            #expect(mount.echo("7 \(nic)", "fs/pcibackfs/attach") == .written(14))
            #expect(try mount.pciOp(7, "conf_read 00:00.0 0x00 2").err == 0)
            #expect(try mount.cat("fs/pcibackfs/trace").hasPrefix("seq=1 dom=7 "))
            #expect(try mount.cat("fs/pcibackfs/frontends/7/pci_op").hasPrefix("err 0 value 0x00008086"))
        }
    }

    @Test("any other input is EINVAL and changes nothing",
          arguments: ["0", "2", "11", "yes", "1 ", " 1", "1\n\n", "on", "1\0"])
    func refuses(_ input: String) throws {
        try withDaemon { (mount: DaemonMount) throws in
            try Self.dirty(mount)
            let before = try Self.view(mount)
            #expect(mount.echo(input, "fs/pcibackfs/reset") == .writeFailed(EINVAL))
            #expect(try Self.view(mount) == before)
        }
    }

    @Test("every descriptor opened before the reset gets ENODEV; new opens work")
    func oldDescriptors() throws {
        try withDaemon { (mount: DaemonMount) throws in
            try seizeNIC(mount)
            #expect(mount.echo("5 \(nic)", "fs/pcibackfs/attach") == .written(14))
            let paths = ["fs/pcibackfs/log", "fs/pcibackfs/frontends/5/pci_op", "bus/pci/drivers/pciback/slots",
                         "bus/pci/devices/\(nic)/config", "fs/pcibackfs/frontends/5/bus/pci/devices/0000:00:00.0/config",
                         "module/xen_pciback/parameters/permissive"]
            let descriptors = paths.map { open(mount.path($0), ($0.hasSuffix("log") || $0.hasSuffix("slots") ? O_RDONLY : O_RDWR) | O_CLOEXEC) }
            defer { for fd in descriptors { close(fd) } }
            let reset = open(mount.path("fs/pcibackfs/reset"), O_WRONLY | O_CLOEXEC)
            defer { close(reset) }
            try #require(descriptors.allSatisfy { $0 >= 0 } && reset >= 0, "\(descriptors)")
            #expect(writeError(reset, Array("1".utf8), at: 0) == 0)
            for (path, fd) in zip(paths, descriptors) {
                #expect(readError(fd) == ENODEV, "\(path)")
                var info = stat()
                #expect(fstat(fd, &info) == 0, "\(path)")
            }
            // The reset file's own descriptor went with the rest.
            #expect(writeError(reset, Array("1".utf8), at: 0) == ENODEV)
            #expect(try mount.cat("bus/pci/drivers/pciback/slots") == "")
            #expect(try Sys.pread(mount.path("bus/pci/devices/\(nic)/config"), offset: 0, count: 2) == [0x86, 0x80])
        }
    }

    @Test("--state journals the reset: a restart gives the state after the reset plus the changes made since")
    func replayed() throws {
        let directory = Temporary.directory(prefix: "pcibackfs-reset-state")
        defer { Temporary.remove(directory) }
        let stateFile = directory + "/state"
        var expected: [String] = []
        try withDaemon(["--state", stateFile]) { (mount: DaemonMount) throws in
            try Self.dirty(mount)
            #expect(mount.echo("1", "fs/pcibackfs/reset") == .written(1))
            // After the reset: 00:05.0 to pciback, exported to domain 9, one guest read.
            try seizeNIC(mount, "0000:00:05.0")
            #expect(mount.echo("9 0000:00:05.0", "fs/pcibackfs/attach") == .written(14))
            #expect(try mount.pciOp(9, "conf_read 00:00.0 0x00 4").err == 0)
            expected = try Self.view(mount) + [try mount.cat("fs/pcibackfs/trace")]
        }
        try withDaemon(["--state", stateFile]) { (mount: DaemonMount) throws in
            #expect(try Self.view(mount) + [try mount.cat("fs/pcibackfs/trace")] == expected)
            #expect(try mount.list("fs/pcibackfs/frontends") == ["9"])
            #expect(try mount.readlink("bus/pci/devices/\(nic)/driver") == "../../../../bus/pci/drivers/igb")
            #expect(try mount.cat("fs/pcibackfs/trace").hasPrefix("seq=1 dom=9 "))
        }
    }
}

// MARK: - The start state's copy

@Suite("Dom0.copied(): the start state a reset returns to")
struct StartStateCopyTests {
    @Test("a copy has every field of the original, and changing one leaves the other alone")
    func independent() throws {
        let builtin = BuiltinMachine.make()
        var dom0 = try Dom0(machine: Machine(name: "builtin", devices: builtin.order.compactMap { builtin[$0] }))
        let nicAddress = try #require(PCIAddress(kernelName: nic))
        let siblingAddress = try #require(PCIAddress(kernelName: nicSibling))
        // VFs (functions made at run time), a removed function, an unbound one.
        try dom0.store(.device(nicAddress, .sriovNumVFs), input: Array("2".utf8), caller: .root)
        try dom0.store(.device(siblingAddress, .remove), input: Array("1".utf8), caller: .root)
        try dom0.store(.driver("8139too", .unbind), input: Array("0000:00:05.0".utf8), caller: .root)
        #expect(dom0.machine.order.count == 12)
        let copy = dom0.copied()
        #expect(StateFingerprint.of(copy) == StateFingerprint.of(dom0))
        let original = StateFingerprint.of(dom0)
        var changed = copy
        changed.hostWrite(nicAddress, offset: 0x04, width: 2, value: 0x0007)
        try changed.store(.bus(.rescan), input: Array("1".utf8), caller: .root)
        #expect(StateFingerprint.of(dom0) == original)
        #expect(StateFingerprint.of(changed) != original)
        #expect(dom0.device(nicAddress) !== copy.device(nicAddress))
        #expect(copy.removedDevices[siblingAddress] !== dom0.removedDevices[siblingAddress])
    }
}

#endif
