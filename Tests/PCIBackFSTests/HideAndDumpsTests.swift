import Foundation
import Testing

@testable import PCIBackFS

#if canImport(Glibc)
import Glibc
#endif

// Issue 12 items 4, 5 and 8, from the kernel's rules:
// * `hide` that xen-pciback's init rejects (pciback.md §2 "hide grammar", `pcistub_init`; range
//   checks of `pcistub_device_id_add`, §1.4): the driver never registers, dom0 runs without it.
// * Boot-time seizing is `pcistub_probe` run as the driver registers (§1.10, §3.2, §3.4): the
//   same messages as a later bind, the device appended to the device list.
// * Dumps from older systems (clients.md §5.2, lspci's "Kernel driver in use: %s" is the driver
//   link's name, any text) and captured pciback bindings, which replay seized.

// MARK: - Fixtures

private enum HideFixture {
    static let cardbusAddress = PCIAddress(bus: 0, slot: 0x0a, function: 0)

    /// A CardBus bridge (header type 2) on the root bus, bound to its own driver at boot.
    static func cardbusBridge() -> EmulatedDevice {
        var builder = DeviceBuilder(address: cardbusAddress, headerType: .cardbus, express: false,
                                    identity: .init(vendor: 0x1180, device: 0x0476, classCode: 0x060700))
        builder.bootDriver = "yenta_cardbus"
        return builder.build(firmwareCommand: 0)
    }

    /// Fixture A's machine with a CardBus bridge, the device at 03:00.0 bound to `driver`.
    static func machine(hostDriver: String? = "e1000e", prepare: (EmulatedDevice) -> Void = { _ in }) -> Machine {
        let device = FixtureA.makeDevice()
        device.bootDriver = hostDriver
        prepare(device)
        var devices = FixtureA.makeMachine(device: device).devices.values.map { $0 }
        devices.append(cardbusBridge())
        return Machine(name: "hide-fixture", devices: devices.sorted { $0.address < $1.address })
    }

    static func log(_ dom0: Dom0) -> [String] { dom0.log.lines }
}

/// A dump of one 256-byte conventional function with `details` lines (lspci -vvv text).
private func conventionalDump(_ address: String, details: [String]) -> String {
    var config = [UInt8](repeating: 0, count: 256)
    config[0] = 0x86; config[1] = 0x80; config[2] = 0x5b; config[3] = 0x26  // 8086:265b
    config[0x0a] = 0x03; config[0x0b] = 0x04  // class 0403 (HDA)
    config[0x3d] = 0x01
    var text = address + " Audio device: Intel Corporation 82801FB/FBM/FR/FW/FRW (ICH6 Family) High Definition Audio Controller\n"
    for line in details { text += line + "\n" }
    for offset in stride(from: 0, to: 256, by: 16) {
        text += String(format: "%02x:", offset) + config[offset..<offset + 16].map { String(format: " %02x", $0) }.joined() + "\n"
    }
    return text + "\n"
}

// MARK: - Unit tests

@Suite("Issue 12: hide failures, boot-time seizes, old and pciback dumps")
struct HideAndDumpsTests {
    struct HideFailureRow: Sendable, CustomTestStringConvertible {
        var hide: String
        /// The kernel's message (after "xen_pciback: "), nil when init fails silently.
        var message: String?
        var testDescription: String { "hide=\"\(hide)\"" }
    }

    /// §2: groups parse one at a time with " (...) %n"; the trailing space of a group's format
    /// eats the whitespace after it, so "the rest" starts at the failing group's first
    /// character unless it is the first group (then the leading whitespace is part of it).
    /// A group out of range (§1.4) fails init with -EINVAL and no message, and it fails before a
    /// later group that does not parse is reached.
    static func parseError(_ rest: String) -> String { "Error parsing pci_devs_to_hide at \"\(rest)\"" }

    static let hideFailures: [HideFailureRow] = ([
        "(03:00.0) junk": parseError("junk"),
        "(03:00.0)   \t(xx)": parseError("(xx)"),
        "(0000:03:00.0)(03:00.1": parseError("(03:00.1"),
        "  (03:*.1)": parseError("  (03:*.1)"),
        "(03:00.0);(04:00.0) (05:00.0)": parseError(";(04:00.0) (05:00.0)"),
        "0000:03:00.0": parseError("0000:03:00.0"),
        // Range errors: silent.
        "(0000:100:00.0)": nil, "(10000:00:00.0)": nil, "(03:20.0)": nil, "(03:00.8)": nil,
        "(03:00.0)(0000:100:*.*)": nil, "(0000:100:00.0) junk": nil,
    ] as [String: String?]).map { HideFailureRow(hide: $0.key, message: $0.value) }.sorted { $0.hide < $1.hide }

