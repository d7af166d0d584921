import Foundation
import Testing

@testable import PCIBackFS

// Class devices of the emulated drivers (net interfaces, NVMe controllers and their disks),
// their class/, block/ and dev/ links, and /sys/module as a pvops dom0 shows it.

extension SRIOVClient {
    init(tree: SysfsTree) { self.tree = tree }
}

private let nicDirectory = "devices/pci0000:00/0000:00:1c.1/0000:03:00.0"
private let nic2Directory = "devices/pci0000:00/0000:00:1c.1/0000:03:00.1"
private let rtlDirectory = "devices/pci0000:00/0000:00:05.0"
private let nvmeDirectory = "devices/pci0000:00/0000:00:01.0/0000:01:00.0"

private func builtinClient(_ options: TreeOptions = TreeOptions()) throws -> SRIOVClient {
    SRIOVClient(tree: SysfsTree(dom0: try Dom0(machine: BuiltinMachine.make()), options: options))
}

/// What a path is: its link target, a file, a directory, or nothing.
enum ClassEntry: Equatable, Sendable, CustomStringConvertible {
    case missing, file, directory
    case link(String)

    var description: String {
        switch self {
        case .missing: return "missing"
        case .file: return "file"
        case .directory: return "directory"
        case .link(let target): return "-> \(target)"
        }
    }
}

func classEntry(_ client: SRIOVClient, _ path: String) -> ClassEntry {
    do throws(Errno) {
        let stat = try client.lstat(path)
        switch stat.kind {
        case .directory: return .directory
        case .regularFile: return .file
        case .symlink: return .link(try client.readlink(path))
        }
    } catch {
        return .missing
    }
}

@Suite("Class devices: interface names, MACs, and the entries each binding has")
struct ClassDeviceTests {
    struct NameRow: Sendable, CustomTestStringConvertible {
        var address: PCIAddress
        var multiFunction: Bool
        var name: String
        var mac: String
        var testDescription: String { "\(address) -> \(name)" }
    }

    static let names: [NameRow] = [
        NameRow(address: PCIAddress(bus: 3, slot: 0, function: 0), multiFunction: true, name: "enp3s0f0", mac: "02:00:00:00:03:00"),
        NameRow(address: PCIAddress(bus: 3, slot: 0, function: 1), multiFunction: true, name: "enp3s0f1", mac: "02:00:00:00:03:01"),
        NameRow(address: PCIAddress(bus: 0, slot: 5, function: 0), multiFunction: false, name: "enp0s5", mac: "02:00:00:00:00:28"),
        // A function other than 0 always names its function, multi-function bit or not.
        NameRow(address: PCIAddress(bus: 0, slot: 5, function: 2), multiFunction: false, name: "enp0s5f2", mac: "02:00:00:00:00:2a"),
        // Bus and slot in decimal; the domain as P<decimal> when it is not 0.
        NameRow(address: PCIAddress(domain: 1, bus: 0x0a, slot: 0x1f, function: 0), multiFunction: false, name: "enP1p10s31",
                mac: "02:00:00:01:0a:f8"),
        NameRow(address: PCIAddress(domain: 0x10000, bus: 0xff, slot: 2, function: 3), multiFunction: true, name: "enP65536p255s2f3",
                mac: "02:01:00:00:ff:13"),
    ]

    @Test("systemd's predictable PCI path names and the BDF-derived MAC", arguments: names)
    func naming(_ row: NameRow) {
        #expect(NetworkInterface.predictableName(of: row.address, multiFunction: row.multiFunction) == row.name)
        #expect(NetworkInterface.macAddress(of: row.address) == row.mac)
    }

