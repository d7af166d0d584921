/// The class devices of the emulated drivers, where the kernel puts them:
///
/// ```
/// devices/.../<BDF>/net/<ifname>/{address,...,device -> ../../../<BDF>,subsystem -> .../class/net}
/// devices/.../<BDF>/nvme/nvme<N>/{dev,model,...,device -> ../../../<BDF>,subsystem -> .../class/nvme}
/// devices/.../<BDF>/nvme/nvme<N>/nvme<N>n1/{dev,size,...,device -> ../../nvme<N>,subsystem -> .../class/block}
/// class/{net,nvme,block}/<name> -> ../../devices/...      block/<disk> -> ../devices/...
/// dev/block/259:<minor> -> ../../devices/...              dev/char/<major>:<N> -> ../../devices/...
/// ```
///
/// The namespace disk's parent is its controller: nvme_alloc_ns adds the disk under
/// `ctrl->device` unless native multipath makes a head disk, which it does only for subsystems
/// that report multi-controller capability (CMIC); the emulated controller reports none.
/// Relative link targets are those kernfs computes (up from the link's directory to the first
/// ancestor of the target, then down).
extension SysfsLayout {
    /// The class directories a function's directory has now ("net", "nvme", a bridge's "pci_bus").
    func classDirectories(of address: PCIAddress) -> [String] {
        var names: [String] = []
        if dom0.networkInterface(of: address) != nil { names.append("net") }
        if dom0.nvmeController(of: address) != nil { names.append("nvme") }
        if dom0.machine.secondaryBus(of: address) != nil { names.append("pci_bus") }
        return names
    }

    /// `rest`: the path below the function's directory, starting with "net", "nvme" or "pci_bus".
    func classDeviceNode(_ address: PCIAddress, _ rest: [String]) -> SysfsNode? {
        let toFunction = "../../../" + address.description
        switch rest[0] {
        case "pci_bus":
            return pciBusNode(dom0.machine.bridgePCIBus(address), rest)
        case "net":
            guard let interface = dom0.networkInterface(of: address) else { return nil }
            if rest.count == 1 { return .directory }
            guard rest[1] == interface.name else { return nil }
            if rest.count == 2 { return .directory }
            guard rest.count == 3 else { return nil }
            return classDeviceEntry(rest[2], device: toFunction, subsystem: ups(address) + "../../class/net") {
                NetAttribute(rawValue: $0).map { Attribute(kind: .netInterface(address, $0), mode: $0.mode) }
            }
        case "nvme":
            guard let controller = dom0.nvmeController(of: address) else { return nil }
            if rest.count == 1 { return .directory }
            guard rest[1] == controller.name else { return nil }
            if rest.count == 2 { return .directory }
            if rest[2] == controller.namespaceName {
                if rest.count == 3 { return .directory }
                guard rest.count == 4 else { return nil }
                return classDeviceEntry(rest[3], device: "../../" + controller.name, subsystem: ups(address) + "../../../class/block") {
                    NVMeNamespaceAttribute(rawValue: $0).map { Attribute(kind: .nvmeNamespace(address, $0), mode: $0.mode) }
                }
            }
            guard rest.count == 3 else { return nil }
            return classDeviceEntry(rest[2], device: toFunction, subsystem: ups(address) + "../../class/nvme") {
                NVMeControllerAttribute(rawValue: $0).map { Attribute(kind: .nvmeController(address, $0), mode: $0.mode) }
            }
        default:
            return nil
        }
    }

    /// A file of a class device's directory: its `device` and `subsystem` links, or an attribute.
    private func classDeviceEntry(_ name: String, device: String, subsystem: String, attribute: (String) -> Attribute?)
        -> SysfsNode?
    {
        switch name {
        case "device": return .link(device)
        case "subsystem": return .link(subsystem)
        default: return attribute(name).map { .attribute($0) }
        }
    }

