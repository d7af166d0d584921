import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@testable import PCIBackFS

// SR-IOV through the real daemon, mounted with FUSE, driven by the syscalls and programs the
// clients use (sriov.md §5.8-§5.10, clients.md §1, §3.1, §6.2, pciutils). Built-in machine:
// 82576 PFs 03:00.0/03:00.1 behind root port 00:1c.1, bound to igb, VFs at 03:10.0, 03:10.2, ...
// Machine files reproduce the spec's example machine (sriov.md §0) and a PF of 255 VFs.

private let pf = "0000:03:00.0"
private let pfDevice = "bus/pci/devices/0000:03:00.0"
private let port = "devices/pci0000:00/0000:00:1c.1"
private let pciback = "bus/pci/drivers/pciback"

/// A machine file holding `devices` as raw config (bytes, masks and reset image), so that any
/// function built in a test (any SR-IOV layout) can be mounted.
enum RawMachineFile {
    static func entry(_ device: EmulatedDevice) -> MachineFile.Entry {
        func hexString(_ bytes: [UInt8]) -> String { bytes.map { hex($0, width: 2) }.joined() }
        var entry = MachineFile.Entry(address: device.address.description)
        entry.config = hexString(device.config.bytes)
        entry.writable = hexString(device.config.writable)
        entry.writeOneClear = hexString(device.config.writeOneClear)
        entry.resetImage = hexString(device.resetImage)
        entry.bars = device.bars.enumerated().compactMap { index, bar in
            bar.map { MachineFile.BAR(index: index, kind: $0.kind, size: $0.size, address: $0.address) }
        }
        entry.irq = device.irq
        entry.driver = device.bootDriver
        return entry
    }

    /// Writes the file into `directory` and returns its path.
    static func write(_ devices: [EmulatedDevice], name: String, to directory: String) throws -> String {
        var entries = [MachineFile.Entry(address: "0000:00:00.0", template: "host-bridge")]
        entries += devices.map(entry)
        let data = try JSONEncoder().encode(MachineFile(name: name, devices: entries))
        let path = directory + "/" + name + ".json"
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    static func exampleDevices() -> [EmulatedDevice] {
        let machine = SRIOVExample.machine(pf1: SRIOVExample.Variant())
        return [SRIOVExample.rootPort, SRIOVExample.pf0, SRIOVExample.pf1].compactMap { machine[$0] }
    }

    static func scaleDevices() -> [EmulatedDevice] { [SRIOVScale.rootPort(), SRIOVScale.device()] }
}

/// `fscanf(f, "%x:%x:%x.%d\n")` over `slots`, as libxl's pciback_dev_has_slot loops.
private func slotsList(_ mount: DaemonMount) throws -> [String] {
    try mount.cat(pciback + "/slots").split(separator: "\n").map(String.init)
}

/// libxl's pci_add_dm_done resource parse: `fscanf("0x%llx 0x%llx 0x%llx\n")` for 7 lines.
private func resourceLines(_ text: String) -> [(start: UInt64, end: UInt64, flags: UInt64)] {
    text.split(separator: "\n").prefix(7).compactMap { line in
        let fields = line.split(separator: " ").compactMap { Hex.parse(String($0)) }
        return fields.count == 3 ? (fields[0], fields[1], fields[2]) : nil
    }
}

@Suite("SR-IOV: the mounted daemon", .serialized, .requiresDaemonMount, .timeLimit(.minutes(2)))
struct SRIOVMountTests {

    @Test("machine files reproduce the example and 255-VF machines exactly (raw config round trip)")
    func machineFilesRoundTrip() throws {
        let directory = Temporary.directory(prefix: "pcibackfs-sriov")
        defer { Temporary.remove(directory) }
        for (name, devices) in [("example", RawMachineFile.exampleDevices()), ("scale", RawMachineFile.scaleDevices())] {
            let loaded = try MachineFile.load(path: RawMachineFile.write(devices, name: name, to: directory))
            #expect(loaded.count == devices.count + 1)
            for device in devices {
                let copy = try #require(loaded.first { $0.address == device.address })
                #expect(copy.config == device.config)
                #expect(copy.bars == device.bars)
                #expect(copy.identity == device.identity)
                #expect(copy.bootDriver == device.bootDriver)
            }
        }
    }