    /// Paths on the built-in machine as booted (every function bound to its host driver).
    static let bootEntries: [(String, ClassEntry)] = [
        ("\(nicDirectory)/net", .directory),
        ("\(nicDirectory)/net/enp3s0f0", .directory),
        ("\(nicDirectory)/net/enp3s0f0/device", .link("../../../0000:03:00.0")),
        ("\(nicDirectory)/net/enp3s0f0/subsystem", .link("../../../../../../class/net")),
        ("\(nicDirectory)/net/enp3s0f0/address", .file),
        ("\(nicDirectory)/net/enp3s0f1", .missing),
        ("\(nic2Directory)/net/enp3s0f1/device", .link("../../../0000:03:00.1")),
        ("\(rtlDirectory)/net/enp0s5/device", .link("../../../0000:00:05.0")),
        ("\(rtlDirectory)/net/enp0s5/subsystem", .link("../../../../../class/net")),
        ("class/net/enp3s0f0", .link("../../\(nicDirectory)/net/enp3s0f0")),
        ("class/net/enp3s0f1", .link("../../\(nic2Directory)/net/enp3s0f1")),
        ("class/net/enp0s5", .link("../../\(rtlDirectory)/net/enp0s5")),
        ("\(nvmeDirectory)/nvme/nvme0/device", .link("../../../0000:01:00.0")),
        ("\(nvmeDirectory)/nvme/nvme0/subsystem", .link("../../../../../../class/nvme")),
        ("\(nvmeDirectory)/nvme/nvme0/nvme0n1/device", .link("../../nvme0")),
        ("\(nvmeDirectory)/nvme/nvme0/nvme0n1/subsystem", .link("../../../../../../../class/block")),
        ("\(nvmeDirectory)/nvme/nvme0/nvme0n1/size", .file),
        ("\(nvmeDirectory)/net", .missing),
        ("class/nvme/nvme0", .link("../../\(nvmeDirectory)/nvme/nvme0")),
        ("class/block/nvme0n1", .link("../../\(nvmeDirectory)/nvme/nvme0/nvme0n1")),
        ("block/nvme0n1", .link("../\(nvmeDirectory)/nvme/nvme0/nvme0n1")),
        ("dev/block/259:0", .link("../../\(nvmeDirectory)/nvme/nvme0/nvme0n1")),
        ("dev/char/254:0", .link("../../\(nvmeDirectory)/nvme/nvme0")),
        // Nothing for the functions whose drivers register no net or nvme device.
        ("devices/pci0000:00/0000:00:1c.0/0000:02:00.0/net", .missing),
        ("devices/pci0000:00/0000:00:03.0/0000:04:00.0/net", .missing),
    ]

    @Test("a booted machine has the kernel's class devices and relative links")
    func bootLayout() throws {
        let client = try builtinClient()
        for (path, expected) in Self.bootEntries {
            #expect(classEntry(client, path) == expected, "\(path)")
        }
        #expect(try client.list("class").sorted() == ["block", "net", "nvme", "pci_bus"])
        #expect(try client.list("class/net").sorted() == ["enp0s5", "enp3s0f0", "enp3s0f1"])
        #expect(try client.list("dev").sorted() == ["block", "char"])
        #expect(try client.list(nicDirectory).contains("net"))
        #expect(try client.list("\(nvmeDirectory)/nvme/nvme0").contains("nvme0n1"))
        // Links resolve inside the tree.
        #expect(try client.realpath("class/net/enp3s0f0/device") == nicDirectory)
        #expect(try client.realpath("block/nvme0n1/device") == "\(nvmeDirectory)/nvme/nvme0")
        #expect(try client.realpath("class/net/enp0s5/subsystem") == "class/net")
    }

