import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@testable import PCIBackFS

// SR-IOV (spec sriov.md), in memory: a Dom0 behind a SysfsTree, driven through the tree's
// FileSystemModel calls exactly as a process would through the VFS (paths resolved component by
// component with symlinks followed, opens checked against the mode, one write per store).
// Case numbers are sriov.md §7's. Two machines:
//
// * the spec's example (§0): root port 00:01.0 (buses 01-02, memory window fbe00000-fbffffff),
//   PF0 01:00.0 and PF1 01:00.1 (8086:10c9, SR-IOV at 0x160, TotalVFs 8, offset 0x180, stride 2,
//   VF device 10ca, VF BAR0 and VF BAR3 16 KiB 64-bit), bound to `igb`, whose model behaves as
//   the spec's `pfstub` (pci_sriov_configure_simple, and its remove disables SR-IOV);
// * the built-in machine: 82576 PFs 03:00.0/03:00.1 (offset 0x80, stride 2), VFs on bus 03.

// MARK: - A process's view of the tree

/// Path resolution, stat, readlink, open/read/write over `FileSystemModel`, with the caller
/// root. Paths are relative to the mount root (`bus/pci/devices/...`).
struct SRIOVClient {
    let tree: SysfsTree

    init(_ dom0: sending Dom0) { tree = SysfsTree(dom0: dom0) }

    /// The inode of `path` and its physical path (every symlink on the way expanded, `..`
    /// taken against the physical directory, as the VFS does).
    func resolve(_ path: String, followLast: Bool = true) throws(Errno) -> (inode: Inode, path: [String]) {
        var pending = path.split(separator: "/").map(String.init)
        var physical: [String] = []
        var inode = rootInode
        var hops = 0
        while !pending.isEmpty {
            let name = pending.removeFirst()
            if name == "." { continue }
            if name == ".." {
                if !physical.isEmpty { physical.removeLast() }
                inode = try walk(physical)
                continue
            }
            let stat = try tree.lookup(parent: inode, name: name)
            if stat.kind == .symlink && (!pending.isEmpty || followLast) {
                hops += 1
                if hops > 40 { throw Errno(ELOOP) }
                let target = try tree.readlink(stat.inode)
                if target.hasPrefix("/") { throw Errno(EXDEV) }  // the tree only has relative links
                pending = target.split(separator: "/").map(String.init) + pending
                continue
            }
            if !pending.isEmpty && stat.kind != .directory { throw .notDirectory }
            physical.append(name)
            inode = stat.inode
        }
        return (inode, physical)
    }

    private func walk(_ components: [String]) throws(Errno) -> Inode {
        var inode = rootInode
        for name in components { inode = try tree.lookup(parent: inode, name: name).inode }
        return inode
    }

    func stat(_ path: String) throws(Errno) -> NodeStat { try tree.getattr(try resolve(path).inode) }
    func lstat(_ path: String) throws(Errno) -> NodeStat { try tree.getattr(try resolve(path, followLast: false).inode) }

    /// The errno of stat(2) (following links), nil when it succeeds.
    func statError(_ path: String) -> Errno? {
        do throws(Errno) { _ = try stat(path); return nil } catch { return error }
    }

    /// lstat(2) succeeds.
    func exists(_ path: String) -> Bool {
        do throws(Errno) { _ = try lstat(path); return true } catch { return false }
    }

    func readlink(_ path: String) throws(Errno) -> String { try tree.readlink(try resolve(path, followLast: false).inode) }

    func realpath(_ path: String) throws(Errno) -> String { try resolve(path).path.joined(separator: "/") }

    func list(_ path: String) throws(Errno) -> [String] { try tree.readdir(try resolve(path).inode).map(\.name) }

    /// `cat`: open O_RDONLY, read until end of file.
    func cat(_ path: String) throws(Errno) -> String {
        String(decoding: try readBytes(path), as: UTF8.self)
    }

    func readBytes(_ path: String, offset: Int = 0, count: Int? = nil) throws(Errno) -> [UInt8] {
        let file = try tree.open(try resolve(path).inode, flags: O_RDONLY, caller: .root)
        defer { tree.release(file) }
        var result: [UInt8] = []
        var position = offset
        while count.map({ result.count < $0 }) ?? true {
            let chunk = try tree.read(file, offset: position, size: min(4096, (count ?? 4096) - result.count))
            if chunk.isEmpty { break }
            result += chunk
            position += chunk.count
        }
        return result
    }

    /// One open(O_WRONLY) + write(2) + close: the count written, or the errno of open or write.
    func write(_ text: String, _ path: String) -> Result<Int, Errno> { write(Array(text.utf8), path) }

    func write(_ data: [UInt8], _ path: String, offset: Int = 0) -> Result<Int, Errno> {
        do throws(Errno) {
            let file = try tree.open(try resolve(path).inode, flags: O_WRONLY, caller: .root)
            defer { tree.release(file) }
            let outcome: Result<WriteOutcome, Errno> = data.withUnsafeBytes { buffer in
                do throws(Errno) { return .success(try tree.write(file, offset: offset, data: buffer)) } catch { return .failure(error) }
            }
            return outcome.map(\.count)
        } catch {
            return .failure(error)
        }
    }

    /// The errno of opening `path` with `flags`, nil if it opens.
    func openError(_ path: String, _ flags: Int32) -> Errno? {
        do throws(Errno) {
            let file = try tree.open(try resolve(path).inode, flags: flags, caller: .root)
            tree.release(file)
            return nil
        } catch {
            return error
        }
    }

    /// A little-endian config register through `devices/<BDF>/config`.
    func config(_ bdf: String, _ offset: Int, _ width: Int) throws(Errno) -> UInt32 {
        let bytes = try readBytes("bus/pci/devices/\(bdf)/config", offset: offset, count: width)
        guard bytes.count == width else { throw .ioError }
        return bytes.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    @discardableResult
    func configWrite(_ bdf: String, _ offset: Int, _ width: Int, _ value: UInt32) -> Result<Int, Errno> {
        let data = (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }
        return write(data, "bus/pci/devices/\(bdf)/config", offset: offset)
    }

    func dom0<T: Sendable>(_ body: (inout Dom0) throws -> T) rethrows -> T { try tree.withDom0(body) }

    /// A pcifront op on frontend `domain`'s virtual device `vbdf` (`BB:SS.F` on bus 0).
    func op(_ domain: UInt32, _ command: PCIOperation.Command, _ virtual: PCIAddress, offset: Int = 0, size: Int = 0,
            value: UInt32 = 0, entries: [UInt16] = []) -> PCIOperationResult {
        dom0 { dom0 in
            dom0.perform(PCIOperation(command: command.rawValue, devfn: UInt32(virtual.devfn), offset: Int32(offset),
                                      size: Int32(size), value: entries.isEmpty ? value : UInt32(entries.count),
                                      entries: entries.map { PCIOperation.MSIXEntry(entry: $0, vector: 0) }),
                         frontend: domain)
        }
    }

    var log: [String] { dom0 { $0.log.lines } }
}

/// The outcome of a store, as a test table states it.
enum SRIOVStore: Equatable, CustomStringConvertible {
    case count
    case short(Int)
    case fails(Errno)

    static func of(_ result: Result<Int, Errno>, _ input: String) -> SRIOVStore {
        switch result {
        case .success(let written): return written == input.utf8.count ? .count : .short(written)
        case .failure(let error): return .fails(error)
        }
    }

    var description: String {
        switch self {
        case .count: return "count"
        case .short(let written): return "short write of \(written)"
        case .fails(let error): return "errno \(error.rawValue) (\(error))"
        }
    }
}

// MARK: - Machines

enum SRIOVExample {
    static let pf0 = PCIAddress(bus: 1, slot: 0, function: 0)
    static let pf1 = PCIAddress(bus: 1, slot: 0, function: 1)
    static let rootPort = PCIAddress(bus: 0, slot: 1, function: 0)
    static let capability = 0x160
    /// sysfs directories.
    static let portDirectory = "devices/pci0000:00/0000:00:01.0"
    static let pf0Directory = portDirectory + "/0000:01:00.0"
    static let pf0Path = "bus/pci/devices/0000:01:00.0"
    static let window0: UInt64 = 0xfbe0_0000
    static let window3: UInt64 = 0xfbe2_0000

    /// VF id n of PF0 (offset 0x180, stride 2): 02:10.0, 02:10.2, ... 02:11.6.
    static func vf0(_ id: Int) -> String { PCIAddress(bus: 2, devfn: UInt8(0x80 + 2 * id)).description }
    static func vf1(_ id: Int) -> String { PCIAddress(bus: 2, devfn: UInt8(0x81 + 2 * id)).description }

    struct Variant {
        var totalVFs: UInt16 = 8
        var initialVFs: UInt16? = nil
        var offset: UInt16 = 0x180
        var stride: UInt16 = 2
        var vfDevice: UInt16 = 0x10ca
        var vfBARs: [(index: Int, kind: BARDescriptor.Kind, size: UInt64)] = [(0, .memory64, 16 * 1024), (3, .memory64, 16 * 1024)]
        var pcieCapability = true
        var driver: String? = "igb"
        var supportedPageSizes: UInt32? = nil
    }

    /// An 82576 function as in the spec's example (SR-IOV placed at 0x160 behind AER and a
    /// vendor-specific extended capability).
    static func pf(function: UInt8, _ variant: Variant = Variant()) -> EmulatedDevice {
        let address = PCIAddress(bus: 1, slot: 0, function: function)
        var builder = DeviceBuilder(
            address: address, express: true,
            identity: .init(vendor: 0x8086, device: 0x10c9, subsystemVendor: 0x8086, subsystemDevice: 0xa03c,
                            classCode: 0x020000, revision: 0x01, interruptPin: function + 1, multiFunction: true))
        builder.label = "82576 (spec example) function \(function)"
        builder.bootDriver = variant.driver
        builder.irq = 16 + UInt32(function)
        builder.setBAR(0, .memory32, size: 128 * 1024, address: 0xfbf0_0000 + 0x4_0000 * UInt64(function))
        builder.setBAR(3, .memory32, size: 16 * 1024, address: 0xfbf2_0000 + 0x4_0000 * UInt64(function))
        builder.addPowerManagement(pmeSupport: 0x19)
        builder.addMSI(vectors: 1, is64Bit: true, perVectorMasking: true)
        builder.addMSIX(tableSize: 10, tableBAR: 3, tableOffset: 0, pbaBAR: 3, pbaOffset: 0x2000)
        if variant.pcieCapability { builder.addPCIExpress(.endpoint, functionReset: true, linkSpeed: 1, linkWidth: 4) }
        #expect(builder.addAER() == 0x100)
        #expect(builder.addExtendedCapability(0x000b, version: 1, length: 0x18) == 0x148)
        let cap = builder.addSRIOV(initialVFs: variant.initialVFs ?? variant.totalVFs, totalVFs: variant.totalVFs,
                                   firstVFOffset: variant.offset, vfStride: variant.stride, vfDeviceID: variant.vfDevice,
                                   vfBARs: variant.vfBARs)
        #expect(cap == capability)
        let device = builder.build()
        // The vendor-specific header (ID 0, rev 0, length 0x18), and any page-size variant.
        device.config.store(0x14c, width: 4, value: 0x0180_0000)
        if let sizes = variant.supportedPageSizes { device.config.store(cap + 0x1c, width: 4, value: sizes) }
        return device
    }

    static func machine(subordinateBus: UInt8 = 2, pf0: Variant = Variant(), pf1: Variant? = nil) -> Machine {
        var devices = [
            BuiltinMachine.hostBridge(),
            BuiltinMachine.rootPort(at: rootPort, device: 0x29c1, secondaryBus: 1, subordinateBus: subordinateBus,
                                    memory: (0xfbe0_0000, 0xfbff_ffff), io: nil, irq: 24),
            pf(function: 0, pf0),
        ]
        if let pf1 { devices.append(pf(function: 1, pf1)) }
        return Machine(name: "sriov-example", devices: devices)
    }

