/// What the kernel caches about a physical function (`struct pci_sriov`), and what the
/// `sriov_*` files show: these change only through the kernel's own writes, never through raw
/// config writes to the capability.
public struct SRIOVState: Sendable, Equatable {
    public var totalVFs: UInt16
    public var initialVFs: UInt16
    /// `driver_max_VFs`: TotalVFs unless the bound driver lowered it.
    public var driverMaxVFs: UInt16
    public var numVFs: UInt16 = 0
    public var offset: UInt16
    public var stride: UInt16
    public var vfDeviceID: UInt16
    public var driversAutoprobe = true
    public var migrationCapable: Bool
    /// VF BAR windows: per-VF size and the address of VF 0's BAR, by VF BAR index.
    public var windows: [Int: BARDescriptor] = [:]
    /// The VFs that exist, by VF id (0-based).
    public var virtualFunctions: [PCIAddress] = []
}

/// Host drivers whose model has an `sriov_configure` callback (as `pci_sriov_configure_simple`
/// behaves). pciback, pcieport and the rest have none.
let driversWithSRIOVConfigure: Set<String> = ["igb", "ixgbe", "i40e", "ice", "mlx5_core", "nvme", "pci-pf-stub"]

extension Dom0 {
    // MARK: - Enumeration (sriov_init, spec sriov.md §1.4)

    /// The boot-time pass over every PF: clear a stale VF Enable, page size, VF BAR sizing and
    /// window assignment, the NumVFs sweep ending at 0. A device that fails a check is simply
    /// not a PF (no sriov_* files).
    mutating func initializeSRIOV() {
        for address in machine.order {
            guard let device = machine[address], device.isPCIExpress, device.configSize == 4096,
                  let capability = SRIOVCapability(device) else { continue }
            let base = capability.offset
            typealias R = SRIOVCapability.Register
            if UInt16(capability.read(device, R.control, width: 2)) & SRIOVCapability.vfEnable != 0 {
                device.hardwareWrite(base + R.control, width: 2, value: 0)
            }
            device.hardwareWrite(base + R.control, width: 2, value: 0)
            let total = UInt16(capability.read(device, R.totalVFs, width: 2))
            guard total > 0 else { continue }
            guard capability.read(device, R.supportedPageSizes, width: 4) & 1 != 0 else { continue }
            device.hardwareWrite(base + R.systemPageSize, width: 4, value: 1)
            let vfBARs = capability.virtualFunctionBARs(device)
            guard vfBARs.allSatisfy({ $0.size % 4096 == 0 }) else { continue }
            // Offsets and strides for every NumVFs must be usable.
            var usable = true
            for count in stride(from: Int(total), through: 1, by: -1) {
                device.hardwareWrite(base + R.numVFs, width: 2, value: UInt32(count))
                let offset = capability.read(device, R.firstVFOffset, width: 2)
                let step = capability.read(device, R.vfStride, width: 2)
                if offset == 0 || (count > 1 && step == 0) { usable = false }
            }
            device.hardwareWrite(base + R.numVFs, width: 2, value: 0)
            guard usable else { continue }
            var state = SRIOVState(
                totalVFs: total, initialVFs: UInt16(capability.read(device, R.initialVFs, width: 2)),
                driverMaxVFs: total,
                offset: UInt16(capability.read(device, R.firstVFOffset, width: 2)),
                stride: UInt16(capability.read(device, R.vfStride, width: 2)),
                vfDeviceID: UInt16(capability.read(device, R.vfDeviceID, width: 2)),
                migrationCapable: capability.read(device, R.capabilities, width: 4) & SRIOVCapability.vfMigrationCapable != 0)
            // Window assignment: each VF BAR i gets size x TotalVFs, written into the VF BAR.
            var cursor: UInt64 = 0x40_0000_0000 + UInt64(routingID(address)) << 24
            var cursor32: UInt64 = 0xd000_0000 + UInt64(routingID(address) & 0xff) << 20
            for bar in vfBARs {
                let span = bar.size * UInt64(total)
                let alignment = max(bar.size, 4096)
                let start: UInt64
                if bar.kind.is64Bit {
                    start = (cursor + alignment - 1) / alignment * alignment
                    cursor = start + span
                } else {
                    start = (cursor32 + alignment - 1) / alignment * alignment
                    cursor32 = start + span
                }
                state.windows[bar.index] = BARDescriptor(kind: bar.kind, size: bar.size, address: start)
                let register = base + R.vfBAR0 + 4 * bar.index
                device.hardwareWrite(register, width: 4, value: UInt32(truncatingIfNeeded: start) | bar.kind.typeBits)
                if bar.kind.is64Bit {
                    device.hardwareWrite(register + 4, width: 4, value: UInt32(truncatingIfNeeded: start >> 32))
                }
            }
            sriov[address] = state
        }
    }

