// The mount tests drive Linux FUSE with glibc's calls; elsewhere they are not built.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// Issue "pcibackfsd: mount the dom0 sysfs": the real daemon, mounted with FUSE, checked with
// plain syscalls against what the kernel's sysfs does (spec clients.md §7, pciback.md §1).
// Built-in machine: 03:00.0/03:00.1 are the 82576 behind root port 00:1c.1, bound to igb;
// 00:05.0 is a conventional NIC on the root bus, bound to 8139too.

private let nic = "0000:03:00.0"
private let nicDirectory = "devices/pci0000:00/0000:00:1c.1/0000:03:00.0"
private let conventional = "0000:00:05.0"
private let pciback = "bus/pci/drivers/pciback"

@Suite("pcibackfsd: mount the dom0 sysfs", .serialized, .requiresDaemonMount, .timeLimit(.minutes(1)))
struct MountTests {
    // MARK: Links

    @Test("device, driver and module links are the kernel's relative links; realpath stays in the mount")
    func kernelLinks() throws {
        try withDaemon { mount throws in
            #expect(try mount.readlink("bus/pci/devices/\(nic)") == "../../../\(nicDirectory)")
            #expect(try mount.readlink("bus/pci/devices/\(conventional)") == "../../../devices/pci0000:00/0000:00:05.0")
            #expect(try mount.readlink("bus/pci/devices/0000:00:1c.1") == "../../../devices/pci0000:00/0000:00:1c.1")
            // One more ../ per bridge level between the device and the root.
            #expect(try mount.readlink("\(nicDirectory)/driver") == "../../../../bus/pci/drivers/igb")
            #expect(try mount.readlink("devices/pci0000:00/0000:00:05.0/driver") == "../../../bus/pci/drivers/8139too")
            #expect(try mount.readlink("devices/pci0000:00/0000:00:1c.1/driver") == "../../../bus/pci/drivers/pcieport")
            #expect(try mount.readlink("\(nicDirectory)/subsystem") == "../../../../bus/pci")
            #expect(try mount.readlink("devices/pci0000:00/0000:00:05.0/subsystem") == "../../../bus/pci")
            #expect(try mount.readlink("\(pciback)/module") == "../../../../module/xen_pciback")

            #expect(try Sys.realpath(mount.path("bus/pci/devices/\(nic)")) == mount.path(nicDirectory))
            #expect(try Sys.realpath(mount.path("bus/pci/devices/\(nic)/driver")) == mount.path("bus/pci/drivers/igb"))
            #expect(try Sys.realpath(mount.path("bus/pci/devices/\(conventional)/driver")) == mount.path("bus/pci/drivers/8139too"))
            #expect(try Sys.realpath(mount.path("\(pciback)/module")) == mount.path("module/xen_pciback"))
            #expect(try Sys.realpath(mount.path("bus/pci/devices/\(nic)/subsystem")) == mount.path("bus/pci"))
            // lspci's parent lookup: realpath(devices/B/..) is the bridge's own directory.
            #expect(try Sys.realpath(mount.path("bus/pci/devices/\(nic)/..")) == mount.path("devices/pci0000:00/0000:00:1c.1"))

            // devices/ holds nothing but BDF names (lspci dies otherwise), here all eleven.
            let devices = try mount.list("bus/pci/devices").sorted()
            #expect(devices == ["0000:00:00.0", "0000:00:01.0", "0000:00:03.0", "0000:00:05.0", "0000:00:1c.0", "0000:00:1c.1",
                                "0000:01:00.0", "0000:02:00.0", "0000:03:00.0", "0000:03:00.1", "0000:04:00.0"])
            for name in devices {
                guard case .success(let info) = Sys.linkStatus(mount.path("bus/pci/devices/\(name)")) else {
                    Issue.record("lstat devices/\(name) failed"); continue
                }
                #expect(info.st_mode & S_IFMT == S_IFLNK)
            }
            // Nothing is bound to pciback yet: no entry of its directory looks like a BDF.
            let entries = try mount.list(pciback)
            #expect(!entries.contains { $0.hasPrefix("0000:") })
            #expect(Set(entries).isSuperset(of: ["bind", "unbind", "new_slot", "remove_slot", "slots", "permissive",
                                                  "allow_interrupt_control", "quirks", "irq_handlers", "irq_handler_state",
                                                  "new_id", "remove_id", "uevent", "module"]))
            // A pvops dom0's modules: xen_pciback, never a module named after the driver.
            #expect(!mount.exists("module/pciback"))
            #expect(mount.exists("module/xen_pciback/parameters/permissive"))
        }
    }

    @Test("bind and unbind: pciback/<BDF> and the driver link appear and vanish as write(2) returns")
    func linksFollowBinding() throws {
        try withDaemon { mount throws in
            let driverLink = "bus/pci/devices/\(nic)/driver"
            #expect(mount.libxlWrite(nic, "bus/pci/drivers/igb/unbind") == .written(12))
            #expect(Sys.lstatError(mount.path(driverLink)) == ENOENT)
            #expect(Sys.lstatError(mount.path("bus/pci/drivers/igb/\(nic)")) == ENOENT)
            #expect(mount.libxlWrite(nic, "\(pciback)/new_slot") == .written(12))
            // Several rounds in a row: a stale dentry would show on the first lstat after a write.
            for _ in 0..<10 {
                #expect(Sys.lstatError(mount.path("\(pciback)/\(nic)")) == ENOENT)
                #expect(mount.libxlWrite(nic, "\(pciback)/bind") == .written(12))
                #expect(Sys.lstatError(mount.path("\(pciback)/\(nic)")) == 0)
                #expect(try mount.readlink("\(pciback)/\(nic)") == "../../../../\(nicDirectory)")
                #expect(try mount.readlink(driverLink) == "../../../../bus/pci/drivers/pciback")
                #expect(try Sys.realpath(mount.path("\(pciback)/\(nic)")) == mount.path(nicDirectory))
                #expect(try mount.list(pciback).contains(nic))
                #expect(mount.libxlWrite(nic, "\(pciback)/unbind") == .written(12))
                #expect(Sys.lstatError(mount.path("\(pciback)/\(nic)")) == ENOENT)
                #expect(Sys.lstatError(mount.path(driverLink)) == ENOENT)
                #expect(try !mount.list(pciback).contains(nic))
            }
            // Back to igb through its own bind file.
            #expect(mount.libxlWrite(nic, "bus/pci/drivers/igb/bind") == .written(12))
            #expect(try mount.readlink(driverLink) == "../../../../bus/pci/drivers/igb")
            #expect(try mount.list("bus/pci/drivers/igb").contains(nic))
        }
    }

    // MARK: Modes

    @Test("attribute modes are the kernel's, and the wrong direction is EACCES even for root")
    func modesAndAccess() throws {
        try withDaemon { mount throws in
            let expected: [(String, mode_t)] = [
                ("new_slot", 0o200), ("remove_slot", 0o200), ("slots", 0o444), ("quirks", 0o644), ("permissive", 0o644),
                ("allow_interrupt_control", 0o644), ("irq_handlers", 0o444), ("irq_handler_state", 0o200),
                ("bind", 0o200), ("unbind", 0o200), ("new_id", 0o200), ("remove_id", 0o200), ("uevent", 0o200),
            ]
            for (name, mode) in expected {
                guard case .success(let info) = Sys.linkStatus(mount.path("\(pciback)/\(name)")) else {
                    Issue.record("lstat pciback/\(name) failed"); continue
                }
                #expect(info.st_mode & S_IFMT == S_IFREG, "pciback/\(name)")
                #expect(info.st_size == 4096, "pciback/\(name): sysfs reports a page")
                #expect(info.st_mode & 0o7777 == mode, "pciback/\(name): mode \(String(info.st_mode & 0o7777, radix: 8))")
            }
            let deviceModes: [(String, mode_t)] = [
                ("vendor", 0o444), ("device", 0o444), ("class", 0o444), ("irq", 0o444), ("resource", 0o444),
                ("config", 0o644), ("driver_override", 0o644), ("enable", 0o644), ("remove", 0o220), ("rescan", 0o200),
                ("reset", 0o200),
            ]
            for (name, mode) in deviceModes {
                guard case .success(let info) = Sys.linkStatus(mount.path("bus/pci/devices/\(nic)/\(name)")) else {
                    Issue.record("lstat \(nic)/\(name) failed"); continue
                }
                #expect(info.st_mode & 0o7777 == mode, "\(nic)/\(name): mode \(String(info.st_mode & 0o7777, radix: 8))")
            }
            #expect(Sys.linkStatus(mount.path("bus/pci/drivers_probe")).map { $0.st_mode & 0o7777 } == .success(0o200))
            #expect(Sys.linkStatus(mount.path("module/xen_pciback/parameters/hide")).map { $0.st_mode & 0o7777 } == .success(0o444))
            #expect(Sys.linkStatus(mount.path("module/xen_pciback/parameters/permissive")).map { $0.st_mode & 0o7777 } == .success(0o644))

            // kernfs checks the mode for root too.
            for name in ["new_slot", "remove_slot", "irq_handler_state", "bind", "unbind", "new_id"] {
                #expect(Sys.openError(mount.path("\(pciback)/\(name)"), O_RDONLY) == EACCES, "reading pciback/\(name)")
                #expect(Sys.openError(mount.path("\(pciback)/\(name)"), O_RDWR) == EACCES, "O_RDWR pciback/\(name)")
            }
            for name in ["slots", "irq_handlers"] {
                #expect(Sys.openError(mount.path("\(pciback)/\(name)"), O_WRONLY) == EACCES, "writing pciback/\(name)")
            }
            for name in ["vendor", "device", "class", "irq", "resource"] {
                #expect(Sys.openError(mount.path("bus/pci/devices/\(nic)/\(name)"), O_WRONLY) == EACCES, "writing \(name)")
            }
            #expect(Sys.openError(mount.path("bus/pci/devices/\(nic)/remove"), O_RDONLY) == EACCES)
            #expect(Sys.openError(mount.path("bus/pci/drivers_probe"), O_RDONLY) == EACCES)
            #expect(Sys.openError(mount.path("module/xen_pciback/parameters/hide"), O_WRONLY) == EACCES)
            // What is allowed opens.
            #expect(Sys.openError(mount.path("\(pciback)/permissive"), O_RDWR) == 0)
            #expect(Sys.openError(mount.path("\(pciback)/slots"), O_RDONLY) == 0)
            #expect(Sys.openError(mount.path("bus/pci/devices/\(nic)/config"), O_RDWR) == 0)
            #expect(mount.echo("0000:03:00.0\n", "\(pciback)/slots") == .openFailed(EACCES))
            #expect(throws: SyscallError.self) { try mount.cat("\(pciback)/new_slot") }
        }
    }

    @Test("--legacy-modes gives the modes of kernels before 4.14")
    func legacyModes() throws {
        try withDaemon(["--legacy-modes"]) { mount throws in
            for (name, mode) in [("slots", mode_t(0o400)), ("irq_handlers", 0o400), ("quirks", 0o600), ("permissive", 0o600),
                                 ("allow_interrupt_control", 0o600), ("new_slot", 0o200)] {
                #expect(Sys.linkStatus(mount.path("\(pciback)/\(name)")).map { $0.st_mode & 0o7777 } == .success(mode), "\(name)")
            }
        }
    }

    // MARK: Stores

    @Test("store errors come back from write(2) with the kernel's errno")
    func storeErrors() throws {
        try withDaemon { mount throws in
            // Parse errors.
            #expect(mount.echo("garbage\n", "\(pciback)/new_slot") == .writeFailed(EINVAL))
            #expect(mount.echo("0000:03:00.0 junk\n", "\(pciback)/new_slot") == .writeFailed(EINVAL))
            #expect(mount.echo("0000:03:20.0\n", "\(pciback)/new_slot") == .writeFailed(EINVAL))
            #expect(mount.echo("garbage\n", "\(pciback)/permissive") == .writeFailed(EINVAL))
            #expect(mount.echo("garbage\n", "\(pciback)/allow_interrupt_control") == .writeFailed(EINVAL))
            // Not bound to pciback (8139too has it), no such device, wildcard.
            #expect(mount.echo("\(conventional)\n", "\(pciback)/permissive") == .writeFailed(ENODEV))
            #expect(mount.echo("0000:09:00.0\n", "\(pciback)/permissive") == .writeFailed(ENODEV))
            #expect(mount.echo("03:00.*\n", "\(pciback)/permissive") == .writeFailed(ENODEV))
            #expect(mount.libxlWrite(conventional, "\(pciback)/allow_interrupt_control") == .writeFailed(ENODEV))
            #expect(mount.echo("0000:09:00.0\n", "\(pciback)/irq_handler_state") == .writeFailed(ENOENT))
            // Nothing to remove.
            #expect(mount.echo("0000:09:00.0\n", "\(pciback)/remove_slot") == .writeFailed(ENOENT))
            // Driver core.
            #expect(mount.libxlWrite("0000:09:00.0", "\(pciback)/bind") == .writeFailed(ENODEV))
            #expect(mount.libxlWrite(conventional, "\(pciback)/bind") == .writeFailed(EBUSY))
            #expect(mount.libxlWrite(nic, "\(pciback)/unbind") == .writeFailed(ENODEV))
            #expect(mount.libxlWrite(nic, "bus/pci/drivers/8139too/unbind") == .writeFailed(ENODEV))
            #expect(mount.echo("0000:09:00.0\n", "bus/pci/drivers_probe") == .writeFailed(ENODEV))
            // new_id / remove_id: too few fields, pciback's table already matching, no such id.
            #expect(mount.echo("8086\n", "\(pciback)/new_id") == .writeFailed(EINVAL))
            #expect(mount.echo("8086 10c9\n", "\(pciback)/new_id") == .writeFailed(EEXIST))
            #expect(mount.echo("8086 10c9\n", "\(pciback)/remove_id") == .writeFailed(ENODEV))
            // uevent takes an action name.
            #expect(mount.echo("add\n", "\(pciback)/uevent") == .written(4))
            #expect(mount.echo("bogus\n", "\(pciback)/uevent") == .writeFailed(EINVAL))
            // Not in the seize list: pciback's probe refuses.
            #expect(mount.libxlWrite(nic, "bus/pci/drivers/igb/unbind") == .written(12))
            #expect(mount.libxlWrite(nic, "\(pciback)/bind") == .writeFailed(ENODEV))
            #expect(mount.driver(of: nic) == nil)
            // Accepted shapes return the whole count.
            #expect(mount.echo(" 0000:0A:1f.7 \n", "\(pciback)/new_slot") == .written(15))
            #expect(mount.echo("0000:0a:1f.7\n", "\(pciback)/remove_slot") == .written(13))
            #expect(mount.libxlWrite(nic, "\(pciback)/new_slot") == .written(12))
            #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n")
            // More than a page: the store sees the first 4096 bytes and fails with its own errno,
            // or succeeds and write(2) returns 4096.
            #expect(mount.echo(String(repeating: "x", count: 5000), "\(pciback)/bind", style: .plain) == .writeFailed(ENODEV))
            #expect(mount.echo("0000:05:00.1" + String(repeating: " ", count: 4988), "\(pciback)/new_slot", style: .plain)
                    == .written(4096))
            #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n0000:05:00.1\n")
            // The daemon is still serving after all of that.
            #expect(try mount.cat("bus/pci/devices/\(nic)/vendor") == "0x8086\n")
        }
    }

    @Test("shell redirects with O_TRUNC, truncate(2) and zero-length writes behave as on sysfs")
    func truncationAndEmptyWrites() throws {
        try withDaemon { mount throws in
            let newSlot = mount.path("\(pciback)/new_slot")
            // O_TRUNC (the shell's `>`) is accepted and ignored.
            #expect(Sys.echo("0000:03:00.0\n", to: newSlot, style: .shellRedirect) == .written(13))
            #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n")
            // truncate(2) and ftruncate(2) succeed and change nothing.
            #expect(truncate(newSlot, 0) == 0)
            #expect(truncate(mount.path("bus/pci/devices/\(nic)/driver_override"), 0) == 0)
            let fd = open(newSlot, O_WRONLY | O_CLOEXEC)
            #expect(fd >= 0)
            if fd >= 0 {
                #expect(ftruncate(fd, 0) == 0)
                // A zero-length write returns 0 and calls no store.
                let empty: [UInt8] = []
                #expect(empty.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, 0) } == 0)
                close(fd)
            }
            #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n")
            // driver_override: the store strips one newline; "\n" clears it.
            #expect(try mount.cat("bus/pci/devices/\(nic)/driver_override") == "(null)\n")
            #expect(mount.echo("pciback\n", "bus/pci/devices/\(nic)/driver_override") == .written(8))
            #expect(try mount.cat("bus/pci/devices/\(nic)/driver_override") == "pciback\n")
            #expect(mount.echo("\n", "bus/pci/devices/\(nic)/driver_override", style: .plain) == .written(1))
            #expect(try mount.cat("bus/pci/devices/\(nic)/driver_override") == "(null)\n")
            // A real shell: `echo x > attr` works and a refused store fails the command with the
            // store's errno (bash prints strerror; dash would say "I/O error" for any failure).
            let ok = Subprocess.run("bash", ["-c", "echo 0000:03:00.1 > \"$1\"", "bash", newSlot])
            #expect(ok.succeeded, "\(ok)")
            let refused = Subprocess.run("bash", ["-c", "echo garbage > \"$1\"", "bash", newSlot])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("Invalid argument"), "\(refused)")
            #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n0000:03:00.1\n")
        }
    }

    // MARK: Formats

    @Test("vendor, device, class, irq, resource and driver_override have pci-sysfs.c's formats")
    func attributeFormats() throws {
        try withDaemon { mount throws in
            let device = "bus/pci/devices/\(nic)"
            #expect(try mount.cat("\(device)/vendor") == "0x8086\n")
            #expect(try mount.cat("\(device)/device") == "0x10c9\n")
            #expect(try mount.cat("\(device)/subsystem_vendor") == "0x8086\n")
            #expect(try mount.cat("\(device)/subsystem_device") == "0xa03c\n")
            #expect(try mount.cat("\(device)/class") == "0x020000\n")
            #expect(try mount.cat("\(device)/revision") == "0x01\n")
            #expect(try mount.cat("\(device)/irq") == "18\n")
            #expect(try mount.cat("\(device)/driver_override") == "(null)\n")
            #expect(try mount.cat("\(device)/numa_node") == "-1\n")
            #expect(try mount.cat("\(device)/power_state") == "D0\n")
            #expect(try mount.cat("\(device)/modalias") == "pci:v00008086d000010C9sv00008086sd0000A03Cbc02sc00i00\n")
            #expect(try mount.cat("bus/pci/devices/0000:03:00.1/irq") == "19\n")
            // Exactly 7 bytes for vendor (libvirt reads 7) and 9 for class.
            #expect(try Sys.readOnce(mount.path("\(device)/vendor"), count: 7) == Array("0x8086\n".utf8))
            #expect(try Sys.readOnce(mount.path("\(device)/class"), count: 9) == Array("0x020000\n".utf8))

            // resource: 13 lines of 57 bytes for an endpoint, kernel flags.
            let resource = try mount.cat("\(device)/resource")
            let lines = resource.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            #expect(lines.count == 13)
            #expect(resource.utf8.count == 13 * 57)
            let shape = /^0x[0-9a-f]{16} 0x[0-9a-f]{16} 0x[0-9a-f]{16}$/
            for line in lines { #expect(line.wholeMatch(of: shape) != nil, "resource line \(line)") }
            #expect(lines.first == "0x00000000fe220000 0x00000000fe23ffff 0x0000000000040200")
            #expect(lines[1] == "0x0000000000000000 0x0000000000000000 0x0000000000000000")
            #expect(lines[2] == "0x000000000000e020 0x000000000000e03f 0x0000000000040101")
            #expect(lines[3] == "0x00000000fe244000 0x00000000fe247fff 0x0000000000040200")
            // QEMU's single read(399) gets exactly the first seven lines.
            let first = try Sys.readOnce(mount.path("\(device)/resource"), count: 399)
            #expect(first.count == 399)
            #expect(first == Array(resource.utf8.prefix(399)))
            // One byte at a time gives the same text (one snapshot per open).
            #expect(try Sys.readBytes(mount.path("\(device)/resource"), chunk: 1) == Array(resource.utf8))
            // A 64-bit prefetchable BAR and a bridge (17 lines: 4 windows after the IOV lines).
            let vga = try mount.cat("bus/pci/devices/0000:04:00.0/resource").split(separator: "\n")
            #expect(vga.first == "0x00000000c0000000 0x00000000cfffffff 0x000000000014220c")
            #expect(vga[2] == "0x00000000fe400000 0x00000000fe41ffff 0x0000000000140204")
            let bridge = try mount.cat("bus/pci/devices/0000:00:1c.1/resource")
            #expect(bridge.split(separator: "\n").count == 17)
            #expect(bridge.utf8.count == 17 * 57)
            #expect(bridge.split(separator: "\n")[13] == "0x000000000000e000 0x000000000000efff 0x0000000000000101")
        }
    }

    // MARK: config

    @Test("config: st_size 256 or 4096, pread at any offset and length, clipped at the end")
    func configReads() throws {
        try withDaemon { mount throws in
            let express = mount.path("bus/pci/devices/\(nic)/config")
            let conventionalConfig = mount.path("bus/pci/devices/\(conventional)/config")
            #expect(Sys.fileStatus(express).map { Int($0.st_size) } == .success(4096))
            #expect(Sys.fileStatus(conventionalConfig).map { Int($0.st_size) } == .success(256))

            let full = try Sys.readBytes(express)
            #expect(full.count == 4096)
            #expect(Array(full[0..<4]) == [0x86, 0x80, 0xc9, 0x10])
            #expect(try Sys.readBytes(conventionalConfig).count == 256)
            #expect(try Sys.readBytes(express, chunk: 7) == full)

            // Any offset and length: the bytes of the whole space.
            for (offset, count) in [(0, 1), (1, 1), (2, 2), (3, 5), (5, 3), (6, 7), (0x3d, 1), (0x60, 4), (0x62, 2), (0xff, 2),
                                    (0x100, 4), (0x101, 9), (0xffd, 3)] {
                #expect(try Sys.pread(express, offset: offset, count: count) == Array(full[offset..<(offset + count)]),
                        "pread(\(count)) at \(offset)")
            }
            // Clipped at the end; at or past the end nothing.
            #expect(try Sys.pread(conventionalConfig, offset: 250, count: 100).count == 6)
            #expect(try Sys.pread(conventionalConfig, offset: 256, count: 4).count == 0)
            #expect(try Sys.pread(conventionalConfig, offset: 4000, count: 4).count == 0)
            #expect(try Sys.pread(express, offset: 4095, count: 10).count == 1)
            #expect(try Sys.pread(express, offset: 4096, count: 10).count == 0)
            #expect(try Sys.pread(express, offset: 100_000, count: 10).count == 0)

            // Writes return the count (clipped), even when the register drops bits.
            #expect(try Sys.configWrite(express, offset: 0x2c, width: 4, value: 0x1234_5678) == 4)  // read-only subsystem IDs
            #expect(try Sys.configRead(express, offset: 0x2c, width: 4) == 0xa03c_8086)
            // sysfs_kf_bin_write: a write at or past the end of the file is EFBIG.
            #expect(throws: (any Error).self) { try Sys.configWrite(conventionalConfig, offset: 256, width: 4, value: 0) }
            // Odd sizes are split into byte and word accesses: cache line size and latency timer
            // (writable on a conventional function) take their bytes, BIST is left alone.
            let fd = open(conventionalConfig, O_RDWR | O_CLOEXEC)
            #expect(fd >= 0)
            if fd >= 0 {
                defer { close(fd) }
                let three: [UInt8] = [0x10, 0x40, 0x00]
                #expect(three.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, 3, 0x0c) } == 3)
                #expect(try Sys.pread(fd: fd, offset: 0x0c, count: 2) == [0x10, 0x40])
                // Clipped at the end of the space.
                let zeros = [UInt8](repeating: 0, count: 300)
                #expect(zeros.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, 300, 250) } == 6)
            }
        }
    }

    @Test("config: a reader without CAP_SYS_ADMIN gets the first 64 bytes, a writer EACCES", .requiresTool("setpriv"))
    func configForNonRoot() throws {
        try withDaemon(["--allow-other"]) { mount throws in
            let config = mount.path("bus/pci/devices/\(nic)/config")
            let full = try Sys.readBytes(config)
            let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]
            let read = Subprocess.run("setpriv", asNobody + ["dd", "if=\(config)", "bs=4096", "count=1", "status=none"])
            #expect(read.succeeded, "\(read)")
            #expect(read.stdoutBytes == Array(full.prefix(64)))
            let conventionalRead = Subprocess.run(
                "setpriv", asNobody + ["dd", "if=\(mount.path("bus/pci/devices/\(conventional)/config"))", "bs=256", "status=none"])
            #expect(conventionalRead.stdoutBytes.count == 64)
            // Text attributes are world-readable.
            let vendor = Subprocess.run("setpriv", asNobody + ["cat", mount.path("bus/pci/devices/\(nic)/vendor")])
            #expect(vendor.stdout == "0x8086\n", "\(vendor)")
            // config is 0644: the kernel refuses the open for writing.
            let write = Subprocess.run("setpriv", asNobody + ["dd", "if=/dev/zero", "of=\(config)", "bs=1", "count=1",
                                                              "conv=notrunc", "status=none"])
            #expect(write.status != 0)
            #expect(write.stderr.contains("Permission denied"), "\(write)")
            if Tools.find("lspci") != nil {
                let lspci = Subprocess.run("setpriv", asNobody + ["lspci", "-A", "linux-sysfs", "-O",
                                                                  "sysfs.path=\(mount.path("bus/pci"))", "-vv", "-s", "03:00.0"])
                #expect(lspci.succeeded, "\(lspci)")
                #expect(lspci.stdout.contains("Capabilities: <access denied>"), "\(lspci)")
            }
        }
        // Without allow_other, FUSE lets nobody but the mounter in at all.
        try withDaemon { mount throws in
            let denied = Subprocess.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "cat",
                                                    mount.path("bus/pci/devices/\(nic)/vendor")])
            #expect(denied.status != 0)
            #expect(denied.stderr.contains("Permission denied"), "\(denied)")
        }
    }

    // MARK: The frontend view

    @Test("frontend view: the guest's config goes through pciback's filter; detach clears allow_interrupt_control")
    func frontendView() throws {
        try withDaemon(["--hide", "(0000:03:00.0)"]) { mount throws in
            #expect(mount.driver(of: nic) == "pciback")
            #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n")
            #expect(try mount.cat("module/xen_pciback/parameters/hide") == "(0000:03:00.0)\n")
            #expect(try mount.cat("module/xen_pciback/parameters/permissive") == "N\n")
            let quirks = try mount.cat("\(pciback)/quirks").split(separator: "\n").prefix(3)
            #expect(quirks == ["03:00.0", "\t8086:10c9:8086:a03c", "\t\t00000000:2:00000000"])
            #expect(mount.echo("1 \(nic)\n", "fs/pcibackfs/attach") == .written(15))
            let vbdf = "0000:00:00.0"
            let guestDevice = "fs/pcibackfs/frontends/1/bus/pci/devices/\(vbdf)"
            #expect(try mount.list("fs/pcibackfs/frontends/1/bus/pci/devices") == [vbdf])
            #expect(try mount.cat("\(guestDevice)/vendor") == "0x8086\n")
            #expect(try mount.cat("\(guestDevice)/class") == "0x020000\n")
            #expect(try mount.guestConfig(1, vbdf, 0, 4) == 0x10c9_8086)
            // INTERRUPT_LINE is dom0's IRQ, not the register.
            #expect(try mount.guestConfig(1, vbdf, 0x3c, 1) == 18)

            // COMMAND: the guest enables the device and asks for INTx off. Without
            // allow_interrupt_control the INTx bit is only echoed from pciback's shadow.
            #expect(try mount.guestConfigWrite(1, vbdf, 0x04, 2, 0x0407) == 2)
            #expect(try mount.guestConfig(1, vbdf, 0x04, 2) == 0x0407)
            let command = try mount.hostConfig(nic, 0x04, 2)
            #expect(command & 0x7 == 0x7, "pci_enable_device and bus master reached the hardware")
            #expect(command & 0x400 == 0, "INTX_DISABLE must not reach the hardware: \(String(command, radix: 16))")

            // BAR sizing is answered by pciback; the hardware BAR never moves.
            #expect(try mount.guestConfigWrite(1, vbdf, 0x10, 4, 0xffff_ffff) == 4)
            #expect(try mount.guestConfig(1, vbdf, 0x10, 4) == 0xfffe_0000)
            #expect(try mount.hostConfig(nic, 0x10, 4) == 0xfe22_0000)
            #expect(try mount.guestConfigWrite(1, vbdf, 0x18, 4, 0xffff_fffc) == 4)
            #expect(try mount.guestConfig(1, vbdf, 0x18, 4) == 0xffff_ffe1)
            try mount.guestConfigWrite(1, vbdf, 0x10, 4, 0xfe22_0000)
            try mount.guestConfigWrite(1, vbdf, 0x18, 4, 0x0000_e021)
            #expect(try mount.guestConfig(1, vbdf, 0x10, 4) == 0xfe22_0000)
            #expect(try mount.guestConfig(1, vbdf, 0x18, 4) == 0x0000_e021)
            try mount.guestConfigWrite(1, vbdf, 0x10, 4, 0x1234_0000)
            #expect(try mount.guestConfig(1, vbdf, 0x10, 4) == 0xfe22_0000)
            #expect(try mount.hostConfig(nic, 0x10, 4) == 0xfe22_0000)

            // MSI-X (cap at 0x60): the flag write is accepted by pwrite but refused by the filter.
            #expect(try mount.hostConfig(nic, 0x62, 2) == 0x0009)
            #expect(try mount.guestConfigWrite(1, vbdf, 0x62, 2, 0x8009) == 2)
            #expect(try mount.guestConfig(1, vbdf, 0x62, 2) == 0x0009)
            #expect(try mount.hostConfig(nic, 0x62, 2) == 0x0009)

            // With allow_interrupt_control (what patched libxl writes for a stub domain).
            #expect(mount.libxlWrite(nic, "\(pciback)/allow_interrupt_control") == .written(12))
            #expect(try mount.cat("\(pciback)/allow_interrupt_control") == "0000:03:00.0\n")
            try mount.guestConfigWrite(1, vbdf, 0x62, 2, 0x8009)
            #expect(try mount.guestConfig(1, vbdf, 0x62, 2) == 0x8009)
            #expect(try mount.hostConfig(nic, 0x62, 2) == 0x8009)
            // INTx now follows the guest's bit when it differs from the shadow.
            try mount.guestConfigWrite(1, vbdf, 0x04, 2, 0x0007)
            #expect(try mount.hostConfig(nic, 0x04, 2) & 0x400 == 0)
            try mount.guestConfigWrite(1, vbdf, 0x04, 2, 0x0407)
            #expect(try mount.hostConfig(nic, 0x04, 2) & 0x400 == 0x400)
            #expect(try mount.guestConfig(1, vbdf, 0x04, 2) == 0x0407)

            // Release: the frontend goes, the flag is cleared, the bind-time state is restored.
            #expect(mount.echo("1 \(nic)\n", "fs/pcibackfs/detach") == .written(15))
            #expect(try mount.cat("\(pciback)/allow_interrupt_control") == "")
            #expect(Sys.lstatError(mount.path("fs/pcibackfs/frontends/1")) == ENOENT)
            #expect(try mount.hostConfig(nic, 0x62, 2) == 0x0009)
            #expect(try mount.hostConfig(nic, 0x04, 2) & 0x4 == 0, "bus master cleared by the reset")
            #expect(mount.driver(of: nic) == "pciback", "the device stays bound to pciback")
            // Detaching again: nothing owned.
            #expect(mount.echo("1 \(nic)\n", "fs/pcibackfs/detach") == .writeFailed(ENODEV))
        }
    }

    @Test("pci_op: conf_read/conf_write and MSI-X ops answer like xen_pcibk_do_one_op")
    func pciOperations() throws {
        try withDaemon(["--hide", "(0000:03:00.0)"]) { mount throws in
            #expect(mount.echo("1 \(nic)\n", "fs/pcibackfs/attach") == .written(15))
            let vendor = try mount.pciOp(1, "conf_read 00:00.0 0x0 4")
            #expect(vendor.err == 0 && vendor.value == 0x10c9_8086)
            // Misaligned and odd sizes: XEN_PCI_ERR_invalid_offset.
            #expect(try mount.pciOp(1, "conf_read 00:00.0 0x3 2").err == -2)
            #expect(try mount.pciOp(1, "conf_read 00:00.0 0x0 3").err == -2)
            // No such virtual device: dev_not_found.
            #expect(try mount.pciOp(1, "conf_read 00:01.0 0x0 4").err == -1)
            // The fake INTx handler: off until the guest enables the device (spec §10 cases 8, 18).
            #expect(try mount.cat("\(pciback)/irq_handlers") == "0000:03:00.0:off:not acking:0\n")
            #expect(try mount.pciOp(1, "conf_write 00:00.0 0x4 2 0x407").err == 0)
            #expect(try mount.cat("\(pciback)/irq_handlers") == "0000:03:00.0:on:acking:0\n")
            // MSI-X flag write without allow_interrupt_control: access_denied, hardware unchanged.
            #expect(try mount.pciOp(1, "conf_write 00:00.0 0x62 2 0x8009").err == -3)
            #expect(try mount.hostConfig(nic, 0x62, 2) == 0x0009)
            // enable_msix through the PCI core (memory decoding is on now).
            let msix = try mount.pciOp(1, "enable_msix 00:00.0 0,1")
            #expect(msix.err == 0, "\(msix.text)")
            #expect(msix.text.contains("vectors"))
            #expect(try mount.pciOp(1, "enable_msix 00:00.0 0,1").err == -Int32(EALREADY))
            #expect(try mount.pciOp(1, "disable_msix 00:00.0").err == 0)
            #expect(try mount.pciOp(1, "op 7 00:00.0").err == -4)
            // Malformed lines are refused by write(2).
            #expect(mount.echo("bogus 00:00.0\n", "fs/pcibackfs/frontends/1/pci_op") == .writeFailed(EINVAL))
            // The attribute is per frontend and goes with it.
            #expect(mount.echo("1 \(nic)\n", "fs/pcibackfs/detach") == .written(15))
            #expect(mount.echo("conf_read 00:00.0 0x0 4\n", "fs/pcibackfs/frontends/1/pci_op") == .openFailed(ENOENT))
        }
    }
}

#endif