    static func client(subordinateBus: UInt8 = 2, pf0: Variant = Variant(), pf1: Variant? = nil,
                       policy: FilterPolicy = FilterPolicy()) throws -> SRIOVClient {
        SRIOVClient(try Dom0(machine: machine(subordinateBus: subordinateBus, pf0: pf0, pf1: pf1), policy: policy))
    }

    /// PF0 unbound (no driver at boot).
    static func unbound() throws -> SRIOVClient {
        var variant = Variant()
        variant.driver = nil
        return try client(pf0: variant)
    }

    /// PF0 bound to igb with `count` VFs enabled through sriov_numvfs.
    static func enabled(_ count: Int = 4, autoprobe: String? = nil, newSlot: String? = nil, pf1: Variant? = nil) throws -> SRIOVClient {
        let client = try client(pf1: pf1)
        if let autoprobe { #expect(client.write(autoprobe, pf0Path + "/sriov_drivers_autoprobe") == .success(autoprobe.utf8.count)) }
        if let newSlot {
            #expect(client.write(newSlot, "bus/pci/drivers/pciback/new_slot") == .success(newSlot.utf8.count))
        }
        #expect(client.write("\(count)\n", pf0Path + "/sriov_numvfs") == .success("\(count)\n".utf8.count))
        return client
    }
}

enum SRIOVBuiltin {
    static let pf0 = "0000:03:00.0"
    static let pf1 = "0000:03:00.1"
    static let pf0Path = "bus/pci/devices/0000:03:00.0"
    static let portDirectory = "devices/pci0000:00/0000:00:1c.1"
    /// VF id n of PF0 (offset 0x80, stride 2 from RID 0x0300): 03:10.0, 03:10.2, ...
    static func vf0(_ id: Int) -> String { PCIAddress(bus: 3, devfn: UInt8(0x80 + 2 * id)).description }
    static func vf1(_ id: Int) -> String { PCIAddress(bus: 3, devfn: UInt8(0x81 + 2 * id)).description }

    static func client() throws -> SRIOVClient { SRIOVClient(try Dom0(machine: BuiltinMachine.make())) }
}

/// A PF of 255 VFs (ARI, offset 1, stride 1) at 05:00.0 behind root port 00:02.0 (bus 05).
enum SRIOVScale {
    static let pf = PCIAddress(bus: 5, slot: 0, function: 0)
    static let pfPath = "bus/pci/devices/0000:05:00.0"

    static func device() -> EmulatedDevice {
        var builder = DeviceBuilder(
            address: pf, express: true,
            identity: .init(vendor: 0x8086, device: 0x10c9, subsystemVendor: 0x8086, subsystemDevice: 0xa03c,
                            classCode: 0x020000, revision: 0x01))
        builder.label = "PF of 255 VFs"
        builder.bootDriver = "igb"
        builder.setBAR(0, .memory32, size: 128 * 1024, address: 0xf000_0000)
        builder.addMSIX(tableSize: 10, tableBAR: 0, tableOffset: 0x1_0000, pbaBAR: 0, pbaOffset: 0x1_2000)
        builder.addPCIExpress(.endpoint, functionReset: true, linkSpeed: 2, linkWidth: 4)
        builder.addARI(nextFunction: 0)
        builder.addSRIOV(initialVFs: 255, totalVFs: 255, firstVFOffset: 1, vfStride: 1, vfDeviceID: 0x10ca,
                         vfBARs: [(0, .memory64, 16 * 1024), (3, .memory64, 16 * 1024)])
        return builder.build()
    }

    static func rootPort() -> EmulatedDevice {
        BuiltinMachine.rootPort(at: PCIAddress(bus: 0, slot: 2, function: 0), secondaryBus: 5, subordinateBus: 5,
                                memory: (0xf000_0000, 0xf7ff_ffff), io: nil, irq: 30)
    }

    static func machine() -> Machine {
        Machine(name: "sriov-255", devices: [BuiltinMachine.hostBridge(), rootPort(), device()])
    }
}

/// The seven PF files (§2.2).
let sriovPFFiles = ["sriov_totalvfs", "sriov_numvfs", "sriov_offset", "sriov_stride", "sriov_vf_device",
               "sriov_drivers_autoprobe", "sriov_vf_total_msix"]

// MARK: - Boot (cases 1 - 3, 34)

@Suite("SR-IOV in memory")
struct SRIOVTests {

@Suite("boot: the PF's files, registers and windows (cases 1 - 3, 34)")
struct Boot {
    struct ModeRow: CustomStringConvertible, Sendable {
        var file: String
        var mode: UInt32
        var description: String { "\(file) \(String(mode, radix: 8))" }
    }

    static let modeRows = [
        ModeRow(file: "sriov_totalvfs", mode: 0o444), ModeRow(file: "sriov_numvfs", mode: 0o644),
        ModeRow(file: "sriov_offset", mode: 0o444), ModeRow(file: "sriov_stride", mode: 0o444),
        ModeRow(file: "sriov_vf_device", mode: 0o444), ModeRow(file: "sriov_drivers_autoprobe", mode: 0o644),
        ModeRow(file: "sriov_vf_total_msix", mode: 0o444),
    ]

    @Test("case 1: modes of the seven files; opening against the mode is EACCES even for root", arguments: modeRows)
    func case1Modes(_ row: ModeRow) throws {
        for (client, path) in [(try SRIOVExample.client(), SRIOVExample.pf0Path), (try SRIOVBuiltin.client(), SRIOVBuiltin.pf0Path)] {
            let stat = try client.stat(path + "/" + row.file)
            #expect(stat.kind == .regularFile)
            #expect(stat.mode == row.mode)
            #expect(client.openError(path + "/" + row.file, O_RDONLY) == nil)
            #expect(client.openError(path + "/" + row.file, O_WRONLY) == (row.mode & 0o200 != 0 ? nil : .permissionDenied))
        }
    }

    @Test("case 1: the PF's directory lists the seven files, no virtfn*, no dep_link")
    func case1Listing() throws {
        for (client, path) in [(try SRIOVExample.client(), SRIOVExample.pf0Path), (try SRIOVBuiltin.client(), SRIOVBuiltin.pf0Path),
                               (try SRIOVBuiltin.client(), "bus/pci/devices/\(SRIOVBuiltin.pf1)")] {
            let names = try client.list(path)
            #expect(Set(sriovPFFiles).isSubset(of: Set(names)), "\(path): \(names)")
            #expect(!names.contains { $0.hasPrefix("virtfn") || $0 == "dep_link" || $0 == "physfn" || $0 == "sriov_vf_msix_count" })
            #expect(client.statError(path + "/virtfn0") == .noSuchFileOrDirectory)
            #expect(client.statError(path + "/dep_link") == .noSuchFileOrDirectory)
        }
    }

    struct ValueRow: CustomStringConvertible, Sendable {
        var file: String
        var example: String
        var builtin: String
        var description: String { file }
    }

    static let valueRows = [
        ValueRow(file: "sriov_totalvfs", example: "8\n", builtin: "8\n"),
        ValueRow(file: "sriov_numvfs", example: "0\n", builtin: "0\n"),
        ValueRow(file: "sriov_offset", example: "384\n", builtin: "128\n"),
        ValueRow(file: "sriov_stride", example: "2\n", builtin: "2\n"),
        ValueRow(file: "sriov_vf_device", example: "10ca\n", builtin: "10ca\n"),
        ValueRow(file: "sriov_drivers_autoprobe", example: "1\n", builtin: "1\n"),
        ValueRow(file: "sriov_vf_total_msix", example: "0\n", builtin: "0\n"),
    ]

    @Test("case 2: the seven files at rest (example machine and built-in NIC)", arguments: valueRows)
    func case2(_ row: ValueRow) throws {
        #expect(try SRIOVExample.client().cat(SRIOVExample.pf0Path + "/" + row.file) == row.example)
        let builtin = try SRIOVBuiltin.client()
        #expect(try builtin.cat(SRIOVBuiltin.pf0Path + "/" + row.file) == row.builtin)
        #expect(try builtin.cat("bus/pci/devices/\(SRIOVBuiltin.pf1)/" + row.file) == row.builtin)
    }

    @Test("sriov_vf_device is %x: lower case, no 0x, no padding")
    func vfDeviceFormat() throws {
        var variant = SRIOVExample.Variant()
        variant.vfDevice = 0x0abc
        #expect(try SRIOVExample.client(pf0: variant).cat(SRIOVExample.pf0Path + "/sriov_vf_device") == "abc\n")
        variant.vfDevice = 0xBEEF
        #expect(try SRIOVExample.client(pf0: variant).cat(SRIOVExample.pf0Path + "/sriov_vf_device") == "beef\n")
    }

    @Test("case 3: after enumeration Control 0, NumVFs 0, System Page Size 1; VF BARs hold the assigned windows")
    func case3() throws {
        let client = try SRIOVExample.client()
        let pf = "0000:01:00.0"
        #expect(try client.config(pf, 0x168, 2) == 0x0000)
        #expect(try client.config(pf, 0x170, 2) == 0)
        #expect(try client.config(pf, 0x180, 4) == 0x0000_0001)
        // Window assignment (§1.4): first free ranges of the root port's memory window.
        #expect(try client.config(pf, 0x184, 4) == 0xfbe0_0004)
        #expect(try client.config(pf, 0x188, 4) == 0)
        #expect(try client.config(pf, 0x190, 4) == 0xfbe2_0004)
        #expect(try client.config(pf, 0x194, 4) == 0)
        // The other registers as the device reports them.
        #expect(try client.config(pf, 0x160, 4) == 0x0001_0010)      // ID 0x10, version 1, last
        #expect(try client.config(pf, 0x16c, 4) == 0x0008_0008)      // InitialVFs, TotalVFs
        #expect(try client.config(pf, 0x174, 4) == 0x0002_0180)      // offset, stride
        #expect(try client.config(pf, 0x178, 4) == 0x10ca_0000)      // VF Device ID
        #expect(try client.config(pf, 0x17c, 4) == 0x0000_0553)      // supported page sizes

        // The built-in NIC: the same, at its own capability offset; windows inside 00:1c.1's window.
        let builtin = try SRIOVBuiltin.client()
        for (index, pfName) in [SRIOVBuiltin.pf0, SRIOVBuiltin.pf1].enumerated() {
            let cap = try #require(builtin.dom0 { $0.machine[PCIAddress(kernelName: pfName)!].flatMap(SRIOVCapability.init)?.offset })
            #expect(try builtin.config(pfName, cap + 0x08, 2) == 0)
            #expect(try builtin.config(pfName, cap + 0x10, 2) == 0)
            #expect(try builtin.config(pfName, cap + 0x20, 4) == 1)
            let bar0 = try builtin.config(pfName, cap + 0x24, 4)
            let bar3 = try builtin.config(pfName, cap + 0x30, 4)
            #expect(bar0 & 0xf == 0x4 && bar3 & 0xf == 0x4, "\(pfName): 64-bit non-prefetchable")
            #expect(try builtin.config(pfName, cap + 0x28, 4) == 0 && builtin.config(pfName, cap + 0x34, 4) == 0, "below 4 GiB")
            #expect((0xfe20_0000...0xfe3f_ffff).contains(bar0 & ~0xf) && (0xfe20_0000...0xfe3f_ffff).contains(bar3 & ~0xf),
                    "PF \(index): VF BARs inside the root port's memory window")
        }
    }

    @Test("windows: each VF BAR window is TotalVFs x size, aligned to the per-VF size, and overlaps nothing")
    func windowsDoNotOverlap() throws {
        for client in [try SRIOVBuiltin.client(), try SRIOVExample.client(pf1: SRIOVExample.Variant()),
                       SRIOVClient(try Dom0(machine: SRIOVScale.machine()))] {
            let ranges: [(String, ClosedRange<UInt64>)] = client.dom0 { dom0 in
                var ranges: [(String, ClosedRange<UInt64>)] = []
                for address in dom0.machine.order {
                    for case let bar? in dom0.machine[address]!.bars where bar.kind.isMemory && bar.address != 0 {
                        ranges.append(("\(address) BAR", bar.address...(bar.address + bar.size - 1)))
                    }
                    for (index, window) in dom0.sriov[address]?.windows ?? [:] {
                        #expect(window.address % window.size == 0)
                        let span = window.size * UInt64(dom0.sriov[address]!.totalVFs)
                        ranges.append(("\(address) VF BAR\(index)", window.address...(window.address + span - 1)))
                    }
                }
                return ranges
            }
            for (index, first) in ranges.enumerated() {
                for second in ranges[(index + 1)...] {
                    #expect(!first.1.overlaps(second.1), "\(first.0) and \(second.0) overlap")
                }
            }
        }
    }