    private func routingID(_ address: PCIAddress) -> Int { Int(address.bus) << 8 | Int(address.devfn) }

    /// The address of VF `id` (spec sriov.md §3.1), nil past bus 255.
    func virtualFunctionAddress(of pf: PCIAddress, id: Int, offset: UInt16, stride: UInt16) -> PCIAddress? {
        let rid = routingID(pf) + Int(offset) + id * Int(stride)
        guard rid <= 0xffff else { return nil }
        return PCIAddress(domain: pf.domain, bus: UInt8(rid >> 8), devfn: UInt8(rid & 0xff))
    }

    public func isPhysicalFunction(_ address: PCIAddress) -> Bool { sriov[address] != nil }

    // MARK: - sriov_numvfs (spec sriov.md §2.3, §2.4)

    public mutating func storeNumVFs(_ address: PCIAddress, input: [UInt8]) throws(Errno) {
        guard var state = sriov[address] else { throw .noSuchFileOrDirectory }
        guard let value = try? KernelNumbers.unsignedLong(input), value <= 0xffff else { throw .invalidArgument }
        let count = UInt16(value)
        if count > state.driverMaxVFs { throw .outOfRange }
        if count == state.numVFs { return }
        guard let driver = bindings[address] else {
            log.device(address, "no driver bound to device; cannot configure SR-IOV", driver: "pci")
            throw .noSuchFileOrDirectory
        }
        guard driversWithSRIOVConfigure.contains(driver) else {
            log.device(address, "driver does not support SR-IOV configuration via sysfs", driver: "pci")
            throw .noSuchFileOrDirectory
        }
        if assignedVirtualFunctions(of: address) > 0 {
            log.device(address, "Cannot modify SR-IOV while VFs are assigned", driver: driver)
            throw .operationNotPermitted
        }
        if count == 0 {
            disableSRIOV(address)
            return
        }
        if state.numVFs != 0 {
            log.device(address, "\(state.numVFs) VFs already enabled. Disable before enabling \(count) VFs", driver: "pci")
            throw .resourceBusy
        }
        try enableSRIOV(address, count: count, state: &state)
    }

    /// VFs of `pf` bound to pciback (pci_vfs_assigned).
    func assignedVirtualFunctions(of pf: PCIAddress) -> Int {
        (sriov[pf]?.virtualFunctions ?? []).filter { bindings[$0] == PCIDriver.pcibackName }.count
    }

    /// `sriov_enable`: the checks in the kernel's order, the register writes, then the VFs.
    private mutating func enableSRIOV(_ address: PCIAddress, count: UInt16, state: inout SRIOVState) throws(Errno) {
        guard let pf = machine[address], let capability = SRIOVCapability(pf) else { throw .noSuchDevice }
        typealias R = SRIOVCapability.Register
        if state.initialVFs > state.totalVFs || (!state.migrationCapable && state.initialVFs != state.totalVFs) {
            throw .ioError
        }
        if count > state.totalVFs || (!state.migrationCapable && count > state.initialVFs) { throw .invalidArgument }
        // The last VF's bus must fit under the upstream bridge (cached offset and stride).
        guard let last = virtualFunctionAddress(of: address, id: Int(count) - 1, offset: state.offset, stride: state.stride)
        else { throw .outOfMemory }
        let limit: Int
        if let bridge = machine.parentBridge(of: address).flatMap({ machine[$0] }) {
            limit = Int(bridge.config.read(PCIRegister.subordinateBus, width: 1))
        } else {
            limit = Int(address.bus)
        }
        if Int(last.bus) > limit {
            log.device(address, "can't enable \(count) VFs (bus \(hex(last.bus, width: 2)) out of range of [bus \(hex(limit, width: 2))])",
                       driver: bindings[address] ?? "pci")
            throw .outOfMemory
        }
        // NumVFs, re-read offset and stride, then VF Enable and MSE in one write.
        pf.hardwareWrite(capability.offset + R.numVFs, width: 2, value: UInt32(count))
        state.offset = UInt16(capability.read(pf, R.firstVFOffset, width: 2))
        state.stride = UInt16(capability.read(pf, R.vfStride, width: 2))
        let control = UInt16(capability.read(pf, R.control, width: 2)) | SRIOVCapability.vfEnable | SRIOVCapability.vfMemorySpaceEnable
        pf.hardwareWrite(capability.offset + R.control, width: 2, value: UInt32(control))
        var created: [EmulatedDevice] = []
        for id in 0..<Int(count) {
            guard let vfAddress = virtualFunctionAddress(of: address, id: id, offset: state.offset, stride: state.stride),
                  machine[vfAddress] == nil
            else { continue }
            var bars: [BARDescriptor?] = Array(repeating: nil, count: 7)
            for (index, window) in state.windows {
                bars[index] = BARDescriptor(kind: window.kind, size: window.size, address: window.address + window.size * UInt64(id))
            }
            created.append(pf.makeVirtualFunction(at: vfAddress, index: id, vfDeviceID: state.vfDeviceID, bars: bars))
        }
        machine.add(created)
        state.virtualFunctions = created.map(\.address)
        state.numVFs = count
        sriov[address] = state
        topologyGeneration += 1
        for vf in created { attachDriver(vf.address) }
    }

