/// The path rules that keep the host's PCI hardware out of the merged `/sys`.
///
/// The emulation replaces the host's PCI devices, so everything the host's PCI hardware owns is
/// hidden, wherever it sits: the device directories themselves (and every class device, block
/// device or virtio device below them), and, through `MergedSysfs`' link check, every link that
/// points into them (`class/net/eth0`, `block/vda`, `dev/block/254:0`, `bus/virtio/devices/*`,
/// ACPI `physical_node`, bridge `brif/` and `lower_*`, device-mapper `slaves/`, ...).
///
/// The merged tree also stands in a network namespace of its own, whose only interfaces are
/// `lo` and the emulation's: sysfs shows a network namespace's own interfaces only (its net
/// class is namespace-tagged), so the host's other network devices are hidden too.
struct HostVisibility: Sendable {
    /// Host directories (tree paths) of PCI hardware: root buses and every PCI function.
    let pciSubtrees: Set<String>

    init(pciSubtrees: Set<String>) {
        self.pciSubtrees = pciSubtrees
    }

    /// Reads the host's PCI hierarchy: every `devices/pciDDDD:BB` root bus, and the directory
    /// each `bus/pci/devices` link names (PCI hierarchies that hang elsewhere, such as
    /// Hyper-V's or VMD's, are found that way).
    init(host: HostSysfs) {
        var subtrees = Set<String>()
        for entry in (try? host.entries(in: "devices")) ?? [] where Self.isRootBusName(entry.name) {
            subtrees.insert("devices/" + entry.name)
        }
        for entry in (try? host.entries(in: "bus/pci/devices")) ?? [] where entry.kind == .symlink {
            let link = "bus/pci/devices/" + entry.name
            if let target = try? host.linkTarget(link), let resolved = resolveLink(target, in: "bus/pci/devices") {
                subtrees.insert(resolved)
            }
        }
        self.init(pciSubtrees: subtrees)
    }

    /// `pci0000:00`, `pci10000:00` (VMD domains): a PCI root bus directory under `devices/`.
    static func isRootBusName(_ name: String) -> Bool {
        guard name.hasPrefix("pci") else { return false }
        let rest = name.dropFirst(3)
        guard let colon = rest.firstIndex(of: ":") else { return false }
        let domain = rest[..<colon]
        let bus = rest[rest.index(after: colon)...]
        return (4...8).contains(domain.count) && bus.count == 2
            && (domain + bus).allSatisfy { $0.isHexDigit }
    }

    /// Whether the host entry at `path` is hidden by its place alone (links are checked
    /// against their targets as well, by the merged tree).
    func hides(_ path: String) -> Bool {
        let parts = pathComponents(path)
        var prefix = ""
        for (index, part) in parts.enumerated() {
            prefix = index == 0 ? part : prefix + "/" + part
            if pciSubtrees.contains(prefix) { return true }
            // devices/.../net/<ifname>: an interface of the host's network namespace.
            if part == "net", index >= 2, parts[0] == "devices", index + 1 < parts.count, parts[index + 1] != "lo" {
                return true
            }
        }
        return false
    }
}
