// The mount tests drive Linux FUSE with glibc's calls; elsewhere they are not built.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing
@testable import PCIBackFS

// Issue "The toolstack developer's test bench": fault injection (fs/pcibackfs/faults and the
// machine file), the verdict trace (fs/pcibackfs/trace, --trace-log) and pciback's kernel
// messages (fs/pcibackfs/log), machine capture (`pcibackfsd capture`), --legacy-modes, and the
// daemon as a service (Type=notify readiness, SIGTERM, the unprivileged unshare recipe).
// Spec: /work/shared/spec/pciback.md §1.7, §3.2, §4.4, §5.2, §6.1, §8.2, §9.
//
// Built-in machine: 00:05.0 is the RTL8139 (INTx only, I/O BAR, PM with D1/D2) bound to 8139too;
// 03:00.0 is the 82576 (MSI at 0x50, MSI-X at 0x60, AER at 0x100) behind 00:1c.1, bound to igb.

private enum Bench {
    static let nic = "0000:03:00.0"
    static let rtl = "0000:00:05.0"
    static let pciback = "bus/pci/drivers/pciback"
    static let faults = "fs/pcibackfs/faults"
    static let trace = "fs/pcibackfs/trace"
    static let log = "fs/pcibackfs/log"

    /// One `echo LINE > faults`; the exact count is what a successful write returns.
    static func inject(_ mount: DaemonMount, _ line: String) -> EchoResult {
        mount.echo(line + "\n", faults)
    }

    static func written(_ line: String) -> EchoResult { .written(line.utf8.count + 1) }

    /// libxl's pci-assignable-add: unbind from the host driver, new_slot, bind.
    /// Returns what the final bind returned.
    static func seize(_ mount: DaemonMount, _ bdf: String, from driver: String) -> EchoResult {
        #expect(mount.libxlWrite(bdf, "bus/pci/drivers/\(driver)/unbind") == .written(12), "unbind \(bdf) from \(driver)")
        #expect(mount.libxlWrite(bdf, "\(pciback)/new_slot") == .written(12), "new_slot \(bdf)")
        return mount.libxlWrite(bdf, "\(pciback)/bind")
    }

    static func attach(_ mount: DaemonMount, _ domain: Int, _ bdf: String) {
        let line = "\(domain) \(bdf)\n"
        #expect(mount.echo(line, "fs/pcibackfs/attach") == .written(line.utf8.count), "attach \(bdf) to \(domain)")
    }

    /// The capability with `id` in the standard list (dom0 view), or nil.
    static func capability(_ mount: DaemonMount, _ bdf: String, id: UInt32) throws -> Int? {
        var pointer = Int(try mount.hostConfig(bdf, 0x34, 1)) & 0xfc
        var hops = 0
        while pointer != 0, hops < 48 {
            if try mount.hostConfig(bdf, pointer, 1) == id { return pointer }
            pointer = Int(try mount.hostConfig(bdf, pointer + 1, 1)) & 0xfc
            hops += 1
        }
        return nil
    }

    /// The errno of one pread(2) on an open descriptor, 0 when it succeeded.
    static func preadErrno(_ fd: Int32, offset: Int, count: Int) -> Int32 {
        var buffer = [UInt8](repeating: 0, count: count)
        let got = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress, count, off_t(offset)) }
        return got < 0 ? errno : 0
    }

    static func traceLines(_ mount: DaemonMount) throws -> [String] {
        try mount.cat(trace).split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
    }

    /// The `seq=N` of a trace line.
    static func sequence(_ line: String) -> UInt64? {
        guard line.hasPrefix("seq=") else { return nil }
        return UInt64(line.dropFirst(4).prefix { $0 != " " })
    }

    static func mode(_ mount: DaemonMount, _ relative: String) -> mode_t? {
        guard case .success(let info) = Sys.linkStatus(mount.path(relative)) else { return nil }
        return info.st_mode & 0o7777
    }

    static func occurrences(of prefix: String, in text: String) -> Int {
        text.split(separator: "\n").filter { $0.hasPrefix(prefix) }.count
    }

    /// Whether `path` is a mount point in this process's mount namespace.
    static func isMountPoint(_ path: String) -> Bool {
        guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return table.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 4 && fields[4] == path
        }
    }

    static var hostDevicesDirectory: String { "/sys/bus/pci/devices" }

    static var hostDeviceNames: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: hostDevicesDirectory)) ?? [])
            .filter { PCIAddress(kernelName: $0) != nil }.sorted()
    }

    static var cannotCaptureHost: Bool { hostDeviceNames.isEmpty || Tools.find("lspci") == nil }

    static var dumpFile: String { MountEnvironment.testDataDirectory + "/cap-pcie-2" }

    /// `pcibackfsd ARGS` to completion.
    static func daemon(_ arguments: [String], timeout: Double = 30) -> ProcessResult {
        Subprocess.run(MountEnvironment.daemonPath, arguments, timeout: timeout)
    }

    /// lspci -x output as "DEVICE/OFFSET" -> the hex line, e.g. "01:00.0/160" -> "160: 10 00 ...".
    static func hexLines(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        var device = ""
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 17, parts[0].hasSuffix(":"), UInt32(parts[0].dropLast(), radix: 16) != nil {
                result[device + "/" + parts[0].dropLast()] = String(line)
            } else if let first = parts.first {
                device = String(first)
            }
        }
        return result
    }
}

/// A Unix datagram socket the test binds, standing in for systemd's notification socket.
private final class NotifySocket {
    let fd: Int32
    /// The NOTIFY_SOCKET value: a path, or "@name" for the abstract namespace.
    let name: String

    init(name: String) throws {
        self.name = name
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SyscallError(call: "socket", path: name, errno: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw HarnessError("socket name too long: \(name)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let status = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
        }
        guard status == 0 else {
            let error = errno
            close(fd)
            throw SyscallError(call: "bind", path: name, errno: error)
        }
    }

    deinit { close(fd) }

    /// The next datagram, or nil after `timeout` seconds.
    func receive(timeout: Double) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
            let ready = poll(&poller, 1, left)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 4096, 0) }
            if count < 0 { return nil }
            return String(decoding: buffer[0..<count], as: UTF8.self)
        }
    }
}

@Suite("The toolstack developer's test bench", .serialized)
struct TestBenchTests {
    // MARK: - The trace ring (no mount needed)

    @Test("the trace ring keeps the newest 4096 verdicts", .timeLimit(.minutes(1)))
    func traceRing() {
        var ring = TraceRing()
        #expect(ring.capacity == 4096)
        for index in 0..<5000 {
            ring.append(TraceRecord(sequence: 0, domain: 1, device: PCIAddress(kernelName: "0000:03:00.0")!,
                                    operation: .configRead, offset: Int32(index % 256), size: 1, value: 0, error: 0,
                                    rule: nil))
        }
        let records = ring.records()
        #expect(records.count == 4096)
        #expect(records.first?.sequence == 905)
        #expect(records.last?.sequence == 5000)
        #expect(records.map(\.sequence) == Array(905...5000))
        #expect(ring.records(after: 4990).map(\.sequence) == Array(4991...5000))
    }

    // MARK: - Fault injection

