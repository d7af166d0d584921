// The mount tests drive Linux FUSE with glibc's calls; elsewhere they are not built.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// Issue "real clients end to end": the real pciutils and driverctl against the mounted daemon,
// byte-for-byte replays of what libxl, QEMU's xen_pt, libvirt and Qubes' dracut module do
// (spec clients.md §1-§6), and the guest's interrupt set-up through the frontend view under
// every kernel profile (pciback.md §5.2, §6.3-§6.5, §11).

private let nic = "0000:03:00.0"
private let nicFunction1 = "0000:03:00.1"
private let pciback = "bus/pci/drivers/pciback"
/// The 82576's MSI and MSI-X capabilities (built-in machine).
private let msiFlags = 0x48 + 2
private let msixFlags = 0x60 + 2

/// The suites of this issue, one after another (each starts its own daemons).
@Suite("real clients end to end", .serialized)
struct ClientReplayTests {}

// MARK: - pciutils on the built-in machine

extension ClientReplayTests {
    @Suite("real clients: lspci and setpci", .serialized, .requiresDaemonMount, .requiresTool("lspci"),
           .timeLimit(.minutes(1)))
    struct PciutilsTests {
        @Test("lspci -D -nn -k -vvv -xxxx runs clean, decodes the capabilities and dumps the config files")
        func lspciEverything() throws {
            try withDaemon { mount throws in
                let result = mount.pciutils("lspci", ["-D", "-nn", "-k", "-vvv", "-xxxx"])
                #expect(result.succeeded, "\(result)")
                // libkmod's complaint about /lib/modules is harmless (clients.md §5.1); nothing else.
                let warnings = result.stderr.split(separator: "\n").filter { !$0.contains("libkmod") }
                #expect(warnings.isEmpty, "\(result.stderr)")
                let out = result.stdout
                let headers = out.split(separator: "\n").filter { $0.hasPrefix("0000:") }
                #expect(headers.count == 11, "\(headers)")
                #expect(out.contains("0000:03:00.0 Ethernet controller [0200]: Intel Corporation 82576 Gigabit Network Connection [8086:10c9] (rev 01)"))
                for fragment in ["Capabilities: [40] Power Management version 3", "Capabilities: [48] MSI: Enable- Count=1/1 Maskable+ 64bit+",
                                 "Capabilities: [60] MSI-X: Enable+ Count=10 Masked-", "Express (v2) Endpoint",
                                 "Capabilities: [100 v2] Advanced Error Reporting", "Device Serial Number 00-1b-21-ff-ff-4a-9c-10",
                                 "Single Root I/O Virtualization (SR-IOV)", "Kernel driver in use: igb", "Kernel driver in use: nvme",
                                 "Kernel driver in use: pcieport", "Region 0: Memory at fe220000 (32-bit, non-prefetchable) [size=128K]",
                                 "Region 2: I/O ports at e020 [size=32]", "Interrupt: pin A routed to IRQ 18",
                                 "Vital Product Data"] {
                    #expect(out.contains(fragment), "missing: \(fragment)")
                }
                #expect(!out.contains("<access denied>"))
                #expect(!out.contains("<chain broken>"))
                // The hex dump is the config file, byte for byte.
                let dumps = HexDump.parse(out)
                #expect(dumps.count == 11)
                for (bdf, bytes) in dumps {
                    let config = try Sys.readBytes(mount.path("bus/pci/devices/\(bdf)/config"))
                    #expect(bytes == config, "lspci -xxxx of \(bdf) differs from its config file")
                }
            }
        }

