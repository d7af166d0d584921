// The mount tests drive Linux FUSE with glibc's calls; elsewhere they are not built.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// Issue "Reliability", item 5: access control with --allow-other. The daemon runs as root with
// allow_other and default_permissions; an unprivileged user (nobody, through setpriv, no
// supplementary groups) reads what sysfs lets it read: every 0444/0644 attribute, byte for byte
// what root reads, and only the first 64 bytes of `config` (FUSE gives uids, not capabilities:
// "not root" stands in for "no CAP_SYS_ADMIN", clients.md §2.4). Every write fails at open with
// EACCES (0200 and 0644 files alike), and so does any access to the frontend controls (attach,
// detach, faults, pci_op, log, trace). Nothing nobody tries changes the state.
//
// The fixture is the bad-input one (BadInputFixture): 0000:03:00.0 on pciback, exported to
// frontend domain 5, with flags and a quirk, so that the lists nobody reads are not empty.

private let nic = "0000:03:00.0"
private let frontend = "fs/pcibackfs/frontends/5"

/// A directory whose regular files are all checked, by mode, as nobody.
struct AccessDirectory: Sendable, CustomTestStringConvertible {
    var path: String
    var testDescription: String { path }
}

@Suite("Reliability: access control with --allow-other", .serialized, .requiresDaemonMount,
       .enabled(if: Unprivileged.available, "skipped: setpriv or dd is not installed"), .timeLimit(.minutes(3)),
       .sharedDaemon(["--allow-other"], prepare: BadInputFixture.prepare))
struct AccessControlTests {
    static let directories: [AccessDirectory] = [
        "bus/pci", "bus/pci/drivers/pciback", "bus/pci/drivers/igb", "bus/pci/devices/\(nic)",
        "bus/pci/devices/0000:03:00.1", "bus/pci/devices/0000:00:1c.1", "bus/pci/devices/0000:00:05.0",
        "module/xen_pciback/parameters", "fs/pcibackfs", frontend, "\(frontend)/bus/pci/devices/0000:00:00.0",
    ].map(AccessDirectory.init(path:))

    /// The regular files of a directory with their permission bits (as root sees them).
    static func files(in directory: String, mount: DaemonMount) throws -> [(name: String, mode: UInt32)] {
        try mount.list(directory).sorted().compactMap { name in
            guard case .success(let info) = Sys.linkStatus(mount.path("\(directory)/\(name)")),
                  info.st_mode & S_IFMT == S_IFREG else { return nil }
            return (name, UInt32(info.st_mode & 0o7777))
        }
    }

    @Test("nobody reads every world-readable file as root does (config: 64 bytes), and nothing else",
          arguments: directories)
    func reads(_ directory: AccessDirectory) throws {
        let shared = try #require(SharedMount.current, "no shared daemon")
        let mount = shared.mount
        let files = try Self.files(in: directory.path, mount: mount)
        #expect(!files.isEmpty)
        for (name, mode) in files {
            let relative = "\(directory.path)/\(name)"
            let path = mount.path(relative)
            let got = shared.withDeadline("nobody reads \(relative)") { Unprivileged.read(path) }
            if mode & 0o004 == 0 {
                // 0200 stores, 0400/0600 controls: the kernel refuses the open (default_permissions).
                #expect(got.failureValue?.errno == EACCES, "\(relative) (\(String(mode, radix: 8))): nobody read \(got)")
                continue
            }
            let asRoot = try shared.withDeadline("root reads \(relative)") { try Sys.readOnce(path, count: 65536) }
            guard case .success(let bytes) = got else {
                Issue.record("\(relative) (\(String(mode, radix: 8))): nobody cannot read it: \(got)")
                continue
            }
            if name == "config" {
                #expect(bytes.count == 64, "\(relative): nobody read \(bytes.count) bytes")
                #expect(bytes == Array(asRoot.prefix(64)), "\(relative): the first 64 bytes differ from root's")
                #expect(asRoot.count > 64)
            } else {
                #expect(bytes == asRoot, "\(relative): nobody read \(String(decoding: bytes, as: UTF8.self).debugDescription)")
            }
        }
    }

