import Foundation
import Testing

@testable import PCIBackFS

// The `pci_bus` class devices: one per bus of the built-in machine, in its host bridge's or
// bridge's directory, with class/pci_bus links to each; `rescan` there rescans like
// bus/pci/rescan.

struct PCIBusCase: Sendable, CustomTestStringConvertible {
    var name: String
    /// The directory holding `pci_bus/` (the root bus's, or the bridge's).
    var parent: String
    var subsystem: String
    var testDescription: String { name }

    var directory: String { parent + "/pci_bus/" + name }
}

private let pciBusCases: [PCIBusCase] = [
    .init(name: "0000:00", parent: "devices/pci0000:00", subsystem: "../../../../class/pci_bus"),
    .init(name: "0000:01", parent: "devices/pci0000:00/0000:00:01.0", subsystem: "../../../../../class/pci_bus"),
    .init(name: "0000:04", parent: "devices/pci0000:00/0000:00:03.0", subsystem: "../../../../../class/pci_bus"),
    .init(name: "0000:02", parent: "devices/pci0000:00/0000:00:1c.0", subsystem: "../../../../../class/pci_bus"),
    .init(name: "0000:03", parent: "devices/pci0000:00/0000:00:1c.1", subsystem: "../../../../../class/pci_bus"),
]

private func busClient() throws -> SRIOVClient {
    SRIOVClient(tree: SysfsTree(dom0: try Dom0(machine: BuiltinMachine.make())))
}

@Suite("pci_bus class devices")
struct PCIBusTests {
    @Test("every bus has its directory, device and subsystem links, and class link", arguments: pciBusCases)
    func busDirectory(_ bus: PCIBusCase) throws {
        let client = try busClient()
        #expect(try client.list(bus.directory).sorted()
            == ["cpuaffinity", "cpulistaffinity", "device", "rescan", "subsystem", "uevent"])
        #expect(try client.list(bus.parent + "/pci_bus") == [bus.name])
        let deviceName = String(bus.parent.split(separator: "/").last!)
        #expect(try client.readlink(bus.directory + "/device") == "../../../" + deviceName)
        #expect(try client.realpath(bus.directory + "/device") == bus.parent)
        #expect(try client.readlink(bus.directory + "/subsystem") == bus.subsystem)
        #expect(try client.realpath(bus.directory + "/subsystem") == "class/pci_bus")
        #expect(try client.readlink("class/pci_bus/" + bus.name) == "../../" + bus.directory)
        #expect(try client.realpath("class/pci_bus/" + bus.name) == bus.directory)
        // Link counts: pci_bus/ holds one directory, the bus's directory none (no power/).
        #expect(try client.stat(bus.parent + "/pci_bus").linkCount == 3)
        #expect(try client.stat(bus.directory).linkCount == 2)
        #expect(try client.list(bus.parent).contains("pci_bus"))
    }

    @Test("class/pci_bus lists every bus; functions that are not bridges have no pci_bus")
    func classListing() throws {
        let client = try busClient()
        #expect(try client.list("class/pci_bus") == pciBusCases.map(\.name).sorted())
        #expect(try client.list("class").contains("pci_bus"))
        for function in ["0000:00:00.0", "0000:00:05.0", "0000:03:00.0", "0000:01:00.0"] {
            #expect(!client.exists("bus/pci/devices/\(function)/pci_bus"), "\(function)")
        }
        // A bridge's directory: 2 + its one function + pci_bus.
        #expect(try client.stat("devices/pci0000:00/0000:00:1c.0").linkCount == 4)
        #expect(try client.stat("devices/pci0000:00").linkCount == 2 + 6 + 1)
    }

    @Test("attribute modes and texts", arguments: pciBusCases)
    func attributes(_ bus: PCIBusCase) throws {
        let client = try busClient()
        let modes: [(String, UInt32)] = [("cpuaffinity", 0o444), ("cpulistaffinity", 0o444), ("rescan", 0o200), ("uevent", 0o644)]
        for (name, mode) in modes {
            let info = try client.stat(bus.directory + "/" + name)
            #expect(info.kind == .regularFile && info.mode == mode, "\(name)")
        }
        let function = "bus/pci/devices/0000:00:05.0"
        #expect(try client.cat(bus.directory + "/cpuaffinity") == client.cat(function + "/local_cpus"))
        #expect(try client.cat(bus.directory + "/cpulistaffinity") == client.cat(function + "/local_cpulist"))
        #expect(try client.cat(bus.directory + "/uevent") == "")
        #expect(client.write("add", bus.directory + "/uevent") == .success(3))
        #expect(client.write("explode", bus.directory + "/uevent") == .failure(.invalidArgument))
    }

    /// What the tree looks like to a tool: the functions, their drivers, the buses.
    private func snapshot(_ client: SRIOVClient) throws -> [String] {
        var lines = try client.list("bus/pci/devices")
        for function in try client.list("bus/pci/devices") {
            lines.append(function + " " + ((try? client.readlink("bus/pci/devices/\(function)/driver")) ?? "-"))
        }
        return lines + (try client.list("class/pci_bus"))
    }

    @Test("a rescan store has the effect of bus/pci/rescan, from every bus", arguments: pciBusCases)
    func rescan(_ bus: PCIBusCase) throws {
        let viaBus = try busClient()
        let viaClass = try busClient()
        let original = try snapshot(viaBus)
        for client in [viaBus, viaClass] {
            #expect(client.write("1", "bus/pci/devices/0000:00:1c.1/remove") == .success(1))
            #expect(client.write("1", "bus/pci/devices/0000:01:00.0/remove") == .success(1))
            #expect(!client.exists("class/pci_bus/0000:03"))
            #expect(!client.exists("devices/pci0000:00/0000:00:1c.1/pci_bus"))
        }
        guard bus.name != "0000:03" else {
            // Its bridge is gone: so is the bus, and a store through the class link finds nothing.
            #expect(viaClass.write("1", "class/pci_bus/0000:03/rescan") == .failure(.noSuchFileOrDirectory))
            return
        }
        #expect(viaClass.write("0", "class/pci_bus/\(bus.name)/rescan") == .success(1))
        #expect(try snapshot(viaClass) == snapshot(viaBus))
        #expect(viaBus.write("1", "bus/pci/rescan") == .success(1))
        #expect(viaClass.write("1\n", "class/pci_bus/\(bus.name)/rescan") == .success(2))
        #expect(try snapshot(viaClass) == snapshot(viaBus))
        #expect(try snapshot(viaClass) == original)
        #expect(try client(viaClass, lists: "devices/pci0000:00/0000:00:1c.1/pci_bus") == ["0000:03"])
    }

    private func client(_ client: SRIOVClient, lists path: String) throws -> [String] { try client.list(path) }

    @Test("rescan input is parsed as the device rescan attribute parses it", arguments: [
        "1", "0", "", "\n", "x", "1x", "0x10", "-1", "18446744073709551616", " 1", "1 ",
    ])
    func rescanInput(_ input: String) throws {
        let client = try busClient()
        let device = client.write(input, "bus/pci/devices/0000:00:05.0/rescan")
        let bus = client.write(input, "class/pci_bus/0000:00/rescan")
        #expect(bus == device)
        if ["x", "1x"].contains(input) { #expect(bus == .failure(.invalidArgument)) }
    }

    @Test("pci_bus rescan stores have a journal path of their own")
    func journalPath() {
        for attribute in PCIBusAttribute.allCases {
            let kind = AttributeKind.pciBus("0000:03", attribute)
            #expect(kind.journalPath == "class/pci_bus/0000:03/\(attribute.rawValue)")
            #expect(kind.journalPath.flatMap(AttributeKind.init(journalPath:)) == kind)
        }
        #expect(AttributeKind(journalPath: "class/pci_bus/0000:3/rescan") == nil)
        #expect(AttributeKind(journalPath: "class/pci_bus/0000:0G/rescan") == nil)
        #expect(AttributeKind(journalPath: "class/pci_bus/0000:03/remove") == nil)
    }
}