    @Test("echo 4 > sriov_numvfs on the built-in NIC: four VFs that lspci lists, names and decodes", .requiresTool("lspci"))
    func builtinNICWithLspci() throws {
        try withDaemon { mount throws in
            #expect(try mount.cat(pfDevice + "/sriov_totalvfs") == "8\n")
            #expect(try mount.cat(pfDevice + "/sriov_numvfs") == "0\n")
            #expect(mount.pciutils("lspci", ["-d", "8086:10ca"]).stdout.isEmpty)

            #expect(mount.echo("4\n", pfDevice + "/sriov_numvfs") == .written(2))
            #expect(try mount.cat(pfDevice + "/sriov_numvfs") == "4\n")
            let vfs = ["0000:03:10.0", "0000:03:10.2", "0000:03:10.4", "0000:03:10.6"]
            #expect(try mount.list("bus/pci/devices").filter { $0.hasPrefix("0000:03:1") }.sorted() == vfs)
            for (id, vf) in vfs.enumerated() {
                #expect(try mount.readlink(pfDevice + "/virtfn\(id)") == "../" + vf)
                #expect(try mount.readlink("bus/pci/devices/\(vf)") == "../../../\(port)/\(vf)")
                #expect(try mount.readlink("bus/pci/devices/\(vf)/physfn") == "../" + pf)
                #expect(try Sys.realpath(mount.path("bus/pci/devices/\(vf)/..")) == mount.path(port))
            }
            #expect(!mount.exists(pfDevice + "/virtfn4"))

            // lspci lists the four with their names, under the PF's root port.
            let listing = mount.pciutils("lspci", ["-D", "-d", "8086:10ca"])
            #expect(listing.succeeded, "\(listing)")
            #expect(listing.stdout == vfs.map { "\($0) Ethernet controller: Intel Corporation 82576 Virtual Function (rev 01)\n" }
                .joined())
            let tree = mount.pciutils("lspci", ["-t"]).stdout
            #expect(tree.contains("\\-1c.1-[03]--+-00.0"), "\(tree)")
            #expect(tree.contains("\\-10.6"), "\(tree)")

            // The PF's SR-IOV capability, decoded: VF Enable and MSE set, 4 VFs, the windows.
            let resource = try mount.cat(pfDevice + "/resource").split(separator: "\n")
            let window0 = try #require(Hex.parse(String(resource[7].split(separator: " ")[0])))
            let window3 = try #require(Hex.parse(String(resource[10].split(separator: " ")[0])))
            let pfText = mount.pciutils("lspci", ["-vv", "-s", "03:00.0"]).stdout
            for line in [
                "Single Root I/O Virtualization (SR-IOV)",
                "\t\tIOVCtl:\tEnable+ Migration- Interrupt- MSE+ ARIHierarchy-",
                "\t\tInitial VFs: 8, Total VFs: 8, Number of VFs: 4, Function Dependency Link: 00\n",
                "\t\tVF offset: 128, stride: 2, Device ID: 10ca\n",
                "\t\tSupported Page Size: 00000553, System Page Size: 00000001\n",
                "\t\tRegion 0: Memory at \(Hex.format(window0, width: 16)) (64-bit, non-prefetchable)\n",
                "\t\tRegion 3: Memory at \(Hex.format(window3, width: 16)) (64-bit, non-prefetchable)\n",
            ] {
                #expect(pfText.contains(line), "lspci -vv -s 03:00.0 lacks \(line.debugDescription):\n\(pfText)")
            }

            // A VF, decoded: sysfs identity, no memory decode bits, no INTx, virtual regions.
            let vfText = mount.pciutils("lspci", ["-vv", "-s", "03:10.2"]).stdout
            for line in [
                "03:10.2 Ethernet controller: Intel Corporation 82576 Virtual Function (rev 01)\n",
                "\tControl: I/O- Mem- BusMaster- ",
                "\tRegion 0: Memory at \(Hex.format(window0 + 0x4000, width: 8)) (64-bit, non-prefetchable) [virtual] [size=16K]\n",
                "\tRegion 3: Memory at \(Hex.format(window3 + 0x4000, width: 8)) (64-bit, non-prefetchable) [virtual] [size=16K]\n",
                "\tCapabilities: [70] MSI-X: Enable- Count=3 Masked-\n",
            ] {
                #expect(vfText.contains(line), "lspci -vv -s 03:10.2 lacks \(line.debugDescription):\n\(vfText)")
            }
            #expect(!vfText.contains("Interrupt:"))
            #expect(!vfText.contains("Kernel driver in use"))
            // -b shows the bus-centric (raw) IDs; -x the raw ff ff ff ff.
            #expect(mount.pciutils("lspci", ["-b", "-n", "-s", "03:10.2"]).stdout.contains("ffff:ffff"))
            #expect(mount.pciutils("lspci", ["-x", "-s", "03:10.2"]).stdout.contains("00: ff ff ff ff 00 00 10 00 01 00 00 02"))
        }
    }

