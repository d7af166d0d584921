/// The kernel's layout of `/sys` for PCI, computed from the dom0 state: which paths exist,
/// what each is, what a directory lists, and the relative link targets the kernel uses.
struct SysfsLayout {
    let dom0: Dom0
    let options: TreeOptions

    private var pciback: String { PCIDriver.pcibackName }

    // MARK: - Resolution

    func node(at path: String) -> SysfsNode? {
        if path.isEmpty { return .directory }
        let parts = pathComponents(path)
        switch parts[0] {
        case "bus": return busNode(Array(parts.dropFirst()))
        case "devices": return devicesNode(Array(parts.dropFirst()))
        case "module": return moduleNode(Array(parts.dropFirst()))
        case "fs": return fsNode(Array(parts.dropFirst()))
        case "class", "block", "dev": return classTreeNode(parts)
        default: return nil
        }
    }

    private func busNode(_ parts: [String]) -> SysfsNode? {
        if parts.isEmpty { return .directory }
        guard parts[0] == "pci" else { return nil }
        if parts.count == 1 { return .directory }
        switch parts[1] {
        case "devices":
            if parts.count == 2 { return .directory }
            guard parts.count == 3, let address = PCIAddress(kernelName: parts[2]), dom0.machine[address] != nil else { return nil }
            return .link("../../../" + dom0.machine.sysfsPath(of: address))
        case "drivers":
            if parts.count == 2 { return .directory }
            guard let driver = dom0.driver(named: parts[2]) else { return nil }
            if parts.count == 3 { return .directory }
            guard parts.count == 4 else { return nil }
            return driverEntry(driver.name, parts[3])
        case "slots":
            return parts.count == 2 ? .directory : nil
        default:
            guard parts.count == 2, let attribute = BusAttribute(rawValue: parts[1]) else { return nil }
            return .attribute(Attribute(kind: .bus(attribute), mode: attribute.mode))
        }
    }

    private func driverEntry(_ driver: String, _ name: String) -> SysfsNode? {
        if name == "module" { return moduleLink(of: driver).map { .link($0) } }
        if let address = PCIAddress(kernelName: name) {
            guard dom0.driverName(of: address) == driver else { return nil }
            return .link("../../../../" + dom0.machine.sysfsPath(of: address))
        }
        guard let attribute = DriverAttribute(rawValue: name), driverAttributes(driver).contains(attribute) else { return nil }
        return .attribute(Attribute(kind: .driver(driver, attribute), mode: attribute.mode(legacy: options.legacyModes)))
    }

    func driverAttributes(_ driver: String) -> [DriverAttribute] {
        guard driver == pciback else { return DriverAttribute.generic }
        var own = DriverAttribute.pcibackOwn
        if !dom0.policy.profile.hasInterruptControl { own.removeAll { $0 == .allowInterruptControl } }
        return own + DriverAttribute.generic
    }

    private func devicesNode(_ parts: [String]) -> SysfsNode? {
        if parts.isEmpty { return .directory }
        guard dom0.machine.rootBuses[parts[0]] != nil else { return nil }
        if parts.count == 1 { return .directory }
        if parts[1] == "pci_bus" { return pciBusNode(dom0.machine.rootPCIBus(parts[0]), Array(parts.dropFirst())) }
        guard let (device, rest) = deviceDirectory(parts) else { return nil }
        if rest.isEmpty { return .directory }
        if rest[0] == "net" || rest[0] == "nvme" || rest[0] == "pci_bus" { return classDeviceNode(device, rest) }
        return rest.count == 1 ? deviceEntry(device, rest[0]) : nil
    }

    /// The function whose directory `parts` (below `devices/`, root bus first) leads into, and
    /// the rest of the path below that directory.
    private func deviceDirectory(_ parts: [String]) -> (PCIAddress, rest: [String])? {
        let machine = dom0.machine
        // Walk the chain of device directories: the first on the root bus, each next one a
        // child of the one before (VFs count as children of their PF's parent).
        var current: PCIAddress?
        var index = 1
        while index < parts.count, let address = PCIAddress(kernelName: parts[index]), machine[address] != nil,
              machine.parentBridge(of: address) == current,
              current != nil || machine.rootBusOf[address] == parts[0] {
            current = address
            index += 1
        }
        return current.map { ($0, Array(parts[index...])) }
    }

    /// Levels from a device directory back to the root of the tree.
    func ups(_ address: PCIAddress) -> String {
        String(repeating: "../", count: 3 + dom0.machine.upstreamBridges(of: address).count)
    }