#if canImport(Glibc)
import Glibc

@Suite("pcibackfsd: pci_bus class devices", .serialized, .requiresDaemonMount, .timeLimit(.minutes(1)))
struct PCIBusMountTests {
    @Test("every class/pci_bus link resolves to a bus whose device is a bridge or a root bus")
    func classLinksResolve() throws {
        try withDaemon { mount throws in
            let names = try mount.list("class/pci_bus")
            #expect(names.sorted() == pciBusCases.map(\.name).sorted())
            for name in names {
                let directory = try Sys.realpath(mount.path("class/pci_bus/" + name))
                let bus = try #require(pciBusCases.first { $0.name == name })
                #expect(directory == mount.path(bus.directory))
                let device = try Sys.realpath(directory + "/device")
                #expect(device == mount.path(bus.parent))
                let deviceName = String(device.split(separator: "/").last!)
                if deviceName.hasPrefix("pci") {
                    #expect(device == mount.path("devices/" + deviceName))
                } else {
                    // A bridge: its secondary_bus_number is the bus's number.
                    let secondary = try mount.cat("bus/pci/devices/\(deviceName)/secondary_bus_number")
                    #expect(Int(secondary.trimmingCharacters(in: .whitespacesAndNewlines)) == Int(name.suffix(2), radix: 16))
                }
                #expect(try Sys.realpath(directory + "/subsystem") == mount.path("class/pci_bus"))
                #expect(try mount.cat("class/pci_bus/\(name)/cpulistaffinity") == mount.cat("bus/pci/devices/0000:00:05.0/local_cpulist"))
            }
            #expect(mount.echo("1", "bus/pci/devices/0000:00:1c.1/remove") == .written(1))
            #expect(!mount.exists("class/pci_bus/0000:03"))
            #expect(mount.echo("1", "class/pci_bus/0000:00/rescan") == .written(1))
            #expect(try Sys.realpath(mount.path("class/pci_bus/0000:03/device")) == mount.path("devices/pci0000:00/0000:00:1c.1"))
            #expect(mount.echo("x", "class/pci_bus/0000:00/rescan") == .writeFailed(EINVAL))
        }
    }
}
#endif