    func classDeviceNames(_ address: PCIAddress, _ rest: [String]) -> [String] {
        switch (rest[0], rest.count) {
        case ("net", 1): return dom0.networkInterface(of: address).map { [$0.name] } ?? []
        case ("net", 2): return NetAttribute.allCases.map(\.rawValue) + ["device", "subsystem"]
        case ("nvme", 1): return dom0.nvmeController(of: address).map { [$0.name] } ?? []
        case ("nvme", 2):
            let namespace = dom0.nvmeController(of: address).map { [$0.namespaceName] } ?? []
            return NVMeControllerAttribute.allCases.map(\.rawValue) + ["device", "subsystem"] + namespace
        case ("nvme", 3): return NVMeNamespaceAttribute.allCases.map(\.rawValue) + ["device", "subsystem"]
        case ("pci_bus", _): return pciBusNames(dom0.machine.bridgePCIBus(address), rest)
        default: return []
        }
    }

    // MARK: - class/, block/, dev/

    /// Every link of `class/`, `block/` and `dev/`, by directory: name -> target.
    func classLinks() -> [String: [String: String]] {
        var links: [String: [String: String]] = ["class/net": [:], "class/block": [:], "block": [:], "dev/block": [:],
                                                 "dev/char": [:]]
        if dom0.driver(named: "nvme") != nil { links["class/nvme"] = [:] }
        links["class/pci_bus"] = [:]
        for bus in dom0.machine.pciBuses() { links["class/pci_bus"]![bus.name] = "../../" + bus.directory }
        for interface in dom0.networkInterfaces() {
            links["class/net"]![interface.name] = "../../" + dom0.machine.sysfsPath(of: interface.function) + "/net/" + interface.name
        }
        for controller in dom0.nvmeControllers() {
            let directory = dom0.machine.sysfsPath(of: controller.function) + "/nvme/" + controller.name
            let disk = directory + "/" + controller.namespaceName
            links["class/nvme", default: [:]][controller.name] = "../../" + directory
            links["class/block"]![controller.namespaceName] = "../../" + disk
            links["block"]![controller.namespaceName] = "../" + disk
            links["dev/block"]![blockNumber(controller)] = "../../" + disk
            links["dev/char"]![charNumber(controller)] = "../../" + directory
        }
        return links
    }

    /// `class`, `block`, `dev` and what is below them.
    func classTreeNode(_ parts: [String]) -> SysfsNode? {
        let links = classLinks()
        let directory = parts.dropLast().joined(separator: "/")
        if let target = links[directory]?[parts[parts.count - 1]] { return .link(target) }
        let path = parts.joined(separator: "/")
        return links.keys.contains { $0 == path || $0.hasPrefix(path + "/") } ? .directory : nil
    }

    func classTreeNames(_ parts: [String]) -> [String] {
        let links = classLinks()
        let path = parts.joined(separator: "/")
        if let entries = links[path] { return entries.keys.sorted() }
        var names = Set<String>()
        for key in links.keys where key.hasPrefix(path + "/") {
            names.insert(String(key.dropFirst(path.count + 1).split(separator: "/")[0]))
        }
        return names.sorted()
    }

    func blockNumber(_ controller: NVMeController) -> String {
        "\(HostDeviceNumbers.blockExtMajor):\(options.hostNumbers.blockExtMinor(ordinal: controller.ordinal))"
    }

    func charNumber(_ controller: NVMeController) -> String { "\(options.hostNumbers.nvmeCharMajor):\(controller.instance)" }

    /// The class devices' part of `dynamicEntries()`: every name that comes and goes with a
    /// driver's probe and remove.
    func classDynamicEntries(into entries: inout [String: String]) {
        for interface in dom0.networkInterfaces() {
            let directory = dom0.machine.sysfsPath(of: interface.function)
            entries[directory + "\u{0}net"] = ""
            entries[directory + "/net\u{0}" + interface.name] = ""
        }
        for controller in dom0.nvmeControllers() {
            let directory = dom0.machine.sysfsPath(of: controller.function)
            entries[directory + "\u{0}nvme"] = ""
            entries[directory + "/nvme\u{0}" + controller.name] = ""
            entries[directory + "/nvme/" + controller.name + "\u{0}" + controller.namespaceName] = ""
        }
        for (directory, links) in classLinks() {
            for (name, target) in links { entries[directory + "\u{0}" + name] = target }
        }
    }

    // MARK: - Show