    @Test("§2 pcistub_init: a hide parse or range error keeps pciback from registering", arguments: hideFailures)
    func hideFailure(_ row: HideFailureRow) throws {
        let failure: PcibackLoadFailure
        switch Dom0.hideSeizeList(row.hide) {
        case .success(let list): Issue.record("accepted: \(list)"); return
        case .failure(let reason): failure = reason
        }
        #expect(failure.errno == .invalidArgument)
        #expect(failure.kernelMessage == row.message)

        let dom0 = try Dom0(machine: HideFixture.machine(), hide: row.hide)
        #expect(dom0.pcibackLoadFailure == failure)
        #expect(dom0.driver(named: PCIDriver.pcibackName) == nil)
        #expect(dom0.hideParameter == row.hide)
        // The log holds the kernel's line and nothing about pciback otherwise.
        #expect(dom0.log.lines == row.message.map { ["xen_pciback: " + $0] } ?? [])
        // Every other driver runs: the hidden device is bound to its own driver.
        #expect(dom0.driverName(of: FixtureA.host) == "e1000e")
        #expect(dom0.driverName(of: FixtureA.rootPort) == "pcieport")
        // --strict-hide: init throws the kernel's errno instead.
        #expect(storeError { _ = try Dom0(machine: HideFixture.machine(), hide: row.hide, strictHide: true) } == .invalidArgument)
    }

    @Test("a hide that init accepts: pciback registers, even with --strict-hide", arguments: ["", "(03:00.0)", " (0000:03:*.*) "])
    func hideAccepted(_ hide: String) throws {
        let dom0 = try Dom0(machine: HideFixture.machine(), hide: hide, strictHide: true)
        #expect(dom0.pcibackLoadFailure == nil)
        #expect(dom0.driver(named: PCIDriver.pcibackName) != nil)
        #expect(dom0.isBoundToPciback(FixtureA.host) == !hide.isEmpty)
    }

    struct ModuleRow: Sendable, CustomTestStringConvertible {
        var build: ModuleBuild
        var hide: String
        /// The drivers module/xen_pciback lists, nil when there is no such directory.
        var pcibackDrivers: [String]?
        var testDescription: String { "\(build.rawValue), hide=\"\(hide)\"" }
    }

    /// A loadable module whose init fails is unloaded (modprobe fails); a built-in one keeps the
    /// directory its parameters gave it (param_sysfs_builtin) without `drivers/`, which only
    /// module_add_driver creates.
    static let moduleRows: [ModuleRow] = [
        ModuleRow(build: .module, hide: "(03:00.0)", pcibackDrivers: ["pciback"]),
        ModuleRow(build: .builtin, hide: "(03:00.0)", pcibackDrivers: ["pciback"]),
        ModuleRow(build: .module, hide: "(03:00.0) x", pcibackDrivers: nil),
        ModuleRow(build: .builtin, hide: "(03:00.0) x", pcibackDrivers: []),
        ModuleRow(build: .module, hide: "(03:20.0)", pcibackDrivers: nil),
        ModuleRow(build: .builtin, hide: "(03:20.0)", pcibackDrivers: []),
    ]

    @Test("module/xen_pciback after a failed init, per build", arguments: moduleRows)
    func moduleDirectory(_ row: ModuleRow) throws {
        let dom0 = try Dom0(machine: HideFixture.machine(), hide: row.hide)
        let entry = dom0.moduleDirectories(pcibackBuild: row.build).first { $0.module.name == "xen_pciback" }
        #expect(entry?.drivers == row.pcibackDrivers)
        #expect(dom0.moduleDirectories(pcibackBuild: row.build).contains { $0.module.name == "e1000e" })
    }