    struct VariantRow: CustomStringConvertible, Sendable {
        var name: String
        var isPF: Bool
        var change: @Sendable (inout SRIOVExample.Variant) -> Void
        var description: String { name }
    }

    static let variantRows = [
        VariantRow(name: "TotalVFs = 0", isPF: false) { $0.totalVFs = 0 },
        VariantRow(name: "SR-IOV capability but no PCI Express capability", isPF: false) { $0.pcieCapability = false },
        VariantRow(name: "VF BAR of 2 KiB", isPF: false) { $0.vfBARs = [(0, .memory32, 2048)] },
        VariantRow(name: "First VF Offset 0", isPF: false) { $0.offset = 0 },
        VariantRow(name: "VF Stride 0 with TotalVFs > 1", isPF: false) { $0.stride = 0 },
        VariantRow(name: "no supported page size", isPF: false) { $0.supportedPageSizes = 0 },
        VariantRow(name: "VF Stride 0 with TotalVFs = 1", isPF: true) { $0.stride = 0; $0.totalVFs = 1 },
        VariantRow(name: "no VF BARs at all", isPF: true) { $0.vfBARs = [] },
        VariantRow(name: "8 KiB pages only (still a PF; System Page Size 2)", isPF: true) { $0.supportedPageSizes = 0x2 },
        VariantRow(name: "VF BAR of 8 KiB, 32-bit", isPF: true) { $0.vfBARs = [(2, .memory32, 8192)] },
    ]

    @Test("case 34: which variant PFs get the sriov_* files", arguments: variantRows)
    func case34(_ row: VariantRow) throws {
        var variant = SRIOVExample.Variant()
        row.change(&variant)
        let client = try SRIOVExample.client(pf0: variant)
        let names = try client.list(SRIOVExample.pf0Path)
        for file in sriovPFFiles {
            #expect(names.contains(file) == row.isPF, "\(file)")
            #expect((client.statError(SRIOVExample.pf0Path + "/" + file) == nil) == row.isPF)
        }
        if row.name.hasPrefix("8 KiB") { #expect(try client.config("0000:01:00.0", 0x180, 4) == 2) }
        if !row.isPF {
            // Not a PF: the device is an ordinary function.
            #expect(!client.dom0 { $0.isPhysicalFunction(SRIOVExample.pf0) })
        }
    }

    @Test("devices without SR-IOV have no sriov_* files")
    func ordinaryDevices() throws {
        let client = try SRIOVBuiltin.client()
        for device in ["0000:01:00.0", "0000:00:1c.1", "0000:00:05.0", "0000:04:00.0"] {
            let names = try client.list("bus/pci/devices/\(device)")
            #expect(!names.contains { $0.hasPrefix("sriov_") || $0.hasPrefix("virtfn") || $0 == "physfn" }, "\(device)")
        }
    }
}

// MARK: - sriov_numvfs (cases 4 - 12, 16, 17, 33, 35, 38, 39)

@Suite("sriov_numvfs: parsing, errnos, enable and disable")
struct NumVFs {
    static let path = SRIOVExample.pf0Path + "/sriov_numvfs"

    @Test("case 4: no driver: a change is ENOENT, nothing happens")
    func case4() throws {
        let client = try SRIOVExample.unbound()
        #expect(client.write("4\n", Self.path) == .failure(.noSuchFileOrDirectory))
        #expect(try client.cat(Self.path) == "0\n")
        #expect(try client.config("0000:01:00.0", 0x168, 2) == 0)
        #expect(client.log.contains("pci 0000:01:00.0: no driver bound to device; cannot configure SR-IOV"))
    }

    @Test("case 5: no driver: writing the current value succeeds")
    func case5() throws {
        let client = try SRIOVExample.unbound()
        #expect(client.write("0\n", Self.path) == .success(2))
        #expect(client.write("0", Self.path) == .success(1))
    }

    @Test("case 6: no driver: a value above TotalVFs is ERANGE (before the driver check)")
    func case6() throws {
        let client = try SRIOVExample.unbound()
        #expect(client.write("9\n", Self.path) == .failure(.outOfRange))
        #expect(client.write("65535", Self.path) == .failure(.outOfRange))
    }

    struct InputRow: CustomStringConvertible, Sendable {
        var input: String
        var expected: SRIOVStore
        /// VFs afterwards.
        var vfs: Int
        var description: String { "\(input.debugDescription) -> \(expected)" }
    }

    static let inputRows = [
        // case 7: every parse failure is EINVAL, overflow included
        InputRow(input: "70000", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "65536", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "-1", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "abc", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "\n", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: " 4", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "4 ", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "4\n\n", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "08", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "0x", expected: .fails(.invalidArgument), vfs: 0),
        InputRow(input: "4x", expected: .fails(.invalidArgument), vfs: 0),
        // kstrtou16 base 0: decimal, 0x hex, leading-0 octal, '+', one newline
        InputRow(input: "4", expected: .count, vfs: 4),
        InputRow(input: "4\n", expected: .count, vfs: 4),
        InputRow(input: "+4", expected: .count, vfs: 4),
        InputRow(input: "0x4\n", expected: .count, vfs: 4),
        InputRow(input: "0X4", expected: .count, vfs: 4),
        InputRow(input: "04", expected: .count, vfs: 4),
        InputRow(input: "010", expected: .count, vfs: 8),
        InputRow(input: "8", expected: .count, vfs: 8),
        InputRow(input: "9", expected: .fails(.outOfRange), vfs: 0),
        InputRow(input: "0x0", expected: .count, vfs: 0),
    ]

    @Test("case 7 (and accepted forms): kstrtou16 parsing", arguments: inputRows)
    func case7(_ row: InputRow) throws {
        let client = try SRIOVExample.client()
        #expect(SRIOVStore.of(client.write(row.input, Self.path), row.input) == row.expected)
        #expect(try client.cat(Self.path) == "\(row.vfs)\n")
        #expect(try client.list(SRIOVExample.pf0Path).filter { $0.hasPrefix("virtfn") }.count == row.vfs)
    }

    @Test("case 7: a zero-length write returns 0 and does nothing, with or without a driver")
    func case7ZeroLength() throws {
        for client in [try SRIOVExample.client(), try SRIOVExample.unbound()] {
            #expect(client.write([], Self.path) == .success(0))
            #expect(client.write([], SRIOVExample.pf0Path + "/sriov_drivers_autoprobe") == .success(0))
            #expect(try client.cat(Self.path) == "0\n")
        }
    }

    @Test("case 8: PF bound to pciback (no sriov_configure): ENOENT")
    func case8() throws {
        let client = try SRIOVExample.unbound()
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/pciback/new_slot") == .success(12))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/pciback/bind") == .success(12))
        #expect(try client.readlink(SRIOVExample.pf0Directory + "/driver") == "../../../../bus/pci/drivers/pciback")
        #expect(client.write("4", Self.path) == .failure(.noSuchFileOrDirectory))
        // dev_printk's prefix is the bound driver's name (the bus's, "pci", only when none is bound).
        #expect(client.log.contains("pciback 0000:01:00.0: driver does not support SR-IOV configuration via sysfs"))
        #expect(try client.cat(Self.path) == "0\n")
        // The PF's files stay whatever its driver: they belong to the device.
        #expect(try client.cat(SRIOVExample.pf0Path + "/sriov_totalvfs") == "8\n")
    }