    @Test("a VF through libxl's assignable-add, a stub-domain attach, the guest's MSI-X enable, detach, unbind and echo 0")
    func libxlFlow() throws {
        try withDaemon { mount throws in
            #expect(mount.echo("4", pfDevice + "/sriov_numvfs") == .written(1))
            let vf = "0000:03:10.0"
            let vfDevice = "bus/pci/devices/\(vf)"

            // --- xl pci-assignable-add (clients.md §1.2) ---
            #expect(Sys.lstatError(mount.path(vfDevice)) == 0)                                // 2. lstat devices/B
            #expect(access(mount.path(pciback), F_OK) == 0)                                  // 3. pciback loaded
            #expect(Sys.lstatError(mount.path("\(pciback)/\(vf)")) == ENOENT)               //    not assigned
            #expect(Sys.lstatError(mount.path("\(vfDevice)/driver")) == ENOENT)             // 4. nothing bound: no unbind
            #expect(!(try slotsList(mount)).contains(vf))                                    // 6.1 fscanf loop over slots
            #expect(mount.libxlWrite(vf, "\(pciback)/new_slot") == .written(12))             // 6.2
            #expect(mount.libxlWrite(vf, "\(pciback)/bind") == .written(12))                 // 6.3
            #expect(Sys.lstatError(mount.path("\(pciback)/\(vf)")) == 0)
            #expect(try Sys.realpath(mount.path("\(vfDevice)/driver")) == mount.path(pciback))
            #expect(try slotsList(mount) == [vf])
            // The VF is assigned now: the PF driver refuses to change SR-IOV.
            #expect(mount.echo("0", pfDevice + "/sriov_numvfs") == .writeFailed(EPERM))

            // --- xl pci-attach with a stub domain (clients.md §1.4, §1.5) ---
            let assignable = try mount.list(pciback).filter { PCIAddress(kernelName: $0) != nil }
            #expect(assignable == [vf])
            #expect(Sys.openError(mount.path("\(pciback)/do_flr"), O_WRONLY) == ENOENT)      // 5. no do_flr
            #expect(mount.libxlWrite("1", "\(vfDevice)/reset") == .written(1))               //    FLR through reset
            let resources = resourceLines(try mount.cat("\(vfDevice)/resource"))              // 6.1
            #expect(resources.count == 7)
            #expect(resources.filter { $0.start != 0 }.map { $0.end - $0.start + 1 } == [0x4000, 0x4000])
            #expect(resources.allSatisfy { $0.flags & 1 == 0 })                               //    memory, no ioports
            let irq = try mount.cat("\(vfDevice)/irq")                                        // 6.2 fscanf("%u")
            #expect(irq == "0\n")                                                             //    0: no PIRQ mapped
            #expect(mount.libxlWrite(vf, "\(pciback)/allow_interrupt_control") == .written(12)) // 6.4 stub domain
            #expect(try mount.cat("\(pciback)/allow_interrupt_control") == vf + "\n")
            #expect(mount.echo("5 \(vf)\n", "fs/pcibackfs/attach") == .written(15))
            let frontend = "fs/pcibackfs/frontends/5"
            #expect(try mount.list("\(frontend)/bus/pci/devices") == ["0000:00:00.0"])

            // --- QEMU in the stub domain (clients.md §3.1) on the frontend view, and its physfn probe ---
            let guest = "\(frontend)/bus/pci/devices/0000:00:00.0"
            #expect(Sys.openError(mount.path("\(guest)/config"), O_RDWR) == 0)
            #expect(try mount.guestConfig(5, "0000:00:00.0", 0x00, 4) == 0x10ca_8086)
            let window0 = try #require(resources.first?.start)
            #expect(try mount.guestConfig(5, "0000:00:00.0", 0x10, 4) == UInt32(window0) | 0x4)
            #expect(try mount.guestConfig(5, "0000:00:00.0", 0x3c, 4) == 0)
            #expect(try Sys.readOnce(mount.path("\(vfDevice)/resource"), count: 399).count == 399)
            #expect(try mount.cat("\(vfDevice)/vendor") == "0x8086\n")
            #expect(try mount.cat("\(vfDevice)/device") == "0x10ca\n")
            #expect(Sys.statError(mount.path("\(vfDevice)/physfn")) == 0)       // xen_host_pci_dev_is_virtfn: a VF
            #expect(Sys.statError(mount.path("\(pfDevice)/physfn")) == ENOENT)   // the PF is not

            // --- the guest's Linux MSI-X start-up through the filter (VF MSI-X flags at 0x72) ---
            #expect(try mount.pciOp(5, "conf_read 00:00.0 0x72 2").value == 0x0002)
            #expect(try mount.pciOp(5, "conf_write 00:00.0 0x72 2 0xc002").err == 0)
            #expect(try mount.pciOp(5, "conf_write 00:00.0 0x04 2 0x0006").err == 0)
            #expect(try mount.pciOp(5, "conf_write 00:00.0 0x72 2 0x8002").err == 0)
            #expect(try mount.hostConfig(vf, 0x72, 2) == 0x8002)
            #expect(try mount.pciOp(5, "conf_read 00:00.0 0x72 2").value == 0x8002)
            #expect(try mount.hostConfig(vf, 0x04, 2) == 0x0004)                // Mem stays read-only 0 in the VF
            #expect(try mount.cat("\(pciback)/irq_handlers").contains(vf))

            // --- detach: the guest lets go; still bound, still assigned ---
            #expect(mount.echo("5 \(vf)", "fs/pcibackfs/detach") == .written(14))
            #expect(!mount.exists(frontend))
            #expect(try mount.hostConfig(vf, 0x72, 2) & 0x8000 == 0)
            #expect(try mount.cat("\(pciback)/allow_interrupt_control") == "")
            #expect(mount.echo("0", pfDevice + "/sriov_numvfs") == .writeFailed(EPERM))

            // --- xl pci-assignable-remove (clients.md §1.3): unbind, remove_slot ---
            #expect(try Sys.realpath(mount.path("\(vfDevice)/driver")) == mount.path(pciback))
            #expect(mount.libxlWrite(vf, "\(pciback)/unbind") == .written(12))
            #expect(try slotsList(mount).contains(vf))
            #expect(mount.libxlWrite(vf, "\(pciback)/remove_slot") == .written(12))
            #expect(Sys.lstatError(mount.path("\(pciback)/\(vf)")) == ENOENT)
            #expect(Sys.lstatError(mount.path("\(vfDevice)/driver")) == ENOENT)

            // --- echo 0: the VFs go ---
            #expect(mount.echo("0\n", pfDevice + "/sriov_numvfs") == .written(2))
            #expect(try mount.cat(pfDevice + "/sriov_numvfs") == "0\n")
            #expect(!(try mount.list("bus/pci/devices")).contains { $0.hasPrefix("0000:03:1") })
            #expect(!(try mount.list(port)).contains { $0.hasPrefix("0000:03:1") })
            #expect(!mount.exists(pfDevice + "/virtfn0"))
            #expect(Sys.statError(mount.path(vfDevice)) == ENOENT)
            #expect(try mount.hostConfig(pf, 0x15c + 0x08, 2) == 0)
            if Tools.find("lspci") != nil {
                #expect(mount.pciutils("lspci", ["-s", "03:10.0"]).stdout.isEmpty)
                let text = mount.pciutils("lspci", ["-vv", "-s", "03:00.0"]).stdout
                #expect(text.contains("IOVCtl:\tEnable- "), "\(text)")
                #expect(text.contains("Number of VFs: 0,"), "\(text)")
            }
        }
    }

