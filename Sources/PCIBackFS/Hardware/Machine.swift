/// The emulated hardware: every PCI function, and the topology the bridges' bus numbers give
/// (computed when functions come and go; reprogramming a bridge's bus numbers from dom0 does
/// not move the sysfs directories, as it does not in Linux either).
public struct Machine {
    public private(set) var devices: [PCIAddress: EmulatedDevice] = [:]
    /// Addresses in enumeration order (domain, bus, devfn).
    public private(set) var order: [PCIAddress] = []
    public var name: String
    var parents: [PCIAddress: PCIAddress] = [:]
    var children: [PCIAddress: [PCIAddress]] = [:]
    /// Functions on a root bus, by the root bus's sysfs name (`pci0000:00`).
    public internal(set) var rootBuses: [String: [PCIAddress]] = [:]
    var rootBusOf: [PCIAddress: String] = [:]
    /// Each bridge's secondary bus number, as the topology was last computed (a bridge whose
    /// secondary bus is unset, or not above its own bus, has none).
    var secondaryBuses: [PCIAddress: UInt8] = [:]

    public init(name: String, devices: [EmulatedDevice]) {
        self.name = name
        for device in devices { insert(device) }
        rebuildTopology()
    }

    public mutating func add(_ device: EmulatedDevice) {
        insert(device)
        rebuildTopology()
    }

    public mutating func add(_ newDevices: [EmulatedDevice]) {
        for device in newDevices { insert(device) }
        rebuildTopology()
    }

    private mutating func insert(_ device: EmulatedDevice) {
        precondition(devices[device.address] == nil, "duplicate device \(device.address)")
        devices[device.address] = device
        if let last = order.last, last < device.address {
            order.append(device.address)
        } else {
            let index = order.firstIndex { $0 > device.address } ?? order.endIndex
            order.insert(device.address, at: index)
        }
    }

    public mutating func remove(_ addresses: [PCIAddress]) {
        let gone = Set(addresses)
        for address in addresses { devices[address] = nil }
        order.removeAll { gone.contains($0) }
        rebuildTopology()
    }

    public subscript(address: PCIAddress) -> EmulatedDevice? { devices[address] }

    private mutating func rebuildTopology() {
        parents = [:]
        children = [:]
        rootBuses = [:]
        rootBusOf = [:]
        secondaryBuses = [:]
        // Bridges by (domain, bus range); the innermost (highest secondary bus) wins.
        var bridges: [(address: PCIAddress, secondary: Int, subordinate: Int)] = []
        for address in order {
            guard let device = devices[address], device.isBridge else { continue }
            let secondary = Int(device.config.read(PCIRegister.secondaryBus, width: 1))
            let subordinate = Int(device.config.read(PCIRegister.subordinateBus, width: 1))
            if secondary != 0, secondary > Int(address.bus) {
                bridges.append((address, secondary, subordinate))
                secondaryBuses[address] = UInt8(secondary)
            }
        }
        for address in order {
            var best: (PCIAddress, Int)?
            for bridge in bridges where bridge.address.domain == address.domain && bridge.address != address {
                guard Int(address.bus) >= bridge.secondary, Int(address.bus) <= bridge.subordinate else { continue }
                if best == nil || bridge.secondary > best!.1 { best = (bridge.address, bridge.secondary) }
            }
            // A VF's directory sits beside its PF's, whatever its bus number.
            let parent = devices[address]?.physicalFunction.map { parents[$0] } ?? best?.0
            if let parent {
                parents[address] = parent
                children[parent, default: []].append(address)
            }
        }
        for address in order where parents[address] == nil && devices[address]?.physicalFunction == nil {
            let name = "pci" + hex(address.domain, width: 4) + ":" + hex(address.bus, width: 2)
            rootBuses[name, default: []].append(address)
            rootBusOf[address] = name
        }
        for address in order where parents[address] == nil {
            guard let physical = devices[address]?.physicalFunction, let root = rootBusOf[physical] else { continue }
            rootBusOf[address] = root
            rootBuses[root, default: []].append(address)
        }
        for address in order where parents[address] != nil {
            var top = address
            while let parent = parents[top] { top = parent }
            rootBusOf[address] = rootBusOf[top]
        }
        for address in order {
            devices[address]?.upstreamBridge = parents[address].flatMap { devices[$0] }
        }
    }

    /// The bridge a function sits behind, or nil on a root bus.
    public func parentBridge(of address: PCIAddress) -> PCIAddress? { parents[address] }

    public func children(of address: PCIAddress) -> [PCIAddress] { children[address] ?? [] }

    /// The bus behind a bridge (the number its functions are on), or nil when it has none.
    public func secondaryBus(of address: PCIAddress) -> UInt8? { secondaryBuses[address] }

    /// The chain of bridges from the root down to (not including) `address`.
    public func upstreamBridges(of address: PCIAddress) -> [PCIAddress] {
        var chain: [PCIAddress] = []
        var current = address
        while let parent = parents[current] {
            chain.insert(parent, at: 0)
            current = parent
        }
        return chain
    }

    /// `devices/pci0000:00/0000:00:1c.1/0000:03:00.0`: the function's directory in sysfs.
    public func sysfsPath(of address: PCIAddress) -> String {
        var path = "devices/" + (rootBusOf[address] ?? "pci0000:00")
        for bridge in upstreamBridges(of: address) { path += "/" + bridge.description }
        return path + "/" + address.description
    }
}

extension Machine {
    /// An independent machine in the same state: every function copied (and `removed`, the
    /// functions taken out of it, with them), upstream bridge links pointing into the copy.
    func copied(removed: [PCIAddress: EmulatedDevice]) -> (machine: Machine, removed: [PCIAddress: EmulatedDevice]) {
        var copies: [ObjectIdentifier: EmulatedDevice] = [:]
        let originals = Array(devices.values) + Array(removed.values)
        for device in originals { copies[ObjectIdentifier(device)] = device.copied() }
        for device in originals {
            copies[ObjectIdentifier(device)]!.upstreamBridge = device.upstreamBridge.map { bridge in
                copies[ObjectIdentifier(bridge)] ?? bridge.copied()
            }
        }
        var machine = self
        machine.devices = devices.mapValues { copies[ObjectIdentifier($0)]! }
        return (machine, removed.mapValues { copies[ObjectIdentifier($0)]! })
    }
}