    @Test("case 9: `0x4\\n` with the PF driver bound: links, directories, registers")
    func case9() throws {
        let client = try SRIOVExample.client()
        #expect(client.write("0x4\n", Self.path) == .success(4))
        #expect(try client.cat(Self.path) == "4\n")
        for id in 0..<4 { #expect(client.exists(SRIOVExample.pf0Directory + "/virtfn\(id)")) }
        #expect(!client.exists(SRIOVExample.pf0Directory + "/virtfn4"))
        for name in ["0000:02:10.0", "0000:02:10.2", "0000:02:10.4", "0000:02:10.6"] {
            #expect(try client.lstat(SRIOVExample.portDirectory + "/" + name).kind == .directory)
            #expect(try client.lstat("bus/pci/devices/" + name).kind == .symlink)
        }
        #expect(try client.config("0000:01:00.0", 0x168, 2) == 0x0009)
        #expect(try client.config("0000:01:00.0", 0x170, 2) == 4)
        // Offset and stride re-read after the NumVFs write: unchanged for this device.
        #expect(try client.cat(SRIOVExample.pf0Path + "/sriov_offset") == "384\n")
        // Exactly these four VFs exist; nothing at the other functions of slot 0x10.
        let vfs = try client.list("bus/pci/devices").filter { $0.hasPrefix("0000:02:") }
        #expect(vfs == ["0000:02:10.0", "0000:02:10.2", "0000:02:10.4", "0000:02:10.6"])
    }

    @Test("case 10: virtfn, physfn and devices/ link targets")
    func case10() throws {
        let client = try SRIOVExample.enabled()
        #expect(try client.readlink(SRIOVExample.pf0Path + "/virtfn1") == "../0000:02:10.2")
        #expect(try client.readlink("bus/pci/devices/0000:02:10.2/physfn") == "../0000:01:00.0")
        #expect(try client.readlink("bus/pci/devices/0000:02:10.2") == "../../../devices/pci0000:00/0000:00:01.0/0000:02:10.2")
        for id in 0..<4 {
            #expect(try client.readlink(SRIOVExample.pf0Directory + "/virtfn\(id)") == "../" + SRIOVExample.vf0(id))
            #expect(try client.realpath(SRIOVExample.pf0Path + "/virtfn\(id)") == SRIOVExample.portDirectory + "/" + SRIOVExample.vf0(id))
            #expect(try client.realpath("bus/pci/devices/\(SRIOVExample.vf0(id))/physfn") == SRIOVExample.pf0Directory)
        }
    }

    @Test("case 11: another count while enabled is EBUSY (also when VFs are assigned); case 12: the same count succeeds")
    func case11And12() throws {
        let client = try SRIOVExample.enabled()
        #expect(client.write("2", Self.path) == .failure(.resourceBusy))
        let driver = try #require(try client.readlink(SRIOVExample.pf0Directory + "/driver").split(separator: "/").last)
        #expect(client.log.contains("\(driver) 0000:01:00.0: 4 VFs already enabled. Disable before enabling 2 VFs"))
        #expect(client.write("8", Self.path) == .failure(.resourceBusy))
        #expect(try client.cat(Self.path) == "4\n")
        #expect(client.write("4", Self.path) == .success(1))
        #expect(client.write("0x4\n", Self.path) == .success(4))
        #expect(try client.list(SRIOVExample.pf0Path).filter { $0.hasPrefix("virtfn") }.count == 4)

        // The store's own EBUSY check comes before the driver's assigned check (EPERM).
        let assigned = try SRIOVExample.enabled(newSlot: "0000:02:10.*")
        #expect(assigned.exists("bus/pci/drivers/pciback/0000:02:10.0"))
        #expect(assigned.write("2", Self.path) == .failure(.resourceBusy))
        #expect(assigned.write("0", Self.path) == .failure(.operationNotPermitted))
    }

    @Test("case 16: writing 0 removes VFs, links and directories and clears the registers")
    func case16() throws {
        let client = try SRIOVExample.enabled()
        #expect(client.write("0\n", Self.path) == .success(2))
        #expect(try client.cat(Self.path) == "0\n")
        #expect(!(try client.list(SRIOVExample.pf0Path)).contains { $0.hasPrefix("virtfn") })
        #expect(!(try client.list(SRIOVExample.portDirectory)).contains { $0.hasPrefix("0000:02:") })
        #expect(!(try client.list("bus/pci/devices")).contains { $0.hasPrefix("0000:02:") })
        for id in 0..<4 {
            #expect(client.statError("bus/pci/devices/\(SRIOVExample.vf0(id))") == .noSuchFileOrDirectory)
            #expect(client.statError(SRIOVExample.portDirectory + "/" + SRIOVExample.vf0(id)) == .noSuchFileOrDirectory)
        }
        #expect(try client.config("0000:01:00.0", 0x168, 2) == 0)
        #expect(try client.config("0000:01:00.0", 0x170, 2) == 0)
        // And again: enable and disable are repeatable.
        #expect(client.write("8", Self.path) == .success(1))
        #expect(try client.readlink(SRIOVExample.pf0Path + "/virtfn7") == "../0000:02:11.6")
        #expect(client.write("0", Self.path) == .success(1))
    }

    @Test("case 17: the last VF's bus above the bridge's subordinate bus: ENOMEM before any register write")
    func case17() throws {
        let client = try SRIOVExample.client(subordinateBus: 1)
        #expect(client.write("1", Self.path) == .failure(.outOfMemory))
        #expect(client.log.contains("igb 0000:01:00.0: can't enable 1 VFs (bus 02 out of range of [bus 01])"))
        #expect(try client.config("0000:01:00.0", 0x168, 2) == 0)
        #expect(try client.config("0000:01:00.0", 0x170, 2) == 0)
        #expect(try client.cat(Self.path) == "0\n")
        #expect(!(try client.list("bus/pci/devices")).contains { $0.hasPrefix("0000:02:") })
    }

    @Test("case 17 variant: a bridge range of several buses is printed as [bus 01-02]")
    func case17Range() throws {
        // RID 0x0100 + 0x180 + 7 x 0x40 = 0x0440: the last of 8 VFs would be on bus 04.
        var variant = SRIOVExample.Variant()
        variant.stride = 0x40
        let client = try SRIOVExample.client(pf0: variant)
        #expect(client.write("8", Self.path) == .failure(.outOfMemory))
        #expect(client.log.contains("igb 0000:01:00.0: can't enable 8 VFs (bus 04 out of range of [bus 01-02])"))
        #expect(client.write("2", Self.path) == .success(1))
        #expect(try client.readlink(SRIOVExample.pf0Path + "/virtfn1") == "../0000:02:18.0")
    }

    @Test("case 33: raw config writes of NumVFs and VF Enable create nothing the kernel knows of")
    func case33() throws {
        let client = try SRIOVExample.unbound()
        #expect(client.configWrite("0000:01:00.0", 0x170, 2, 4) == .success(2))
        #expect(client.configWrite("0000:01:00.0", 0x168, 2, 0x0009) == .success(2))
        #expect(try client.config("0000:01:00.0", 0x168, 2) == 0x0009)
        #expect(try client.config("0000:01:00.0", 0x170, 2) == 4)
        #expect(!(try client.list(SRIOVExample.pf0Path)).contains { $0.hasPrefix("virtfn") })
        #expect(!(try client.list(SRIOVExample.portDirectory)).contains { $0.hasPrefix("0000:02:") })
        #expect(try client.cat(Self.path) == "0\n")
        #expect(try client.cat(SRIOVExample.pf0Path + "/sriov_offset") == "384\n")
        #expect(client.write("1", "bus/pci/rescan") == .success(1))
        #expect(!(try client.list("bus/pci/devices")).contains { $0.hasPrefix("0000:02:") })
    }

    @Test("case 35: a driver-lowered driver_max_VFs bounds the store and resets at unbind")
    func case35() throws {
        let client = try SRIOVExample.client()
        client.dom0 { $0.sriov[SRIOVExample.pf0]!.driverMaxVFs = 4 }  // pci_sriov_set_totalvfs(dev, 4) in probe
        #expect(try client.cat(SRIOVExample.pf0Path + "/sriov_totalvfs") == "4\n")
        #expect(client.write("5", Self.path) == .failure(.outOfRange))
        #expect(client.write("4", Self.path) == .success(1))
        #expect(client.write("0", Self.path) == .success(1))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/igb/unbind") == .success(12))
        #expect(try client.cat(SRIOVExample.pf0Path + "/sriov_totalvfs") == "8\n")
        // Without a driver the bound is TotalVFs again: 9 is ERANGE, 5 reaches the driver check.
        #expect(client.write("9", Self.path) == .failure(.outOfRange))
        #expect(client.write("5", Self.path) == .failure(.noSuchFileOrDirectory))
    }

    @Test("case 38: two PFs share the VF-only bus 02; disabling one keeps the other's VFs")
    func case38() throws {
        let client = try SRIOVExample.client(pf1: SRIOVExample.Variant())
        let pf1Path = "bus/pci/devices/0000:01:00.1"
        #expect(client.write("2", Self.path) == .success(1))
        #expect(client.write("2", pf1Path + "/sriov_numvfs") == .success(1))
        let vfs = try client.list("bus/pci/devices").filter { $0.hasPrefix("0000:02:") }
        #expect(vfs == ["0000:02:10.0", "0000:02:10.1", "0000:02:10.2", "0000:02:10.3"])
        #expect(try client.readlink(pf1Path + "/virtfn0") == "../0000:02:10.1")
        #expect(try client.readlink(pf1Path + "/virtfn1") == "../0000:02:10.3")
        #expect(try client.readlink("bus/pci/devices/0000:02:10.1/physfn") == "../0000:01:00.1")
        // Each VF's BARs come from its own PF's windows.
        let pf1Window = client.dom0 { $0.sriov[SRIOVExample.pf1]!.windows[0]!.address }
        #expect(pf1Window == 0xfbe4_0000)
        #expect(try client.cat("bus/pci/devices/0000:02:10.3/resource").split(separator: "\n")[0]
                == "0x00000000fbe44000 0x00000000fbe47fff 0x0000000000140204")
        #expect(client.write("0", Self.path) == .success(1))
        let left = try client.list("bus/pci/devices").filter { $0.hasPrefix("0000:02:") }
        #expect(left == ["0000:02:10.1", "0000:02:10.3"])
        #expect(try client.realpath("bus/pci/devices/0000:02:10.3") == SRIOVExample.portDirectory + "/0000:02:10.3")
        #expect(try client.cat(pf1Path + "/sriov_numvfs") == "2\n")
    }

    @Test("case 39: pci-pf-stub has no remove callback: unbinding it leaves the VFs, then only their count is accepted")
    func case39() throws {
        var variant = SRIOVExample.Variant()
        variant.driver = "pci-pf-stub"
        let client = try SRIOVExample.client(pf0: variant)
        #expect(client.write("4", Self.path) == .success(1))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/pci-pf-stub/unbind") == .success(12))
        #expect(client.log.contains("pci 0000:01:00.0: driver left SR-IOV enabled after remove"))
        #expect(!client.exists(SRIOVExample.pf0Directory + "/driver"))
        #expect(try client.cat(Self.path) == "4\n")
        #expect(client.exists("bus/pci/devices/0000:02:10.6"))
        #expect(client.write("0", Self.path) == .failure(.noSuchFileOrDirectory))
        #expect(client.write("2", Self.path) == .failure(.noSuchFileOrDirectory))
        #expect(client.write("4", Self.path) == .success(1))
        // Bound again, the driver can disable them.
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/pci-pf-stub/bind") == .success(12))
        #expect(client.write("0", Self.path) == .success(1))
        #expect(!client.exists("bus/pci/devices/0000:02:10.0"))
    }

    @Test("a VF's address taken by an existing function: the enable fails (EEXIST) and is undone")
    func addressClash() throws {
        // offset 0x100 from 01:00.0 puts VF 0 at 02:00.0; put a device there first.
        var variant = SRIOVExample.Variant()
        variant.offset = 0x100
        var machine = SRIOVExample.machine(pf0: variant)
        machine.add(BuiltinMachine.xhci(at: PCIAddress(bus: 2, slot: 0, function: 0)))
        let client = SRIOVClient(try Dom0(machine: machine))
        #expect(client.write("1", Self.path) == .failure(.fileExists))
        #expect(try client.cat(Self.path) == "0\n")
        #expect(try client.config("0000:01:00.0", 0x168, 2) == 0)
        #expect(try client.config("0000:01:00.0", 0x170, 2) == 0)
        #expect(!(try client.list(SRIOVExample.pf0Path)).contains { $0.hasPrefix("virtfn") })
    }

    @Test("the built-in NIC: VFs on the PF's own bus, interleaved between the two PFs")
    func builtin() throws {
        let client = try SRIOVBuiltin.client()
        #expect(client.write("8\n", SRIOVBuiltin.pf0Path + "/sriov_numvfs") == .success(2))
        #expect(client.write("3\n", "bus/pci/devices/\(SRIOVBuiltin.pf1)/sriov_numvfs") == .success(2))
        for id in 0..<8 {
            #expect(try client.readlink(SRIOVBuiltin.pf0Path + "/virtfn\(id)") == "../" + SRIOVBuiltin.vf0(id))
            #expect(try client.readlink("bus/pci/devices/" + SRIOVBuiltin.vf0(id))
                    == "../../../\(SRIOVBuiltin.portDirectory)/\(SRIOVBuiltin.vf0(id))")
        }
        #expect(SRIOVBuiltin.vf0(7) == "0000:03:11.6")
        #expect(try client.readlink("bus/pci/devices/\(SRIOVBuiltin.pf1)/virtfn2") == "../0000:03:10.5")
        #expect(try client.list("bus/pci/devices").filter { $0.hasPrefix("0000:03:1") }.count == 11)
    }
}

// MARK: - What a VF is (cases 13 - 15, 29, 30, 36)

@Suite("a VF: identity, config space, directory, resources")
struct VirtualFunctions {
    static let vf = "bus/pci/devices/0000:02:10.0"

    @Test("case 13: vendor, device, irq, config size, first config bytes")
    func case13() throws {
        let client = try SRIOVExample.enabled()
        #expect(try client.cat(Self.vf + "/vendor") == "0x8086\n")
        #expect(try client.cat(Self.vf + "/device") == "0x10ca\n")
        #expect(try client.cat(Self.vf + "/irq") == "0\n")
        #expect(try client.stat(Self.vf + "/config").size == 4096)
        #expect(try client.readBytes(Self.vf + "/config", count: 4) == [0xff, 0xff, 0xff, 0xff])
        #expect(try client.readBytes(Self.vf + "/config").count == 4096)
    }

    struct IdentityRow: CustomStringConvertible, Sendable {
        var file: String
        var value: String
        var description: String { file }
    }

    static let identityRows = [
        IdentityRow(file: "vendor", value: "0x8086\n"),
        IdentityRow(file: "device", value: "0x10ca\n"),
        IdentityRow(file: "subsystem_vendor", value: "0x8086\n"),
        IdentityRow(file: "subsystem_device", value: "0xa03c\n"),
        IdentityRow(file: "class", value: "0x020000\n"),
        IdentityRow(file: "revision", value: "0x01\n"),
        IdentityRow(file: "irq", value: "0\n"),
        IdentityRow(file: "modalias", value: "pci:v00008086d000010CAsv00008086sd0000A03Cbc02sc00i00\n"),
        IdentityRow(file: "ari_enabled", value: "0\n"),
        IdentityRow(file: "driver_override", value: "(null)\n"),
    ]

    @Test("§4.4: the kernel's values for a VF (the PF's vendor, the VF Device ID, VF 0's class and subsystem)",
          arguments: identityRows)
    func identity(_ row: IdentityRow) throws {
        let client = try SRIOVExample.enabled()
        for id in 0..<4 {
            #expect(try client.cat("bus/pci/devices/\(SRIOVExample.vf0(id))/" + row.file) == row.value)
        }
        let builtin = try SRIOVBuiltin.client()
        #expect(builtin.write("2", SRIOVBuiltin.pf0Path + "/sriov_numvfs") == .success(1))
        #expect(try builtin.cat("bus/pci/devices/0000:03:10.2/" + row.file) == row.value)
    }