    @Test("libvirt: virtfn iteration, physfn, and the driver_override detach/reattach of a VF created with autoprobe 0")
    func libvirt() throws {
        try withDaemon { mount throws in
            #expect(mount.echo("0", pfDevice + "/sriov_drivers_autoprobe") == .written(1))
            #expect(mount.echo("4", pfDevice + "/sriov_numvfs") == .written(1))
            // virPCIGetVirtualFunctionsFull: sriov_totalvfs (<= 16 bytes, decimal), then virtfnN until a gap.
            let total = try Sys.readOnce(mount.path(pfDevice + "/sriov_totalvfs"), count: 16)
            #expect(Int(String(decoding: total, as: UTF8.self).trimmingCharacters(in: .newlines)) == 8)
            var found: [String] = []
            while access(mount.path(pfDevice + "/virtfn\(found.count)"), F_OK) == 0 {
                let canonical = try Sys.realpath(mount.path(pfDevice + "/virtfn\(found.count)"))
                found.append(String(canonical.split(separator: "/").last!))
            }
            #expect(found == ["0000:03:10.0", "0000:03:10.2", "0000:03:10.4", "0000:03:10.6"])
            // virPCIIsVirtualFunction / virPCIGetPhysicalFunction.
            let vf = "0000:03:10.4"
            let vfDevice = "bus/pci/devices/\(vf)"
            #expect(access(mount.path(vfDevice + "/physfn"), F_OK) == 0)
            #expect(access(mount.path(pfDevice + "/physfn"), F_OK) == -1 && errno == ENOENT)
            #expect(try Sys.realpath(mount.path(vfDevice + "/physfn")).split(separator: "/").last == "0000:03:00.0")

            // Created with autoprobe 0, pciback's bind is ENODEV even with the slot listed.
            #expect(mount.libxlWrite(vf, "\(pciback)/new_slot") == .written(12))
            #expect(mount.libxlWrite(vf, "\(pciback)/bind") == .writeFailed(ENODEV))
            // drivers_probe succeeds and binds nothing.
            #expect(mount.libxlWrite(vf, "bus/pci/drivers_probe") == .written(12))
            #expect(mount.driver(of: vf) == nil)
            // virPCIDeviceBindToStub: driver_override "pciback" (no newline), drivers_probe.
            #expect(mount.echo("pciback", vfDevice + "/driver_override", style: .plain) == .written(7))
            #expect(mount.libxlWrite(vf, "bus/pci/drivers_probe") == .written(12))
            #expect(mount.driver(of: vf) == "pciback")
            #expect(try mount.readlink(vfDevice + "/driver") == "../../../../bus/pci/drivers/pciback")
            // virFileLinkPointsTo: stat() st_dev/st_ino of the link and of the driver directory agree.
            guard case .success(let viaLink) = Sys.fileStatus(mount.path(vfDevice + "/driver")),
                  case .success(let direct) = Sys.fileStatus(mount.path(pciback))
            else { Issue.record("stat failed"); return }
            #expect(viaLink.st_ino == direct.st_ino && viaLink.st_dev == direct.st_dev)
            // Reattach: clear the override, unbind, drivers_probe: no VF driver exists, so unbound.
            #expect(mount.echo("\n", vfDevice + "/driver_override", style: .plain) == .written(1))
            #expect(mount.libxlWrite(vf, vfDevice + "/driver/unbind") == .written(12))
            #expect(mount.libxlWrite(vf, "bus/pci/drivers_probe") == .written(12))
            #expect(mount.driver(of: vf) == nil)
            #expect(mount.echo("0", pfDevice + "/sriov_numvfs") == .written(1))
            #expect(try mount.cat(pfDevice + "/sriov_drivers_autoprobe") == "0\n")
        }
    }

