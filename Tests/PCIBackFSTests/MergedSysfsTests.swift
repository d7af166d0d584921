#if canImport(Glibc)
import Foundation
import Glibc
@testable import PCIBackFS
import Testing

// The merge rules of `pcibackfsd run`'s /sys, on a small fake host sysfs built in a temporary
// directory (real directories, files and relative links, laid out as the kernel lays them) and
// the built-in emulated machine. No mount: the model is called directly.

/// A host sysfs in miniature: a virtio NIC and disk on the host's PCI bus (BDFs that collide
/// with the emulation's), CPUs, a loop device, a bridge enslaving the host NIC, an IOMMU group,
/// an ACPI companion, a host module with a PCI driver, and a platform network device.
final class FakeHostSysfs {
    let root: String

    static let directories = [
        "devices/pci0000:00/0000:00:05.0/virtio1/net/eth0",
        "devices/pci0000:00/0000:00:03.0/virtio0/block/vda",
        "devices/pci0000:00/pci_bus/0000:00",
        "devices/system/cpu/cpu0/topology",
        "devices/virtual/block/loop0",
        "devices/virtual/net/lo",
        "devices/virtual/net/br0/brif",
        "devices/virtual/net/ifb0",
        "devices/platform/eth-mac/net/eth9",
        "devices/LNXSYSTM:00/PNP0A03:00",
        "bus/pci/devices", "bus/pci/drivers/virtio-pci", "bus/virtio/devices", "bus/platform/devices",
        "class/net", "class/block", "class/pci_bus",
        "block", "dev/block", "dev/char",
        "kernel/iommu_groups/3/devices", "kernel/iommu_groups/9/devices", "kernel/mm",
        "module/virtio_pci/drivers", "module/ext4/parameters",
        "fs/cgroup", "firmware/acpi",
    ]

    static let files: [String: String] = [
        "devices/system/cpu/online": "0-1\n",
        "devices/system/cpu/cpu0/topology/core_id": "0\n",
        "devices/pci0000:00/0000:00:05.0/vendor": "0x1af4\n",
        "devices/virtual/net/lo/address": "00:00:00:00:00:00\n",
        "module/ext4/parameters/x": "1\n",
        "kernel/mm/transparent": "always\n",
    ]

    static let links: [String: String] = [
        "bus/pci/devices/0000:00:05.0": "../../../devices/pci0000:00/0000:00:05.0",
        "bus/pci/devices/0000:00:03.0": "../../../devices/pci0000:00/0000:00:03.0",
        "bus/virtio/devices/virtio1": "../../../devices/pci0000:00/0000:00:05.0/virtio1",
        "bus/platform/devices/eth-mac": "../../../devices/platform/eth-mac",
        "class/net/eth0": "../../devices/pci0000:00/0000:00:05.0/virtio1/net/eth0",
        "class/net/eth9": "../../devices/platform/eth-mac/net/eth9",
        "class/net/lo": "../../devices/virtual/net/lo",
        "class/net/br0": "../../devices/virtual/net/br0",
        "class/net/ifb0": "../../devices/virtual/net/ifb0",
        "class/block/vda": "../../devices/pci0000:00/0000:00:03.0/virtio0/block/vda",
        "class/block/loop0": "../../devices/virtual/block/loop0",
        "class/pci_bus/0000:00": "../../devices/pci0000:00/pci_bus/0000:00",
        "block/vda": "../devices/pci0000:00/0000:00:03.0/virtio0/block/vda",
        "block/loop0": "../devices/virtual/block/loop0",
        "dev/block/254:0": "../../devices/pci0000:00/0000:00:03.0/virtio0/block/vda",
        "dev/block/7:0": "../../devices/virtual/block/loop0",
        "devices/virtual/net/br0/brif/eth0": "../../../../pci0000:00/0000:00:05.0/virtio1/net/eth0",
        "devices/LNXSYSTM:00/PNP0A03:00/physical_node": "../../pci0000:00",
        "kernel/iommu_groups/3/devices/0000:00:05.0": "../../../../devices/pci0000:00/0000:00:05.0",
        "module/virtio_pci/drivers/pci:virtio-pci": "../../../bus/pci/drivers/virtio-pci",
        "bus/pci/drivers/virtio-pci/module": "../../../../module/virtio_pci",
    ]

    init() throws {
        root = Temporary.directory(prefix: "pcibackfs-fake-sys")
        let manager = FileManager.default
        for directory in Self.directories {
            try manager.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
        }
        for (path, text) in Self.files {
            try text.write(toFile: root + "/" + path, atomically: false, encoding: .utf8)
        }
        for (path, target) in Self.links {
            try manager.createSymbolicLink(atPath: root + "/" + path, withDestinationPath: target)
        }
    }

    deinit { Temporary.remove(root) }
}

@Suite("The merged /sys of pcibackfsd run (merge rules)")
struct MergedSysfsTests {
    let fake: FakeHostSysfs
    let merged: MergedSysfs

    init() throws {
        fake = try FakeHostSysfs()
        let builtin = BuiltinMachine.make()
        let dom0 = try Dom0(machine: builtin, policy: FilterPolicy(profile: .current, globalPermissive: false), hide: "",
                            passthrough: false)
        merged = MergedSysfs(tree: SysfsTree(dom0: dom0), host: try HostSysfs.open(fake.root))
    }

    /// Resolves `path` from the root as the kernel does, one lookup per component.
    func lookup(_ path: String) -> NodeStat? {
        var inode = rootInode
        var stat: NodeStat?
        for name in pathComponents(path) {
            guard let next = try? merged.lookup(parent: inode, name: name) else { return nil }
            inode = next.inode
            stat = next
        }
        return stat
    }