    /// An attribute's text, or the errno its show() returns.
    func show(_ kind: AttributeKind) throws(Errno) -> [UInt8] {
        let text: String
        switch kind {
        case .netInterface(let address, let attribute):
            guard let interface = dom0.networkInterface(of: address) else { throw .noSuchDevice }
            // carrier_show: -EINVAL unless the interface is up (netif_running); it never is.
            if attribute == .carrier { throw .invalidArgument }
            text = show(attribute, of: interface)
        case .nvmeController(let address, let attribute):
            guard let controller = dom0.nvmeController(of: address) else { throw .noSuchDevice }
            text = show(attribute, of: controller)
        case .nvmeNamespace(let address, let attribute):
            guard let controller = dom0.nvmeController(of: address) else { throw .noSuchDevice }
            text = show(attribute, of: controller)
        case .module(let name, let attribute):
            guard let module = dom0.moduleDirectories(pcibackBuild: options.pcibackBuild).first(where: { $0.module.name == name })?
                .module else { throw .noSuchDevice }
            switch attribute {
            case .coresize: text = "\(module.coreSize)\n"
            case .initsize, .refcnt: text = "0\n"
            case .initstate: text = "live\n"
            case .taint: text = "\n"
            case .uevent: throw .ioError
            }
        case .moduleSection:
            // What module_sect_read shows a reader kallsyms_show_value refuses (kptr_restrict).
            text = "0x0000000000000000\n"
        default:
            // Nothing to show means the device went away under an open handle.
            guard let bytes = dom0.show(kind, legacy: options.legacyModes) else { throw .noSuchDevice }
            return bytes
        }
        return Array(text.utf8)
    }

    private func show(_ attribute: NetAttribute, of interface: NetworkInterface) -> String {
        switch attribute {
        case .addrAssignType: return "0\n"  // NET_ADDR_PERM
        case .addrLen: return "6\n"
        case .address: return interface.address + "\n"
        case .broadcast: return "ff:ff:ff:ff:ff:ff\n"
        case .devID: return "0x0\n"
        case .devPort: return "0\n"
        case .flags: return "0x1002\n"  // IFF_BROADCAST | IFF_MULTICAST, not IFF_UP
        case .ifindex, .iflink: return "\(interface.ifindex)\n"
        case .mtu: return "1500\n"
        case .operstate: return "down\n"
        case .txQueueLen: return "1000\n"
        case .type: return "1\n"  // ARPHRD_ETHER
        case .uevent: return "INTERFACE=\(interface.name)\nIFINDEX=\(interface.ifindex)\n"
        case .carrier: return ""  // handled by the caller
        }
    }

    private func show(_ attribute: NVMeControllerAttribute, of controller: NVMeController) -> String {
        switch attribute {
        case .address: return controller.function.description + "\n"
        case .cntlid: return "0\n"
        case .dev: return charNumber(controller) + "\n"
        case .firmwareRev: return controller.firmwareRevision + "\n"
        case .model: return controller.model + "\n"
        case .serial: return controller.serial + "\n"
        case .state: return "live\n"
        case .transport: return "pcie\n"
        case .uevent:
            let number = charNumber(controller).split(separator: ":")
            return "MAJOR=\(number[0])\nMINOR=\(number[1])\nDEVNAME=\(controller.name)\nNVME_TRTYPE=pcie\n"
        }
    }

    private func show(_ attribute: NVMeNamespaceAttribute, of controller: NVMeController) -> String {
        switch attribute {
        case .dev: return blockNumber(controller) + "\n"
        // blk_mq_alloc_disk leaves minors 0: partitions take extended (259) minors.
        case .range: return "0\n"
        case .extRange: return "256\n"
        case .hidden, .removable, .ro: return "0\n"
        case .nsid: return "1\n"
        case .size: return "\(controller.sectors)\n"
        case .uevent:
            let number = blockNumber(controller).split(separator: ":")
            return "MAJOR=\(number[0])\nMINOR=\(number[1])\nDEVNAME=\(controller.namespaceName)\nDEVTYPE=disk\n"
        }
    }
}

extension SysfsTree {
    /// The emulated network interfaces present now (name and MAC), by name: for `run`, which
    /// gives the command's network namespace the same interfaces.
    public func networkInterfaces() -> [(name: String, address: String)] {
        state.withLock { state in state.dom0.networkInterfaces().map { ($0.name, $0.address) } }
    }
}