    @Suite("fault injection through fs/pcibackfs/faults and the machine file", .serialized, .requiresDaemonMount,
           .timeLimit(.minutes(1)))
    struct FaultInjection {
        @Test("reset, --dom0 pvh: Xen's device reset fails, so pciback's bind fails with EIO and nothing is bound; sticky until off, once fires once")
        func resetFault() throws {
            try withDaemon(["--dom0", "pvh"]) { mount throws in
                let rtl = Bench.rtl
                #expect(try mount.cat(Bench.faults) == "")
                #expect(Bench.mode(mount, Bench.faults) == 0o600)
                #expect(Bench.inject(mount, "\(rtl) reset sticky") == Bench.written("\(rtl) reset sticky"))
                #expect(try mount.cat(Bench.faults) == "\(rtl) reset sticky\n")

                #expect(Bench.seize(mount, rtl, from: "8139too") == .writeFailed(EIO))
                #expect(mount.driver(of: rtl) == nil, "a failed probe leaves the device without a driver")
                #expect(Sys.lstatError(mount.path("\(Bench.pciback)/\(rtl)")) == ENOENT)
                #expect(try !mount.list(Bench.pciback).contains(rtl))
                #expect(try mount.cat("\(Bench.pciback)/slots") == "\(rtl)\n", "the seize list keeps the new_slot entry")
                #expect(try mount.cat("\(Bench.pciback)/quirks") == "", "nothing bound, nothing registered")
                // Sticky: every bind fails until cleared.
                #expect(mount.libxlWrite(rtl, "\(Bench.pciback)/bind") == .writeFailed(EIO))
                #expect(mount.libxlWrite(rtl, "\(Bench.pciback)/bind") == .writeFailed(EIO))
                #expect(try mount.cat(Bench.faults) == "\(rtl) reset sticky\n")
                #expect(mount.driver(of: rtl) == nil)
                // The dom0 `reset` attribute meets the same failing reset.
                #expect(mount.echo("1\n", "bus/pci/devices/\(rtl)/reset") == .writeFailed(EIO))

                #expect(Bench.inject(mount, "\(rtl) reset off") == Bench.written("\(rtl) reset off"))
                #expect(try mount.cat(Bench.faults) == "")
                #expect(mount.libxlWrite(rtl, "\(Bench.pciback)/bind") == .written(12))
                #expect(mount.driver(of: rtl) == "pciback")
                #expect(try mount.readlink("\(Bench.pciback)/\(rtl)") == "../../../../devices/pci0000:00/\(rtl)")

                // Once: the next reset fails, then the fault is gone.
                #expect(mount.libxlWrite(rtl, "\(Bench.pciback)/unbind") == .written(12))
                #expect(Bench.inject(mount, "\(rtl) reset once") == Bench.written("\(rtl) reset once"))
                #expect(try mount.cat(Bench.faults) == "\(rtl) reset once\n")
                #expect(mount.libxlWrite(rtl, "\(Bench.pciback)/bind") == .writeFailed(EIO))
                #expect(mount.driver(of: rtl) == nil)
                #expect(try mount.cat(Bench.faults) == "", "a one-shot fault clears itself when it fires")
                #expect(mount.libxlWrite(rtl, "\(Bench.pciback)/bind") == .written(12))
                #expect(mount.driver(of: rtl) == "pciback")
            }
        }

        @Test("reset, default PV dom0: the function reset fails (reset gives EIO) and pciback ignores it: bind succeeds")
        func resetFaultPV() throws {
            try withDaemon { mount throws in
                let rtl = Bench.rtl
                #expect(Bench.inject(mount, "\(rtl) reset sticky") == Bench.written("\(rtl) reset sticky"))
                #expect(mount.echo("1\n", "bus/pci/devices/\(rtl)/reset") == .writeFailed(EIO))
                #expect(Bench.seize(mount, rtl, from: "8139too") == .written(12))
                #expect(mount.driver(of: rtl) == "pciback")
                #expect(try !mount.cat("fs/pcibackfs/log").contains("could not enable or reset"))
                #expect(try mount.cat(Bench.faults) == "\(rtl) reset sticky\n")
            }
        }

        /// A machine with faults on 00:05.0 (reset sticky) and 03:00.0 (msi-enable once,
        /// msix-enable sticky); `spell` gives each device's "faults" object.
        static func faultyMachine(_ spell: ([String: String]) -> String) -> String {
            """
            { "name": "faulty",
              "devices": [
                { "address": "0000:00:00.0", "template": "host-bridge" },
                { "address": "0000:00:05.0", "template": "rtl8139", "faults": \(spell(["resetFails": "sticky"])) },
                { "address": "0000:00:1c.0", "template": "root-port", "secondaryBus": 3 },
                { "address": "0000:03:00.0", "template": "nic-82576", "irq": 18,
                  "faults": \(spell(["msiEnableFails": "once", "msixEnableFails": "sticky"])) },
                { "address": "0000:03:00.1", "template": "nic-82576", "irq": 19 } ] }
            """
        }

        /// What the faults of `faultyMachine` must do once mounted.
        static func checkArmed(_ machine: String) throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-machine")
            defer { Temporary.remove(directory) }
            let file = directory + "/faulty.json"
            try machine.write(toFile: file, atomically: true, encoding: .utf8)
            // A PVH dom0: there the reset fault fails pciback's bind (Xen's device reset).
            try withDaemon(["--machine", file, "--hide", "(\(Bench.nic))", "--dom0", "pvh"]) { mount throws in
                let listed = try mount.cat(Bench.faults).split(separator: "\n").map(String.init).sorted()
                #expect(listed == ["0000:00:05.0 reset sticky", "0000:03:00.0 msi-enable once", "0000:03:00.0 msix-enable sticky"])
                #expect(Bench.seize(mount, Bench.rtl, from: "8139too") == .writeFailed(EIO))
                #expect(mount.driver(of: Bench.rtl) == nil)
                #expect(mount.libxlWrite(Bench.rtl, "\(Bench.pciback)/bind") == .writeFailed(EIO), "sticky")
                #expect(mount.driver(of: Bench.nic) == "pciback", "the reset of 03:00.0 works: seized at boot")
                Bench.attach(mount, 5, Bench.nic)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x4 2 0x407").err == 0)
                #expect(try mount.pciOp(5, "enable_msi 00:00.0").err == -5)
                #expect(try mount.pciOp(5, "enable_msi 00:00.0").err == 0, "once")
                #expect(try mount.pciOp(5, "disable_msi 00:00.0").err == 0)
                #expect(try mount.pciOp(5, "enable_msix 00:00.0 0,1").err == -28)
                #expect(try mount.pciOp(5, "enable_msix 00:00.0 0,1").err == -28, "sticky")
                #expect(try mount.cat(Bench.faults) == "0000:00:05.0 reset sticky\n0000:03:00.0 msix-enable sticky\n")
            }
        }