    struct HeaderRow: CustomStringConvertible, Sendable {
        var name: String
        var offset: Int
        var width: Int
        var value: UInt32
        /// What a dom0 write of all-ones leaves (read-only registers keep their value).
        var afterAllOnes: UInt32
        var description: String { "\(name) @\(String(offset, radix: 16))" }
    }

    static let headerRows = [
        HeaderRow(name: "Vendor ID", offset: 0x00, width: 2, value: 0xffff, afterAllOnes: 0xffff),
        HeaderRow(name: "Device ID", offset: 0x02, width: 2, value: 0xffff, afterAllOnes: 0xffff),
        HeaderRow(name: "Command (only bus master writable)", offset: 0x04, width: 2, value: 0x0000, afterAllOnes: 0x0004),
        HeaderRow(name: "Status (capabilities list)", offset: 0x06, width: 2, value: 0x0010, afterAllOnes: 0x0010),
        HeaderRow(name: "Revision ID", offset: 0x08, width: 1, value: 0x01, afterAllOnes: 0x01),
        HeaderRow(name: "Class code", offset: 0x09, width: 1, value: 0x00, afterAllOnes: 0x00),
        HeaderRow(name: "Class code (base, sub)", offset: 0x0a, width: 2, value: 0x0200, afterAllOnes: 0x0200),
        HeaderRow(name: "Cache Line Size", offset: 0x0c, width: 1, value: 0, afterAllOnes: 0),
        HeaderRow(name: "Latency Timer", offset: 0x0d, width: 1, value: 0, afterAllOnes: 0),
        HeaderRow(name: "Header Type", offset: 0x0e, width: 1, value: 0x00, afterAllOnes: 0x00),
        HeaderRow(name: "BIST", offset: 0x0f, width: 1, value: 0, afterAllOnes: 0),
        HeaderRow(name: "BAR0", offset: 0x10, width: 4, value: 0, afterAllOnes: 0),
        HeaderRow(name: "BAR1", offset: 0x14, width: 4, value: 0, afterAllOnes: 0),
        HeaderRow(name: "BAR2", offset: 0x18, width: 4, value: 0, afterAllOnes: 0),
        HeaderRow(name: "BAR3", offset: 0x1c, width: 4, value: 0, afterAllOnes: 0),
        HeaderRow(name: "BAR4", offset: 0x20, width: 4, value: 0, afterAllOnes: 0),
        HeaderRow(name: "BAR5", offset: 0x24, width: 4, value: 0, afterAllOnes: 0),
        HeaderRow(name: "CardBus CIS", offset: 0x28, width: 4, value: 0, afterAllOnes: 0),
        HeaderRow(name: "Subsystem Vendor ID", offset: 0x2c, width: 2, value: 0x8086, afterAllOnes: 0x8086),
        HeaderRow(name: "Subsystem ID", offset: 0x2e, width: 2, value: 0xa03c, afterAllOnes: 0xa03c),
        HeaderRow(name: "Expansion ROM", offset: 0x30, width: 4, value: 0, afterAllOnes: 0),
        HeaderRow(name: "Capabilities Pointer", offset: 0x34, width: 1, value: 0x70, afterAllOnes: 0x70),
        HeaderRow(name: "Interrupt Line", offset: 0x3c, width: 1, value: 0, afterAllOnes: 0),
        HeaderRow(name: "Interrupt Pin", offset: 0x3d, width: 1, value: 0, afterAllOnes: 0),
        HeaderRow(name: "Min_Gnt/Max_Lat", offset: 0x3e, width: 2, value: 0, afterAllOnes: 0),
    ]

    @Test("§4.1: the VF's type-0 header as its config file returns it; read-only registers ignore writes",
          arguments: headerRows)
    func header(_ row: HeaderRow) throws {
        let client = try SRIOVExample.enabled()
        let vf = SRIOVExample.vf0(1)
        #expect(try client.config(vf, row.offset, row.width) == row.value)
        let allOnes: UInt32 = row.width == 4 ? 0xffff_ffff : (1 << (8 * UInt32(row.width))) - 1
        #expect(client.configWrite(vf, row.offset, row.width, allOnes) == .success(row.width))
        #expect(try client.config(vf, row.offset, row.width) == row.afterAllOnes)
    }

    @Test("§4.2: capabilities of a VF: MSI-X, PCI Express with FLR, AER, ARI; MPS/MRRS/RO read-only")
    func capabilities() throws {
        let client = try SRIOVExample.enabled()
        let vf = SRIOVExample.vf0(0)
        #expect(try client.config(vf, 0x70, 1) == 0x11)                       // MSI-X
        #expect(try client.config(vf, 0x71, 1) == 0xa0)
        #expect(try client.config(vf, 0x72, 2) & 0x7ff == 2)                  // 3 vectors
        #expect(try client.config(vf, 0x74, 4) == 0x0000_0003)                // table in BAR3 at 0
        #expect(try client.config(vf, 0xa0, 1) == 0x10)                       // PCI Express
        #expect(try client.config(vf, 0xa4, 4) & 0x1000_0000 != 0)            // FLR capable
        #expect(client.configWrite(vf, 0xa8, 2, 0x70f0) == .success(2))        // MPS, RO, MRRS
        #expect(try client.config(vf, 0xa8, 2) == 0)
        #expect(try client.config(vf, 0x100, 4) & 0xffff == 0x0001)           // AER
        #expect(try client.config(vf, 0x150, 4) & 0xffff == 0x000e)           // ARI
        // No SR-IOV capability in a VF: walk the extended list.
        var position = 0x100
        var ids: [UInt32] = []
        while position != 0 {
            let header = try client.config(vf, position, 4)
            ids.append(header & 0xffff)
            position = Int(header >> 20)
        }
        #expect(ids == [0x0001, 0x000e])
        // The VF has a reset file (FLR); pci_reset_function saves and restores around the FLR.
        #expect(client.configWrite(vf, 0x04, 2, 0x0004) == .success(2))
        #expect(client.write("1", "bus/pci/devices/\(vf)/reset") == .success(1))
        #expect(try client.config(vf, 0x04, 2) == 0x0004)
        #expect(try client.config(vf, 0x00, 4) == 0xffff_ffff)
    }

    @Test("case 14: a VF directory has physfn and sriov_vf_msix_count (0200), and no remove, rescan, rom or PF files")
    func case14() throws {
        let client = try SRIOVExample.enabled()
        let names = Set(try client.list(Self.vf))
        #expect(names.isSuperset(of: ["physfn", "sriov_vf_msix_count", "config", "vendor", "device", "irq", "resource",
                                      "driver_override", "enable", "reset", "subsystem", "uevent", "modalias"]))
        for absent in ["remove", "rescan", "rom", "driver", "virtfn0", "dep_link"] + sriovPFFiles {
            #expect(!names.contains(absent), "\(absent)")
            #expect(client.statError(Self.vf + "/" + absent) == .noSuchFileOrDirectory, "\(absent)")
        }
        let msix = try client.stat(Self.vf + "/sriov_vf_msix_count")
        #expect(msix.mode == 0o200)
        #expect(client.openError(Self.vf + "/sriov_vf_msix_count", O_RDONLY) == .permissionDenied)
        #expect(try client.lstat(Self.vf + "/physfn").kind == .symlink)
        // The PF, for comparison, has remove and rescan but no physfn or sriov_vf_msix_count.
        let pf = Set(try client.list(SRIOVExample.pf0Path))
        #expect(pf.isSuperset(of: ["remove", "rescan", "virtfn0", "virtfn3"]))
        #expect(!pf.contains("physfn") && !pf.contains("sriov_vf_msix_count"))
    }

    @Test("case 15: PF resource lines 7-12 (windows for TotalVFs) and VF 2's resource (§3.4)")
    func case15() throws {
        let client = try SRIOVExample.enabled()
        let pfLines = try client.cat(SRIOVExample.pf0Path + "/resource").split(separator: "\n", omittingEmptySubsequences: false)
        #expect(pfLines.count == 14)  // 13 lines and the final empty split
        #expect(Array(pfLines[7...12]) == [
            "0x00000000fbe00000 0x00000000fbe1ffff 0x0000000000140204",
            "0x0000000000000000 0x0000000000000000 0x0000000000000000",
            "0x0000000000000000 0x0000000000000000 0x0000000000000000",
            "0x00000000fbe20000 0x00000000fbe3ffff 0x0000000000140204",
            "0x0000000000000000 0x0000000000000000 0x0000000000000000",
            "0x0000000000000000 0x0000000000000000 0x0000000000000000",
        ])
        // Lines 0-6 are the PF's own BARs.
        #expect(pfLines[0] == "0x00000000fbf00000 0x00000000fbf1ffff 0x0000000000040200")
        #expect(pfLines[3] == "0x00000000fbf20000 0x00000000fbf23fff 0x0000000000040200")
        let zero = "0x0000000000000000 0x0000000000000000 0x0000000000000000"
        #expect(try client.cat("bus/pci/devices/0000:02:10.4/resource") == [
            "0x00000000fbe08000 0x00000000fbe0bfff 0x0000000000140204", zero, zero,
            "0x00000000fbe28000 0x00000000fbe2bfff 0x0000000000140204", zero, zero, zero,
            zero, zero, zero, zero, zero, zero,
        ].map { $0 + "\n" }.joined())
        // The windows do not change with NumVFs.
        #expect(client.write("0", SRIOVExample.pf0Path + "/sriov_numvfs") == .success(1))
        #expect(try client.cat(SRIOVExample.pf0Path + "/resource").split(separator: "\n")[7]
                == "0x00000000fbe00000 0x00000000fbe1ffff 0x0000000000140204")
    }

    struct FlagRow: CustomStringConvertible, Sendable {
        var kind: BARDescriptor.Kind
        var flags: String
        var description: String { kind.rawValue }
    }

    static let flagRows = [
        FlagRow(kind: .memory64, flags: "0x0000000000140204"),
        FlagRow(kind: .memory64Prefetchable, flags: "0x000000000014220c"),
        FlagRow(kind: .memory32, flags: "0x0000000000040200"),
        FlagRow(kind: .memory32Prefetchable, flags: "0x0000000000042208"),
    ]

    @Test("§3.4: IOV and VF resource flags follow the VF BAR's type; the VF's line is its slice of the window",
          arguments: flagRows)
    func resourceFlags(_ row: FlagRow) throws {
        var variant = SRIOVExample.Variant()
        variant.vfBARs = [(2, row.kind, 64 * 1024)]
        let client = try SRIOVExample.client(pf0: variant)
        #expect(client.write("3", SRIOVExample.pf0Path + "/sriov_numvfs") == .success(1))
        let pfLine = try client.cat(SRIOVExample.pf0Path + "/resource").split(separator: "\n")[9]
        let fields = pfLine.split(separator: " ")
        #expect(fields[2] == Substring(row.flags))
        let start = try #require(UInt64(fields[0].dropFirst(2), radix: 16))
        #expect(UInt64(fields[1].dropFirst(2), radix: 16) == start + 8 * 64 * 1024 - 1)
        let vfLine = try client.cat("bus/pci/devices/\(SRIOVExample.vf0(2))/resource").split(separator: "\n")[2]
        #expect(vfLine == "0x" + hex(start + 2 * 0x1_0000, width: 16) + " 0x" + hex(start + 3 * 0x1_0000 - 1, width: 16)
                + " " + row.flags)
        // A 64-bit prefetchable window goes into the prefetchable window when the bridge has one;
        // everything else into the (32-bit) memory window.
        #expect(start < 0x1_0000_0000)
    }

    @Test("§3.3: a VF's directory is a sibling of the PF's; driver and subsystem links have the PF's depth")
    func placement() throws {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.0")
        let vfDirectory = SRIOVExample.portDirectory + "/0000:02:10.0"
        #expect(try client.realpath(Self.vf) == vfDirectory)
        #expect(try client.realpath(Self.vf + "/..") == SRIOVExample.portDirectory)
        #expect(try client.realpath(SRIOVExample.pf0Path + "/..") == SRIOVExample.portDirectory)
        #expect(try client.list(SRIOVExample.portDirectory).filter { $0.hasPrefix("0000:") }
                == ["0000:01:00.0", "0000:02:10.0", "0000:02:10.2", "0000:02:10.4", "0000:02:10.6"])
        #expect(try client.readlink(vfDirectory + "/subsystem") == client.readlink(SRIOVExample.pf0Directory + "/subsystem"))
        #expect(try client.readlink(vfDirectory + "/driver") == "../../../../bus/pci/drivers/pciback")
        #expect(try client.readlink(SRIOVExample.pf0Directory + "/driver") == "../../../../bus/pci/drivers/igb")
        #expect(try client.realpath(vfDirectory + "/driver") == "bus/pci/drivers/pciback")
        #expect(try client.readlink("bus/pci/drivers/pciback/0000:02:10.0") == "../../../../" + vfDirectory)
        // Built-in: the VFs on bus 03 sit beside the PFs under 00:1c.1.
        let builtin = try SRIOVBuiltin.client()
        #expect(builtin.write("1", SRIOVBuiltin.pf0Path + "/sriov_numvfs") == .success(1))
        #expect(try builtin.realpath("bus/pci/devices/0000:03:10.0/..") == SRIOVBuiltin.portDirectory)
    }

    @Test("case 29: QEMU's stat of physfn succeeds for a VF and is ENOENT for the PF")
    func case29() throws {
        let client = try SRIOVExample.enabled()
        #expect(client.statError(Self.vf + "/physfn") == nil)
        #expect(try client.stat(Self.vf + "/physfn").kind == .directory)
        #expect(client.statError(SRIOVExample.pf0Path + "/physfn") == .noSuchFileOrDirectory)
        // QEMU's other host files for the VF: vendor/device/class parse base 16, irq base 10.
        for (file, value) in [("vendor", 0x8086), ("device", 0x10ca), ("class", 0x020000)] {
            let text = try client.cat(Self.vf + "/" + file)
            #expect(UInt32(text.dropFirst(2).dropLast(), radix: 16) == UInt32(value), "\(file)")
        }
        // resource: the first 399 bytes in one read at offset 0, seven parseable lines.
        let file = try client.tree.open(try client.resolve(Self.vf + "/resource").inode, flags: O_RDONLY, caller: .root)
        defer { client.tree.release(file) }
        let first = try client.tree.read(file, offset: 0, size: 399)
        #expect(first.count == 399)
        #expect(String(decoding: first, as: UTF8.self).split(separator: "\n").prefix(7).allSatisfy { $0.split(separator: " ").count == 3 })
    }

    @Test("case 30: libxl's fscanf(\"%u\") of a VF's irq reads 0, so no PIRQ is mapped")
    func case30() throws {
        let client = try SRIOVExample.enabled()
        let text = try client.cat(Self.vf + "/irq")
        #expect(text == "0\n")
        // glibc's %u is strtoul base 10: all of "0", then the newline stops it.
        var end: UnsafeMutablePointer<CChar>?
        let irq = text.withCString { pointer in
            let value = strtoul(pointer, &end, 10)
            #expect(end.map { $0 - UnsafeMutablePointer(mutating: pointer) } == 1)
            return value
        }
        #expect(irq == 0)
        #expect(!(irq > 0 && irq < 0xff), "the caller maps a PIRQ only for 0 < irq < 0xff")
    }

    @Test("case 36: libvirt's listing: sriov_totalvfs (decimal, <= 16 bytes), then virtfn0.. until the first gap")
    func case36() throws {
        let client = try SRIOVExample.enabled()
        let total = try client.readBytes(SRIOVExample.pf0Path + "/sriov_totalvfs", count: 16)
        #expect(String(decoding: total, as: UTF8.self) == "8\n")
        var found: [String] = []
        var index = 0
        while client.statError(SRIOVExample.pf0Path + "/virtfn\(index)") == nil {  // virFileExists follows the link
            let canonical = try client.realpath(SRIOVExample.pf0Path + "/virtfn\(index)")
            found.append(String(canonical.split(separator: "/").last ?? ""))
            index += 1
        }
        #expect(found == ["0000:02:10.0", "0000:02:10.2", "0000:02:10.4", "0000:02:10.6"])
        // virPCIGetPhysicalFunction: canonicalize physfn, parse the basename.
        #expect(try client.realpath("bus/pci/devices/0000:02:10.4/physfn").split(separator: "/").last == "0000:01:00.0")
    }
}