    struct ErrnoRow: CustomStringConvertible, Sendable {
        var name: String
        var file: String
        var text: String
        var expected: EchoResult
        var description: String { name }
    }

    @Test("errnos of the SR-IOV files as write(2) and open(2) report them")
    func errnos() throws {
        let rows = [
            ErrnoRow(name: "overflow", file: pfDevice + "/sriov_numvfs", text: "70000", expected: .writeFailed(EINVAL)),
            ErrnoRow(name: "negative", file: pfDevice + "/sriov_numvfs", text: "-1\n", expected: .writeFailed(EINVAL)),
            ErrnoRow(name: "lone newline", file: pfDevice + "/sriov_numvfs", text: "\n", expected: .writeFailed(EINVAL)),
            ErrnoRow(name: "above TotalVFs", file: pfDevice + "/sriov_numvfs", text: "9\n", expected: .writeFailed(ERANGE)),
            ErrnoRow(name: "enable 4", file: pfDevice + "/sriov_numvfs", text: "4\n", expected: .written(2)),
            ErrnoRow(name: "resize", file: pfDevice + "/sriov_numvfs", text: "2\n", expected: .writeFailed(EBUSY)),
            ErrnoRow(name: "same count", file: pfDevice + "/sriov_numvfs", text: "4", expected: .written(1)),
            ErrnoRow(name: "autoprobe 2", file: pfDevice + "/sriov_drivers_autoprobe", text: "2", expected: .writeFailed(EINVAL)),
            ErrnoRow(name: "autoprobe off", file: pfDevice + "/sriov_drivers_autoprobe", text: "off\n", expected: .written(4)),
            ErrnoRow(name: "msix count junk", file: "bus/pci/devices/0000:03:10.0/sriov_vf_msix_count", text: "abc",
                     expected: .writeFailed(EINVAL)),
            ErrnoRow(name: "msix count", file: "bus/pci/devices/0000:03:10.0/sriov_vf_msix_count", text: "3",
                     expected: .writeFailed(EOPNOTSUPP)),
            ErrnoRow(name: "totalvfs read-only", file: pfDevice + "/sriov_totalvfs", text: "8", expected: .openFailed(EACCES)),
            ErrnoRow(name: "PF 1 unbound from igb", file: "bus/pci/drivers/igb/unbind", text: "0000:03:00.1",
                     expected: .written(12)),
            ErrnoRow(name: "no driver", file: "bus/pci/devices/0000:03:00.1/sriov_numvfs", text: "1", expected: .writeFailed(ENOENT)),
            ErrnoRow(name: "no driver, current value", file: "bus/pci/devices/0000:03:00.1/sriov_numvfs", text: "0",
                     expected: .written(1)),
        ]
        try withDaemon { mount throws in
            for row in rows {
                #expect(mount.echo(row.text, row.file) == row.expected, "\(row.name)")
            }
            #expect(mount.echo("", pfDevice + "/sriov_numvfs") == .written(0))
            #expect(Sys.openError(mount.path("bus/pci/devices/0000:03:10.0/sriov_vf_msix_count"), O_RDONLY) == EACCES)
            #expect(Sys.lstatError(mount.path("bus/pci/devices/0000:03:10.0/remove")) == ENOENT)
            #expect(Sys.lstatError(mount.path("bus/pci/devices/0000:03:10.0/sriov_numvfs")) == ENOENT)
            guard case .success(let info) = Sys.fileStatus(mount.path("bus/pci/devices/0000:03:10.0/config")) else {
                Issue.record("stat config"); return
            }
            #expect(info.st_size == 4096)
            #expect(try Sys.readOnce(mount.path("bus/pci/devices/0000:03:10.0/config"), count: 4) == [0xff, 0xff, 0xff, 0xff])
        }
    }