    @Test("interface and NVMe attributes read as the kernel formats them")
    func attributes() throws {
        let client = try builtinClient()
        let net = "class/net/enp3s0f0"
        let expected: [String: String] = [
            "address": "02:00:00:00:03:00\n", "addr_len": "6\n", "dev_port": "0\n", "dev_id": "0x0\n", "ifindex": "3\n",
            "iflink": "3\n", "type": "1\n", "mtu": "1500\n", "operstate": "down\n", "flags": "0x1002\n",
            "tx_queue_len": "1000\n", "uevent": "INTERFACE=enp3s0f0\nIFINDEX=3\n", "broadcast": "ff:ff:ff:ff:ff:ff\n",
        ]
        for (name, text) in expected { #expect(try client.cat("\(net)/\(name)") == text, "\(name)") }
        #expect(try client.cat("class/net/enp0s5/ifindex") == "2\n")
        #expect(try client.cat("class/net/enp3s0f1/ifindex") == "4\n")
        // carrier: EINVAL while the interface is down, for reads and writes.
        #expect(throws: Errno.invalidArgument) { try client.cat("\(net)/carrier") }
        #expect(client.write("1", "\(net)/carrier") == .failure(.invalidArgument))
        #expect(client.openError("\(net)/address", O_WRONLY) == .permissionDenied)

        let controller = "class/nvme/nvme0"
        #expect(try client.cat("\(controller)/dev") == "254:0\n")
        #expect(try client.cat("\(controller)/address") == "0000:01:00.0\n")
        #expect(try client.cat("\(controller)/transport") == "pcie\n")
        #expect(try client.cat("\(controller)/state") == "live\n")
        #expect(try client.cat("\(controller)/serial") == "PBFS000001000\n")
        #expect(try client.cat("\(controller)/uevent") == "MAJOR=254\nMINOR=0\nDEVNAME=nvme0\nNVME_TRTYPE=pcie\n")
        let disk = "block/nvme0n1"
        #expect(try client.cat("\(disk)/dev") == "259:0\n")
        #expect(try client.cat("\(disk)/size") == "2097152\n")
        #expect(try client.cat("\(disk)/ro") == "0\n")
        #expect(try client.cat("\(disk)/removable") == "0\n")
        #expect(try client.cat("\(disk)/range") == "0\n")
        #expect(try client.cat("\(disk)/ext_range") == "256\n")
        #expect(try client.cat("\(disk)/uevent") == "MAJOR=259\nMINOR=0\nDEVNAME=nvme0n1\nDEVTYPE=disk\n")
    }

    @Test("numbers avoid the host's: the highest free dynamic char major, the lowest free 259 minors")
    func hostNumbers() throws {
        let numbers = HostDeviceNumbers(takenCharMajors: [254, 253, 250], takenBlockExtMinors: [0, 1, 3])
        #expect(numbers.nvmeCharMajor == 252)
        #expect((0..<3).map(numbers.blockExtMinor(ordinal:)) == [2, 4, 5])
        #expect(HostDeviceNumbers(takenCharMajors: Set(234...254)).nvmeCharMajor == 511)
        let client = try builtinClient(TreeOptions(hostNumbers: numbers))
        #expect(try client.cat("class/nvme/nvme0/dev") == "252:0\n")
        #expect(try client.cat("block/nvme0n1/dev") == "259:2\n")
        #expect(try client.list("dev/block") == ["259:2"])
        #expect(try client.list("dev/char") == ["252:0"])
        // The scan of this host's own tree reads its numbers (whatever they are) without failing.
        let scanned = HostDeviceNumbers.scan()
        #expect(!scanned.takenCharMajors.contains(scanned.nvmeCharMajor))
    }

    @Test("networkInterfaces lists the interfaces present, by name, with their MACs")
    func interfaceList() throws {
        let client = try builtinClient()
        #expect(client.tree.networkInterfaces().map(\.name) == ["enp0s5", "enp3s0f0", "enp3s0f1"])
        #expect(client.tree.networkInterfaces().map(\.address) == ["02:00:00:00:00:28", "02:00:00:00:03:00", "02:00:00:00:03:01"])
        _ = client.write("0000:03:00.0", "bus/pci/drivers/igb/unbind")
        #expect(client.tree.networkInterfaces().map(\.name) == ["enp0s5", "enp3s0f1"])
    }

    // MARK: - Probe and remove

    struct ChangeRow: Sendable, CustomTestStringConvertible {
        var name: String
        /// Stores, in order: (text, path).
        var stores: [(String, String)]
        /// Entries afterwards.
        var after: [String: ClassEntry]
        /// (directory, name) pairs whose dentries the stores must invalidate.
        var invalidated: [(String, String)]
        var testDescription: String { name }
    }

    static let changes: [ChangeRow] = [
        ChangeRow(name: "igb unbind removes the interface",
                  stores: [("0000:03:00.0", "bus/pci/drivers/igb/unbind")],
                  after: ["\(nicDirectory)/net": .missing, "class/net/enp3s0f0": .missing,
                          "class/net/enp3s0f1": .link("../../\(nic2Directory)/net/enp3s0f1")],
                  invalidated: [("class/net", "enp3s0f0"), (nicDirectory, "net"), ("\(nicDirectory)/net", "enp3s0f0")]),
        ChangeRow(name: "binding to pciback leaves the function without an interface",
                  stores: [("0000:03:00.0", "bus/pci/drivers/igb/unbind"), ("0000:03:00.0", "bus/pci/drivers/pciback/new_slot"),
                           ("0000:03:00.0", "bus/pci/drivers/pciback/bind")],
                  after: ["\(nicDirectory)/net": .missing, "class/net/enp3s0f0": .missing],
                  invalidated: [("class/net", "enp3s0f0")]),
        ChangeRow(name: "nvme unbind removes the controller, its disk and their links",
                  stores: [("0000:01:00.0", "bus/pci/drivers/nvme/unbind")],
                  after: ["\(nvmeDirectory)/nvme": .missing, "class/nvme/nvme0": .missing, "class/block/nvme0n1": .missing,
                          "block/nvme0n1": .missing, "dev/block/259:0": .missing, "dev/char/254:0": .missing],
                  invalidated: [("class/nvme", "nvme0"), ("class/block", "nvme0n1"), ("block", "nvme0n1"), ("dev/block", "259:0"),
                                ("dev/char", "254:0"), (nvmeDirectory, "nvme")]),
        ChangeRow(name: "remove of the function takes its interface along",
                  stores: [("1", "\(rtlDirectory)/remove")],
                  after: ["class/net/enp0s5": .missing], invalidated: [("class/net", "enp0s5")]),
        ChangeRow(name: "igb unbind then bind brings the same interface back",
                  stores: [("0000:03:00.0", "bus/pci/drivers/igb/unbind"), ("0000:03:00.0", "bus/pci/drivers/igb/bind")],
                  after: ["class/net/enp3s0f0": .link("../../\(nicDirectory)/net/enp3s0f0"),
                          "\(nicDirectory)/net/enp3s0f0/device": .link("../../../0000:03:00.0")],
                  invalidated: [("class/net", "enp3s0f0"), (nicDirectory, "net")]),
        ChangeRow(name: "nvme bind after unbind brings the controller and disk back",
                  stores: [("0000:01:00.0", "bus/pci/drivers/nvme/unbind"), ("0000:01:00.0", "bus/pci/drivers/nvme/bind")],
                  after: ["dev/block/259:0": .link("../../\(nvmeDirectory)/nvme/nvme0/nvme0n1"),
                          "class/nvme/nvme0": .link("../../\(nvmeDirectory)/nvme/nvme0")],
                  invalidated: [("dev/block", "259:0"), ("class/nvme", "nvme0"), ("block", "nvme0n1")]),
    ]

    @Test("unbind and remove take class devices away, bind brings them back, with invalidations", arguments: changes)
    func probeAndRemove(_ row: ChangeRow) throws {
        let client = try builtinClient()
        // Look everything up first, as a kernel that caches dentries would have.
        var inodes: [String: Inode] = [:]
        for (directory, name) in row.invalidated {
            inodes[directory] = try client.resolve(directory, followLast: false).inode
            _ = try client.resolve(joinPath(directory, name), followLast: false)
        }
        var invalidations: [CacheInvalidation] = []
        for (text, path) in row.stores { invalidations += try Self.store(client, text, path) }
        for (directory, name) in row.invalidated {
            #expect(invalidations.contains(.entry(parent: inodes[directory]!, name: name)), "\(directory) \(name)")
        }
        for (path, expected) in row.after {
            #expect(classEntry(client, path) == expected, "\(path)")
        }
    }

    /// One store through the tree (open, write, release): what it invalidated.
    static func store(_ client: SRIOVClient, _ text: String, _ path: String) throws -> [CacheInvalidation] {
        let file = try client.tree.open(try client.resolve(path).inode, flags: O_WRONLY, caller: .root)
        defer { client.tree.release(file) }
        return try Array(text.utf8).withUnsafeBytes { buffer in try client.tree.write(file, offset: 0, data: buffer).invalidations }
    }

    @Test("MAC and ifindex are stable across unbind and bind")
    func stableAcrossRebind() throws {
        let client = try builtinClient()
        let before = try ["address", "ifindex"].map { try client.cat("class/net/enp3s0f1/\($0)") }
        _ = client.write("0000:03:00.1", "bus/pci/drivers/igb/unbind")
        _ = client.write("0000:03:00.1", "bus/pci/drivers/igb/bind")
        #expect(try ["address", "ifindex"].map { try client.cat("class/net/enp3s0f1/\($0)") } == before)
    }

    @Test("VFs stay unbound and have no interface")
    func virtualFunctions() throws {
        let client = try builtinClient()
        #expect(client.write("2", "\(nicDirectory)/sriov_numvfs") == .success(1))
        #expect(classEntry(client, "devices/pci0000:00/0000:00:1c.1/0000:03:10.0/driver") == .missing)
        #expect(classEntry(client, "devices/pci0000:00/0000:00:1c.1/0000:03:10.0/net") == .missing)
        #expect(try client.list("class/net").sorted() == ["enp0s5", "enp3s0f0", "enp3s0f1"])
    }
}

@Suite("/sys/module: exactly a pvops dom0's modules")
struct ModuleDirectoryTests {
    struct BuildRow: Sendable, CustomTestStringConvertible {
        var build: ModuleBuild
        var pcibackEntries: [String]
        var testDescription: String { build.rawValue }
    }