// MARK: - sriov_drivers_autoprobe and binding (cases 18 - 22)

@Suite("sriov_drivers_autoprobe: kstrtobool and the probe gate")
struct Autoprobe {
    static let path = SRIOVExample.pf0Path + "/sriov_drivers_autoprobe"

    struct Row: CustomStringConvertible, Sendable {
        var input: String
        var expected: SRIOVStore
        /// What the file reads afterwards (from the initial 1).
        var after: String
        var description: String { "\(input.debugDescription) -> \(expected)" }
    }

    static let rows = [
        // case 18
        Row(input: "0", expected: .count, after: "0\n"),
        Row(input: "off", expected: .count, after: "0\n"),
        Row(input: "N\n", expected: .count, after: "0\n"),
        Row(input: "yes", expected: .count, after: "1\n"),
        Row(input: "2", expected: .fails(.invalidArgument), after: "1\n"),
        Row(input: "\n", expected: .fails(.invalidArgument), after: "1\n"),
        // more of kstrtobool: the first one or two characters decide
        Row(input: "n", expected: .count, after: "0\n"),
        Row(input: "f", expected: .count, after: "0\n"),
        Row(input: "F", expected: .count, after: "0\n"),
        Row(input: "of", expected: .count, after: "0\n"),
        Row(input: "OFF", expected: .count, after: "0\n"),
        Row(input: "0junk", expected: .count, after: "0\n"),
        Row(input: "1", expected: .count, after: "1\n"),
        Row(input: "10", expected: .count, after: "1\n"),
        Row(input: "1junk", expected: .count, after: "1\n"),
        Row(input: "Y", expected: .count, after: "1\n"),
        Row(input: "t", expected: .count, after: "1\n"),
        Row(input: "T", expected: .count, after: "1\n"),
        Row(input: "on", expected: .count, after: "1\n"),
        Row(input: "oN", expected: .count, after: "1\n"),
        Row(input: "o", expected: .fails(.invalidArgument), after: "1\n"),
        Row(input: "ox", expected: .fails(.invalidArgument), after: "1\n"),
        Row(input: " 1", expected: .fails(.invalidArgument), after: "1\n"),
        Row(input: "-1", expected: .fails(.invalidArgument), after: "1\n"),
        Row(input: "x", expected: .fails(.invalidArgument), after: "1\n"),
    ]

    @Test("case 18: writes and what reads back", arguments: rows)
    func case18(_ row: Row) throws {
        let client = try SRIOVExample.client()
        #expect(SRIOVStore.of(client.write(row.input, Self.path), row.input) == row.expected)
        #expect(try client.cat(Self.path) == row.after)
    }

    @Test("case 18: after 0 then yes the file reads 1 again; no driver is needed")
    func case18Sequence() throws {
        let client = try SRIOVExample.unbound()
        #expect(client.write("0", Self.path) == .success(1))
        #expect(try client.cat(Self.path) == "0\n")
        #expect(client.write("yes", Self.path) == .success(3))
        #expect(try client.cat(Self.path) == "1\n")
    }

    @Test("case 19: autoprobe 0: new_slot succeeds, bind is ENODEV, no driver link")
    func case19() throws {
        let client = try SRIOVExample.enabled(autoprobe: "0")
        #expect(client.write("0000:02:10.0", "bus/pci/drivers/pciback/new_slot") == .success(12))
        #expect(client.write("0000:02:10.0", "bus/pci/drivers/pciback/bind") == .failure(.noSuchDevice))
        #expect(!client.exists("bus/pci/devices/0000:02:10.0/driver"))
        #expect(!client.exists("bus/pci/drivers/pciback/0000:02:10.0"))
        #expect(try client.cat("bus/pci/drivers/pciback/slots").contains("0000:02:10.0"))
    }

    @Test("case 20: autoprobe 0: driver_override then drivers_probe binds to pciback")
    func case20() throws {
        let client = try SRIOVExample.enabled(autoprobe: "0")
        #expect(client.write("pciback", "bus/pci/devices/0000:02:10.0/driver_override") == .success(7))
        #expect(client.write("0000:02:10.0", "bus/pci/drivers_probe") == .success(12))
        #expect(try client.readlink(SRIOVExample.portDirectory + "/0000:02:10.0/driver") == "../../../../bus/pci/drivers/pciback")
        #expect(try client.readlink(SRIOVExample.pf0Directory + "/driver") == "../../../../bus/pci/drivers/igb")
        #expect(try client.cat("bus/pci/devices/0000:02:10.0/driver_override") == "pciback\n")
        // The override also lifts the gate for bind (libvirt's older path).
        #expect(client.write("pciback\n", "bus/pci/devices/0000:02:10.2/driver_override") == .success(8))
        #expect(client.write("0000:02:10.2", "bus/pci/drivers/pciback/bind") == .success(12))
        #expect(client.exists("bus/pci/drivers/pciback/0000:02:10.2"))
    }

    @Test("case 21: autoprobe 0, no override: drivers_probe succeeds and binds nothing")
    func case21() throws {
        let client = try SRIOVExample.enabled(autoprobe: "0", newSlot: "0000:02:10.*")
        #expect(client.write("0000:02:10.2", "bus/pci/drivers_probe") == .success(12))
        #expect(!client.exists("bus/pci/devices/0000:02:10.2/driver"))
        // Setting autoprobe back to 1 lets later attempts succeed.
        #expect(client.write("1", Self.path) == .success(1))
        #expect(client.write("0000:02:10.2", "bus/pci/drivers_probe") == .success(12))
        #expect(try client.readlink("bus/pci/devices/0000:02:10.2/driver") == "../../../../bus/pci/drivers/pciback")
        #expect(client.write("0000:02:10.4", "bus/pci/drivers/pciback/bind") == .success(12))
        #expect(client.exists("bus/pci/drivers/pciback/0000:02:10.4"))
        // And back to 0: VFs already bound keep their driver; new attempts fail again.
        #expect(client.write("0", Self.path) == .success(1))
        #expect(client.exists("bus/pci/drivers/pciback/0000:02:10.4"))
        #expect(client.write("0000:02:10.6", "bus/pci/drivers/pciback/bind") == .failure(.noSuchDevice))
    }

    @Test("case 22: autoprobe 1 and the slots listed before enabling: VFs are pciback's when the write returns")
    func case22() throws {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.*")
        for id in 0..<4 {
            let vf = SRIOVExample.vf0(id)
            #expect(try client.readlink("bus/pci/devices/\(vf)/driver") == "../../../../bus/pci/drivers/pciback")
            #expect(try client.readlink("bus/pci/drivers/pciback/\(vf)") == "../../../../\(SRIOVExample.portDirectory)/\(vf)")
        }
        #expect(client.dom0 { dom0 in dom0.assignedVirtualFunctions(of: SRIOVExample.pf0) } == 4)
        // Created with autoprobe 0 instead, the same slots leave them unbound.
        let gated = try SRIOVExample.enabled(autoprobe: "0", newSlot: "0000:02:10.*")
        #expect(!(try gated.list("bus/pci/drivers/pciback")).contains { $0.hasPrefix("0000:") })
    }