    @Test("every write by nobody fails at open with EACCES and changes nothing", arguments: directories)
    func writes(_ directory: AccessDirectory) throws {
        let shared = try #require(SharedMount.current, "no shared daemon")
        let mount = shared.mount
        let before = shared.withDeadline("snapshot", seconds: 30) { ObservedState.take(mount) }
        var tried = 0
        for (name, mode) in try Self.files(in: directory.path, mount: mount) {
            let relative = "\(directory.path)/\(name)"
            // What root could write there with effect: a device name, a number, a flag.
            let text = mode & 0o222 == 0 ? "1\n"
                : directory.path.hasPrefix("bus/pci/drivers") || name == "drivers_probe" ? "0000:03:00.1\n"
                : name == "attach" || name == "detach" ? "5 \(nic)\n"
                : name == "pci_op" ? "conf_write 00:00.0 0x0c 1 0x10\n"
                : name == "faults" ? "\(nic) reset sticky\n"
                : name == "driver_override" ? "pciback\n"
                : name == "config" ? "\u{10}\u{10}\u{10}\u{10}" : "1\n"
            for style in ["shell redirect", "dd conv=notrunc"] {
                let path = mount.path(relative)
                let result = shared.withDeadline("nobody writes \(relative)") {
                    style == "shell redirect" ? Unprivileged.echo(text, to: path) : Unprivileged.write(text, to: path)
                }
                tried += 1
                #expect(result.failureValue?.errno == EACCES, "\(relative) (\(String(mode, radix: 8))) by \(style): \(result)")
            }
        }
        #expect(tried > 0)
        let after = shared.withDeadline("snapshot", seconds: 30) { ObservedState.take(mount) }
        let changes = before.differences(to: after)
        #expect(changes.isEmpty, "nobody changed the state:\n\(changes.joined(separator: "\n"))")
    }

    @Test("the frontend controls refuse nobody both ways", arguments: [
        "fs/pcibackfs/attach", "fs/pcibackfs/detach", "fs/pcibackfs/faults", "\(frontend)/pci_op", "fs/pcibackfs/log",
        "fs/pcibackfs/trace",
    ])
    func frontendControls(_ relative: String) throws {
        let shared = try #require(SharedMount.current, "no shared daemon")
        let path = shared.mount.path(relative)
        let read = shared.withDeadline("nobody reads \(relative)") { Unprivileged.read(path) }
        #expect(read.failureValue?.errno == EACCES, "read: \(read)")
        let write = shared.withDeadline("nobody writes \(relative)") { Unprivileged.echo("5 \(nic)\n", to: path) }
        #expect(write.failureValue?.errno == EACCES, "write: \(write)")
        // Root still can: the refusal is the mode, not the mount.
        let mode = try #require(try? Sys.fileStatus(path).get().st_mode)
        if mode & 0o400 != 0 {
            #expect((try? Sys.readOnce(path, count: 4096)) != nil, "root cannot read \(relative)")
        }
    }

    @Test("root keeps its view: full config, and writes reach the store")
    func rootUnchanged() throws {
        let shared = try #require(SharedMount.current, "no shared daemon")
        let mount = shared.mount
        #expect(try Sys.readBytes(mount.path("bus/pci/devices/\(nic)/config")).count == 4096)
        // A duplicate new_slot: accepted, and nothing changes.
        #expect(mount.echo(nic + "\n", "bus/pci/drivers/pciback/new_slot") == .written(13))
        #expect(try mount.cat("bus/pci/drivers/pciback/slots") == "\(nic)\n")
    }

    @Test("lspci as nobody: identity from the first 64 bytes, capabilities <access denied>", .requiresTool("lspci"))
    func lspciAsNobody() throws {
        let shared = try #require(SharedMount.current, "no shared daemon")
        let result = shared.withDeadline("lspci as nobody", seconds: 30) {
            Unprivileged.run(["lspci", "-A", "linux-sysfs", "-O", "sysfs.path=" + shared.mount.path("bus/pci"), "-s", "03:00.0",
                              "-nn", "-vvv"], timeout: 30)
        }
        #expect(result.succeeded, "\(result)")
        #expect(result.stdout.contains("[8086:10c9]"), "\(result.stdout)")
        #expect(result.stdout.contains("Capabilities: <access denied>"), "\(result.stdout)")
    }
}

extension Result {
    fileprivate var failureValue: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
#endif