        @Test("lspci -t and -PP find the topology through the realpath of the device links")
        func lspciTree() throws {
            try withDaemon { mount throws in
                let tree = mount.pciutils("lspci", ["-t"])
                #expect(tree.succeeded, "\(tree)")
                #expect(tree.stdout == """
                    -[0000:00]-+-00.0
                               +-01.0-[01]----00.0
                               +-03.0-[04]----00.0
                               +-05.0
                               +-1c.0-[02]----00.0
                               \\-1c.1-[03]--+-00.0
                                            \\-00.1

                    """)
                let path = mount.pciutils("lspci", ["-PP", "-s", "03:00.1"])
                #expect(path.stdout.hasPrefix("00:1c.1/03:00.1 Ethernet controller"), "\(path)")
                let machine = mount.pciutils("lspci", ["-mm", "-n", "-s", "03:00.0"])
                #expect(machine.stdout == "03:00.0 \"0200\" \"8086\" \"10c9\" -r01 -p00 \"8086\" \"a03c\"\n", "\(machine)")
            }
        }

        @Test("lspci -k in a private mount namespace with the whole tree bind-mounted on /sys", .requiresTool("unshare"))
        func lspciOnSys() throws {
            try withDaemon { mount throws in
                let script = """
                    set -e
                    mount --rbind "$1" /sys
                    lspci -D -k -s 03:00.0
                    lspci -t
                    """
                let result = Subprocess.run("unshare", ["-m", "--propagation", "private", "sh", "-c", script, "sh", mount.root])
                #expect(result.succeeded, "\(result)")
                #expect(result.stdout.hasPrefix("0000:03:00.0 Ethernet controller: Intel Corporation 82576"), "\(result)")
                #expect(result.stdout.contains("\tKernel driver in use: igb\n"), "\(result)")
                #expect(result.stdout.contains("\\-1c.1-[03]--+-00.0"), "\(result)")
            }
        }

        @Test("several lspci at once while devices are bound and unbound: every run completes")
        func concurrentLspci() throws {
            try withDaemon { mount throws in
                let directory = Temporary.directory(prefix: "pcibackfs-lspci")
                defer { Temporary.remove(directory) }
                var runs: [pid_t] = []
                for index in 0..<6 {
                    runs.append(try Subprocess.spawn(
                        "lspci", ["-A", "linux-sysfs", "-O", "sysfs.path=" + mount.path("bus/pci"), "-D", "-k", "-vvv", "-xxxx"],
                        stdoutPath: "\(directory)/out\(index)", stderrPath: "\(directory)/err\(index)"))
                }
                // Rebind 03:00.1 over and over until every lspci has finished (at most 20 s).
                var statuses: [Int: Int32] = [:]
                let deadline = Date().addingTimeInterval(20)
                var cycles = 0
                while statuses.count < runs.count, Date() < deadline {
                    #expect(mount.libxlWrite(nicFunction1, "bus/pci/drivers/igb/unbind") == .written(12))
                    #expect(mount.libxlWrite(nicFunction1, "bus/pci/drivers/igb/bind") == .written(12))
                    cycles += 1
                    for (index, pid) in runs.enumerated() where statuses[index] == nil {
                        if let status = Subprocess.wait(pid, until: Date()) { statuses[index] = status }
                    }
                }
                #expect(cycles > 1)
                for (index, pid) in runs.enumerated() where statuses[index] == nil {
                    kill(-pid, SIGKILL)
                    _ = Subprocess.wait(pid, until: Date().addingTimeInterval(5))
                }
                for index in runs.indices {
                    let err = (try? String(contentsOfFile: "\(directory)/err\(index)", encoding: .utf8)) ?? ""
                    #expect(statuses[index] == 0, "lspci run \(index): \(err)")
                    let out = (try? String(contentsOfFile: "\(directory)/out\(index)", encoding: .utf8)) ?? ""
                    #expect(out.split(separator: "\n").filter { $0.hasPrefix("0000:") }.count == 11)
                }
                #expect(mount.driver(of: nicFunction1) == "igb")
            }
        }

        @Test("setpci on dom0's view reads the registers and reads back what the hardware allowed", .requiresTool("setpci"))
        func setpciDom0() throws {
            try withDaemon(["--hide", "(0000:03:00.0)"]) { mount throws in
                func setpci(_ arguments: [String]) -> String {
                    let result = mount.pciutils("setpci", ["-s", "03:00.0"] + arguments)
                    #expect(result.succeeded && !result.stderr.contains("pcilib"), "\(result)")
                    return result.stdout
                }
                let command = try mount.hostConfig(nic, 0x04, 2)
                #expect(setpci(["COMMAND"]) == Hex.format(UInt64(command), width: 4) + "\n")
                #expect(setpci(["CAP_MSI+2.w", "CAP_MSIX+2.w", "ECAP_AER+4.l"]) == "0180\n0009\n00000000\n")
                // A masked write changes only the masked bits.
                _ = setpci(["COMMAND=0x0400:0x0400"])
                #expect(try mount.hostConfig(nic, 0x04, 2) == command | 0x0400)
                #expect(setpci(["COMMAND"]) == Hex.format(UInt64(command | 0x0400), width: 4) + "\n")
                // All ones: a PCI Express function implements IO, MEM, MASTER, PARITY, SERR, INTX_DISABLE.
                _ = setpci(["COMMAND=0xffff"])
                #expect(setpci(["COMMAND"]) == "0547\n")
                // MSI-X: only ENABLE and MASKALL; MSI: ENABLE, and Multiple Message Enable clamped to
                // the one vector the function has.
                _ = setpci(["CAP_MSIX+2.w=0xffff", "CAP_MSI+2.w=0xffff"])
                #expect(setpci(["CAP_MSIX+2.w", "CAP_MSI+2.w"]) == "c009\n0181\n")
                // AER uncorrectable status is write-1-to-clear: nothing set, nothing changes.
                _ = setpci(["ECAP_AER+4.l=0xffffffff"])
                #expect(setpci(["ECAP_AER+4.l"]) == "00000000\n")
                // Read-only identity.
                _ = setpci(["VENDOR_ID.w=0x1234", "SUBSYSTEM_ID.w=0x5678"])
                #expect(setpci(["VENDOR_ID.w", "SUBSYSTEM_ID.w"]) == "8086\na03c\n")
                // The same registers through pread, and the BAR.
                #expect(try mount.hostConfig(nic, msixFlags, 2) == 0xc009)
                #expect(setpci(["BASE_ADDRESS_0"]) == "fe220000\n")
            }
        }

        @Test("setpci on the frontend view reads back what pciback's filter allowed", .requiresTool("setpci"))
        func setpciFrontend() throws {
            try withDaemon(["--hide", "(0000:03:00.0)"]) { mount throws in
                #expect(mount.echo("1 \(nic)\n", "fs/pcibackfs/attach") == .written(15))
                let frontend = "fs/pcibackfs/frontends/1/bus/pci"
                func setpci(_ arguments: [String]) -> String {
                    let result = mount.pciutils("setpci", ["-s", "00:00.0"] + arguments, sysfsPath: frontend)
                    #expect(result.succeeded && !result.stderr.contains("pcilib"), "\(result)")
                    return result.stdout
                }
                let list = mount.pciutils("lspci", ["-nn"], sysfsPath: frontend)
                #expect(list.stdout.hasPrefix("00:00.0 Ethernet controller [0200]: Intel Corporation 82576"), "\(list)")
                #expect(setpci(["VENDOR_ID.l"]) == "10c98086\n")
                #expect(setpci(["CAP_MSI+2.w", "CAP_MSIX+2.w", "ECAP_AER+4.l"]) == "0180\n0009\n00000000\n")
                // The guest enables the device and sets INTX_DISABLE: echoed, not applied.
                _ = setpci(["COMMAND=0x0007"])
                _ = setpci(["COMMAND=0x0400:0x0400"])
                #expect(setpci(["COMMAND"]) == "0407\n")
                #expect(try mount.hostConfig(nic, 0x04, 2) & 0x0400 == 0)
                #expect(try mount.hostConfig(nic, 0x04, 2) & 0x0007 == 0x0007)
                // MSI-X enable without allow_interrupt_control: dropped, in both views.
                _ = setpci(["CAP_MSIX+2.w=0x8000:0x8000"])
                #expect(setpci(["CAP_MSIX+2.w"]) == "0009\n")
                #expect(try mount.hostConfig(nic, msixFlags, 2) == 0x0009)
                // With it: applied. Then MSI is refused while MSI-X is on (exclusivity).
                #expect(mount.libxlWrite(nic, "\(pciback)/allow_interrupt_control") == .written(12))
                _ = setpci(["CAP_MSIX+2.w=0x8000:0x8000"])
                #expect(setpci(["CAP_MSIX+2.w"]) == "8009\n")
                #expect(try mount.hostConfig(nic, msixFlags, 2) == 0x8009)
                _ = setpci(["CAP_MSI+2.w=0x0001:0x0001"])
                #expect(setpci(["CAP_MSI+2.w"]) == "0180\n")
                #expect(try mount.hostConfig(nic, msiFlags, 2) == 0x0180)
                // BAR sizing is pciback's answer; dom0's BAR does not move.
                _ = setpci(["BASE_ADDRESS_0=0xffffffff"])
                #expect(setpci(["BASE_ADDRESS_0"]) == "fffe0000\n")
                #expect(try mount.hostConfig(nic, 0x10, 4) == 0xfe22_0000)
                _ = setpci(["BASE_ADDRESS_0=0xfe220000"])
                #expect(setpci(["BASE_ADDRESS_0"]) == "fe220000\n")
                // Extended space is not virtualized: read from the hardware, writes dropped.
                _ = setpci(["ECAP_AER+8.l=0x00000010"])
                #expect(try mount.hostConfig(nic, 0x108, 4) == 0)
            }
        }
    }
}

// MARK: - pciutils against every pciutils dump

extension ClientReplayTests {
    @Suite("real clients: lspci on imported dumps", .serialized, .requiresDaemonMount, .requiresTool("lspci"),
           .timeLimit(.minutes(1)))
    struct DumpReplayTests {
        static var dumpFiles: [String] {
            let directory = MountEnvironment.testDataDirectory
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            return names.filter { !$0.hasPrefix(".") && !$0.hasSuffix(".md") }.sorted()
        }

        @Test("the pciutils test dumps are there to replay")
        func dumpsPresent() {
            #expect(!DumpReplayTests.dumpFiles.isEmpty, "no dumps in \(MountEnvironment.testDataDirectory)")
        }

        @Test("lspci -vvv -nn -D -xxx(x) through the mount equals lspci -F of the dump, apart from what only sysfs gives",
              arguments: DumpReplayTests.dumpFiles)
        func dumpReplays(_ name: String) throws {
            let file = MountEnvironment.testDataDirectory + "/" + name
            let mount: DaemonMount
            do {
                mount = try DaemonMount(["--no-builtin", "--lspci-dump", file])
            } catch let exited as DaemonMount.DaemonExited {
                Issue.record("pcibackfsd refused \(name): \(exited)")
                return
            }
            defer { mount.stop() }

            // Issue 12: an imported dump is a snapshot of a running system, so lspci through the
            // mount shows the dump itself (no boot-time SR-IOV pass, sriov.md §6 item 3). The same
            // options on both sides; the hex option as the dump has it (-xxxx when it holds
            // extended config space, offsets of three digits, else -xxx).
            let original = try String(contentsOfFile: file, encoding: .utf8)
            let extended = original.split(separator: "\n").contains { line in
                line.count > 5 && line.prefix(3).allSatisfy(\.isHexDigit) && line.dropFirst(3).hasPrefix(": ")
            }
            let options = ["-vvv", "-nn", "-D", extended ? "-xxxx" : "-xxx"]
            let fromDump = Subprocess.run("lspci", ["-F", file] + options)
            let fromSysfs = mount.pciutils("lspci", options)
            #expect(fromDump.succeeded, "\(fromDump)")
            #expect(fromSysfs.succeeded, "\(fromSysfs)")
            let expected = LspciText.devices(fromDump.stdout)
            let actual = Dictionary(LspciText.devices(fromSysfs.stdout), uniquingKeysWith: { first, _ in first })
            #expect(!expected.isEmpty)
            // Functions only the mount has must be VFs the kernel created for a PF whose dump shows
            // VF Enable with NumVFs N (a partial dump that left them out): they have `physfn`.
            let dumped = Set(expected.map(\.address))
            for address in actual.keys where !dumped.contains(address) {
                #expect(mount.exists("bus/pci/devices/\(address)/physfn"), "\(address) is in the mount, not in \(name), and is not a VF")
            }
            for (address, lines) in expected {
                guard let mine = actual[address] else {
                    Issue.record("\(address) of \(name) is missing from the mount")
                    continue
                }
                let difference = LspciText.difference(LspciText.withoutSysfsOnlyLines(lines), LspciText.withoutSysfsOnlyLines(mine))
                let report = difference.joined(separator: "\n")
                #expect(difference.isEmpty, "lspci \(options.joined(separator: " ")) of \(address) in \(name): dump vs mount\n\(report)")
            }
            #expect(mount.isRunning, "pcibackfsd died:\n\(mount.daemonLog)")
        }

        @Test("a non-root reader gets 64 bytes of config, 128 of a CardBus bridge's", .requiresTool("setpriv"))
        func nonRootCardBus() throws {
            let file = MountEnvironment.testDataDirectory + "/tree-fujitsu-p8010"
            guard FileManager.default.fileExists(atPath: file) else {
                Issue.record("\(file) is missing")
                return
            }
            try withDaemon(["--no-builtin", "--lspci-dump", file, "--allow-other"]) { mount throws in
                var checked = Set<UInt8>()
                for name in try mount.list("bus/pci/devices") {
                    let config = mount.path("bus/pci/devices/\(name)/config")
                    let layout = try Sys.pread(config, offset: 0x0e, count: 1).first.map { $0 & 0x7f } ?? 0xff
                    let read = Subprocess.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "dd", "if=\(config)",
                                                          "bs=4096", "count=1", "status=none"])
                    #expect(read.stdoutBytes.count == (layout == 2 ? 128 : 64), "\(name), header type \(layout): \(read)")
                    #expect(read.stdoutBytes == Array(try Sys.readBytes(config).prefix(read.stdoutBytes.count)))
                    checked.insert(layout)
                }
                #expect(checked == [0, 1, 2], "the laptop has functions, bridges and a CardBus bridge")
            }
        }

        @Test("clashing addresses and unreadable dumps are refused with a clear error")
        func refusedDumps() throws {
            let directory = MountEnvironment.testDataDirectory
            // The same dump twice: every function clashes with itself.
            try expectRefusal(["--no-builtin", "--lspci-dump", directory + "/cap-pcie-2", "--lspci-dump", directory + "/cap-pcie-2"],
                              mentioning: "0000:01:00.0")
            // A root port at 00:01.0 clashes with the built-in machine's.
            try expectRefusal(["--lspci-dump", directory + "/cap-pcie-1"], mentioning: "0000:00:01.0")
            // No such file.
            try expectRefusal(["--no-builtin", "--lspci-dump", directory + "/no-such-dump"], mentioning: "no-such-dump")
            // A file that holds no function (the README).
            try expectRefusal(["--no-builtin", "--lspci-dump", directory + "/README.md"], mentioning: "README.md")
        }

        private func expectRefusal(_ options: [String], mentioning text: String) throws {
            do {
                let mount = try DaemonMount(options)
                mount.stop()
                Issue.record("pcibackfsd \(options.joined(separator: " ")) started; expected a refusal mentioning \(text)")
            } catch let exited as DaemonMount.DaemonExited {
                #expect(exited.status != 0)
                #expect(exited.log.contains(text), "\(exited)")
            }
        }
    }
}

// MARK: - Toolstack replays on the built-in machine

extension ClientReplayTests {
    @Suite("real clients: libxl, QEMU, libvirt, Qubes and driverctl", .serialized, .requiresDaemonMount,
           .timeLimit(.minutes(1)))
    struct ToolstackReplayTests {
        /// modprobe as on a dom0 whose /etc/modprobe.d has `alias pciback xen-pciback`, with
        /// the emulated drivers' modules installed: those load (exit 0), anything else fails.
        static let fakeModprobe = """
            #!/bin/sh
            for argument in "$@"; do
                case "$argument" in
                    -*) ;;
                    pciback|xen-pciback|xen_pciback|igb|nvme|8139too|radeon|xhci_pci|xhci_hcd) exit 0 ;;
                    *) exit 1 ;;
                esac
            done
            exit 1