    @Test("no backend without pciback: attach, detach and pci_op answer ENODEV")
    func noBackend() throws {
        var dom0 = try Dom0(machine: HideFixture.machine(hostDriver: nil), hide: "(03:00.0) x")
        let caller = Caller(uid: 0, gid: 0, pid: 1)
        #expect(storeError { try dom0.store(.control(.attach), input: bytes("1 0000:03:00.0\n"), caller: caller) } == .noSuchDevice)
        #expect(storeError { try dom0.store(.control(.detach), input: bytes("1 0000:03:00.0\n"), caller: caller) } == .noSuchDevice)
        #expect(storeError { _ = try dom0.performOperationLine(bytes("conf_read 00:00.0 0 4\n"), frontend: 1) } == .noSuchDevice)
        // driver_override=pciback finds no driver: the device stays unbound (§1.10 bind).
        try dom0.setDriverOverride(FixtureA.host, input: bytes("pciback\n"))
        try dom0.driversProbe(input: bytes(FixtureA.name))
        #expect(dom0.driverName(of: FixtureA.host) == nil)
    }

    // MARK: Boot-time seizes (item 5)

    struct BootRow: Sendable, CustomTestStringConvertible {
        var name: String
        var hide: String
        var enableFails = false
        var log: [String]
        var pciback: [PCIAddress]
        var testDescription: String { name }
    }

    /// §1.10: pcistub_probe logs "seizing device" for each function it takes and refuses
    /// header types other than 0 and 1 with its message (the function's own driver then
    /// probes it); §3.2: initialisation errors are logged, and at boot
    /// (pcistub_init_devices_late) the device is dropped. §3.4: boot seizes are appended, in
    /// enumeration order.
    static let bootRows: [BootRow] = [
        BootRow(name: "one hidden device", hide: "(0000:03:00.0)",
                log: ["pciback 0000:03:00.0: seizing device"], pciback: [FixtureA.host]),
        BootRow(name: "a hidden bridge seizes what is behind it, in enumeration order", hide: "(00:1c.0)",
                log: ["pciback 0000:00:1c.0: seizing device", "pciback 0000:03:00.0: seizing device"],
                pciback: [FixtureA.rootPort, FixtureA.host]),
        BootRow(name: "a hidden CardBus bridge is refused with the header-type message", hide: "(00:0a.0)",
                log: ["pciback 0000:00:0a.0: can't export pci devices that don't have a normal (0) or bridge (1) header type!"],
                pciback: []),
        BootRow(name: "an initialisation error is logged and the device dropped", hide: "(03:00.0)", enableFails: true,
                log: ["pciback 0000:03:00.0: seizing device", "pciback 0000:03:00.0: could not enable or reset the device (-22)",
                      "pciback 0000:03:00.0: error -22 initializing device"],
                pciback: []),
    ]

    @Test("boot-time seizes log what a probe logs", arguments: bootRows)
    func bootSeizeLog(_ row: BootRow) throws {
        let machine = HideFixture.machine { if row.enableFails { $0.faults.enableFails = .sticky } }
        let dom0 = try Dom0(machine: machine, hide: row.hide)
        #expect(dom0.log.lines == row.log)
        #expect(dom0.pcibackDevices == row.pciback)
        #expect(dom0.driverName(of: HideFixture.cardbusAddress) == "yenta_cardbus")
    }

    // MARK: Dumps (item 8)

    struct DriverLineRow: Sendable, CustomTestStringConvertible {
        var line: String
        var driver: String?
        var testDescription: String { line }
    }

    /// lspci prints "Kernel driver in use: %s" with the `driver` link's last component: any
    /// text (older kernels: "HDA Intel", "Intel ICH"), never a '/' (kobject names turn it into
    /// '!'). "Kernel modules:" is a list of module names the importer does not use.
    static let driverLines: [DriverLineRow] = [
        DriverLineRow(line: "\tKernel driver in use: HDA Intel", driver: "HDA Intel"),
        DriverLineRow(line: "\tKernel driver in use: Intel ICH", driver: "Intel ICH"),
        DriverLineRow(line: "\tKernel driver in use: snd_hda_intel", driver: "snd_hda_intel"),
        DriverLineRow(line: "\tKernel driver in use: pciback", driver: "pciback"),
        DriverLineRow(line: "\tKernel driver in use: a/b", driver: "a!b"),
        DriverLineRow(line: "\tKernel driver in use:", driver: nil),
        DriverLineRow(line: "\tKernel modules: snd-hda-intel, snd hda intel", driver: nil),
    ]