    private func deviceEntry(_ address: PCIAddress, _ name: String) -> SysfsNode? {
        switch name {
        case "config": return .config(address, frontend: nil)
        case "driver":
            guard let driver = dom0.driverName(of: address) else { return nil }
            return .link(ups(address) + "bus/pci/drivers/" + driver)
        case "subsystem": return .link(ups(address) + "bus/pci")
        case "physfn":
            guard let pf = dom0.machine[address]?.physicalFunction else { return nil }
            return .link("../" + pf.description)
        default:
            if name.hasPrefix("virtfn"), let id = Int(name.dropFirst(6)), String(id) == String(name.dropFirst(6)),
               let vfs = dom0.sriov[address]?.virtualFunctions, id >= 0, id < vfs.count {
                return .link("../" + vfs[id].description)
            }
            guard let attribute = DeviceAttribute(rawValue: name), hasAttribute(attribute, address) else { return nil }
            return .attribute(Attribute(kind: .device(address, attribute), mode: attribute.mode))
        }
    }

    func deviceAttributes(_ address: PCIAddress) -> [DeviceAttribute] {
        DeviceAttribute.allCases.filter { hasAttribute($0, address) }
    }

    /// Whether the function's directory has `attribute` (SR-IOV files on PFs and VFs, link
    /// files on PCI Express, bus numbers on bridges, reset where a method exists).
    func hasAttribute(_ attribute: DeviceAttribute, _ address: PCIAddress) -> Bool {
        guard let device = dom0.machine[address] else { return false }
        if DeviceAttribute.physicalFunctionSet.contains(attribute) { return dom0.isPhysicalFunction(address) }
        switch attribute {
        case .sriovVFMSIXCount: return device.physicalFunction != nil
        case .remove, .rescan: return device.physicalFunction == nil
        case .reset, .resetMethod: return dom0.hasResetMethod(address)
        case .currentLinkSpeed, .currentLinkWidth, .maxLinkSpeed, .maxLinkWidth: return device.isPCIExpress
        case .secondaryBusNumber, .subordinateBusNumber: return device.isBridge
        default: return true
        }
    }

    private func fsNode(_ parts: [String]) -> SysfsNode? {
        if parts.isEmpty { return .directory }
        guard parts[0] == "pcibackfs" else { return nil }
        if parts.count == 1 { return .directory }
        if let control = ControlFile(rawValue: parts[1]), parts.count == 2 {
            return .attribute(Attribute(kind: .control(control), mode: control.mode))
        }
        guard parts[1] == "frontends" else { return nil }
        if parts.count == 2 { return .directory }
        guard let domain = UInt32(parts[2]), let frontend = dom0.frontends[domain], String(domain) == parts[2] else { return nil }
        let rest = Array(parts.dropFirst(3))
        if rest.isEmpty { return .directory }
        if rest == ["pci_op"] { return .attribute(Attribute(kind: .pciOperation(domain: domain), mode: 0o600)) }
        let prefix = ["bus", "pci", "devices"]
        guard rest.count <= 5, Array(rest.prefix(min(rest.count, 3))) == Array(prefix.prefix(min(rest.count, 3))) else {
            return nil
        }
        if rest.count <= 3 { return .directory }
        guard let virtual = PCIAddress(kernelName: rest[3]),
              let export = frontend.exports.first(where: { $0.virtual == virtual })
        else { return nil }
        if rest.count == 4 { return .directory }
        if rest[4] == "config" { return .config(export.host, frontend: domain) }
        guard let attribute = DeviceAttribute(rawValue: rest[4]), DeviceAttribute.frontendSet.contains(attribute) else { return nil }
        return .attribute(Attribute(kind: .frontendDevice(domain: domain, host: export.host, attribute), mode: 0o444))
    }

    // MARK: - Listings

    func listing(of path: String) -> [(String, SysfsNode)]? {
        guard case .directory = node(at: path) else { return nil }
        return names(in: path).compactMap { name in node(at: joinPath(path, name)).map { (name, $0) } }
    }

    /// How many subdirectories the directory at `path` has (a directory's link count is 2 + this).
    func subdirectoryCount(at path: String) -> Int {
        let parts = path.isEmpty ? [] : pathComponents(path)
        if parts.first == "devices", parts.count > 2, let (address, rest) = deviceDirectory(Array(parts.dropFirst())), rest.isEmpty {
            // A function's directory: the functions behind it and its class directories (net,
            // nvme): the common case, counted without a listing.
            return dom0.machine.children(of: address).count + classDirectories(of: address).count
        }
        return listing(of: path)?.count { if case .directory = $0.1 { return true } else { return false } } ?? 0
    }