            """

        @Test("libxl pci-assignable-add, -list, attach with a stub domain, detach, assignable-remove -r")
        func libxlLifecycle() throws {
            try withDaemon { mount throws in
                let libxl = LibxlReplay(mount: mount)
                #expect(libxl.assignableList() == [])
                // pci-assignable-add 03:00.0 (xl always rebinds: it saves the original driver's path).
                let saved = libxl.assignableAdd(nic)
                #expect(saved == mount.path("bus/pci/drivers/igb"))
                #expect(mount.driver(of: nic) == "pciback")
                #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n")
                #expect(libxl.assignableList() == [nic])
                // Adding again finds it assigned and writes nothing.
                #expect(libxl.assignableAdd(nic) == nil)
                #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n")

                // pci-attach with a stub domain (domid 2 serves guest 1).
                #expect(libxl.assignableList().contains(nic), "libxl_pci_assignable")
                libxl.reset(nic)
                let resources = libxl.readResources(nic)
                #expect(resources.count == 7)
                #expect(resources[0] == .init(start: 0xfe22_0000, end: 0xfe23_ffff, flags: 0x40200))
                #expect(resources[2] == .init(start: 0xe020, end: 0xe03f, flags: 0x40101))
                #expect(resources[2].flags & 1 == 1, "libxl takes bit 0 of the flags for I/O")
                #expect(resources.filter { $0.start != 0 }.count == 3)
                #expect(libxl.readIRQ(nic) == 18)
                // Not permissive and a stub domain: patched libxl writes allow_interrupt_control; fatal if it fails.
                #expect(mount.libxlWrite(nic, "\(pciback)/allow_interrupt_control") == .written(12))
                #expect(try mount.cat("\(pciback)/allow_interrupt_control") == "0000:03:00.0\n")
                // The backend for the stub domain: its pcifront connects.
                #expect(mount.echo("2 \(nic)\n", "fs/pcibackfs/attach") == .written(15))
                #expect(try mount.list("fs/pcibackfs/frontends/2/bus/pci/devices") == ["0000:00:00.0"])
                // QEMU in the stub domain probes the device under its local address.
                QEMUProbe(directory: mount.path("fs/pcibackfs/frontends/2/bus/pci/devices/0000:00:00.0")).run(expectIRQ: 18)

                // Multi-function (03:00.*): every function must be assigned.
                #expect(libxl.multifunctionCheck(bus: 3, slot: 0) == [nicFunction1])
                _ = libxl.assignableAdd(nicFunction1)
                #expect(libxl.multifunctionCheck(bus: 3, slot: 0) == [])
                #expect(libxl.assignableList() == [nic, nicFunction1])

                // pci-detach: no sysfs unbind; the release clears allow_interrupt_control.
                libxl.reset(nic)
                #expect(mount.echo("2 \(nic)\n", "fs/pcibackfs/detach") == .written(15))
                #expect(try mount.cat("\(pciback)/allow_interrupt_control") == "")
                #expect(mount.driver(of: nic) == "pciback")

                // pci-assignable-remove -r 03:00.0: back to igb through the saved path.
                #expect(libxl.assignableRemove(nic, rebindTo: saved))
                #expect(mount.driver(of: nic) == "igb")
                #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.1\n")
                #expect(libxl.assignableList() == [nicFunction1])
                // Without -r the device stays unbound.
                #expect(libxl.assignableRemove(nicFunction1, rebindTo: nil))
                #expect(mount.driver(of: nicFunction1) == nil)
                #expect(libxl.assignableList() == [])
            }
        }

        @Test("libxl with a permissive device writes permissive instead of allow_interrupt_control")
        func libxlPermissive() throws {
            try withDaemon { mount throws in
                let libxl = LibxlReplay(mount: mount)
                _ = libxl.assignableAdd(nic)
                #expect(mount.libxlWrite(nic, "\(pciback)/permissive") == .written(12))
                #expect(mount.libxlWrite(nic, "\(pciback)/permissive") == .written(12), "idempotent")
                #expect(try mount.cat("\(pciback)/permissive") == "0000:03:00.0\n")
                #expect(try mount.cat("\(pciback)/allow_interrupt_control") == "")
                // A device that is not assigned: the fatal error libxl would hit.
                #expect(mount.libxlWrite(nicFunction1, "\(pciback)/permissive") == .writeFailed(ENODEV))
                // Devices bound at run time are listed newest first (pcistub_devices).
                _ = libxl.assignableAdd(nicFunction1)
                #expect(mount.libxlWrite(nicFunction1, "\(pciback)/permissive") == .written(12))
                #expect(try mount.cat("\(pciback)/permissive") == "0000:03:00.1\n0000:03:00.0\n")
            }
        }

        @Test("QEMU xen_pt probes the host device in dom0: one read(399) of resource, pread/pwrite of 1, 2, 4 bytes")
        func qemuHostProbe() throws {
            try withDaemon(["--hide", "(0000:03:00.0)"]) { mount throws in
                let probe = QEMUProbe(directory: mount.path("bus/pci/devices/\(nic)"))
                probe.run(expectIRQ: 18)
                // Realize: QEMU ORs IO|MEM into COMMAND with one word write; dom0's view is the hardware.
                let command = try mount.hostConfig(nic, 0x04, 2)
                #expect(command & 0x3 == 0x3)
                // MSI-X was enabled by no one: QEMU's init writes nothing. Clearing ENABLE on a disabled
                // function is a no-op write that still returns 2.
                #expect(try Sys.configWrite(probe.config, offset: msixFlags, width: 2, value: 0x0009) == 2)
                #expect(try mount.hostConfig(nic, msixFlags, 2) == 0x0009)
            }
        }

        @Test("libvirt nodedev-detach and -reattach through driver_override and drivers_probe")
        func libvirtDetachReattach() throws {
            try withDaemon { mount throws in
                let device = "bus/pci/devices/\(nic)"
                // virPCIProbeStubDriver, virFileExists(config), the ID reads (exactly 7 and 9 bytes).
                #expect(mount.exists(pciback))
                #expect(mount.exists("\(device)/config"))
                #expect(try Sys.readOnce(mount.path("\(device)/vendor"), count: 7) == Array("0x8086\n".utf8))
                #expect(try Sys.readOnce(mount.path("\(device)/device"), count: 7) == Array("0x10c9\n".utf8))
                #expect(try Sys.readOnce(mount.path("\(device)/class"), count: 9) == Array("0x020000\n".utf8))
                #expect(Sys.lstatError(mount.path("\(device)/physfn")) == ENOENT)
                #expect(!Libvirt.linkPointsTo(mount.path("\(device)/driver"), mount.path(pciback)))

                // Detach: driver_override "pciback" (no newline), unbind through the link, drivers_probe.
                #expect(mount.echo("pciback", "\(device)/driver_override", style: .plain) == .written(7))
                #expect(mount.libxlWrite(nic, "\(device)/driver/unbind") == .written(12))
                #expect(mount.libxlWrite(nic, "bus/pci/drivers_probe") == .written(12))
                #expect(Libvirt.linkPointsTo(mount.path("\(device)/driver"), mount.path(pciback)))
                #expect(try mount.cat("\(device)/driver_override") == "pciback\n")
                // A seize through driver_override puts the device in slots.
                #expect(try mount.cat("\(pciback)/slots") == "0000:03:00.0\n")
                // Detaching again: already bound to the stub, nothing to do.
                #expect(Libvirt.linkPointsTo(mount.path("\(device)/driver"), mount.path(pciback)))

                // Reattach: clear the override with "\n", unbind, reprobe: igb (registered first) binds.
                #expect(mount.echo("\n", "\(device)/driver_override", style: .plain) == .written(1))
                #expect(mount.libxlWrite(nic, "\(device)/driver/unbind") == .written(12))
                #expect(mount.libxlWrite(nic, "bus/pci/drivers_probe") == .written(12))
                #expect(Libvirt.linkPointsTo(mount.path("\(device)/driver"), mount.path("bus/pci/drivers/igb")))
                #expect(try mount.cat("\(device)/driver_override") == "(null)\n")
            }
        }

        @Test("Qubes dracut module: lspci -mm -n picks the NICs, echo -n to unbind, new_slot and bind", .requiresTool("lspci"))
        func qubesDracut() throws {
            try withDaemon { mount throws in
                // The module's loop, pointed at the mount (it runs against /sys in the initramfs).
                let script = """
                    set -e
                    R="$1"
                    for BDF in $(lspci -A linux-sysfs -O sysfs.path="$R/bus/pci" -mm -n | grep '^[^ ]* "02' | cut -d' ' -f1); do
                        BDF=0000:$BDF
                        if [ -e "$R/bus/pci/devices/$BDF/driver" ]; then
                            echo -n $BDF > "$R/bus/pci/devices/$BDF/driver/unbind"
                        fi
                        echo -n $BDF > "$R/bus/pci/drivers/pciback/new_slot"
                        echo -n $BDF > "$R/bus/pci/drivers/pciback/bind"
                    done
                    """
                let result = Subprocess.run("bash", ["-c", script, "bash", mount.root])
                #expect(result.succeeded, "\(result)")
                for bdf in ["0000:00:05.0", nic, nicFunction1] {
                    #expect(mount.driver(of: bdf) == "pciback", "\(bdf)")
                    #expect(mount.exists("\(pciback)/\(bdf)"))
                }
                #expect(try mount.cat("\(pciback)/slots") == "0000:00:05.0\n0000:03:00.0\n0000:03:00.1\n")
                #expect(mount.driver(of: "0000:01:00.0") == "nvme")
                // The old R2 script's check: already bound means [ -e pciback/BDF ].
                let again = Subprocess.run("bash", ["-c", "[ -e \"$1/bus/pci/drivers/pciback/$2\" ]", "bash", mount.root, nic])
                #expect(again.succeeded)
            }
        }

        @Test("driverctl set-override, list-devices and unset-override in a private mount namespace",
              .requiresTool("driverctl"), .requiresTool("unshare"))
        func driverctl() throws {
            try withDaemon { mount throws in
                // The whole mirror on /sys (the links are relative). There is no module/pciback
                // (the module is xen_pciback), so driverctl runs `/sbin/modprobe -q pciback`: a
                // dom0 admin's `alias pciback xen-pciback` makes that succeed. The test's modprobe
                // (bind-mounted over the real one in the private namespace) does the same.
                let directory = Temporary.directory(prefix: "modprobe")
                defer { Temporary.remove(directory) }
                let modprobe = directory + "/modprobe"
                try Self.fakeModprobe.write(toFile: modprobe, atomically: true, encoding: .utf8)
                #expect(chmod(modprobe, 0o755) == 0)
                let script = """
                    set -e
                    mount --rbind "$1" /sys
                    mount --bind "$2" /sbin/modprobe
                    echo "== set"
                    driverctl --nosave set-override 0000:03:00.0 pciback
                    echo "driver=$(basename "$(readlink /sys/bus/pci/devices/0000:03:00.0/driver)")"
                    echo "== list"
                    driverctl list-devices
                    echo "== overrides"
                    driverctl list-overrides
                    echo "== unset"
                    driverctl --nosave unset-override 0000:03:00.0
                    echo "driver=$(basename "$(readlink /sys/bus/pci/devices/0000:03:00.0/driver)")"
                    echo "== network"
                    driverctl list-devices network
                    """
                let result = Subprocess.run("unshare", ["-m", "--propagation", "private", "sh", "-c", script, "sh", mount.root,
                                                        modprobe], timeout: 30)
                #expect(result.succeeded, "\(result)")
                let sections = DriverctlOutput.sections(result.stdout)
                #expect(sections["set"] == ["driver=pciback"], "\(result)")
                #expect(sections["list"] == [
                    "0000:00:00.0 (none)", "0000:00:01.0 pcieport", "0000:00:03.0 pcieport", "0000:00:05.0 8139too",
                    "0000:00:1c.0 pcieport", "0000:00:1c.1 pcieport", "0000:01:00.0 nvme", "0000:02:00.0 xhci_hcd",
                    "0000:03:00.0 pciback [*]", "0000:03:00.1 igb", "0000:04:00.0 radeon",
                ], "\(result)")
                #expect(sections["overrides"] == ["0000:03:00.0 pciback"], "\(result)")
                // unset-override: unbind, clear the override, reprobe: the driver core picks igb,
                // which registered before pciback.
                #expect(sections["unset"] == ["driver=igb"], "\(result)")
                #expect(sections["network"] == ["0000:00:05.0 8139too", "0000:03:00.0 igb", "0000:03:00.1 igb"], "\(result)")
                // Seen from outside the namespace.
                #expect(mount.driver(of: nic) == "igb")
                #expect(try mount.cat("bus/pci/devices/\(nic)/driver_override") == "(null)\n")
            }
        }
    }
}

// MARK: - The guest's interrupt set-up under every kernel profile

/// A register the guest writes through the frontend (pcifront in a stub domain, or QEMU there).
enum GuestRegister: Sendable {
    case command, msi, msix

    var offset: Int {
        switch self {
        case .command: return 0x04
        case .msi: return msiFlags
        case .msix: return msixFlags
        }
    }
}

struct GuestWrite: Sendable, CustomStringConvertible {
    var register: GuestRegister
    var value: UInt16
    var description: String { "\(register)=\(Hex.format(UInt64(value), width: 4))" }
}

/// The orders in which guests set up MSI and MSI-X (clients.md §3.3), after the guest has
/// enabled the device (COMMAND = IO|MEM|MASTER).
enum GuestSequence: String, CaseIterable, Sendable {
    /// Linux `msix_capability_init`: ENABLE|MASKALL while INTx is on, INTX_DISABLE, ENABLE only.
    case linuxMSIX = "Linux MSI-X"
    /// Linux `msi_capability_init`: flags with ENABLE=0 (no change), INTX_DISABLE, ENABLE.
    case linuxMSI = "Linux MSI"
    /// QEMU / the original design: INTx off first, then enable.
    case qemuMSIX = "QEMU MSI-X"
    case qemuMSI = "QEMU MSI"
    /// MSI-X on, then MASKALL toggled while enabled.
    case maskAllWhileEnabled = "MASKALL while enabled"
    /// MSI on, then MSI-X (exclusive), then INTx back on while MSI is on.
    case exclusive = "exclusivity"

    var writes: [GuestWrite] {
        switch self {
        case .linuxMSIX: return [.init(register: .msix, value: 0xc009), .init(register: .command, value: 0x0407),
                                 .init(register: .msix, value: 0x8009)]
        case .linuxMSI: return [.init(register: .msi, value: 0x0180), .init(register: .command, value: 0x0407),
                                .init(register: .msi, value: 0x0181)]
        case .qemuMSIX: return [.init(register: .command, value: 0x0407), .init(register: .msix, value: 0x8009)]
        case .qemuMSI: return [.init(register: .command, value: 0x0407), .init(register: .msi, value: 0x0181)]
        case .maskAllWhileEnabled: return [.init(register: .command, value: 0x0407), .init(register: .msix, value: 0x8009),
                                           .init(register: .msix, value: 0xc009), .init(register: .msix, value: 0x8009)]
        case .exclusive: return [.init(register: .command, value: 0x0407), .init(register: .msi, value: 0x0181),
                                 .init(register: .msix, value: 0x8009), .init(register: .command, value: 0x0007)]
        }
    }
}

enum InterruptControlMode: String, CaseIterable, Sendable {
    case notAllowed = "allow_interrupt_control unset"
    case allowed = "allow_interrupt_control set"
    case globalPermissive = "xen_pciback.permissive=Y"
    case devicePermissive = "pciback/permissive"
}

/// What a sequence leaves behind: op->err per write, and the hardware and guest views.
struct GuestOutcome: Equatable, CustomStringConvertible {
    var errors: [Int32]
    var hardwareINTxDisabled: Bool
    var hardwareMSI: UInt16
    var hardwareMSIX: UInt16
    var guestCommand: UInt16

    var description: String {
        "errors \(errors), hw INTX_DISABLE \(hardwareINTxDisabled), hw MSI \(Hex.format(UInt64(hardwareMSI), width: 4)), "
            + "hw MSI-X \(Hex.format(UInt64(hardwareMSIX), width: 4)), guest COMMAND \(Hex.format(UInt64(guestCommand), width: 4))"
    }
}

/// The outcomes the spec gives (pciback.md §5.2 step 4, §6.3, §6.5, §11), written out per case.
enum ExpectedOutcome {
    static let initialMSI: UInt16 = 0x0180
    static let initialMSIX: UInt16 = 0x0009
    static let refused: Int32 = -3  // XEN_PCI_ERR_access_denied from PCIBIOS_SET_FAILED

    static func of(profile: String, mode: InterruptControlMode, sequence: GuestSequence) -> GuestOutcome {
        let writes = sequence.writes
        let lastCommand = writes.last { $0.register == .command }?.value ?? 0x0007
        switch mode {
        case .notAllowed:
            // Flag writes that change something: -3 since 5.6 (fields exist), silently dropped
            // before. INTX_DISABLE lives in the shadow only. Nothing reaches the hardware.
            let hardware: [GuestRegister: UInt16] = [.msi: initialMSI, .msix: initialMSIX]
            let errors = writes.map { write -> Int32 in
                guard write.register != .command, profile != "pre-5.6" else { return 0 }
                return write.value == hardware[write.register] ? 0 : refused
            }
            return GuestOutcome(errors: errors, hardwareINTxDisabled: false, hardwareMSI: initialMSI,
                                hardwareMSIX: initialMSIX, guestCommand: lastCommand)
        case .globalPermissive, .devicePermissive:
            // Flag writes go to the hardware unchecked (or raw, before 5.6); INTX_DISABLE is not a
            // guest bit, so without allow_interrupt_control it is shadowed only.
            let lastMSI = writes.last { $0.register == .msi }?.value ?? initialMSI
            let lastMSIX = writes.last { $0.register == .msix }?.value ?? initialMSIX
            return GuestOutcome(errors: writes.map { _ in 0 }, hardwareINTxDisabled: false, hardwareMSI: lastMSI,
                                hardwareMSIX: lastMSIX, guestCommand: lastCommand)
        case .allowed:
            return allowed(profile: profile, sequence: sequence)
        }
    }

    private static func allowed(profile: String, sequence: GuestSequence) -> GuestOutcome {
        let r = refused
        func outcome(_ errors: [Int32], intxOff: Bool = true, msi: UInt16 = initialMSI, msix: UInt16 = initialMSIX,
                     command: UInt16 = 0x0407) -> GuestOutcome {
            GuestOutcome(errors: errors, hardwareINTxDisabled: intxOff, hardwareMSI: msi, hardwareMSIX: msix, guestCommand: command)
        }
        switch (profile, sequence) {
        // current (≥ 6.7): INTx yields to MSI/MSI-X, MASKALL writable, INTx always applied.
        case ("current", .linuxMSIX): return outcome([0, 0, 0], msix: 0x8009)
        case ("current", .linuxMSI): return outcome([0, 0, 0], msi: 0x0181)
        case ("current", .qemuMSIX): return outcome([0, 0], msix: 0x8009)
        case ("current", .qemuMSI): return outcome([0, 0], msi: 0x0181)
        case ("current", .maskAllWhileEnabled): return outcome([0, 0, 0, 0], msix: 0x8009)
        case ("current", .exclusive): return outcome([0, 0, r, 0], intxOff: false, msi: 0x0181, command: 0x0007)
        // maskall-2022 (6.1-6.6): MASKALL writable, but INTx still counts: the first Linux MSI-X
        // write is refused while INTx is on; the final ENABLE (INTx off by then) succeeds.
        case ("maskall-2022", .linuxMSIX): return outcome([r, 0, 0], msix: 0x8009)
        case ("maskall-2022", .linuxMSI): return outcome([0, 0, 0], msi: 0x0181)
        case ("maskall-2022", .qemuMSIX): return outcome([0, 0], msix: 0x8009)
        case ("maskall-2022", .qemuMSI): return outcome([0, 0], msi: 0x0181)
        case ("maskall-2022", .maskAllWhileEnabled): return outcome([0, 0, 0, 0], msix: 0x8009)
        case ("maskall-2022", .exclusive): return outcome([0, 0, r, r], msi: 0x0181)
        // original-2020 (5.7-6.0): any MASKALL change refused; INTx must be off first.
        case ("original-2020", .linuxMSIX): return outcome([r, 0, 0], msix: 0x8009)
        case ("original-2020", .linuxMSI): return outcome([0, 0, 0], msi: 0x0181)
        case ("original-2020", .qemuMSIX): return outcome([0, 0], msix: 0x8009)
        case ("original-2020", .qemuMSI): return outcome([0, 0], msi: 0x0181)
        case ("original-2020", .maskAllWhileEnabled): return outcome([0, 0, r, 0], msix: 0x8009)  // last: new == old
        case ("original-2020", .exclusive): return outcome([0, 0, r, r], msi: 0x0181)
        // 5.6 as released: "nothing enabled" is 0, not NONE: no enable ever succeeds.
        case ("5.6", .linuxMSIX): return outcome([r, 0, r])
        case ("5.6", .linuxMSI): return outcome([0, 0, r])
        case ("5.6", .qemuMSIX): return outcome([0, r])
        case ("5.6", .qemuMSI): return outcome([0, r])
        case ("5.6", .maskAllWhileEnabled): return outcome([0, r, r, r])
        case ("5.6", .exclusive): return outcome([0, r, r, r])
        default:
            Issue.record("no expectation for \(profile) / \(sequence.rawValue)")
            return outcome([])
        }
    }
}

extension ClientReplayTests {
    @Suite("real clients: the guest's MSI/MSI-X set-up under every kernel profile", .serialized, .requiresDaemonMount,
           .timeLimit(.minutes(1)))
    struct GuestInterruptTests {
        enum Transport: String, CaseIterable {
            /// pcifront's ops, with op->err visible.
            case pciOperation = "pci_op"
            /// QEMU in the stub domain: pwrite on its own config file (errors invisible).
            case configFile = "frontend config"
        }

        @Test("every guest order, with allow_interrupt_control unset, set and permissive",
              arguments: ["current", "maskall-2022", "original-2020", "5.6", "pre-5.6"])
        func interruptSetUp(profile: String) throws {
            try withDaemon(["--profile", profile, "--hide", "(0000:03:00.0)"]) { mount throws in
                #expect(try mount.cat("fs/pcibackfs/profile") == profile + "\n")
                if profile == "pre-5.6" {
                    #expect(!mount.exists("\(pciback)/allow_interrupt_control"))
                    #expect(mount.libxlWrite(nic, "\(pciback)/allow_interrupt_control") == .openFailed(ENOENT))
                }
                for mode in InterruptControlMode.allCases {
                    if mode == .allowed && profile == "pre-5.6" { continue }
                    for sequence in GuestSequence.allCases {
                        let expected = ExpectedOutcome.of(profile: profile, mode: mode, sequence: sequence)
                        for transport in Transport.allCases {
                            let actual = try GuestScenario(mount: mount).run(sequence, mode: mode, transport: transport)
                            var comparable = actual
                            if transport == .configFile { comparable.errors = expected.errors }  // pwrite hides op->err
                            #expect(comparable == expected,
                                    "\(profile) / \(mode.rawValue) / \(sequence.rawValue) / \(transport.rawValue)\n  expected \(expected)\n  actual   \(actual)")
                        }
                    }
                }
            }
        }

        @Test("--permissive: the module parameter reads Y and flag writes reach the hardware unchecked")
        func permissiveOption() throws {
            try withDaemon(["--permissive", "--hide", "(0000:03:00.0)"]) { mount throws in
                #expect(try mount.cat("module/xen_pciback/parameters/permissive") == "Y\n")
                // The per-device list does not show the global switch.
                #expect(try mount.cat("\(pciback)/permissive") == "")
                for sequence in GuestSequence.allCases {
                    let expected = ExpectedOutcome.of(profile: "current", mode: .globalPermissive, sequence: sequence)
                    let actual = try GuestScenario(mount: mount).run(sequence, mode: nil, transport: .pciOperation)
                    #expect(actual == expected, "--permissive / \(sequence.rawValue)\n  expected \(expected)\n  actual   \(actual)")
                }
            }
        }
    }
}

/// One guest session on 03:00.0: a fresh pciback binding, attach to frontend 1, the mode's
/// set-up, the writes, the resulting views, detach and unbind.
struct GuestScenario {
    let mount: DaemonMount
    let frontend = 1
    let vbdf = "0000:00:00.0"

    func run(_ sequence: GuestSequence, mode: InterruptControlMode?, transport: ClientReplayTests.GuestInterruptTests.Transport) throws
        -> GuestOutcome
    {
        // Fresh binding: unbind frees pciback's per-device state (shadow, permissive); the device
        // stays in slots (hide), so bind seizes it again from the hardware's reset state.
        if mount.driver(of: nic) == "pciback" {
            #expect(mount.libxlWrite(nic, "\(pciback)/unbind") == .written(12))
        }
        #expect(mount.libxlWrite(nic, "\(pciback)/bind") == .written(12))
        #expect(mount.echo("\(frontend) \(nic)\n", "fs/pcibackfs/attach") == .written(15))
        defer {
            #expect(mount.echo("\(frontend) \(nic)\n", "fs/pcibackfs/detach") == .written(15))
            if mode == .globalPermissive {
                #expect(mount.echo("N\n", "module/xen_pciback/parameters/permissive") == .written(2))
            }
        }
        switch mode {
        case .allowed: #expect(mount.libxlWrite(nic, "\(pciback)/allow_interrupt_control") == .written(12))
        case .globalPermissive: #expect(mount.echo("Y\n", "module/xen_pciback/parameters/permissive") == .written(2))
        case .devicePermissive: #expect(mount.libxlWrite(nic, "\(pciback)/permissive") == .written(12))
        case .notAllowed, nil: break
        }
        #expect(try mount.hostConfig(nic, msiFlags, 2) == UInt32(ExpectedOutcome.initialMSI))
        #expect(try mount.hostConfig(nic, msixFlags, 2) == UInt32(ExpectedOutcome.initialMSIX))
        #expect(try mount.hostConfig(nic, 0x04, 2) & 0x0400 == 0, "INTx enabled after the seize")

        // The guest enables the device first.
        let enable = try write(GuestWrite(register: .command, value: 0x0007), transport)
        #expect(enable == 0)
        var errors: [Int32] = []
        for step in sequence.writes { errors.append(try write(step, transport)) }
        let guestMSI = try mount.guestConfig(frontend, vbdf, msiFlags, 2)
        let guestMSIX = try mount.guestConfig(frontend, vbdf, msixFlags, 2)
        let outcome = GuestOutcome(
            errors: errors,
            hardwareINTxDisabled: try mount.hostConfig(nic, 0x04, 2) & 0x0400 != 0,
            hardwareMSI: UInt16(try mount.hostConfig(nic, msiFlags, 2)),
            hardwareMSIX: UInt16(try mount.hostConfig(nic, msixFlags, 2)),
            guestCommand: UInt16(try mount.guestConfig(frontend, vbdf, 0x04, 2)))
        // The flags are read from the hardware: the guest sees what the hardware has.
        #expect(guestMSI == UInt32(outcome.hardwareMSI), "guest MSI flags")
        #expect(guestMSIX == UInt32(outcome.hardwareMSIX), "guest MSI-X flags")
        return outcome
    }

    private func write(_ step: GuestWrite, _ transport: ClientReplayTests.GuestInterruptTests.Transport) throws -> Int32 {
        switch transport {
        case .pciOperation:
            let result = try mount.pciOp(frontend, "conf_write 00:00.0 0x\(String(step.register.offset, radix: 16)) 2 0x\(String(step.value, radix: 16))")
            return result.err
        case .configFile:
            #expect(try mount.guestConfigWrite(frontend, vbdf, step.register.offset, 2, UInt32(step.value)) == 2)
            return 0
        }
    }
}

// MARK: - Client replays

/// libxl's sysfs steps (tools/libs/light/libxl_pci.c), syscall for syscall (clients.md §1.2-§1.5).
struct LibxlReplay {
    let mount: DaemonMount
    var devices: String { mount.path("bus/pci/devices") }
    var pcibackDriver: String { mount.path(pciback) }

    struct Resource: Equatable {
        var start: UInt64
        var end: UInt64
        var flags: UInt64
    }

    /// `libxl__device_pci_assignable_add(rebind=1)`. Returns the saved driver path (nil when
    /// the device was already assigned or had no driver).
    @discardableResult
    func assignableAdd(_ bdf: String) -> String? {
        // lstat(devices/B)
        #expect(Sys.lstatError("\(devices)/\(bdf)") == 0, "Couldn't lstat \(bdf)")
        // pciback_dev_is_assigned: access(pciback, F_OK), then lstat(pciback/B).
        #expect(access(pcibackDriver, F_OK) == 0, "Looks like pciback driver is not loaded")
        let assigned = Sys.lstatError("\(pcibackDriver)/\(bdf)")
        if assigned == 0 { return nil }  // WARN "already assigned to pciback", skip to step 7
        #expect(assigned == ENOENT)
        // sysfs_dev_unbind: lstat + realpath of the driver link, write B to <realpath>/unbind.
        var saved: String?
        if Sys.lstatError("\(devices)/\(bdf)/driver") == 0 {
            let driverPath = try? Sys.realpath("\(devices)/\(bdf)/driver")
            #expect(driverPath?.hasPrefix(mount.path("bus/pci/drivers/")) == true, "\(driverPath ?? "nil")")
            if let driverPath {
                #expect(Sys.echo(bdf, to: driverPath + "/unbind", style: .plain) == .written(bdf.utf8.count), "Couldn't unbind")
                saved = driverPath
            }
        }
        // pciback_dev_assign: slots scan, new_slot if missing, bind.
        if !hasSlot(bdf) {
            #expect(Sys.echo(bdf, to: "\(pcibackDriver)/new_slot", style: .plain) == .written(bdf.utf8.count),
                    "Couldn't add slot")
        }
        #expect(Sys.echo(bdf, to: "\(pcibackDriver)/bind", style: .plain) == .written(bdf.utf8.count),
                "Couldn't bind device to pciback!")
        return saved
    }

    /// `pciback_dev_has_slot`: fopen(slots) and the fscanf("%x:%x:%x.%d\n") loop.
    func hasSlot(_ bdf: String) -> Bool {
        guard let file = fopen("\(pcibackDriver)/slots", "r") else {
            Issue.record("Couldn't open slots: errno \(errno)")
            return false
        }
        defer { fclose(file) }
        let wanted = BDF(bdf)
        while let slot = Scanf.slot(file) {
            if slot == wanted { return true }
        }
        return false
    }

    /// `libxl_device_pci_assignable_list`: readdir(pciback) + sscanf("%04x:%02x:%02x.%01x") == 4.
    func assignableList() -> [String] {
        guard let names = try? Sys.list(pcibackDriver) else {
            Issue.record("Looks like pciback driver not loaded")
            return []
        }
        return names.compactMap(Scanf.assignableName).sorted()
    }

    /// `pciback_dev_unassign` and the rebind of pci-assignable-remove [-r]. Returns success.
    func assignableRemove(_ bdf: String, rebindTo driverPath: String?) -> Bool {
        #expect(access(pcibackDriver, F_OK) == 0)
        if Sys.lstatError("\(pcibackDriver)/\(bdf)") == 0 {
            // sysfs_dev_unbind through the driver link (which resolves to pciback).
            let driverPath = try? Sys.realpath("\(devices)/\(bdf)/driver")
            #expect(driverPath == pcibackDriver)
            // Errors here are only logged by libxl; the test still wants them to succeed.
            #expect(Sys.echo(bdf, to: (driverPath ?? pcibackDriver) + "/unbind", style: .plain) == .written(bdf.utf8.count))
            if hasSlot(bdf) {
                #expect(Sys.echo(bdf, to: "\(pcibackDriver)/remove_slot", style: .plain) == .written(bdf.utf8.count))
            }
        } else {
            Issue.record("Not bound to pciback: \(bdf)")
        }
        guard let driverPath else { return true }
        return Sys.echo(bdf, to: driverPath + "/bind", style: .plain) == .written(bdf.utf8.count)
    }

    /// `libxl__device_pci_reset`: do_flr (ENOENT upstream), then devices/B/reset with "1".
    func reset(_ bdf: String) {
        #expect(Sys.echo(bdf, to: "\(pcibackDriver)/do_flr", style: .plain) == .openFailed(ENOENT))
        #expect(Sys.echo("1", to: "\(devices)/\(bdf)/reset", style: .plain) == .written(1))
    }

    /// `pci_add_dm_done`: fopen(resource) and 7 × fscanf("0x%llx 0x%llx 0x%llx\n").
    func readResources(_ bdf: String) -> [Resource] {
        guard let file = fopen("\(devices)/\(bdf)/resource", "r") else {
            Issue.record("Couldn't open resource: errno \(errno)")
            return []
        }
        defer { fclose(file) }
        return (0..<7).compactMap { _ in Scanf.resourceLine(file) }
    }

    /// fopen(irq) and fscanf("%u").
    func readIRQ(_ bdf: String) -> UInt32? {
        guard let file = fopen("\(devices)/\(bdf)/irq", "r") else { return nil }
        defer { fclose(file) }
        return Scanf.unsigned(file)
    }

    /// `pci_multifunction_check`: every function in devices/ on the same bus and slot must have
    /// a pciback/<BDF> entry. Returns the functions that do not.
    func multifunctionCheck(bus: UInt32, slot: UInt32) -> [String] {
        guard let names = try? Sys.list(devices) else { return ["<opendir failed>"] }
        return names.compactMap { name -> String? in
            let address = BDF(name)
            guard address.bus == bus, address.slot == slot else { return nil }
            return Sys.lstatError("\(pcibackDriver)/\(name)") == 0 ? nil : name
        }.sorted()
    }
}

struct BDF: Equatable {
    var domain: UInt32 = 0
    var bus: UInt32 = 0
    var slot: UInt32 = 0
    var function: Int32 = 0

    init(domain: UInt32, bus: UInt32, slot: UInt32, function: Int32) {
        self.domain = domain
        self.bus = bus
        self.slot = slot
        self.function = function
    }

    init(_ text: String) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "." })
        if parts.count == 4 {
            domain = UInt32(parts[0], radix: 16) ?? 0
            bus = UInt32(parts[1], radix: 16) ?? 0
            slot = UInt32(parts[2], radix: 16) ?? 0
            function = Int32(parts[3]) ?? 0
        }
    }
}

/// libxl's scanf calls, made through the C library itself.
enum Scanf {
    static func slot(_ file: UnsafeMutablePointer<FILE>) -> BDF? {
        var domain: UInt32 = 0, bus: UInt32 = 0, slot: UInt32 = 0
        var function: Int32 = 0
        let count = withUnsafeMutablePointer(to: &domain) { d in
            withUnsafeMutablePointer(to: &bus) { b in
                withUnsafeMutablePointer(to: &slot) { s in
                    withUnsafeMutablePointer(to: &function) { f in
                        withVaList([d, b, s, f]) { vfscanf(file, "%x:%x:%x.%d\n", $0) }
                    }
                }
            }
        }
        return count == 4 ? BDF(domain: domain, bus: bus, slot: slot, function: function) : nil
    }

    static func assignableName(_ name: String) -> String? {
        var domain: UInt32 = 0, bus: UInt32 = 0, slot: UInt32 = 0, function: UInt32 = 0
        let count = withUnsafeMutablePointer(to: &domain) { d in
            withUnsafeMutablePointer(to: &bus) { b in
                withUnsafeMutablePointer(to: &slot) { s in
                    withUnsafeMutablePointer(to: &function) { f in
                        withVaList([d, b, s, f]) { vsscanf(name, "%04x:%02x:%02x.%01x", $0) }
                    }
                }
            }
        }
        guard count == 4 else { return nil }
        return Hex.format(UInt64(domain), width: 4) + ":" + Hex.format(UInt64(bus), width: 2) + ":"
            + Hex.format(UInt64(slot), width: 2) + "." + String(function, radix: 16)
    }

    static func resourceLine(_ file: UnsafeMutablePointer<FILE>) -> LibxlReplay.Resource? {
        var start: UInt64 = 0, end: UInt64 = 0, flags: UInt64 = 0
        let count = withUnsafeMutablePointer(to: &start) { s in
            withUnsafeMutablePointer(to: &end) { e in
                withUnsafeMutablePointer(to: &flags) { f in
                    withVaList([s, e, f]) { vfscanf(file, "0x%llx 0x%llx 0x%llx\n", $0) }
                }
            }
        }
        return count == 3 ? LibxlReplay.Resource(start: start, end: end, flags: flags) : nil
    }

    static func unsigned(_ file: UnsafeMutablePointer<FILE>) -> UInt32? {
        var value: UInt32 = 0
        let count = withUnsafeMutablePointer(to: &value) { v in withVaList([v]) { vfscanf(file, "%u", $0) } }
        return count == 1 ? value : nil
    }
}

/// QEMU's `xen_host_pci_device_get` and its config accessors (clients.md §3.1).
struct QEMUProbe {
    let directory: String
    var config: String { directory + "/config" }

    func run(expectIRQ: UInt32) {
        // 1. config O_RDWR: failure is fatal for realize.
        let fd = open(config, O_RDWR | O_CLOEXEC)
        #expect(fd >= 0, "open(config, O_RDWR): errno \(errno)")
        guard fd >= 0 else { return }
        defer { close(fd) }
        // 2. resource: one read(399), then 7 lines parsed with strtoll(16).
        do {
            let bytes = try Sys.readOnce(directory + "/resource", count: 399)
            #expect(bytes.count == 399, "QEMU: Invalid format or input too short")
            let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
            #expect(lines.count == 7)
            for line in lines {
                let fields = line.split(separator: " ")
                #expect(fields.count == 3 && fields.allSatisfy { Hex.parse(String($0)) != nil }, "resource line \(line)")
            }
            // 3-5. vendor, device, irq, class: one read of at most 21 bytes each.
            func value(_ name: String, radix: Int) throws -> UInt64? {
                let text = String(decoding: try Sys.readOnce(directory + "/" + name, count: 20), as: UTF8.self)
                var trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if radix == 16, trimmed.hasPrefix("0x") { trimmed.removeFirst(2) }
                return UInt64(trimmed, radix: radix)
            }
            #expect(try value("vendor", radix: 16) == 0x8086)
            #expect(try value("device", radix: 16) == 0x10c9)
            #expect(try value("irq", radix: 10) == UInt64(expectIRQ))
            #expect(try value("class", radix: 16) == 0x020000)
        } catch {
            Issue.record("QEMU probe: \(error)")
        }
        // 6. physfn: stat only; a PF has none.
        #expect(Sys.statError(directory + "/physfn") == ENOENT)
        // Config accesses: pread/pwrite of exactly 1, 2 or 4 bytes.
        for (offset, width) in [(0x00, 4), (0x00, 2), (0x02, 2), (0x3d, 1), (0x06, 2), (0x30, 4), (0x34, 1)] {
            var buffer = [UInt8](repeating: 0, count: width)
            let got = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, width, off_t(offset)) }
            #expect(got == width, "pread(\(width)) at \(offset)")
        }
        var vendor = [UInt8](repeating: 0, count: 4)
        _ = vendor.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, 4, 0) }
        #expect(vendor == [0x86, 0x80, 0xc9, 0x10])
        // Realize: read COMMAND, OR in IO|MEM, write the word back; writes return the full length.
        var command = [UInt8](repeating: 0, count: 2)
        _ = command.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, 2, 4) }
        command[0] |= 0x03
        #expect(command.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, 2, 4) } == 2)
        let byte: [UInt8] = [0x10]
        #expect(byte.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, 1, 0x0c) } == 1)  // cache line size
        let rom: [UInt8] = [0, 0, 0, 0]
        #expect(rom.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, 4, 0x30) } == 4)
        var after = [UInt8](repeating: 0, count: 2)
        _ = after.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, 2, 4) }
        #expect(after[0] & 0x03 == 0x03, "COMMAND IO|MEM after QEMU's realize write")
        // Extended capability search from 0x100: 4-byte header reads.
        var header = [UInt8](repeating: 0, count: 4)
        let got = header.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, 4, 0x100) }
        #expect(got == 4)
        #expect(header[0] == 0x01, "AER at 0x100")
    }
}

enum Libvirt {
    /// `virFileLinkPointsTo`: stat() both paths and compare st_dev and st_ino.
    static func linkPointsTo(_ link: String, _ target: String) -> Bool {
        guard case .success(let a) = Sys.fileStatus(link), case .success(let b) = Sys.fileStatus(target) else { return false }
        return a.st_dev == b.st_dev && a.st_ino == b.st_ino
    }
}

enum DriverctlOutput {
    /// Output split at "== name" markers.
    static func sections(_ text: String) -> [String: [String]] {
        var result: [String: [String]] = [:]
        var current = ""
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("== ") {
                current = String(line.dropFirst(3))
                result[current] = []
            } else {
                result[current, default: []].append(line)
            }
        }
        return result
    }
}

// MARK: - lspci output

enum HexDump {
    /// lspci -D -xxxx output: the bytes of each device, by its full BDF.
    static func parse(_ text: String) -> [(String, [UInt8])] {
        var result: [(String, [UInt8])] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("0000:"), let name = line.split(separator: " ").first {
                result.append((String(name), []))
            } else if let colon = line.firstIndex(of: ":"), !line.hasPrefix("\t"), !result.isEmpty,
                      line[..<colon].allSatisfy(\.isHexDigit), line[..<colon].count >= 2 {
                let bytes = line[line.index(after: colon)...].split(separator: " ").compactMap { UInt8($0, radix: 16) }
                result[result.count - 1].1 += bytes
            }
        }
        return result
    }
}

enum LspciText {
    /// What pciutils fills only from sysfs, so `lspci -F DUMP` (which decodes config bytes and
    /// nothing else) cannot show it as sysfs does; each line kind dropped, with why:
    static let sysfsOnly: [(prefix: String, why: String)] = [
        ("\tInterrupt:", "IRQ: the `irq` file (the dump's text gives the config Interrupt Line)"),
        ("\tRegion ", "BAR addresses, sizes and [virtual]: the `resource` file"),
        ("\tExpansion ROM", "the ROM's address, size and [disabled]: `resource`"),
        ("\t[virtual] Expansion ROM", "the same, for a ROM sysfs reports but config does not"),
        ("\tKernel driver in use:", "the `driver` link"),
        ("\tKernel modules:", "modules.alias lookups of the `modalias` file"),
        ("\tIOMMU group:", "the `iommu_group` link"),
        ("\tNUMA node:", "the `numa_node` file"),
        ("\tPhysical Slot:", "the `slots` directory of the bus"),
        ("\tDeviceName:", "the `label` file (ACPI or SMBIOS)"),
    ]

    /// Bridge windows come from `resource` too in pciutils >= 3.8, which drops the 64-bit type
    /// there: kept, compared by their address range only.
    static let windows = ["\tI/O behind bridge:", "\tMemory behind bridge:", "\tPrefetchable memory behind bridge:"]

    /// The lines of one device's text without the sysfs-only ones. VPD's contents are read from
    /// the `vpd` file through sysfs and through the capability's registers from a dump: the
    /// capability's header line is kept, its detail lines are dropped.
    static func withoutSysfsOnlyLines(_ text: String) -> [String] {
        var result: [String] = []
        var inVPD = false
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("\t"), !line.hasPrefix("\t\t") {
                inVPD = line.contains("Vital Product Data")
            } else if inVPD, line.hasPrefix("\t\t") {
                continue
            }
            if sysfsOnly.contains(where: { line.hasPrefix($0.prefix) }) { continue }
            if let label = windows.first(where: { line.hasPrefix($0) }) {
                let rest = line.dropFirst(label.count).trimmingCharacters(in: .whitespaces)
                let range = rest.split(separator: " ").first.map(String.init) ?? rest
                let bounds = range.split(separator: "-").compactMap { UInt64($0, radix: 16) }
                result.append(label + " " + bounds.map { String($0, radix: 16) }.joined(separator: "-"))
                continue
            }
            result.append(line)
        }
        return result
    }

    /// `lspci -D ...` output split per function, in order: each function's address and its text.
    static func devices(_ text: String) -> [(address: String, text: String)] {
        var result: [(address: String, text: String)] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            // A header line starts with DDDD:BB:SS.F and a space (lspci -D).
            if let first = line.split(separator: " ").first, !line.hasPrefix("\t"), first.count == 12,
               Array(first).enumerated().allSatisfy({ [4, 7].contains($0.offset) ? $0.element == ":" : $0.offset == 10 ? $0.element == "." : $0.element.isHexDigit }) {
                result.append((String(first), ""))
            }
            guard !result.isEmpty, !line.isEmpty else { continue }
            result[result.count - 1].text += line + "\n"
        }
        return result
    }

    /// A readable line diff (lines only in the expected text with -, only in the actual with +).
    static func difference(_ expected: [String], _ actual: [String]) -> [String] {
        if expected == actual { return [] }
        let diff = actual.difference(from: expected)
        return diff.map { change in
            switch change {
            case .remove(let offset, let line, _): return "- [\(offset)] \(line)"
            case .insert(let offset, let line, _): return "+ [\(offset)] \(line)"
            }
        }
    }
}

#endif