    @Test("seizing: hiding the PF does not seize its VFs; the VF's own BDF or a wildcard does; a VF-only bus has no bridge above")
    func seizing() throws {
        struct Row { var slot: String; var machine: String; var seized: [String] }
        let rows = [
            Row(slot: "0000:01:00.0", machine: "example", seized: []),
            Row(slot: "0000:02:10.2", machine: "example", seized: ["0000:02:10.2"]),
            Row(slot: "0000:02:10.*", machine: "example", seized: ["0000:02:10.0", "0000:02:10.2", "0000:02:10.4", "0000:02:10.6"]),
            Row(slot: "02:10.4", machine: "example", seized: ["0000:02:10.4"]),
            // bus 02 has no bridge device: the root port above bus 01 does not match its VFs
            Row(slot: "0000:00:01.0", machine: "example", seized: []),
            // the built-in VFs share the PF's bus 03, whose bridge 00:1c.1 is on the chain
            Row(slot: "0000:00:1c.1", machine: "builtin", seized: ["0000:03:10.0", "0000:03:10.2"]),
            Row(slot: "0000:03:00.0", machine: "builtin", seized: []),
        ]
        for row in rows {
            let client = row.machine == "example" ? try SRIOVExample.client() : try SRIOVBuiltin.client()
            let pf = row.machine == "example" ? SRIOVExample.pf0Path : SRIOVBuiltin.pf0Path
            #expect(client.write(row.slot, "bus/pci/drivers/pciback/new_slot") == .success(row.slot.utf8.count))
            #expect(client.write(row.machine == "example" ? "4" : "2", pf + "/sriov_numvfs") == .success(1), "\(row.slot)")
            let bound = try client.list("bus/pci/drivers/pciback").filter { $0.hasPrefix("0000:") }
            #expect(bound == row.seized, "new_slot \(row.slot)")
            // The PF itself stays with its driver.
            #expect(try client.readlink(pf + "/driver").hasSuffix("/igb"))
        }
    }

    @Test("the seize list survives disable: re-enabled VFs are seized again, and stale overrides are gone")
    func reenable() throws {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.0")
        #expect(client.write("pciback", "bus/pci/devices/0000:02:10.2/driver_override") == .success(7))
        #expect(client.write("0000:02:10.2", "bus/pci/drivers_probe") == .success(12))
        #expect(client.write("0000:02:10.0", "bus/pci/drivers/pciback/unbind") == .success(12))
        #expect(client.write("0000:02:10.2", "bus/pci/drivers/pciback/unbind") == .success(12))
        #expect(client.write("0", SRIOVExample.pf0Path + "/sriov_numvfs") == .success(1))
        #expect(try client.cat("bus/pci/drivers/pciback/slots").contains("0000:02:10.0"))
        #expect(client.write("4", SRIOVExample.pf0Path + "/sriov_numvfs") == .success(1))
        #expect(client.exists("bus/pci/drivers/pciback/0000:02:10.0"))
        // A new pci_dev has no driver_override; 02:10.2 was added to the slots by pcistub_probe
        // (the override path), so it is seized again through the list.
        #expect(try client.cat("bus/pci/devices/0000:02:10.2/driver_override") == "(null)\n")
        #expect(try client.cat("bus/pci/devices/0000:02:10.4/driver_override") == "(null)\n")
    }
}

// MARK: - pciback and the guest (cases 23 - 28; release, unbind, PF unbind)

@Suite("a VF on pciback: assignment, guests, release and unbind")
struct Pciback {
    static let numvfs = SRIOVExample.pf0Path + "/sriov_numvfs"

    @Test("case 23: VFs bound to pciback are assigned: writing 0 is EPERM, the VFs stay")
    func case23() throws {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.*")
        #expect(client.write("0", Self.numvfs) == .failure(.operationNotPermitted))
        #expect(client.log.contains("igb 0000:01:00.0: Cannot modify SR-IOV while VFs are assigned"))
        #expect(try client.cat(Self.numvfs) == "4\n")
        #expect(try client.list("bus/pci/drivers/pciback").filter { $0.hasPrefix("0000:") }.count == 4)
        // One VF bound is enough; unbinding all of them lifts it.
        for id in 1..<4 {
            #expect(client.write(SRIOVExample.vf0(id), "bus/pci/drivers/pciback/unbind") == .success(12))
        }
        #expect(client.write("0", Self.numvfs) == .failure(.operationNotPermitted))
        #expect(client.write(SRIOVExample.vf0(0), "bus/pci/drivers/pciback/unbind") == .success(12))
        #expect(!client.exists("bus/pci/drivers/pciback/0000:02:10.0"))
        #expect(client.exists("bus/pci/devices/0000:02:10.0"))
        #expect(client.write("0", Self.numvfs) == .success(1))
    }