    private func names(in path: String) -> [String] {
        let parts = path.isEmpty ? [] : pathComponents(path)
        switch parts.first {
        case nil: return ["block", "bus", "class", "dev", "devices", "fs", "module"]
        case "class", "block", "dev": return classTreeNames(parts)
        case "bus":
            if parts.count == 1 { return ["pci"] }
            if parts.count == 2 { return ["devices", "drivers", "slots"] + BusAttribute.allCases.map(\.rawValue) }
            if parts[2] == "devices" { return dom0.machine.order.map(\.description) }
            if parts[2] == "drivers" {
                if parts.count == 3 { return dom0.drivers.map(\.name).sorted() }
                let driver = parts[3]
                let module = moduleLink(of: driver) == nil ? [] : ["module"]
                return driverAttributes(driver).map(\.rawValue) + module + dom0.boundDevices(of: driver).map(\.description)
            }
            return []
        case "devices":
            if parts.count == 1 { return dom0.machine.rootBuses.keys.sorted() }
            if parts.count == 2 {
                guard let functions = dom0.machine.rootBuses[parts[1]] else { return [] }
                return functions.map(\.description) + ["pci_bus"]
            }
            if parts[2] == "pci_bus" { return pciBusNames(dom0.machine.rootPCIBus(parts[1]), Array(parts.dropFirst(2))) }
            guard let (address, rest) = deviceDirectory(Array(parts.dropFirst())) else { return [] }
            if !rest.isEmpty { return classDeviceNames(address, rest) }
            var names = ["config", "subsystem"] + deviceAttributes(address).map(\.rawValue)
            if dom0.driverName(of: address) != nil { names.append("driver") }
            if dom0.machine[address]?.physicalFunction != nil { names.append("physfn") }
            names += (dom0.sriov[address]?.virtualFunctions ?? []).indices.map { "virtfn\($0)" }
            names += dom0.machine.children(of: address).map(\.description)
            return names + classDirectories(of: address)
        case "module":
            return moduleNames(Array(parts.dropFirst()))
        case "fs":
            if parts.count == 1 { return ["pcibackfs"] }
            if parts.count == 2 { return ControlFile.allCases.map(\.rawValue) + ["frontends"] }
            if parts.count == 3 { return dom0.frontends.keys.sorted().map { String($0) } }
            if parts.count == 4 { return ["bus", "pci_op"] }
            if parts.count == 5 { return ["pci"] }
            if parts.count == 6 { return ["devices"] }
            guard let domain = UInt32(parts[3]), let frontend = dom0.frontends[domain] else { return [] }
            if parts.count == 7 { return frontend.exports.map(\.virtual.description).sorted() }
            return ["config"] + DeviceAttribute.frontendSet.map(\.rawValue)
        default:
            return []
        }
    }

    // MARK: - Entries that come and go

    /// Every (directory, name) whose existence or target depends on bindings, exports or
    /// removals, with its link target (or "" for a directory). Comparing two of these tells
    /// which kernel dentries to invalidate after a store.
    func dynamicEntries() -> [String: String] {
        var entries: [String: String] = [:]
        for address in dom0.machine.order {
            let name = address.description
            let path = dom0.machine.sysfsPath(of: address)
            entries["bus/pci/devices\u{0}" + name] = path
            let parent = String(path[..<path.lastIndex(of: "/")!])
            entries[parent + "\u{0}" + name] = ""
            if let pf = dom0.machine[address]?.physicalFunction { entries[path + "\u{0}physfn"] = pf.description }
            for (id, vf) in (dom0.sriov[address]?.virtualFunctions ?? []).enumerated() {
                entries[path + "\u{0}virtfn\(id)"] = vf.description
            }
            if let driver = dom0.driverName(of: address) {
                entries[path + "\u{0}driver"] = driver
                entries["bus/pci/drivers/" + driver + "\u{0}" + name] = path
            }
        }
        classDynamicEntries(into: &entries)
        pciBusDynamicEntries(into: &entries)
        for (domain, frontend) in dom0.frontends {
            entries["fs/pcibackfs/frontends\u{0}" + String(domain)] = ""
            for export in frontend.exports {
                entries["fs/pcibackfs/frontends/\(domain)/bus/pci/devices\u{0}" + export.virtual.description] = export.host.description
            }
        }
        return entries
    }
}

public struct TreeOptions: Sendable, Equatable {
    /// Attribute modes of kernels before ~4.14 (0400/0600).
    public var legacyModes = false
    /// xen-pciback as a loadable module (Debian) or built in: what `module/xen_pciback` holds.
    public var pcibackBuild = ModuleBuild.module
    /// The host's device numbers the emulated class devices avoid.
    public var hostNumbers = HostDeviceNumbers()

    public init(legacyModes: Bool = false, pcibackBuild: ModuleBuild = .module, hostNumbers: HostDeviceNumbers = HostDeviceNumbers()) {
        self.legacyModes = legacyModes
        self.pcibackBuild = pcibackBuild
        self.hostNumbers = hostNumbers
    }
}