    static let builds: [BuildRow] = [
        BuildRow(build: .module, pcibackEntries: ["coresize", "drivers", "holders", "initsize", "initstate", "parameters", "refcnt",
                                                  "sections", "taint", "uevent"]),
        BuildRow(build: .builtin, pcibackEntries: ["drivers", "parameters", "uevent"]),
    ]

    @Test("module directories by module name, none for pciback or built-in pcieport", arguments: builds)
    func modules(_ row: BuildRow) throws {
        let client = try builtinClient(TreeOptions(pcibackBuild: row.build))
        #expect(try client.list("module") == ["8139too", "igb", "nvme", "radeon", "xen_pciback", "xhci_pci"])
        #expect(classEntry(client, "module/pciback") == .missing)
        #expect(try client.list("module/xen_pciback").sorted() == row.pcibackEntries)
        #expect(try client.list("module/xen_pciback/parameters").sorted() == ["hide", "passthrough", "permissive", "verbose_request"])
        #expect(try client.list("module/xen_pciback/drivers") == ["pci:pciback"])
        #expect(classEntry(client, "module/xen_pciback/drivers/pci:pciback") == .link("../../../bus/pci/drivers/pciback"))
        #expect(try client.realpath("module/xen_pciback/drivers/pci:pciback") == "bus/pci/drivers/pciback")
        #expect(client.openError("module/xen_pciback/uevent", O_RDONLY) == .permissionDenied)
        #expect(client.write("add", "module/xen_pciback/uevent") == .success(3))
        // Loadable emulated drivers are modules either way.
        #expect(try client.list("module/igb").sorted() == ["coresize", "drivers", "holders", "initsize", "initstate", "refcnt",
                                                           "sections", "taint", "uevent"])
        #expect(try client.cat("module/igb/initstate") == "live\n")
        #expect(try client.cat("module/igb/refcnt") == "0\n")
        #expect(try client.cat("module/igb/taint") == "\n")
        #expect(try client.stat("module/igb/sections/.text").mode == 0o400)
        #expect(try client.cat("module/igb/sections/.text") == "0x0000000000000000\n")
        #expect(try client.list("module/igb/holders") == [])
        if row.build == .module {
            #expect(try client.cat("module/xen_pciback/initstate") == "live\n")
        } else {
            #expect(classEntry(client, "module/xen_pciback/initstate") == .missing)
            #expect(classEntry(client, "module/xen_pciback/sections") == .missing)
        }
    }

    static let driverLinks: [(String, ClassEntry)] = [
        ("pciback", .link("../../../../module/xen_pciback")),
        ("xhci_hcd", .link("../../../../module/xhci_pci")),
        ("nvme", .link("../../../../module/nvme")),
        ("igb", .link("../../../../module/igb")),
        ("8139too", .link("../../../../module/8139too")),
        ("radeon", .link("../../../../module/radeon")),
        ("pcieport", .missing),
    ]

    @Test("drivers/<driver>/module exists as module_add_driver creates it", arguments: ModuleBuild.allCases)
    func driverModuleLinks(_ build: ModuleBuild) throws {
        let client = try builtinClient(TreeOptions(pcibackBuild: build))
        for (driver, expected) in Self.driverLinks {
            #expect(classEntry(client, "bus/pci/drivers/\(driver)/module") == expected, "\(driver)")
            #expect(try client.list("bus/pci/drivers/\(driver)").contains("module") == (expected != .missing), "\(driver)")
        }
        #expect(classEntry(client, "module/xhci_pci/drivers/pci:xhci_hcd") == .link("../../../bus/pci/drivers/xhci_hcd"))
        #expect(try client.realpath("bus/pci/drivers/xhci_hcd/module") == "module/xhci_pci")
    }

    @Test("--pciback-build is part of the state header; headers without it were module builds")
    func stateOptions() throws {
        func options(_ build: String) -> StateOptions {
            StateOptions(profile: "current", machine: nil, lspciDumps: [], noBuiltin: false, hide: "", permissive: false,
                         passthrough: false, legacyModes: false, pcibackBuild: build)
        }
        #expect(options("module").differences(from: options("builtin")) == [
            "--pciback-build: the state has module, this start has builtin",
        ])
        var old = try JSONSerialization.jsonObject(with: JSONEncoder().encode(options("module"))) as! [String: Any]
        old["pcibackBuild"] = nil
        let decoded = try JSONDecoder().decode(StateOptions.self, from: JSONSerialization.data(withJSONObject: old))
        #expect(decoded.differences(from: options("module")).isEmpty)
        #expect(!decoded.differences(from: options("builtin")).isEmpty)
    }
}