    @Test("case 24: unbinding the PF driver: pciback lets its VFs go first, then the driver disables SR-IOV")
    func case24() throws {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.*")
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/igb/unbind") == .success(12))
        #expect(!(try client.list("bus/pci/drivers/pciback")).contains { $0.hasPrefix("0000:") })
        #expect(!(try client.list(SRIOVExample.portDirectory)).contains { $0.hasPrefix("0000:02:") })
        #expect(try client.cat(Self.numvfs) == "0\n")
        #expect(try client.config("0000:01:00.0", 0x168, 2) == 0)
        #expect(try client.cat("bus/pci/drivers/pciback/slots")
                == (0..<8).map { "0000:02:10.\($0)\n" }.joined())
        #expect(!client.log.contains { $0.contains("driver left SR-IOV enabled") })
        #expect(!client.log.contains { $0.contains("******") })
    }

    @Test("PF unbind with one VF in use by a guest: that one stays bound, the others go, SR-IOV stays enabled")
    func pfUnbindWithOwnedVF() throws {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.*")
        #expect(client.write("7 0000:02:10.2", "fs/pcibackfs/attach") == .success(14))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/igb/unbind") == .success(12))
        #expect(try client.list("bus/pci/drivers/pciback").filter { $0.hasPrefix("0000:") } == ["0000:02:10.2"])
        #expect(try client.cat(Self.numvfs) == "4\n")
        #expect(client.log.contains("pci 0000:01:00.0: driver left SR-IOV enabled after remove"))
        #expect(client.exists("fs/pcibackfs/frontends/7/bus/pci/devices/0000:00:00.2"))
        // Without a driver the count cannot change; after the guest lets go and the VF is
        // unbound, rebinding the PF driver can disable.
        #expect(client.write("0", Self.numvfs) == .failure(.noSuchFileOrDirectory))
        #expect(client.write("7 0000:02:10.2", "fs/pcibackfs/detach") == .success(14))
        #expect(client.write("0000:02:10.2", "bus/pci/drivers/pciback/unbind") == .success(12))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/igb/bind") == .success(12))
        #expect(client.write("0", Self.numvfs) == .success(1))
    }

    @Test("PF bound to pciback: unbinding it lets pciback's unowned VFs go too")
    func pfOnPciback() throws {
        // VFs exist (one owned by a guest) when igb lets go; the PF then goes to pciback.
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.*")
        #expect(client.write("3 0000:02:10.0", "fs/pcibackfs/attach") == .success(14))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/igb/unbind") == .success(12))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/pciback/new_slot") == .success(12))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/pciback/bind") == .success(12))
        #expect(client.write("0000:02:10.4", "bus/pci/drivers/pciback/bind") == .success(12))
        #expect(client.write("0000:01:00.0", "bus/pci/drivers/pciback/unbind") == .success(12))
        #expect(try client.list("bus/pci/drivers/pciback").filter { $0.hasPrefix("0000:") } == ["0000:02:10.0"])
        #expect(try client.cat(Self.numvfs) == "4\n")
    }

    @Test("case 25: sriov_vf_msix_count: EINVAL, EINVAL, then EOPNOTSUPP (no PF driver has an MSI-X pool)")
    func case25() throws {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.0")
        let path = "bus/pci/devices/0000:02:10.0/sriov_vf_msix_count"
        #expect(client.write("abc", path) == .failure(.invalidArgument))
        #expect(client.write("-1", path) == .failure(.invalidArgument))
        #expect(client.write("3", path) == .failure(.notSupported))
        #expect(client.write("0", path) == .failure(.notSupported))
        #expect(client.write("0x10\n", path) == .failure(.notSupported))
        #expect(client.write(" 3", path) == .failure(.invalidArgument))
        // An unbound VF and a PF without a driver: the same EOPNOTSUPP.
        #expect(client.write("3", "bus/pci/devices/0000:02:10.2/sriov_vf_msix_count") == .failure(.notSupported))
        #expect(try client.cat(SRIOVExample.pf0Path + "/sriov_vf_total_msix") == "0\n")
    }

    struct SlotRow: CustomStringConvertible, Sendable {
        var order: [String]
        var virtual: [String]
        var description: String { order.joined(separator: ", ") }
    }

    static let slotRows = [
        SlotRow(order: ["0000:02:10.0", "0000:02:10.2", "0000:02:10.4"], virtual: ["0000:00:00.0", "0000:00:01.2", "0000:00:01.4"]),
        SlotRow(order: ["0000:02:10.2", "0000:02:10.0", "0000:02:10.4"], virtual: ["0000:00:00.2", "0000:00:01.0", "0000:00:00.4"]),
        SlotRow(order: ["0000:02:10.2", "0000:02:10.4", "0000:02:10.6"], virtual: ["0000:00:00.2", "0000:00:00.4", "0000:00:00.6"]),
        SlotRow(order: ["0000:02:10.0", "0000:02:10.6"], virtual: ["0000:00:00.0", "0000:00:01.6"]),
    ]

    @Test("case 26 and §5.3: vpci slots for VFs (a VF at function 0 neither joins nor is joined)", arguments: slotRows)
    func case26(_ row: SlotRow) throws {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.*")
        for host in row.order {
            let line = "1 \(host)"
            #expect(client.write(line, "fs/pcibackfs/attach") == .success(line.utf8.count))
        }
        let exports = client.dom0 { $0.frontends[1]!.exports.map { ($0.host.description, $0.virtual.description) } }
        #expect(exports.map(\.0) == row.order)
        #expect(exports.map(\.1) == row.virtual)
        #expect(try client.list("fs/pcibackfs/frontends/1/bus/pci/devices") == row.virtual.sorted())
        #expect(client.log.contains { $0.contains("vpci: assign to virtual slot") })
    }

    @Test("§5.3: a PF never shares a virtual slot with its VFs")
    func pfOwnSlot() throws {
        var unbound = SRIOVExample.Variant()
        unbound.driver = nil
        let client = try SRIOVExample.client(pf1: unbound)
        #expect(client.write("0000:01:00.1", "bus/pci/drivers/pciback/new_slot") == .success(12))
        #expect(client.write("0000:01:00.1", "bus/pci/drivers/pciback/bind") == .success(12))
        #expect(client.write("0000:02:10.*", "bus/pci/drivers/pciback/new_slot") == .success(12))
        #expect(client.write("2", Self.numvfs) == .success(1))
        for host in ["0000:02:10.2", "0000:01:00.1", "0000:02:10.0"] {
            #expect(client.write("1 \(host)", "fs/pcibackfs/attach") == .success(14))
        }
        let virtual = client.dom0 { $0.frontends[1]!.exports.map(\.virtual.description) }
        #expect(virtual == ["0000:00:00.2", "0000:00:01.1", "0000:00:02.0"])
    }

    /// Case 26's setup: VFs 02:10.0, 02:10.2, 02:10.4 exported in that order to domain 1.
    static func exported(policy: FilterPolicy = FilterPolicy()) throws -> SRIOVClient {
        let client = try SRIOVExample.enabled(newSlot: "0000:02:10.*")
        for host in ["0000:02:10.0", "0000:02:10.2", "0000:02:10.4"] {
            #expect(client.write("1 \(host)", "fs/pcibackfs/attach") == .success(14))
        }
        return client
    }

    static let vdev0 = PCIAddress(bus: 0, slot: 0, function: 0)  // host 02:10.0
    static let vdev14 = PCIAddress(bus: 0, slot: 1, function: 4) // host 02:10.4, VF id 2

    @Test("case 27: the guest's view of VF 2 through pciback: IDs from the kernel, BARs from resources, pin 0")
    func case27() throws {
        let client = try Self.exported()
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x00, size: 4).value == 0x10ca_8086)
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x10, size: 4).value == 0xfbe0_8004)
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x14, size: 4).value == 0)
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x1c, size: 4).value == 0xfbe2_8004)
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x3c, size: 4).value == 0x0000_0000)
        #expect(client.op(1, .configWrite, Self.vdev14, offset: 0x10, size: 4, value: 0xffff_ffff).error == 0)
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x10, size: 4).value == 0xffff_c004)
        #expect(client.op(1, .configWrite, Self.vdev14, offset: 0x14, size: 4, value: 0xffff_ffff).error == 0)
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x14, size: 4).value == 0xffff_ffff)
        // Writing the original value back ends sizing; the VF's own BAR register stays 0.
        #expect(client.op(1, .configWrite, Self.vdev14, offset: 0x10, size: 4, value: 0xfbe0_8004).error == 0)
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x10, size: 4).value == 0xfbe0_8004)
        #expect(try client.config("0000:02:10.4", 0x10, 4) == 0)
        // ROM BAR 0; the guest reads the same through the frontend's config file.
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x30, size: 4).value == 0)
        let frontendConfig = "fs/pcibackfs/frontends/1/bus/pci/devices/0000:00:01.4/config"
        #expect(try client.readBytes(frontendConfig, count: 4) == [0x86, 0x80, 0xca, 0x10])
        #expect(try client.cat("fs/pcibackfs/frontends/1/bus/pci/devices/0000:00:01.4/device") == "0x10ca\n")
        // Guest Command writes: Mem+ is shown back, the hardware bit stays 0; bus master reaches it.
        #expect(client.op(1, .configWrite, Self.vdev14, offset: 0x04, size: 2, value: 0x0006).error == 0)
        #expect(client.op(1, .configRead, Self.vdev14, offset: 0x04, size: 2).value & 0x0006 == 0x0006)
        #expect(try client.config("0000:02:10.4", 0x04, 2) == 0x0004)
    }

    @Test("case 28 and §5.5: enable_msix on a VF checks the PF's MEMORY bit; disable ops return IRQ 0")
    func case28() throws {
        let client = try Self.exported()
        #expect(try client.config("0000:01:00.0", 0x04, 2) & 0x2 != 0)  // igb enabled the PF
        let first = client.op(1, .enableMSIX, Self.vdev0, entries: [0, 1])
        #expect(first.error == 0)
        #expect(try client.config("0000:02:10.0", 0x72, 2) & 0x8000 != 0)
        let disabled = client.op(1, .disableMSIX, Self.vdev0)
        #expect(disabled.error == 0 && disabled.value == 0)
        // dom0 clears the PF's Command.MEMORY through its config file.
        let command = try client.config("0000:01:00.0", 0x04, 2)
        #expect(client.configWrite("0000:01:00.0", 0x04, 2, command & ~0x2) == .success(2))
        let refused = client.op(1, .enableMSIX, Self.vdev0, entries: [0])
        #expect(refused.error == -6)
        #expect(try client.config("0000:02:10.0", 0x72, 2) & 0x8000 == 0)
        // The VF's own MEMORY bit (read-only 0) never mattered; restoring the PF's does.
        #expect(client.configWrite("0000:01:00.0", 0x04, 2, command) == .success(2))
        #expect(client.op(1, .enableMSIX, Self.vdev0, entries: [0]).error == 0)
        #expect(client.op(1, .disableMSI, Self.vdev0).value == 0)
        // MSI: a VF without an MSI capability cannot get one.
        #expect(client.op(1, .enableMSI, Self.vdev0).error != 0)
    }

    @Test("§5.7: allow_interrupt_control works for a VF: the guest's own MSI-X enable passes the filter")
    func guestMSIXWrite() throws {
        let client = try Self.exported()
        #expect(client.op(1, .configWrite, Self.vdev0, offset: 0x72, size: 2, value: 0xc002).error == -3)
        #expect(client.write("0000:02:10.0", "bus/pci/drivers/pciback/allow_interrupt_control") == .success(12))
        #expect(try client.cat("bus/pci/drivers/pciback/allow_interrupt_control").contains("0000:02:10.0\n"))
        #expect(client.op(1, .configWrite, Self.vdev0, offset: 0x72, size: 2, value: 0xc002).error == 0)
        #expect(client.op(1, .configWrite, Self.vdev0, offset: 0x04, size: 2, value: 0x0006).error == 0)
        #expect(client.op(1, .configWrite, Self.vdev0, offset: 0x72, size: 2, value: 0x8002).error == 0)
        #expect(try client.config("0000:02:10.0", 0x72, 2) == 0x8002)
        #expect(client.op(1, .configRead, Self.vdev0, offset: 0x72, size: 2).value == 0x8002)
        // Another VF of the same frontend is not allowed.
        #expect(client.op(1, .configWrite, PCIAddress(bus: 0, slot: 1, function: 2), offset: 0x72, size: 2, value: 0x8002).error == -3)
    }

    @Test("release from the guest: state reset, interrupt control revoked; the VF stays bound and assigned")
    func release() throws {
        let client = try Self.exported()
        #expect(client.write("0000:02:10.0", "bus/pci/drivers/pciback/allow_interrupt_control") == .success(12))
        #expect(client.op(1, .configWrite, Self.vdev0, offset: 0x72, size: 2, value: 0x8002).error == 0)
        #expect(client.write("1 0000:02:10.0", "fs/pcibackfs/detach") == .success(14))
        #expect(try client.config("0000:02:10.0", 0x72, 2) & 0x8000 == 0)
        #expect(try client.config("0000:02:10.0", 0x04, 2) == 0)
        #expect(!(try client.cat("bus/pci/drivers/pciback/allow_interrupt_control")).contains("0000:02:10.0"))
        #expect(client.exists("bus/pci/drivers/pciback/0000:02:10.0"))
        #expect(client.write("0", Self.numvfs) == .failure(.operationNotPermitted))
        // Attach again: a new guest gets it at a slot of its own.
        #expect(client.write("2 0000:02:10.0", "fs/pcibackfs/attach") == .success(14))
        #expect(client.exists("fs/pcibackfs/frontends/2/bus/pci/devices/0000:00:00.0"))
    }

    @Test("unbinding a VF a guest uses: forced release with the four warnings; then the VFs can go")
    func unbindInUse() throws {
        let client = try Self.exported()
        #expect(client.write("0000:02:10.2", "bus/pci/drivers/pciback/unbind") == .success(12))
        #expect(client.log.filter { $0.contains("******") }.count == 4)
        #expect(!client.exists("fs/pcibackfs/frontends/1/bus/pci/devices/0000:00:01.2"))
        #expect(client.exists("fs/pcibackfs/frontends/1/bus/pci/devices/0000:00:01.4"))
        for vf in ["0000:02:10.0", "0000:02:10.4", "0000:02:10.6"] {
            #expect(client.write(vf, "bus/pci/drivers/pciback/unbind") == .success(12))
        }
        #expect(!client.exists("fs/pcibackfs/frontends/1"))
        #expect(client.write("0", Self.numvfs) == .success(1))
    }

    @Test("`remove` of the PF takes its VFs and clears SR-IOV; rescan brings the PF back as enumerated")
    func removeAndRescan() throws {
        let client = try Self.exported()
        #expect(client.write("1", SRIOVExample.pf0Path + "/remove") == .success(1))
        #expect(!(try client.list("bus/pci/devices")).contains { $0.hasPrefix("0000:02:") || $0 == "0000:01:00.0" })
        #expect(!client.exists("fs/pcibackfs/frontends/1"))
        #expect(client.write("1", "bus/pci/rescan") == .success(1))
        #expect(try client.cat(Self.numvfs) == "0\n")
        #expect(try client.config("0000:01:00.0", 0x168, 2) == 0)
        #expect(try client.config("0000:01:00.0", 0x170, 2) == 0)
        #expect(!(try client.list(SRIOVExample.pf0Path)).contains { $0.hasPrefix("virtfn") })
        #expect(client.write("2", Self.numvfs) == .success(1))
        #expect(client.exists("bus/pci/drivers/pciback/0000:02:10.2"))
    }

    @Test("§6.4 interplay: on the original-2020 profile a VF's MSI-X enable is refused (its INTx Disable bit is read-only 0)")
    func originalProfile() throws {
        // (The current profile is covered by guestMSIXWrite.)
        let old = try SRIOVExample.client(policy: FilterPolicy(profile: .original2020))
        #expect(old.write("0000:02:10.0", "bus/pci/drivers/pciback/new_slot") == .success(12))
        #expect(old.write("1", SRIOVExample.pf0Path + "/sriov_numvfs") == .success(1))
        #expect(old.write("1 0000:02:10.0", "fs/pcibackfs/attach") == .success(14))
        #expect(old.write("0000:02:10.0", "bus/pci/drivers/pciback/allow_interrupt_control") == .success(12))
        #expect(old.op(1, .configWrite, Self.vdev0, offset: 0x04, size: 2, value: 0x0406).error == 0)
        #expect(try old.config("0000:02:10.0", 0x04, 2) & 0x0400 == 0)
        #expect(old.op(1, .configWrite, Self.vdev0, offset: 0x72, size: 2, value: 0x8002).error != 0)
        #expect(try old.config("0000:02:10.0", 0x72, 2) & 0x8000 == 0)
    }
}

// MARK: - Scale

@Suite("255 VFs on one PF (ARI, offset 1, stride 1)")
struct Scale {
    @Test("enable 255: count, links, addresses up to 05:1f.7, resources; then disable")
    func twoHundredFiftyFive() throws {
        let client = SRIOVClient(try Dom0(machine: SRIOVScale.machine()))
        let path = SRIOVScale.pfPath
        #expect(try client.cat(path + "/sriov_totalvfs") == "255\n")
        #expect(try client.cat(path + "/sriov_offset") == "1\n")
        #expect(try client.cat(path + "/sriov_stride") == "1\n")
        #expect(client.write("256", path + "/sriov_numvfs") == .failure(.outOfRange))
        #expect(client.write("255\n", path + "/sriov_numvfs") == .success(4))
        #expect(try client.cat(path + "/sriov_numvfs") == "255\n")
        let names = try client.list(path)
        #expect(names.filter { $0.hasPrefix("virtfn") }.count == 255)
        let devices = try client.list("bus/pci/devices")
        #expect(devices.filter { $0.hasPrefix("0000:05:") }.count == 256)
        for id in [0, 1, 6, 7, 8, 127, 128, 253, 254] {
            let expected = PCIAddress(bus: 5, devfn: UInt8(1 + id)).description
            #expect(try client.readlink(path + "/virtfn\(id)") == "../" + expected)
            #expect(try client.readlink("bus/pci/devices/\(expected)/physfn") == "../0000:05:00.0")
            #expect(try client.realpath("bus/pci/devices/\(expected)") == "devices/pci0000:00/0000:00:02.0/" + expected)
        }
        #expect(try client.readlink(path + "/virtfn0") == "../0000:05:00.1")
        #expect(try client.readlink(path + "/virtfn254") == "../0000:05:1f.7")
        #expect(!client.exists(path + "/virtfn255"))
        #expect(try client.list("devices/pci0000:00/0000:00:02.0").filter { $0.hasPrefix("0000:05:") }.count == 256)
        // VF 254's BAR0 is the last slice of the window.
        let window = try client.cat(path + "/resource").split(separator: "\n")[7].split(separator: " ")
        let start = try #require(UInt64(window[0].dropFirst(2), radix: 16))
        #expect(UInt64(window[1].dropFirst(2), radix: 16) == start + 255 * 0x4000 - 1)
        let last = try client.cat("bus/pci/devices/0000:05:1f.7/resource").split(separator: "\n")[0]
        #expect(last == "0x" + hex(start + 254 * 0x4000, width: 16) + " 0x" + hex(start + 255 * 0x4000 - 1, width: 16)
                + " 0x0000000000140204")
        // libvirt's walk finds all 255 in order.
        var index = 0
        while client.statError(path + "/virtfn\(index)") == nil { index += 1 }
        #expect(index == 255)
        #expect(try client.cat("bus/pci/devices/0000:05:1f.7/device") == "0x10ca\n")
        #expect(client.write("0", path + "/sriov_numvfs") == .success(1))
        #expect(try client.list("bus/pci/devices").filter { $0.hasPrefix("0000:05:") } == ["0000:05:00.0"])
    }
}

}