    func names(_ path: String) throws -> [String] {
        let stat = try #require(path.isEmpty ? try merged.getattr(rootInode) : lookup(path))
        return try merged.readdir(stat.inode).map(\.name).sorted()
    }

    @Test("what shows and what is hidden", arguments: [
        // The emulation's PCI world wins outright.
        ("bus/pci/devices/0000:03:00.0", true), ("bus/pci/drivers/pciback", true), ("fs/pcibackfs/attach", true),
        ("bus/pci/drivers/virtio-pci", false),
        // Host PCI hardware, and everything below it, is gone (the BDFs collide with emulated ones).
        ("devices/pci0000:00/0000:00:05.0/virtio1", false), ("devices/pci0000:00/0000:00:05.0/vendor", true),
        // The emulation's own pci_bus (the host's hides behind it).
        ("devices/pci0000:00/pci_bus/0000:00/cpuaffinity", true),
        // Links into the host's PCI hardware, wherever they sit.
        ("class/net/eth0", false), ("class/block/vda", false), ("block/vda", false), ("dev/block/254:0", false),
        ("bus/virtio/devices/virtio1", false), ("class/pci_bus/0000:00", true),
        ("devices/virtual/net/br0/brif/eth0", false), ("devices/LNXSYSTM:00/PNP0A03:00/physical_node", true),
        ("kernel/iommu_groups/3", false), ("kernel/iommu_groups/9", true),
        ("module/virtio_pci/drivers/pci:virtio-pci", false),
        // Interfaces of the host's network namespace: only lo is in the new one.
        ("class/net/lo", true), ("class/net/eth9", false), ("class/net/ifb0", false), ("class/net/br0", false),
        ("devices/virtual/net/lo/address", true), ("devices/platform/eth-mac/net", true),
        ("devices/platform/eth-mac/net/eth9", false),
        // The host's everything else.
        ("devices/system/cpu/cpu0/topology/core_id", true), ("devices/system/cpu/online", true),
        ("class/block/loop0", true), ("block/loop0", true), ("dev/block/7:0", true), ("kernel/mm/transparent", true),
        ("module/ext4/parameters/x", true), ("fs/cgroup", true), ("firmware/acpi", true),
        ("bus/platform/devices/eth-mac", true),
    ] as [(String, Bool)])
    func visibility(path: String, visible: Bool) {
        #expect((lookup(path) != nil) == visible)
    }

    @Test("shared directories list both sides, the emulation's names first") func listings() throws {
        #expect(try names("") == ["block", "bus", "class", "dev", "devices", "firmware", "fs", "kernel", "module"])
        #expect(try names("devices") == ["LNXSYSTM:00", "pci0000:00", "platform", "system", "virtual"])
        // The emulation's interfaces and disks beside the host's lo and loop0.
        let interfaces = merged.tree.networkInterfaces().map(\.name)
        #expect(!interfaces.isEmpty)
        #expect(try names("class/net") == (interfaces + ["lo"]).sorted())
        let disks = try merged.tree.readdir(#require(lookup("block")).inode).map(\.name)
        #expect(!disks.isEmpty && disks.allSatisfy { $0.hasPrefix("nvme") })
        #expect(try names("block") == (disks + ["loop0"]).sorted())
        #expect(try names("kernel/iommu_groups") == ["9"])
        #expect(try names("fs").contains("pcibackfs") && names("fs").contains("cgroup"))
        #expect(try names("bus").contains("pci") && names("bus").contains("virtio"))
        // Not shared: the host's functions stay out; pci_bus is the emulation's.
        let rootBus = ((BuiltinMachine.make().rootBuses["pci0000:00"] ?? []).map(\.description) + ["pci_bus"]).sorted()
        #expect(try names("devices/pci0000:00") == rootBus)
    }

    @Test("host entries read live and keep their inode") func hostFiles() throws {
        let stat = try #require(lookup("devices/system/cpu/online"))
        #expect(stat.inode >= MergedSysfs.hostInodeBase)
        #expect(lookup("devices/system/cpu/online")?.inode == stat.inode)
        let file = try merged.open(stat.inode, flags: O_RDONLY, caller: .root)
        defer { merged.release(file) }
        #expect(try merged.read(file, offset: 0, size: 100) == Array("0-1\n".utf8))
        try "0-3\n".write(toFile: fake.root + "/devices/system/cpu/online", atomically: false, encoding: .utf8)
        #expect(try merged.read(file, offset: 0, size: 100) == Array("0-3\n".utf8))
        #expect(try merged.readlink(#require(lookup("class/net/lo")).inode) == "../../devices/virtual/net/lo")
    }

    @Test("emulated entries keep the tree's inode numbers") func emulatedInodes() throws {
        let stat = try #require(lookup("bus/pci/drivers/pciback"))
        #expect(stat.inode < MergedSysfs.hostInodeBase)
        #expect(merged.tree.path(of: stat.inode) == "bus/pci/drivers/pciback")
    }

    @Test("resolveLink is lexical and stays inside the tree", arguments: [
        ("../../devices/virtual/net/lo", "class/net", "devices/virtual/net/lo"),
        ("../devices/x", "block", "devices/x"),
        ("./a/./b", "c", "c/a/b"),
        ("../../../x", "a/b", nil),
        ("/sys/devices", "class", nil),
    ] as [(String, String, String?)])
    func links(target: String, directory: String, expected: String?) {
        #expect(resolveLink(target, in: directory) == expected)
    }

    @Test("root bus names", arguments: [
        ("pci0000:00", true), ("pci10000:e0", true), ("pci0000:0", false), ("pcie", false), ("platform", false),
        ("pci00g0:00", false),
    ] as [(String, Bool)])
    func rootBusNames(name: String, expected: Bool) {
        #expect(HostVisibility.isRootBusName(name) == expected)
    }
}

#endif