        @Test("machine file: faults armed from the start, written as the README shows (only the faults wanted)")
        func machineFileFaults() throws {
            try Self.checkArmed(Self.faultyMachine { faults in
                "{ " + faults.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \"\($0.value)\"" }.joined(separator: ", ") + " }"
            })
        }

        @Test("machine file: faults armed from the start, every fault key spelled out")
        func machineFileAllKeys() throws {
            let keys = ["resetFails", "enableFails", "lowPowerStatesRefused", "msiEnableFails", "msixEnableFails", "configReadFails"]
            try Self.checkArmed(Self.faultyMachine { faults in
                "{ " + keys.map { "\"\($0)\": \"\(faults[$0] ?? "off")\"" }.joined(separator: ", ") + " }"
            })
        }

        @Test("machine file: an unknown fault mode refuses the file, naming it")
        func machineFileBadMode() throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-machine")
            defer { Temporary.remove(directory) }
            let file = directory + "/faulty.json"
            let keys = ["resetFails", "enableFails", "lowPowerStatesRefused", "msiEnableFails", "msixEnableFails", "configReadFails"]
            let machine = Self.faultyMachine { _ in
                "{ " + keys.map { "\"\($0)\": \"\($0 == "resetFails" ? "forever" : "off")\"" }.joined(separator: ", ") + " }"
            }
            try machine.write(toFile: file, atomically: true, encoding: .utf8)
            do {
                let mount = try DaemonMount(["--machine", file])
                mount.stop()
                Issue.record("a machine file with fault mode 'forever' was accepted")
            } catch let exited as DaemonMount.DaemonExited {
                #expect(exited.status != 0)
                #expect(exited.log.contains(file), "the error names the file: \(exited.log)")
                #expect(exited.log.contains("forever"), "the error names the bad value: \(exited.log)")
            }
        }

        @Test("enable: a guest's command write with IO/MEM gets -22 and the command shadow keeps its value")
        func enableFault() throws {
            try withDaemon { mount throws in
                let rtl = Bench.rtl
                #expect(Bench.seize(mount, rtl, from: "8139too") == .written(12))
                Bench.attach(mount, 5, rtl)
                let before = try mount.pciOp(5, "conf_read 00:00.0 0x4 2")
                #expect(before.err == 0)
                #expect(try mount.hostConfig(rtl, 0x04, 2) & 0x4 == 0, "bus master is off after the seize")

                #expect(Bench.inject(mount, "\(rtl) enable once") == Bench.written("\(rtl) enable once"))
                let refused = try mount.pciOp(5, "conf_write 00:00.0 0x4 2 0x7")
                #expect(refused.err == -22, "\(refused.text)")
                let refusal = try Bench.traceLines(mount).last ?? ""
                #expect(refusal.contains("dom=5 dev=\(rtl) op=conf_write off=0x4 size=2 value=0x00000007 err=-22 rule=\""),
                        "\(refusal)")
                #expect(try mount.pciOp(5, "conf_read 00:00.0 0x4 2").value == before.value, "cmd->val not updated")
                #expect(try mount.hostConfig(rtl, 0x04, 2) & 0x4 == 0, "returned before pci_set_master")
                #expect(try mount.cat(Bench.faults) == "")
                // The fault fired once: the same write now enables the device.
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x4 2 0x7").err == 0)
                #expect(try mount.pciOp(5, "conf_read 00:00.0 0x4 2").value == 0x7)
                #expect(try mount.hostConfig(rtl, 0x04, 2) & 0x5 == 0x5, "I/O decode and bus master in hardware")

                // Sticky: disable, then every enabling write fails, also through the config file.
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x4 2 0x0").err == 0)
                let disabled = try mount.pciOp(5, "conf_read 00:00.0 0x4 2").value
                #expect(Bench.inject(mount, "\(rtl) enable sticky") == Bench.written("\(rtl) enable sticky"))
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x4 2 0x7").err == -22)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x4 2 0x3").err == -22)
                #expect(try mount.guestConfigWrite(5, "0000:00:00.0", 0x04, 2, 0x0007) == 2,
                        "pci-sysfs returns the count of a refused write")
                #expect(try mount.guestConfig(5, "0000:00:00.0", 0x04, 2) == disabled)
                #expect(try mount.cat(Bench.faults) == "\(rtl) enable sticky\n")
                #expect(Bench.inject(mount, "\(rtl) enable off") == Bench.written("\(rtl) enable off"))
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x4 2 0x7").err == 0)
                #expect(try mount.pciOp(5, "conf_read 00:00.0 0x4 2").value == 0x7)
            }
        }

        @Test("low-power-states: a guest's PMCSR write to D1/D2 gets -3; D3hot and D0 still work")
        func lowPowerStatesFault() throws {
            try withDaemon { mount throws in
                let rtl = Bench.rtl
                let pmOffset = try Bench.capability(mount, rtl, id: 0x01)
                let pm = try #require(pmOffset, "the RTL8139 has a PM capability")
                let pmc = try mount.hostConfig(rtl, pm + 2, 2)
                #expect(pmc & 0x0600 == 0x0600, "the function supports D1 and D2: PMC \(String(pmc, radix: 16))")
                #expect(Bench.seize(mount, rtl, from: "8139too") == .written(12))
                Bench.attach(mount, 5, rtl)
                let pmcsr = pm + 4
                func state() throws -> UInt32 { try mount.hostConfig(rtl, pmcsr, 2) & 0x3 }
                func write(_ value: Int) throws -> Int32 {
                    try mount.pciOp(5, "conf_write 00:00.0 0x\(String(pmcsr, radix: 16)) 2 0x\(String(value, radix: 16))").err
                }
                #expect(try state() == 0)

                #expect(Bench.inject(mount, "\(rtl) low-power-states sticky") == Bench.written("\(rtl) low-power-states sticky"))
                #expect(try write(1) == -3)
                #expect(try state() == 0)
                #expect(try write(2) == -3)
                #expect(try state() == 0)
                #expect(try write(3) == 0, "D3hot is not a low-power state the fault refuses")
                #expect(try state() == 3)
                #expect(try write(0) == 0)
                #expect(try state() == 0)
                #expect(try write(1) == -3, "sticky")

                #expect(Bench.inject(mount, "\(rtl) low-power-states off") == Bench.written("\(rtl) low-power-states off"))
                #expect(try write(1) == 0)
                #expect(try state() == 1)
                #expect(try write(0) == 0)

                #expect(Bench.inject(mount, "\(rtl) low-power-states once") == Bench.written("\(rtl) low-power-states once"))
                #expect(try write(2) == -3)
                #expect(try state() == 0)
                #expect(try mount.cat(Bench.faults) == "")
                #expect(try write(2) == 0)
                #expect(try state() == 2)
                #expect(try write(0) == 0)
            }
        }

        @Test("msi-enable and msix-enable: enable_msi gets -5 value 0, enable_msix the core's errno (-28)")
        func interruptEnableFaults() throws {
            try withDaemon(["--hide", "(\(Bench.nic))"]) { mount throws in
                let nic = Bench.nic
                #expect(mount.driver(of: nic) == "pciback")
                Bench.attach(mount, 5, nic)
                let msiOffset = try Bench.capability(mount, nic, id: 0x05)
                let msixOffset = try Bench.capability(mount, nic, id: 0x11)
                let msi = try #require(msiOffset)
                let msix = try #require(msixOffset)
                // The guest enables the device (memory decoding is needed for enable_msix).
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x4 2 0x407").err == 0)

                #expect(Bench.inject(mount, "\(nic) msi-enable once") == Bench.written("\(nic) msi-enable once"))
                let failed = try mount.pciOp(5, "enable_msi 00:00.0")
                #expect(failed.err == -5 && failed.value == 0, "\(failed.text)")
                #expect(try mount.hostConfig(nic, msi + 2, 2) & 0x1 == 0, "MSI stays off in hardware")
                #expect(try mount.cat(Bench.faults) == "")
                #expect(try Bench.traceLines(mount).last?.contains("op=enable_msi value=0x00000000 err=-5") == true)
                let enabled = try mount.pciOp(5, "enable_msi 00:00.0")
                #expect(enabled.err == 0 && enabled.value != 0, "\(enabled.text)")
                #expect(try mount.hostConfig(nic, msi + 2, 2) & 0x1 == 0x1)
                #expect(try mount.pciOp(5, "disable_msi 00:00.0").err == 0)
                #expect(try mount.hostConfig(nic, msi + 2, 2) & 0x1 == 0)

                #expect(Bench.inject(mount, "\(nic) msix-enable sticky") == Bench.written("\(nic) msix-enable sticky"))
                for _ in 0..<2 {
                    let result = try mount.pciOp(5, "enable_msix 00:00.0 0,1")
                    #expect(result.err == -Int32(ENOSPC), "\(result.text)")
                    #expect(result.value == UInt32(bitPattern: -Int32(ENOSPC)), "value = the core's result: \(result.text)")
                    #expect(!result.text.contains("vectors"))
                }
                #expect(try mount.hostConfig(nic, msix + 2, 2) & 0x8000 == 0, "MSI-X stays off in hardware")
                #expect(try mount.cat(Bench.faults) == "\(nic) msix-enable sticky\n")
                let line = try Bench.traceLines(mount).last ?? ""
                #expect(line.contains("dom=5 dev=\(nic) op=enable_msix value=0xffffffe4 err=-28 rule=\""), "\(line)")

                #expect(Bench.inject(mount, "\(nic) msix-enable off") == Bench.written("\(nic) msix-enable off"))
                let ok = try mount.pciOp(5, "enable_msix 00:00.0 0,1")
                #expect(ok.err == 0 && ok.text.contains("vectors"), "\(ok.text)")
                #expect(try mount.hostConfig(nic, msix + 2, 2) & 0x8000 == 0x8000)
                #expect(try mount.pciOp(5, "disable_msix 00:00.0").err == 0)

                // msi-enable sticky: every enable_msi fails until off.
                #expect(Bench.inject(mount, "\(nic) msi-enable sticky") == Bench.written("\(nic) msi-enable sticky"))
                #expect(try mount.pciOp(5, "enable_msi 00:00.0").err == -5)
                #expect(try mount.pciOp(5, "enable_msi 00:00.0").err == -5)
                #expect(Bench.inject(mount, "\(nic) msi-enable off") == Bench.written("\(nic) msi-enable off"))
                #expect(try mount.pciOp(5, "enable_msi 00:00.0").err == 0)
            }
        }

        @Test("config-read: hardware reads fail, dom0 reads all-ones, a guest all-ones and an error")
        func configReadFault() throws {
            try withDaemon(["--hide", "(\(Bench.nic))"]) { mount throws in
                let nic = Bench.nic
                Bench.attach(mount, 5, nic)
                let identity = try mount.hostConfig(nic, 0x00, 4)
                #expect(identity == 0x10c9_8086)
                // AER's header at 0x100: no pciback field covers it, so the guest sees the hardware.
                let aer = try mount.hostConfig(nic, 0x100, 4)
                #expect(aer != 0xffff_ffff)
                let baseline = try mount.pciOp(5, "conf_read 00:00.0 0x100 4")
                #expect(baseline.err == 0 && baseline.value == aer)

                #expect(Bench.inject(mount, "\(nic) config-read once") == Bench.written("\(nic) config-read once"))
                #expect(try mount.hostConfig(nic, 0x00, 4) == 0xffff_ffff, "the one failing read")
                #expect(try mount.hostConfig(nic, 0x00, 4) == identity, "then the hardware answers again")
                #expect(try mount.cat(Bench.faults) == "")

                #expect(Bench.inject(mount, "\(nic) config-read sticky") == Bench.written("\(nic) config-read sticky"))
                for _ in 0..<3 {
                    #expect(try mount.hostConfig(nic, 0x00, 4) == 0xffff_ffff)
                    #expect(try mount.hostConfig(nic, 0x100, 4) == 0xffff_ffff)
                    #expect(try mount.hostConfig(nic, 0x3d, 1) == 0xff)
                }
                let failed = try mount.pciOp(5, "conf_read 00:00.0 0x100 4")
                #expect(failed.err == -1, "PCIBIOS_DEVICE_NOT_FOUND -> XEN_PCI_ERR_dev_not_found: \(failed.text)")
                #expect(failed.value == 0xffff_ffff)
                #expect(try mount.guestConfig(5, "0000:00:00.0", 0x100, 4) == 0xffff_ffff, "a failed read gives all-ones")
                let line = try Bench.traceLines(mount).last ?? ""
                #expect(line.contains("op=conf_read off=0x100 size=4 value=0xffffffff err=-1"), "\(line)")
                #expect(try mount.cat(Bench.faults) == "\(nic) config-read sticky\n")

                #expect(Bench.inject(mount, "\(nic) config-read off") == Bench.written("\(nic) config-read off"))
                #expect(try mount.hostConfig(nic, 0x00, 4) == identity)
                #expect(try mount.pciOp(5, "conf_read 00:00.0 0x100 4").value == aer)
            }
        }

        @Test("vanish: the device's directory and links go; descriptors opened before get ENODEV")
        func vanish() throws {
            try withDaemon(["--hide", "(\(Bench.nic))"]) { mount throws in
                let rtl = Bench.rtl
                let directory = mount.path("devices/pci0000:00/\(rtl)")
                let configFD = open(directory + "/config", O_RDONLY | O_CLOEXEC)
                let vendorFD = open(directory + "/vendor", O_RDONLY | O_CLOEXEC)
                let readVendorFD = open(directory + "/vendor", O_RDONLY | O_CLOEXEC)
                defer { [configFD, vendorFD, readVendorFD].filter { $0 >= 0 }.forEach { close($0) } }
                try #require(configFD >= 0 && vendorFD >= 0 && readVendorFD >= 0)
                #expect(Bench.preadErrno(readVendorFD, offset: 0, count: 64) == 0, "read once before the removal")
                #expect(Bench.preadErrno(configFD, offset: 0, count: 4) == 0)

                #expect(Bench.inject(mount, "\(rtl) vanish") == Bench.written("\(rtl) vanish"))
                #expect(Sys.lstatError(directory) == ENOENT)
                #expect(Sys.lstatError(mount.path("bus/pci/devices/\(rtl)")) == ENOENT)
                #expect(Sys.lstatError(mount.path("bus/pci/drivers/8139too/\(rtl)")) == ENOENT)
                #expect(try !mount.list("bus/pci/devices").contains(rtl))
                #expect(try !mount.list("devices/pci0000:00").contains(rtl))
                #expect(Bench.preadErrno(configFD, offset: 0, count: 4) == ENODEV)
                #expect(Bench.preadErrno(vendorFD, offset: 0, count: 64) == ENODEV)
                #expect(Bench.preadErrno(readVendorFD, offset: 0, count: 64) == ENODEV)
                // It is gone for the fault file too.
                #expect(Bench.inject(mount, "\(rtl) vanish") == .writeFailed(ENODEV))
                #expect(Bench.inject(mount, "\(rtl) reset once") == .writeFailed(ENODEV))

                // A device assigned to a guest: the frontend loses it, with the kernel's warnings.
                let nic = Bench.nic
                Bench.attach(mount, 5, nic)
                let guestConfig = "fs/pcibackfs/frontends/5/bus/pci/devices/0000:00:00.0/config"
                let guestFD = open(mount.path(guestConfig), O_RDONLY | O_CLOEXEC)
                defer { if guestFD >= 0 { close(guestFD) } }
                try #require(guestFD >= 0)
                #expect(Bench.inject(mount, "\(nic) vanish") == Bench.written("\(nic) vanish"))
                #expect(Sys.lstatError(mount.path("\(Bench.pciback)/\(nic)")) == ENOENT)
                #expect(Sys.lstatError(mount.path("bus/pci/devices/\(nic)")) == ENOENT)
                #expect(Sys.lstatError(mount.path(guestConfig)) == ENOENT)
                #expect(Bench.preadErrno(guestFD, offset: 0, count: 4) == ENODEV)
                let log = try mount.cat(Bench.log)
                #expect(log.contains("removing device \(nic) while still in-use by domain 5!"), "\(log)")
                // A bridge's surprise removal takes everything behind it.
                #expect(Bench.inject(mount, "0000:00:1c.1 vanish") == Bench.written("0000:00:1c.1 vanish"))
                #expect(Sys.lstatError(mount.path("bus/pci/devices/0000:00:1c.1")) == ENOENT)
                #expect(Sys.lstatError(mount.path("bus/pci/devices/0000:03:00.1")) == ENOENT)
                #expect(Sys.lstatError(mount.path("bus/pci/drivers/igb/0000:03:00.1")) == ENOENT)
                // The rest of the machine is untouched.
                #expect(mount.driver(of: "0000:02:00.0") == "xhci_hcd")
                #expect(try mount.hostConfig("0000:04:00.0", 0, 2) != 0xffff)
                if Tools.find("lspci") != nil {
                    let lspci = mount.pciutils("lspci", ["-D"])
                    #expect(lspci.succeeded, "\(lspci)")
                    let listed = lspci.stdout.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
                    #expect(listed == ["0000:00:00.0", "0000:00:01.0", "0000:00:03.0", "0000:00:1c.0", "0000:01:00.0",
                                       "0000:02:00.0", "0000:04:00.0"], "\(lspci.stdout)")
                }
            }
        }

        @Test("invalid lines are EINVAL, unknown devices ENODEV, and nothing is armed")
        func invalidLines() throws {
            try withDaemon { mount throws in
                let rtl = Bench.rtl
                for line in ["", "garbage", rtl, "\(rtl) reset", "\(rtl) reset forever", "\(rtl) reset Once", "\(rtl) bogus once",
                             "\(rtl) reset once extra", "\(rtl) vanish now", "0000:00:05 reset once", "reset \(rtl) once",
                             "\(rtl) config_read sticky"] {
                    #expect(Bench.inject(mount, line) == .writeFailed(EINVAL), "\(line.debugDescription)")
                }
                for line in ["0000:09:00.0 reset once", "0000:00:05.1 enable sticky", "0000:09:00.0 vanish"] {
                    #expect(Bench.inject(mount, line) == .writeFailed(ENODEV), "\(line.debugDescription)")
                }
                #expect(try mount.cat(Bench.faults) == "")
                #expect(mount.exists("bus/pci/devices/\(rtl)"))
                // Every fault name and mode is accepted, with or without the newline; the listing
                // follows the device and then the fault order.
                for name in ["reset", "enable", "low-power-states", "msi-enable", "msix-enable", "config-read"] {
                    #expect(mount.echo("\(rtl) \(name) sticky", Bench.faults, style: .plain) == .written("\(rtl) \(name) sticky".utf8.count))
                }
                #expect(Bench.inject(mount, "\(Bench.nic) enable once") == Bench.written("\(Bench.nic) enable once"))
                #expect(try mount.cat(Bench.faults) == """
                    \(rtl) reset sticky
                    \(rtl) enable sticky
                    \(rtl) low-power-states sticky
                    \(rtl) msi-enable sticky
                    \(rtl) msix-enable sticky
                    \(rtl) config-read sticky
                    \(Bench.nic) enable once

                    """)
                for name in ["reset", "enable", "low-power-states", "msi-enable", "msix-enable", "config-read"] {
                    #expect(Bench.inject(mount, "\(rtl) \(name) off") == Bench.written("\(rtl) \(name) off"))
                }
                #expect(try mount.cat(Bench.faults) == "\(Bench.nic) enable once\n")
            }
        }
    }

    // MARK: - Trace and kernel log

    @Suite("the trace and the kernel log", .serialized, .requiresDaemonMount, .timeLimit(.minutes(1)))
    struct TraceAndLog {
        @Test("trace: domain, device, offset, size, value, err and the rule of each refusal; newest last; --trace-log JSON")
        func traceVerdicts() throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-trace")
            defer { Temporary.remove(directory) }
            let jsonPath = directory + "/trace.jsonl"
            try withDaemon(["--hide", "(\(Bench.nic))", "--trace-log", jsonPath]) { mount throws in
                let nic = Bench.nic
                #expect(Bench.mode(mount, Bench.trace) == 0o400)
                #expect(Bench.mode(mount, Bench.log) == 0o400)
                #expect(try mount.cat("fs/pcibackfs/profile") == "current\n")
                #expect(try mount.cat(Bench.trace) == "", "no frontend access yet")
                Bench.attach(mount, 5, nic)

                // Without allow_interrupt_control a flag write is refused.
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x62 2 0xc009").err == -3)
                var lines = try Bench.traceLines(mount)
                #expect(lines.count == 1)
                let first = lines.first ?? ""
                #expect(first.hasPrefix("seq=1 dom=5 dev=\(nic) op=conf_write off=0x62 size=2 value=0x0000c009 err=-3 rule=\""),
                        "\(first)")
                #expect(first.contains("allow_interrupt_control not set"), "\(first)")

                // The Linux MSI-X start-up order with allow_interrupt_control, then MSI while MSI-X
                // is on (0x0181 keeps the read-only 64BIT and MASKBIT of the 82576's MSI flags).
                #expect(mount.libxlWrite(nic, "\(Bench.pciback)/allow_interrupt_control") == .written(12))
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x62 2 0xc009").err == 0)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x04 2 0x0407").err == 0)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x62 2 0x8009").err == 0)
                #expect(try mount.hostConfig(nic, 0x4a, 2) == 0x0180)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x4a 2 0x0181").err == -3)
                lines = try Bench.traceLines(mount)
                let exclusive = lines.last ?? ""
                #expect(exclusive.hasPrefix("seq=5 dom=5 dev=\(nic) op=conf_write off=0x4a size=2 value=0x00000181 err=-3 rule=\""),
                        "\(exclusive)")
                #expect(exclusive.contains("MSI-X enabled in hardware, profile current"), "\(exclusive)")
                // Accepted writes carry no rule.
                #expect(lines.count == 5)
                #expect(lines.dropFirst().dropLast().allSatisfy { $0.hasSuffix(" err=0") && !$0.contains("rule=") }, "\(lines)")
                #expect(lines[2] == "seq=3 dom=5 dev=\(nic) op=conf_write off=0x4 size=2 value=0x00000407 err=0")

                // A write no field covers is dropped with success, and says why.
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x6 2 0xffff").err == 0)
                let dropped = try Bench.traceLines(mount).last ?? ""
                #expect(dropped.hasPrefix("seq=6 dom=5 dev=\(nic) op=conf_write off=0x6 size=2 value=0x0000ffff err=0 rule=\""),
                        "\(dropped)")
                // The frontend's config file goes through the same filter, one access per pread.
                #expect(try mount.guestConfig(5, "0000:00:00.0", 0, 4) == 0x10c9_8086)
                #expect(try Bench.traceLines(mount).last == "seq=7 dom=5 dev=\(nic) op=conf_read off=0x0 size=4 value=0x10c98086 err=0")
                // A write through the config file is a conf_write verdict like a pci_op's.
                #expect(try mount.guestConfigWrite(5, "0000:00:00.0", 0x3c, 1, 0x0b) == 1)
                #expect(try Bench.traceLines(mount).last?.hasPrefix("seq=8 dom=5 dev=\(nic) op=conf_write off=0x3c size=1 value=0x0000000b err=0")
                        == true)
                // PCI ops: no offset or size.
                #expect(try mount.pciOp(5, "disable_msix 00:00.0").err == 0)
                let operation = try Bench.traceLines(mount).last ?? ""
                #expect(operation.hasPrefix("seq=9 dom=5 dev=\(nic) op=disable_msix value=0x"), "\(operation)")
                #expect(!operation.contains("off="))
                // A second frontend's accesses carry its own domain.
                #expect(Bench.seize(mount, "0000:03:00.1", from: "igb") == .written(12))
                Bench.attach(mount, 7, "0000:03:00.1")
                #expect(try mount.pciOp(7, "conf_read 00:00.1 0x0 2").value == 0x8086)
                #expect(try Bench.traceLines(mount).last == "seq=10 dom=7 dev=0000:03:00.1 op=conf_read off=0x0 size=2 value=0x00008086 err=0")

                // Newest last: sequence numbers 1...10 in order.
                lines = try Bench.traceLines(mount)
                #expect(lines.compactMap(Bench.sequence) == Array(1...10))

                // --trace-log: the same verdicts as JSON lines, complete when write(2) returned.
                let json = try String(contentsOfFile: jsonPath, encoding: .utf8)
                let records = try json.split(separator: "\n").map { line -> [String: Any] in
                    let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
                    return try #require(object as? [String: Any], "\(line)")
                }
                #expect(records.count == 10)
                #expect(records.compactMap { $0["seq"] as? Int } == Array(1...10))
                if records.count == 10 {
                    let refused = records[0]
                    #expect(refused["domain"] as? Int == 5)
                    #expect(refused["device"] as? String == nic)
                    #expect(refused["op"] as? String == "conf_write")
                    #expect(refused["offset"] as? Int == 0x62)
                    #expect(refused["size"] as? Int == 2)
                    #expect(refused["value"] as? Int == 0xc009)
                    #expect(refused["err"] as? Int == -3)
                    #expect((refused["rule"] as? String)?.contains("allow_interrupt_control not set") == true)
                    let msi = records[4]
                    #expect(msi["offset"] as? Int == 0x4a && msi["value"] as? Int == 0x181 && msi["err"] as? Int == -3)
                    #expect((msi["rule"] as? String)?.contains("MSI-X enabled in hardware, profile current") == true)
                    #expect(records[2]["rule"] == nil)
                    let read = records[6]
                    #expect(read["op"] as? String == "conf_read" && read["value"] as? Int == 0x10c9_8086 && read["err"] as? Int == 0)
                    #expect(records[7]["op"] as? String == "conf_write" && records[7]["offset"] as? Int == 0x3c)
                    let op = records[8]
                    #expect(op["op"] as? String == "disable_msix")
                    #expect(op["offset"] == nil && op["size"] == nil)
                    #expect(records[9]["domain"] as? Int == 7 && records[9]["device"] as? String == "0000:03:00.1")
                }
            }
        }

        @Test("trace: a bounded ring, shown as one page that keeps the newest lines")
        func traceIsBounded() throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-trace")
            defer { Temporary.remove(directory) }
            let jsonPath = directory + "/trace.jsonl"
            try withDaemon(["--hide", "(\(Bench.nic))", "--trace-log", jsonPath]) { mount throws in
                Bench.attach(mount, 5, Bench.nic)
                let config = mount.path("fs/pcibackfs/frontends/5/bus/pci/devices/0000:00:00.0/config")
                let fd = open(config, O_RDONLY | O_CLOEXEC)
                try #require(fd >= 0)
                defer { close(fd) }
                let total = 5000
                for index in 0..<total {
                    let offset = (index % 64) * 4
                    let bytes = try Sys.pread(fd: fd, path: config, offset: offset, count: 4)
                    if bytes.count != 4 {
                        Issue.record("short read at \(offset): \(bytes.count)")
                        break
                    }
                }
                let text = try mount.cat(Bench.trace)
                #expect(text.utf8.count <= 4095, "one page: \(text.utf8.count) bytes")
                #expect(text.utf8.count > 4095 - 100, "cut as late as a whole line allows: \(text.utf8.count) bytes")
                #expect(text.hasSuffix("\n"))
                let lines = text.split(separator: "\n").map(String.init)
                let sequences = lines.compactMap(Bench.sequence)
                #expect(sequences.count == lines.count, "every line is whole")
                #expect(sequences.last == UInt64(total), "the newest is last")
                if let first = sequences.first {
                    #expect(sequences == Array(first...UInt64(total)), "contiguous, oldest dropped first")
                }
                let lastOffset = (total - 1) % 64 * 4
                #expect(lines.last?.contains("op=conf_read off=0x\(String(lastOffset, radix: 16)) size=4") == true,
                        "\(lines.last ?? "")")
                // The log file holds every verdict, the ring is not its limit.
                let json = try String(contentsOfFile: jsonPath, encoding: .utf8).split(separator: "\n")
                #expect(json.count == total)
                if let last = json.last {
                    let object = try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any]
                    #expect(object?["seq"] as? Int == total)
                    #expect(object?["offset"] as? Int == (total - 1) % 64 * 4)
                }
            }
        }

        @Test("kernel log: permissive's two warnings, and the dropped-write warning once per binding")
        func kernelMessages() throws {
            try withDaemon(["--hide", "(\(Bench.nic))"]) { mount throws in
                let nic = Bench.nic
                let warning = "pciback \(nic): Driver tried to write to a read-only configuration space field at offset 0x6, size 2."
                Bench.attach(mount, 5, nic)
                let status = try mount.hostConfig(nic, 0x06, 2)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x6 2 0xffff").err == 0)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x6 2 0xffff").err == 0)
                #expect(try mount.hostConfig(nic, 0x06, 2) == status, "dropped: the status register is untouched")
                var log = try mount.cat(Bench.log)
                #expect(Bench.occurrences(of: warning, in: log) == 1, "\(log)")
                #expect(log.contains(warning + " This may be harmless, but if you have problems with your device:\n"
                                     + "1) see permissive attribute in sysfs\n"
                                     + "2) report problems to the xen-devel mailing list along with details of your device obtained from lspci."),
                        "\(log)")
                // A release keeps warned_on_write; a new binding starts afresh.
                #expect(mount.echo("5 \(nic)\n", "fs/pcibackfs/detach") == .written(15))
                Bench.attach(mount, 5, nic)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x6 2 0xffff").err == 0)
                #expect(Bench.occurrences(of: warning, in: try mount.cat(Bench.log)) == 1)
                #expect(mount.echo("5 \(nic)\n", "fs/pcibackfs/detach") == .written(15))
                #expect(mount.libxlWrite(nic, "\(Bench.pciback)/unbind") == .written(12))
                #expect(mount.libxlWrite(nic, "\(Bench.pciback)/bind") == .written(12))
                Bench.attach(mount, 5, nic)
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x6 2 0xffff").err == 0)
                #expect(Bench.occurrences(of: warning, in: try mount.cat(Bench.log)) == 2)

                // permissive: two warnings on the first transition only, in the kernel's order.
                let enabling = "pciback \(nic): enabling permissive mode configuration space accesses!"
                let unsafe = "pciback \(nic): permissive mode is potentially unsafe!"
                #expect(mount.libxlWrite(nic, "\(Bench.pciback)/permissive") == .written(12))
                log = try mount.cat(Bench.log)
                let lines = log.split(separator: "\n").map(String.init)
                if let index = lines.firstIndex(of: enabling) {
                    #expect(index + 1 < lines.count && lines[index + 1] == unsafe, "\(log)")
                } else {
                    Issue.record("no permissive warning in the log:\n\(log)")
                }
                #expect(mount.libxlWrite(nic, "\(Bench.pciback)/permissive") == .written(12))
                log = try mount.cat(Bench.log)
                #expect(Bench.occurrences(of: enabling, in: log) == 1)
                #expect(Bench.occurrences(of: unsafe, in: log) == 1)
                #expect(try mount.cat("\(Bench.pciback)/permissive") == "\(nic)\n")
                // In permissive mode the status write reaches the hardware and warns no more.
                #expect(try mount.pciOp(5, "conf_write 00:00.0 0x6 2 0x0").err == 0)
                #expect(Bench.occurrences(of: warning, in: try mount.cat(Bench.log)) == 2)
            }
        }

    }

    // MARK: - --legacy-modes

    @Suite("--legacy-modes", .serialized, .requiresDaemonMount, .timeLimit(.minutes(1)))
    struct LegacyModes {
        @Test("pciback's attributes: 0400/0600 with --legacy-modes, 0444/0644 without; write-only stays 0200")
        func modes() throws {
            let writeOnly = ["new_slot", "remove_slot", "bind", "unbind", "new_id", "remove_id", "irq_handler_state", "uevent"]
            try withDaemon(["--legacy-modes"]) { mount throws in
                for (name, mode) in [("slots", mode_t(0o400)), ("irq_handlers", 0o400), ("quirks", 0o600),
                                     ("permissive", 0o600), ("allow_interrupt_control", 0o600)] {
                    #expect(Bench.mode(mount, "\(Bench.pciback)/\(name)") == mode, "\(name)")
                }
                for name in writeOnly {
                    #expect(Bench.mode(mount, "\(Bench.pciback)/\(name)") == 0o200, "\(name)")
                }
                // The modes still work for root: read the 0400 files, store into the 0600 ones.
                #expect(Bench.seize(mount, Bench.nic, from: "igb") == .written(12))
                #expect(try mount.cat("\(Bench.pciback)/slots") == "\(Bench.nic)\n")
                #expect(mount.libxlWrite(Bench.nic, "\(Bench.pciback)/permissive") == .written(12))
                #expect(try mount.cat("\(Bench.pciback)/permissive") == "\(Bench.nic)\n")
                #expect(Sys.openError(mount.path("\(Bench.pciback)/slots"), O_WRONLY) == EACCES)
            }
            try withDaemon { mount throws in
                for (name, mode) in [("slots", mode_t(0o444)), ("irq_handlers", 0o444), ("quirks", 0o644),
                                     ("permissive", 0o644), ("allow_interrupt_control", 0o644)] {
                    #expect(Bench.mode(mount, "\(Bench.pciback)/\(name)") == mode, "\(name)")
                }
                for name in writeOnly {
                    #expect(Bench.mode(mount, "\(Bench.pciback)/\(name)") == 0o200, "\(name)")
                }
            }
        }
    }

    // MARK: - Machine capture

    @Suite("machine capture", .serialized, .timeLimit(.minutes(1)))
    struct MachineCapture {
        @Test("this host's devices, captured and mounted, give the host's lspci -vvv and -xxxx",
              .requiresDaemonMount, .disabled(if: Bench.cannotCaptureHost, "needs lspci and PCI devices in /sys/bus/pci"))
        func hostCapture() throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-capture")
            defer { Temporary.remove(directory) }
            let file = directory + "/host.json"
            // Issue 12: lspci -vvv -nn -D -xxxx through the mount equals the host's, every line
            // (stricter than the dump comparison: the capture has the host's sysfs-only facts too).
            let options = ["-vvv", "-nn", "-D", "-xxxx"]
            let hostVerbose = Subprocess.run("lspci", options)
            let hostHex = Subprocess.run("lspci", ["-xxxx"])
            #expect(hostVerbose.succeeded && hostHex.succeeded)
            let capture = Bench.daemon(["capture", "-o", file])
            try #require(capture.succeeded, "\(capture)")
            let data = try Data(contentsOf: URL(fileURLWithPath: file))
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            let devices = try #require(object?["devices"] as? [[String: Any]])
            #expect(devices.compactMap { $0["address"] as? String } == Bench.hostDeviceNames)
            try withDaemon(["--machine", file]) { mount throws in
                #expect(try mount.list("bus/pci/devices").sorted() == Bench.hostDeviceNames)
                let verbose = mount.pciutils("lspci", options)
                #expect(verbose.succeeded, "\(verbose)")
                #expect(verbose.stdout == hostVerbose.stdout, "lspci -vvv -nn -D -xxxx: host vs captured mount\n\(verbose.stdout)")
                let hex = mount.pciutils("lspci", ["-xxxx"])
                #expect(hex.succeeded, "\(hex)")
                #expect(hex.stdout == hostHex.stdout, "lspci -xxxx: host vs captured mount\n\(hex.stdout)")
                for name in Bench.hostDeviceNames {
                    let host = try Sys.readBytes(Bench.hostDevicesDirectory + "/\(name)/config")
                    #expect(try Sys.readBytes(mount.path("bus/pci/devices/\(name)/config")) == host, "\(name) config")
                }
            }
        }

        @Test("capture of selected functions holds just those, and they mount",
              .requiresDaemonMount, .disabled(if: Bench.cannotCaptureHost, "needs lspci and PCI devices in /sys/bus/pci"))
        func selectedFunctions() throws {
            let names = Bench.hostDeviceNames
            let chosen = names.count > 1 ? [names[names.count - 1], names[0]] : [names[0]]
            let directory = Temporary.directory(prefix: "pcibackfs-bench-capture")
            defer { Temporary.remove(directory) }
            let file = directory + "/some.json"
            let capture = Bench.daemon(["capture", "-o", file] + chosen)
            try #require(capture.succeeded, "\(capture)")
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
            let devices = try #require(object?["devices"] as? [[String: Any]])
            #expect(Set(devices.compactMap { $0["address"] as? String }) == Set(chosen))
            #expect(devices.count == chosen.count)
            // Without -o: the same JSON on standard output.
            let toStdout = Bench.daemon(["capture", chosen[0]])
            #expect(toStdout.succeeded, "\(toStdout)")
            let single = try JSONSerialization.jsonObject(with: Data(toStdout.stdoutBytes)) as? [String: Any]
            #expect((single?["devices"] as? [[String: Any]])?.compactMap { $0["address"] as? String } == [chosen[0]])
            try withDaemon(["--machine", file]) { mount throws in
                #expect(try mount.list("bus/pci/devices").sorted() == chosen.sorted())
                for name in chosen {
                    let host = Subprocess.run("lspci", ["-s", name, "-vvv", "-xxxx"])
                    let mounted = mount.pciutils("lspci", ["-s", name, "-vvv", "-xxxx"])
                    #expect(mounted.succeeded, "\(mounted)")
                    #expect(mounted.stdout == host.stdout, "\(name): host vs captured mount\n\(mounted.stdout)")
                }
            }
        }

        @Test("an unknown or malformed function name is a clear error with a non-zero exit, and no file")
        func unknownFunction() throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-capture")
            defer { Temporary.remove(directory) }
            let file = directory + "/none.json"
            let unknown = Bench.daemon(["capture", "-o", file, "0000:7f:1f.7"])
            #expect(!unknown.timedOut)
            #expect(unknown.status != 0, "\(unknown)")
            #expect(unknown.stderr.contains("no function 0000:7f:1f.7"), "\(unknown)")
            #expect(access(file, F_OK) != 0, "nothing written")
            let malformed = Bench.daemon(["capture", "-o", file, "03:00.0.1"])
            #expect(malformed.status != 0, "\(malformed)")
            #expect(malformed.stderr.contains("03:00.0.1"), "\(malformed)")
            #expect(access(file, F_OK) != 0)
            if FileManager.default.fileExists(atPath: Bench.dumpFile) {
                let fromDump = Bench.daemon(["capture", "--lspci-dump", Bench.dumpFile, "0000:02:00.0"])
                #expect(fromDump.status != 0, "\(fromDump)")
                #expect(fromDump.stderr.contains("no function 0000:02:00.0"), "\(fromDump)")
            }
        }

        @Test("capture --lspci-dump: the dump's bytes, BARs, IRQ and driver; the machine mounts and lspci agrees",
              .requiresDaemonMount, .requiresTool("lspci"))
        func dumpCapture() throws {
            let dump = Bench.dumpFile
            try #require(FileManager.default.fileExists(atPath: dump), "\(dump) is missing")
            let directory = Temporary.directory(prefix: "pcibackfs-bench-capture")
            defer { Temporary.remove(directory) }
            let file = directory + "/nic.json"
            let capture = Bench.daemon(["capture", "--lspci-dump", dump, "-o", file, "0000:01:00.0"])
            try #require(capture.succeeded, "\(capture)")

            // The dump's own bytes, read here from its hex lines.
            let text = try String(contentsOfFile: dump, encoding: .utf8)
            var dumpBytes: [UInt8] = []
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ")
                guard parts.count == 17, parts[0].hasSuffix(":"), UInt32(parts[0].dropLast(), radix: 16) != nil else { continue }
                dumpBytes += parts.dropFirst().compactMap { UInt8($0, radix: 16) }
            }
            #expect(dumpBytes.count == 4096)
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
            let devices = try #require(object?["devices"] as? [[String: Any]])
            try #require(devices.count == 1)
            let entry = devices[0]
            #expect(entry["address"] as? String == "0000:01:00.0")
            #expect(entry["driver"] as? String == "igb")
            #expect(entry["irq"] as? Int == 16)
            let hex = entry["config"] as? String ?? ""
            #expect(hex == dumpBytes.map { Hex.format(UInt64($0), width: 2) }.joined())
            let bars = (entry["bars"] as? [[String: Any]] ?? []).compactMap { bar -> String? in
                guard let index = bar["index"] as? Int, let size = bar["size"] as? Int, let kind = bar["kind"] as? String else { return nil }
                return "\(index):\(kind):\(size)"
            }
            #expect(bars == ["0:memory32:131072", "1:memory32:4194304", "2:io:32", "3:memory32:16384", "6:rom:4194304"])

            try withDaemon(["--machine", file]) { mount throws in
                // The dump is a snapshot (issue 12): its PF shows VF Enable with NumVFs 1, so its VF
                // is there too, at RID(PF) + First VF Offset (sriov.md §3.1), unbound.
                let vfs = try mount.list("bus/pci/devices").filter { $0 != "0000:01:00.0" }
                #expect(vfs.count == 1)
                for vf in vfs { #expect(try mount.readlink("bus/pci/devices/\(vf)/physfn") == "../0000:01:00.0") }
                #expect(mount.driver(of: "0000:01:00.0") == "igb")
                // Config bytes: the dump's, every one (no boot-time SR-IOV pass for a snapshot).
                let fromDump = Subprocess.run("lspci", ["-F", dump, "-xxxx"])
                let fromMount = mount.pciutils("lspci", ["-xxxx"])
                #expect(fromDump.succeeded && fromMount.succeeded, "\(fromDump)\n\(fromMount)")
                let expected = Bench.hexLines(fromDump.stdout)
                let actual = Bench.hexLines(fromMount.stdout).filter { $0.key.hasPrefix("01:00.0/") }
                #expect(expected.count == 256 && actual.count == 256, "\(expected.count) / \(actual.count) hex lines")
                let differing = Set(expected.keys).union(actual.keys).filter { expected[$0] != actual[$0] }
                #expect(differing.isEmpty, "\(differing.sorted())")
                let config = try Sys.readBytes(mount.path("bus/pci/devices/0000:01:00.0/config"))
                #expect(config == dumpBytes)
                // What only the dump's text held: BAR sizes, the IRQ, the driver.
                let verbose = mount.pciutils("lspci", ["-vvv"])
                #expect(verbose.succeeded, "\(verbose)")
                let mountedLines = Set(verbose.stdout.split(separator: "\n").map(String.init))
                let dumpLines = text.split(separator: "\n").map(String.init).filter {
                    $0.hasPrefix("\tRegion ") || $0.hasPrefix("\tExpansion ROM") || $0.hasPrefix("\tInterrupt: ")
                        || $0.hasPrefix("\tKernel driver in use: ")
                }
                #expect(dumpLines.count == 7)
                for line in dumpLines {
                    #expect(mountedLines.contains(line), "lspci -vvv of the mount lacks \(line.debugDescription)")
                }
            }
        }
    }

    // MARK: - Service use

    @Suite("service use", .serialized, .timeLimit(.minutes(1)))
    struct Service {
        @Test("scripts/systemd/pcibackfsd.service is a Type=notify unit running pcibackfsd")
        func unitFile() throws {
            let path = MountEnvironment.packageRoot + "/scripts/systemd/pcibackfsd.service"
            let text = try String(contentsOfFile: path, encoding: .utf8)
            var section = ""
            var service: [String: String] = [:]
            for raw in text.split(separator: "\n") {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.hasPrefix("#") || line.isEmpty { continue }
                if line.hasPrefix("[") { section = line; continue }
                guard section == "[Service]", let equals = line.firstIndex(of: "=") else { continue }
                service[String(line[..<equals])] = String(line[line.index(after: equals)...])
            }
            #expect(service["Type"] == "notify", "\(service)")
            #expect(service["ExecStart"]?.contains("pcibackfsd") == true, "\(service)")
        }

        @Test("NOTIFY_SOCKET: READY=1 once the mount answers; SIGTERM sends STOPPING=1, unmounts, exits 0",
              .requiresDaemonMount, arguments: [false, true])
        func readiness(abstract: Bool) throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-notify")
            chmod(directory, 0o755)
            let mountPoint = directory + "/mnt"
            mkdir(mountPoint, 0o755)
            let socketName = abstract ? "@pcibackfs-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" : directory + "/notify"
            let notify = try NotifySocket(name: socketName)
            let pid = try Subprocess.spawn("env", ["NOTIFY_SOCKET=" + socketName, MountEnvironment.daemonPath, mountPoint],
                                           stdoutPath: directory + "/stdout", stderrPath: directory + "/stderr")
            var reaped = false
            defer {
                _ = Subprocess.run("fusermount3", ["-u", "-z", mountPoint], timeout: 5)
                if !reaped {
                    kill(pid, SIGKILL)
                    _ = Subprocess.wait(pid, until: Date().addingTimeInterval(5))
                }
                rmdir(mountPoint)
                Temporary.remove(directory)
            }
            func daemonLog() -> String {
                ((try? String(contentsOfFile: directory + "/stderr", encoding: .utf8)) ?? "")
            }
            let ready = notify.receive(timeout: 15)
            // The mount must answer as soon as READY=1 has arrived.
            let profile = try? Sys.cat(mountPoint + "/fs/pcibackfs/profile")
            let pciback = Sys.statError(mountPoint + "/bus/pci/drivers/pciback")
            let message = try #require(ready, "no notification within 15 s\n\(daemonLog())")
            let fields = message.split(separator: "\n").map(String.init)
            #expect(fields.contains("READY=1"), "\(message)")
            #expect(fields.contains("MAINPID=\(pid)"), "\(message)")
            #expect(profile == "current\n", "the mount did not answer when READY=1 arrived")
            #expect(pciback == 0)
            #expect(Bench.isMountPoint(mountPoint))
            #expect(notify.receive(timeout: 0.2) == nil, "one notification at start-up")

            kill(pid, SIGTERM)
            let stopping = notify.receive(timeout: 10)
            #expect(stopping?.split(separator: "\n").contains("STOPPING=1") == true, "\(stopping ?? "nothing")")
            let status = Subprocess.wait(pid, until: Date().addingTimeInterval(10))
            reaped = status != nil
            #expect(status == 0, "exit status after SIGTERM: \(status.map(String.init) ?? "still running")\n\(daemonLog())")
            #expect(!Bench.isMountPoint(mountPoint), "unmounted on SIGTERM")
            #expect(Sys.statError(mountPoint + "/bus") == ENOENT)
        }

        @Test("the README's unshare recipe works as an unprivileged user (or the kernel's refusal is explained)",
              .requiresDaemonMount, .requiresTool("setpriv"), .requiresTool("unshare"))
        func unprivilegedUserNamespace() throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-userns")
            defer { Temporary.remove(directory) }
            chmod(directory, 0o755)
            let daemon = directory + "/pcibackfsd"
            // Copied by cp(1), not in process: a child forked meanwhile by a test running in
            // parallel would inherit our write descriptor and make exec fail with ETXTBSY.
            let copy = Subprocess.run("cp", [MountEnvironment.daemonPath, daemon], timeout: 20)
            try #require(copy.status == 0, "\(copy)")
            chmod(daemon, 0o755)
            let mountPoint = directory + "/mnt"
            mkdir(mountPoint, 0o755)
            chown(mountPoint, 65534, 65534)
            let script = """
                "$1" "$2" & pid=$!
                i=0
                while [ ! -e "$2/bus/pci/drivers/pciback" ]; do
                  if ! kill -0 $pid 2>/dev/null; then wait $pid; echo "daemon-exited $?"; exit 0; fi
                  i=$((i+1)); if [ $i -gt 1000 ]; then echo "not-served"; kill -9 $pid; exit 1; fi
                  sleep 0.01
                done
                echo "uid $(id -u)"
                cat "$2/fs/pcibackfs/profile"
                readlink "$2/bus/pci/devices/0000:03:00.0/driver"
                od -An -tx1 -N4 "$2/bus/pci/devices/0000:03:00.0/config"
                kill -TERM $pid; wait $pid; echo "daemon-status $?"
                echo "mounted-after $(grep -c " $2 " /proc/self/mountinfo)"
                """
            let result = Subprocess.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-Urm",
                                                    "sh", "-c", script, "sh", daemon, mountPoint], timeout: 40)
            #expect(!result.timedOut, "\(result)")
            if result.stderr.contains("unshare failed") {
                // User namespaces themselves are refused here: the recipe cannot run at all.
                print("TestBenchTests: unprivileged user namespaces are disabled here; the recipe was not run:\n\(result.stderr)")
                return
            }
            if result.stdout.contains("daemon-exited") {
                // The kernel refuses FUSE in the namespace: the daemon must say so.
                #expect(result.stdout.contains("daemon-exited 1"), "\(result)")
                #expect(result.stderr.contains("pcibackfsd: cannot mount on \(mountPoint): Operation not permitted"), "\(result)")
                return
            }
            #expect(result.succeeded, "\(result)")
            let lines = result.stdout.split(separator: "\n").map(String.init)
            #expect(lines == ["uid 0", "current", "../../../../bus/pci/drivers/igb", " 86 80 c9 10", "daemon-status 0",
                              "mounted-after 0"], "\(result)")
            #expect(!Bench.isMountPoint(mountPoint), "the mount lived in the private namespace only")
        }

        @Test("where the kernel refuses the mount, the daemon exits 1 and says why",
              .requiresDaemonMount, .requiresTool("setpriv"), .requiresTool("unshare"))
        func refusedMount() throws {
            let directory = Temporary.directory(prefix: "pcibackfs-bench-userns")
            defer { Temporary.remove(directory) }
            chmod(directory, 0o755)
            let daemon = directory + "/pcibackfsd"
            // Copied by cp(1), not in process: a child forked meanwhile by a test running in
            // parallel would inherit our write descriptor and make exec fail with ETXTBSY.
            let copy = Subprocess.run("cp", [MountEnvironment.daemonPath, daemon], timeout: 20)
            try #require(copy.status == 0, "\(copy)")
            chmod(daemon, 0o755)
            let mountPoint = directory + "/mnt"
            mkdir(mountPoint, 0o755)
            chown(mountPoint, 65534, 65534)
            // A user namespace without its own mount namespace: the kernel refuses mount(2), and
            // the set-uid fusermount3 gains nothing there.
            let result = Subprocess.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "unshare", "-Ur",
                                                    daemon, mountPoint], timeout: 20)
            defer { _ = Subprocess.run("fusermount3", ["-u", "-z", mountPoint], timeout: 5) }
            if result.stderr.contains("unshare failed") {
                print("TestBenchTests: unprivileged user namespaces are disabled here:\n\(result.stderr)")
                return
            }
            #expect(!result.timedOut, "the mount was not refused: \(result)")
            #expect(result.status == 1, "\(result)")
            #expect(result.stderr.contains("pcibackfsd: cannot mount on \(mountPoint): Operation not permitted"), "\(result)")
            #expect(result.stderr.contains("unshare -Urm"), "the message names the remedy: \(result)")
        }

        @Test("pcibackfsd --version prints the version")
        func version() {
            let result = Bench.daemon(["--version"], timeout: 20)
            #expect(result.succeeded, "\(result)")
            #expect(result.stdout == PCIBackFSVersion.string + "\n", "\(result)")
        }
    }
}

#endif