    @Test("Kernel driver in use: any text", arguments: driverLines)
    func driverLine(_ row: DriverLineRow) throws {
        let function = try #require(try LspciDump.parse(conventionalDump("00:1b.0", details: [row.line])).first)
        #expect(function.driver == row.driver)
    }

    struct ReplayRow: Sendable, CustomTestStringConvertible {
        var name: String
        var hide: String
        var slots: String
        var pciback: [PCIAddress]
        var testDescription: String { name }
    }

    /// A captured pciback binding replays as a boot seize: its exact BDF appended to the seize
    /// list after hide's entries (pcistub_device_id_add_list drops an exact duplicate, §1.4),
    /// bound to pciback and appended to the device list (§3.4). Without pciback it stays unbound.
    static let replayRows: [ReplayRow] = [
        ReplayRow(name: "alone", hide: "", slots: "0000:03:00.0\n", pciback: [FixtureA.host]),
        ReplayRow(name: "after hide's entries", hide: "(00:1c.0)", slots: "0000:00:1c.0\n0000:03:00.0\n",
                  pciback: [FixtureA.rootPort, FixtureA.host]),
        ReplayRow(name: "an entry hide already has is not listed twice", hide: "(03:00.0)", slots: "0000:03:00.0\n",
                  pciback: [FixtureA.host]),
        ReplayRow(name: "a hide parse error leaves it unbound", hide: "(03:00.0", slots: "", pciback: []),
    ]

    @Test("a captured pciback binding replays seized", arguments: replayRows)
    func pcibackReplay(_ row: ReplayRow) throws {
        let captured = CapturedFunction(address: FixtureA.host, config: FixtureA.makeDevice().config.bytes, bars: [], irq: 43,
                                        driver: "pciback", name: "captured")
        let device = DeviceImporter.device(from: captured)
        #expect(device.bootDriver == "pciback")
        #expect(!device.isEnabled)
        let dom0 = try Dom0(machine: FixtureA.makeMachine(device: device), hide: row.hide)
        #expect(shown(dom0.slotsText()) == row.slots)
        #expect(dom0.pcibackDevices == row.pciback)
        #expect(dom0.driverName(of: FixtureA.host) == (row.pciback.contains(FixtureA.host) ? "pciback" : nil))
        #expect(dom0.log.lines.contains("pciback 0000:03:00.0: seizing device") == row.pciback.contains(FixtureA.host))
    }
}

// MARK: - Through the real daemon

#if canImport(Glibc)
private let builtinDrivers = ["8139too", "igb", "nvme", "pcieport", "radeon", "xhci_hcd"]