    @Test("the spec's example machine: lspci -vv of PF0 and of VF 02:10.0 as sriov.md §4.5 shows them (cases 31, 32)",
          .requiresTool("lspci"))
    func exampleMachine() throws {
        let directory = Temporary.directory(prefix: "pcibackfs-sriov")
        defer { Temporary.remove(directory) }
        chmod(directory, 0o755)
        let file = try RawMachineFile.write(RawMachineFile.exampleDevices(), name: "sriov-example", to: directory)
        let mount = try DaemonMount(["--machine", file])
        defer { mount.stop() }
        let pf0 = "bus/pci/devices/0000:01:00.0"
        #expect(try mount.cat(pf0 + "/sriov_offset") == "384\n")
        #expect(mount.echo("4", pf0 + "/sriov_numvfs") == .written(1))
        #expect(try mount.readlink(pf0 + "/virtfn1") == "../0000:02:10.2")
        #expect(try mount.readlink("bus/pci/devices/0000:02:10.2") == "../../../devices/pci0000:00/0000:00:01.0/0000:02:10.2")
        // Case 15 through the mount.
        #expect(try mount.cat("bus/pci/devices/0000:02:10.4/resource").split(separator: "\n")[3]
                == "0x00000000fbe28000 0x00000000fbe2bfff 0x0000000000140204")

