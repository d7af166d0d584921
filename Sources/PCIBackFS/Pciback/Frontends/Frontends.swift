/// A frontend domain (a PV guest's pcifront or a device-model stub domain) and the devices
/// exported to it, as xenstore and the backend (vpci or passthrough) would hold them.
public struct Frontend: Sendable, Equatable {
    public struct Export: Sendable, Equatable {
        public var virtual: PCIAddress
        public var host: PCIAddress
    }

    public var domain: UInt32
    public var exports: [Export] = []
}

extension Dom0 {
    // MARK: - Frontends (what xenstore and pcifront do on a real host)

    /// Exports a device bound to pciback to frontend `domain`; returns its virtual address.
    public mutating func attach(domain: UInt32, address: PCIAddress) throws(Errno) -> PCIAddress {
        guard isBoundToPciback(address), owners[address] == nil, let device = machine[address] else {
            throw .invalidArgument  // "Couldn't locate PCI device ... perhaps already in-use?"
        }
        var frontend = frontends[domain] ?? Frontend(domain: domain)
        let virtual: PCIAddress
        if passthroughBackend {
            virtual = address
        } else {
            guard device.identity.classCode >> 16 != 0x06 else { throw .badAddress }  // bridges: -EFAULT
            guard let slot = virtualSlot(for: device, in: frontend) else { throw .outOfMemory }
            virtual = PCIAddress(domain: 0, bus: 0, slot: slot, function: address.function)
            log.device(address, "vpci: assign to virtual slot \(slot)")
        }
        frontend.exports.append(Frontend.Export(virtual: virtual, host: address))
        frontends[domain] = frontend
        owners[address] = domain
        topologyGeneration += 1
        return virtual
    }

    /// vpci's slot rule: functions of one physical slot share a virtual slot, except that an
    /// SR-IOV VF at function 0 takes its own; otherwise the first free slot.
    private func virtualSlot(for device: EmulatedDevice, in frontend: Frontend) -> UInt8? {
        let isVirtualFunction = device.physicalFunction != nil
        if !isVirtualFunction || device.address.function != 0 {
            for slot in UInt8(0)..<32 {
                guard let first = frontend.exports.first(where: { $0.virtual.slot == slot }),
                      let firstDevice = machine[first.host]
                else { continue }
                if firstDevice.physicalFunction != nil && first.host.function == 0 { continue }
                if first.host.domain == device.address.domain && first.host.bus == device.address.bus
                    && first.host.slot == device.address.slot {
                    return slot
                }
            }
        }
        let used = Set(frontend.exports.map(\.virtual.slot))
        return (UInt8(0)..<32).first { !used.contains($0) }
    }

    /// The frontend let a device go (device removal or frontend shutdown).
    public mutating func detach(domain: UInt32, address: PCIAddress) throws(Errno) {
        guard owners[address] == domain else { throw .noSuchDevice }
        removeExport(address)
        releaseFromGuest(address)
        topologyGeneration += 1
    }

    mutating func removeExport(_ address: PCIAddress) {
        guard let domain = owners[address] else { return }
        frontends[domain]?.exports.removeAll { $0.host == address }
        if frontends[domain]?.exports.isEmpty == true { frontends[domain] = nil }
    }

    /// `xen_pcibk_get_pci_dev`: the device a frontend addresses.
    public func frontendDevice(domain: UInt32, pciDomain: UInt32, bus: UInt32, devfn: UInt32) -> PCIAddress? {
        guard let frontend = frontends[domain] else { return nil }
        if passthroughBackend {
            return frontend.exports.first {
                $0.host.domain == pciDomain && UInt32($0.host.bus) == bus && UInt32($0.host.devfn) == devfn
            }?.host
        }
        guard pciDomain == 0, bus == 0 else { return nil }
        let slot = UInt8((devfn >> 3) & 0x1f)
        let function = UInt8(devfn & 7)
        return frontend.exports.first { $0.virtual.slot == slot && $0.virtual.function == function }?.host
    }

    // MARK: - Guest config access through the filter

    // The per-device data is reached through its dictionary index and changed in place: a
    // copy out and back would duplicate its arrays on every access (this is the B6 hot path).

    public mutating func guestRead(_ address: PCIAddress, offset: Int, size: Int) -> FilterVerdict {
        guard let index = deviceData.index(forKey: address), let device = machine.devices[address] else {
            return FilterVerdict(error: XenPCIError.deviceNotFound)
        }
        let verdict = ConfigFilter.read(device, &deviceData.values[index], offset: offset, size: size)
        record(.configRead, device: address, offset: offset, size: size, value: verdict.value, verdict: verdict)
        return verdict
    }

    public mutating func guestWrite(_ address: PCIAddress, offset: Int, size: Int, value: UInt32) -> FilterVerdict {
        guard let index = deviceData.index(forKey: address), let device = machine.devices[address] else {
            return FilterVerdict(error: XenPCIError.deviceNotFound)
        }
        let policy = self.policy
        let intxBefore = deviceData.values[index].enableINTx
        let verdict = ConfigFilter.write(device, &deviceData.values[index], offset: offset, size: size, value: value,
                                         policy: policy, log: &log)
        if verdict.error == 0, deviceData.values[index].enableINTx != intxBefore {
            var data = deviceData.values[index]
            controlISR(device, &data, reset: false)
            deviceData.values[index] = data
        }
        record(.configWrite, device: address, offset: offset, size: size, value: value, verdict: verdict)
        return verdict
    }
}