    /// `sriov_disable`: VFs removed in increasing order (a VF bound to pciback goes through
    /// pcistub_remove), then VF Enable and MSE cleared and NumVFs set to 0.
    mutating func disableSRIOV(_ address: PCIAddress) {
        guard var state = sriov[address], state.numVFs > 0, let pf = machine[address],
              let capability = SRIOVCapability(pf) else { return }
        typealias R = SRIOVCapability.Register
        for vf in state.virtualFunctions {
            if owners[vf] != nil || bindings[vf] != nil { releaseDriver(vf) }
        }
        machine.remove(state.virtualFunctions)
        let control = UInt16(capability.read(pf, R.control, width: 2)) & ~(SRIOVCapability.vfEnable | SRIOVCapability.vfMemorySpaceEnable)
        pf.hardwareWrite(capability.offset + R.control, width: 2, value: UInt32(control))
        pf.hardwareWrite(capability.offset + R.numVFs, width: 2, value: 0)
        state.offset = UInt16(capability.read(pf, R.firstVFOffset, width: 2))
        state.stride = UInt16(capability.read(pf, R.vfStride, width: 2))
        state.virtualFunctions = []
        state.numVFs = 0
        sriov[address] = state
        topologyGeneration += 1
    }

    /// What happens to a PF's VFs when its driver lets go (spec sriov.md §5.4, §2.4): pciback's
    /// notifier first unbinds the VFs it holds that no guest owns; then the PF driver's remove
    /// disables SR-IOV unless VFs are still assigned (then the kernel warns and they stay).
    mutating func physicalFunctionDriverRemoval(_ address: PCIAddress) {
        guard var state = sriov[address] else { return }
        for vf in state.virtualFunctions where bindings[vf] == PCIDriver.pcibackName && owners[vf] == nil {
            releaseDriver(vf)
        }
        if state.numVFs > 0 {
            if assignedVirtualFunctions(of: address) == 0 {
                disableSRIOV(address)
            } else {
                log.device(address, "driver left SR-IOV enabled after remove", driver: "pci")
            }
        }
        state = sriov[address] ?? state
        state.driverMaxVFs = state.totalVFs
        sriov[address] = state
    }

    // MARK: - sriov_drivers_autoprobe, sriov_vf_msix_count

    public mutating func storeDriversAutoprobe(_ address: PCIAddress, input: [UInt8]) throws(Errno) {
        guard sriov[address] != nil else { throw .noSuchFileOrDirectory }
        sriov[address]!.driversAutoprobe = try Dom0.kernelBool(input)
    }

    /// `kstrtobool`: decided by the first one or two characters.
    static func kernelBool(_ input: [UInt8]) throws(Errno) -> Bool {
        guard let first = input.first else { throw .invalidArgument }
        switch first {
        case UInt8(ascii: "1"), UInt8(ascii: "y"), UInt8(ascii: "Y"), UInt8(ascii: "t"), UInt8(ascii: "T"): return true
        case UInt8(ascii: "0"), UInt8(ascii: "n"), UInt8(ascii: "N"), UInt8(ascii: "f"), UInt8(ascii: "F"): return false
        case UInt8(ascii: "o"), UInt8(ascii: "O"):
            guard input.count > 1 else { throw .invalidArgument }
            switch input[1] {
            case UInt8(ascii: "n"), UInt8(ascii: "N"): return true
            case UInt8(ascii: "f"), UInt8(ascii: "F"): return false
            default: throw .invalidArgument
            }
        default: throw .invalidArgument
        }
    }

    public mutating func storeVFMSIXCount(_ address: PCIAddress, input: [UInt8]) throws(Errno) {
        guard let vf = machine[address], let pf = vf.physicalFunction else { throw .noSuchFileOrDirectory }
        let value = try? KernelNumbers.signedInt(input)
        guard let value, value >= 0 else { throw .invalidArgument }
        // No modelled PF driver has sriov_set_msix_vec_count.
        _ = bindings[pf]
        throw .notSupported
    }

    /// Whether the driver core may probe `address` now: a VF only while its PF's
    /// drivers_autoprobe is set or it has a driver_override.
    func mayProbe(_ address: PCIAddress) -> Bool {
        guard let pf = machine[address]?.physicalFunction, let state = sriov[pf] else { return true }
        return state.driversAutoprobe || driverOverrides[address] != nil
    }
}