        let pfText = mount.pciutils("lspci", ["-vv", "-s", "01:00.0"]).stdout
        let block = pfText.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try #require(block.firstIndex(of: "\tCapabilities: [160 v1] Single Root I/O Virtualization (SR-IOV)"),
                                 "\(pfText)")
        let iovCap = block[start + 1]
        #expect(["\t\tIOVCap:\tMigration- 10BitTagReq- IntMsgNum 0",
                 "\t\tIOVCap:\tMigration- 10BitTagReq- Interrupt Message Number: 000",
                 "\t\tIOVCap:\tMigration-, Interrupt Message Number: 000"].contains(iovCap), "\(iovCap)")
        let expected = [
            "\t\tIOVSta:\tMigration-",
            "\t\tInitial VFs: 8, Total VFs: 8, Number of VFs: 4, Function Dependency Link: 00",
            "\t\tVF offset: 384, stride: 2, Device ID: 10ca",
            "\t\tSupported Page Size: 00000553, System Page Size: 00000001",
            "\t\tRegion 0: Memory at 00000000fbe00000 (64-bit, non-prefetchable)",
            "\t\tRegion 3: Memory at 00000000fbe20000 (64-bit, non-prefetchable)",
            "\t\tVF Migration: offset: 00000000, BIR: 0",
        ]
        #expect(block[start + 2].hasPrefix("\t\tIOVCtl:\tEnable+ Migration- Interrupt- MSE+ ARIHierarchy-"))
        #expect(Array(block[(start + 3)...(start + 9)]) == expected)

        let vfText = mount.pciutils("lspci", ["-vv", "-s", "02:10.0"]).stdout
        let vfLines = vfText.split(separator: "\n").map(String.init)
        #expect(vfLines.first == "02:10.0 Ethernet controller: Intel Corporation 82576 Virtual Function (rev 01)")
        #expect(vfLines.contains { $0.hasPrefix("\tControl: I/O- Mem- BusMaster-") })
        #expect(!vfLines.contains { $0.hasPrefix("\tInterrupt:") })
        #expect(vfLines.contains("\tRegion 0: Memory at fbe00000 (64-bit, non-prefetchable) [virtual] [size=16K]"))
        #expect(vfLines.contains("\tRegion 3: Memory at fbe20000 (64-bit, non-prefetchable) [virtual] [size=16K]"))
        // With -v the "Region N:" prefix is gone (sriov.md §4.5).
        let brief = mount.pciutils("lspci", ["-v", "-s", "02:10.0"]).stdout
        #expect(brief.contains("\tMemory at fbe00000 (64-bit, non-prefetchable) [virtual] [size=16K]\n"), "\(brief)")
        // lspci -t: the VFs of bus 02 are drawn under 00:01.0.
        let tree = mount.pciutils("lspci", ["-t"]).stdout
        #expect(tree.contains("01.0-[01-02]--+-00.0"), "\(tree)")
        #expect(mount.isRunning, "\(mount.daemonLog)")
    }

    @Test("255 VFs on one PF, mounted: echo 255, the links, lspci sees them all")
    func scale() throws {
        let directory = Temporary.directory(prefix: "pcibackfs-sriov")
        defer { Temporary.remove(directory) }
        chmod(directory, 0o755)
        let file = try RawMachineFile.write(RawMachineFile.scaleDevices(), name: "sriov-255", to: directory)
        let mount = try DaemonMount(["--machine", file])
        defer { mount.stop() }
        let pfPath = "bus/pci/devices/0000:05:00.0"
        #expect(try mount.cat(pfPath + "/sriov_totalvfs") == "255\n")
        #expect(mount.echo("255\n", pfPath + "/sriov_numvfs") == .written(4))
        #expect(try mount.cat(pfPath + "/sriov_numvfs") == "255\n")
        #expect(try mount.list("bus/pci/devices").filter { $0.hasPrefix("0000:05:") }.count == 256)
        #expect(try mount.list(pfPath).filter { $0.hasPrefix("virtfn") }.count == 255)
        #expect(try mount.readlink(pfPath + "/virtfn0") == "../0000:05:00.1")
        #expect(try mount.readlink(pfPath + "/virtfn254") == "../0000:05:1f.7")
        #expect(try mount.readlink("bus/pci/devices/0000:05:1f.7/physfn") == "../0000:05:00.0")
        #expect(try Sys.realpath(mount.path("bus/pci/devices/0000:05:1f.7")) == mount.path("devices/pci0000:00/0000:00:02.0/0000:05:1f.7"))
        #expect(!mount.exists(pfPath + "/virtfn255"))
        if Tools.find("lspci") != nil {
            let listing = mount.pciutils("lspci", ["-d", "8086:10ca"], timeout: 60)
            #expect(listing.succeeded, "\(listing)")
            #expect(listing.stdout.split(separator: "\n").count == 255)
            #expect(listing.stdout.hasSuffix("05:1f.7 Ethernet controller: Intel Corporation 82576 Virtual Function (rev 01)\n"))
        }
        #expect(mount.echo("0", pfPath + "/sriov_numvfs") == .written(1))
        #expect(try mount.list("bus/pci/devices").filter { $0.hasPrefix("0000:05:") } == ["0000:05:00.0"])
        #expect(mount.isRunning, "\(mount.daemonLog)")
    }
}