/// Writes `text` to a new file in a temporary directory and returns its path.
private func temporaryFile(_ name: String, _ text: String) throws -> String {
    let path = Temporary.directory(prefix: "pcibackfs-hide") + "/" + name
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

@Suite("Issue 12 through the daemon: hide failures, boot seizes, old and pciback dumps", .serialized, .requiresDaemonMount,
       .timeLimit(.minutes(1)))
struct HideAndDumpsMountTests {
    struct HideMountRow: Sendable, CustomTestStringConvertible {
        var build: String
        var hide: String
        var log: String
        var stderr: [String]
        /// What module/xen_pciback lists; nil: no such directory.
        var moduleEntries: [String]?
        var testDescription: String { "--pciback-build \(build) --hide \"\(hide)\"" }
    }

    /// §2: pciback does not register; a loadable module is gone with its failed modprobe, a
    /// built-in one keeps parameters/ and uevent. A parse error is logged, a range error is not.
    static let hideMountRows: [HideMountRow] = [
        HideMountRow(build: "module", hide: "(0000:03:00.0) junk", log: "xen_pciback: Error parsing pci_devs_to_hide at \"junk\"\n",
                     stderr: ["xen_pciback: Error parsing pci_devs_to_hide at \"junk\"\n",
                              "pcibackfsd: --hide \"(0000:03:00.0) junk\": xen-pciback did not load (Invalid argument: it does not "
                                  + "parse at \"junk\"); serving without pciback (--strict-hide refuses to start instead)\n"],
                     moduleEntries: nil),
        HideMountRow(build: "builtin", hide: "(03:00.0),(03:00.1)", log: "xen_pciback: Error parsing pci_devs_to_hide at \",(03:00.1)\"\n",
                     stderr: ["xen_pciback: Error parsing pci_devs_to_hide at \",(03:00.1)\"\n"],
                     moduleEntries: ["parameters", "uevent"]),
        HideMountRow(build: "module", hide: "(0000:03:20.0)", log: "",
                     stderr: ["xen-pciback did not load (Invalid argument: group (0000:03:20.0) is out of range)"],
                     moduleEntries: nil),
        HideMountRow(build: "builtin", hide: "(0000:100:*.*)", log: "",
                     stderr: ["xen-pciback did not load (Invalid argument: group (0000:100:*.*) is out of range)"],
                     moduleEntries: ["parameters", "uevent"]),
    ]

    @Test("a hide that xen-pciback's init rejects: the machine without pciback", arguments: hideMountRows)
    func hideRejected(_ row: HideMountRow) throws {
        try withDaemon(["--pciback-build", row.build, "--hide", row.hide], ready: "fs/pcibackfs/log") { mount throws in
            #expect(!mount.exists("bus/pci/drivers/pciback"))
            #expect(try mount.list("bus/pci/drivers").sorted() == builtinDrivers)
            #expect(try mount.cat("fs/pcibackfs/log") == row.log)
            for text in row.stderr { #expect(mount.daemonLog.contains(text), "\(mount.daemonLog)") }
            if let entries = row.moduleEntries {
                #expect(try mount.list("module/xen_pciback").sorted() == entries)
                #expect(try mount.cat("module/xen_pciback/parameters/hide") == row.hide + "\n")
            } else {
                #expect(!mount.exists("module/xen_pciback"))
            }
            // dom0 and every other driver run; no backend: attach is ENODEV, no frontend appears.
            #expect(mount.driver(of: "0000:03:00.0") == "igb")
            #expect(mount.echo("1 0000:03:00.0\n", "fs/pcibackfs/attach") == .writeFailed(ENODEV))
            #expect(mount.echo("1 0000:03:00.0\n", "fs/pcibackfs/detach") == .writeFailed(ENODEV))
            #expect(try mount.list("fs/pcibackfs/frontends") == [])
            #expect(mount.echo("pciback", "devices/pci0000:00/0000:00:1c.1/0000:03:00.1/driver_override") == .written(7))
            #expect(mount.echo("0000:03:00.1", "bus/pci/devices/0000:03:00.1/driver/unbind") == .written(12))
            #expect(mount.echo("0000:03:00.1", "bus/pci/drivers_probe") == .written(12))
            #expect(mount.driver(of: "0000:03:00.1") == nil)
        }
    }

    @Test("--strict-hide refuses to start on a hide init rejects, and starts on a good one")
    func strictHide() throws {
        let directory = Temporary.directory(prefix: "pcibackfs-strict")
        defer { Temporary.remove(directory) }
        let refused = Subprocess.run(MountEnvironment.daemonPath, [directory, "--hide", "(03:00.0) junk", "--strict-hide"])
        #expect(refused.status == 1)
        #expect(refused.stderr == "xen_pciback: Error parsing pci_devs_to_hide at \"junk\"\n"
                    + "pcibackfsd: --hide \"(03:00.0) junk\": xen-pciback failed to load: Invalid argument\n")
        let range = Subprocess.run(MountEnvironment.daemonPath, [directory, "--hide", "(03:00.8)", "--strict-hide"])
        #expect(range.status == 1)
        #expect(range.stderr == "pcibackfsd: --hide \"(03:00.8)\": xen-pciback failed to load: Invalid argument\n")
        try withDaemon(["--hide", "(03:00.0)", "--strict-hide"]) { mount throws in
            #expect(mount.driver(of: "0000:03:00.0") == "pciback")
        }
    }

    @Test("boot-time seizes are in the log like a later bind (§1.10, §3.2)")
    func bootSeizeLog() throws {
        try withDaemon(["--hide", "(0000:00:1c.1)"]) { mount throws in
            #expect(try mount.cat("fs/pcibackfs/log") == "pciback 0000:00:1c.1: seizing device\n"
                        + "pciback 0000:03:00.0: seizing device\npciback 0000:03:00.1: seizing device\n")
            #expect(try mount.cat("bus/pci/drivers/pciback/slots") == "0000:00:1c.1\n")
        }
        let machine = try temporaryFile("enable-fails.json", """
            { "name": "enable fails", "devices": [
              { "address": "0000:00:1c.0", "template": "root-port", "secondaryBus": 3 },
              { "address": "0000:03:00.0", "template": "nic-82576", "faults": { "enableFails": "sticky" } } ] }
            """)
        defer { Temporary.remove((machine as NSString).deletingLastPathComponent) }
        try withDaemon(["--machine", machine, "--hide", "(0000:03:00.0)"]) { mount throws in
            #expect(try mount.cat("fs/pcibackfs/log") == "pciback 0000:03:00.0: seizing device\n"
                        + "pciback 0000:03:00.0: could not enable or reset the device (-22)\n"
                        + "pciback 0000:03:00.0: error -22 initializing device\n")
            #expect(mount.driver(of: "0000:03:00.0") == nil)
        }
    }

    @Test("a dump from an older kernel: Kernel driver in use: HDA Intel")
    func driverNameWithSpace() throws {
        let dump = try temporaryFile("hda.txt", conventionalDump("00:1b.0", details: [
            "\tKernel driver in use: HDA Intel", "\tKernel modules: snd-hda-intel"]))
        defer { Temporary.remove((dump as NSString).deletingLastPathComponent) }
        try withDaemon(["--no-builtin", "--lspci-dump", dump]) { mount throws in
            #expect(try mount.readlink("devices/pci0000:00/0000:00:1b.0/driver") == "../../../bus/pci/drivers/HDA Intel")
            #expect(try mount.list("bus/pci/drivers").sorted() == ["HDA Intel", "pciback"])
            #expect(try mount.readlink("bus/pci/drivers/HDA Intel/0000:00:1b.0") == "../../../../devices/pci0000:00/0000:00:1b.0")
        }
    }

    struct PcibackDumpRow: Sendable, CustomTestStringConvertible {
        var hide: String
        var ready: String
        var slots: String?
        var log: String
        var drivers: [String: String?]
        var testDescription: String { "--hide \"\(hide)\"" }
    }

    static let pcibackDumpRows: [PcibackDumpRow] = [
        PcibackDumpRow(hide: "", ready: DaemonMount.readyMarker, slots: "0000:00:1b.0\n",
                       log: "pciback 0000:00:1b.0: seizing device\n",
                       drivers: ["0000:00:1b.0": "pciback", "0000:00:1e.0": "HDA Intel"]),
        PcibackDumpRow(hide: "(00:1e.0)", ready: DaemonMount.readyMarker, slots: "0000:00:1e.0\n0000:00:1b.0\n",
                       log: "pciback 0000:00:1b.0: seizing device\npciback 0000:00:1e.0: seizing device\n",
                       drivers: ["0000:00:1b.0": "pciback", "0000:00:1e.0": "pciback"]),
        PcibackDumpRow(hide: "(00:1e.0", ready: "fs/pcibackfs/log", slots: nil,
                       log: "xen_pciback: Error parsing pci_devs_to_hide at \"(00:1e.0\"\n",
                       drivers: ["0000:00:1b.0": nil, "0000:00:1e.0": "HDA Intel"]),
    ]

    @Test("a dumped function bound to pciback replays seized, after hide's entries", arguments: pcibackDumpRows)
    func pcibackDump(_ row: PcibackDumpRow) throws {
        let dump = try temporaryFile("seized.txt", conventionalDump("00:1b.0", details: ["\tKernel driver in use: pciback"])
                                         + conventionalDump("00:1e.0", details: ["\tKernel driver in use: HDA Intel"]))
        defer { Temporary.remove((dump as NSString).deletingLastPathComponent) }
        try withDaemon(["--no-builtin", "--lspci-dump", dump, "--hide", row.hide], ready: row.ready) { mount throws in
            if let slots = row.slots {
                #expect(try mount.cat("bus/pci/drivers/pciback/slots") == slots)
            } else {
                #expect(!mount.exists("bus/pci/drivers/pciback"))
            }
            #expect(try mount.cat("fs/pcibackfs/log") == row.log)
            for (function, driver) in row.drivers { #expect(mount.driver(of: function) == driver, "\(function)") }
        }
    }
}
#endif
