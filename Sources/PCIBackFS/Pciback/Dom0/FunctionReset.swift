/// The PCI core's reset sequences (`drivers/pci/pci.c`), the kernel layer above the hardware's
/// resets (`EmulatedDevice.hardwareReset`): which reset methods a function has, in the kernel's
/// order; `__pci_reset_function_locked`; `pci_reset_function` (sysfs `reset`); and
/// `pci_restore_state`, step by step with the condition under which each step acts.
///
/// The kernel writes registers; the hardware reacts (an FLR on Initiate FLR, a soft reset on
/// D3hot -> D0, a hot reset below a bridge whose Secondary Bus Reset is set). Nothing here
/// changes register bits except through those writes.

/// The kernel's reset methods, in its order of preference (`pci_reset_fn_methods`); the raw
/// values are the names `reset_method` shows and takes.
public enum ResetMethod: String, CaseIterable, Sendable {
    case deviceSpecific = "device_specific"
    case acpi
    case flr
    case afFLR = "af_flr"
    case pm
    case bus
    case cxlBus = "cxl_bus"
}

/// Which dom0 the kernel runs as. The Xen device-reset hypercall (`xen_reset_device`,
/// PHYSDEVOP_pci_device_reset) exists only for a PVH dom0 (`pcistub_reset_device_state`).
public enum Dom0Kind: String, CaseIterable, Sendable {
    case pv
    case pvh
}

/// `pci_dev_reset_methods`: device-specific resets by vendor and device (nil: any device of the
/// vendor), with the probe condition each quirk adds.
struct DeviceSpecificReset: Sendable {
    /// The probe condition a quirk adds to the ID match.
    enum Condition: Sendable {
        case always
        /// nvme_disable_and_flr: an NVMe class function (01:08:02) with FLR.
        case nvmeClassWithFLR
        /// delay_250ms_after_flr: a function with FLR.
        case hasFLR
        /// reset_chelsio_generic_dev: device IDs 0x4xxx (T4).
        case chelsioT4
    }

    var vendor: UInt16
    var device: UInt16?
    var condition: Condition

    static let table: [DeviceSpecificReset] = [
        DeviceSpecificReset(vendor: 0x8086, device: 0x10ed, condition: .always),  // reset_intel_82599_sfp_virtfn
        DeviceSpecificReset(vendor: 0x8086, device: 0x0156, condition: .always),  // reset_ivb_igd (IVB mobile GT1)
        DeviceSpecificReset(vendor: 0x8086, device: 0x0166, condition: .always),  // reset_ivb_igd (IVB mobile GT2)
        DeviceSpecificReset(vendor: 0x144d, device: 0xa804, condition: .nvmeClassWithFLR),  // Samsung SM961/PM961
        DeviceSpecificReset(vendor: 0x8086, device: 0x0953, condition: .hasFLR),  // Intel DC P3700
        DeviceSpecificReset(vendor: 0x1425, device: nil, condition: .chelsioT4),  // Chelsio
        DeviceSpecificReset(vendor: 0x19e5, device: 0x375e, condition: .always),  // reset_hinic_vf_dev
    ]

    func applies(_ function: EmulatedDevice) -> Bool {
        guard function.identity.vendor == vendor, device == nil || device == function.identity.device else { return false }
        switch condition {
        case .always: return true
        case .nvmeClassWithFLR: return function.identity.classCode == 0x010802 && function.hasPCIeFLR
        case .hasFLR: return function.hasPCIeFLR
        case .chelsioT4: return function.identity.device & 0xf000 == 0x4000
        }
    }

    static func find(_ device: EmulatedDevice) -> DeviceSpecificReset? { table.first { $0.applies(device) } }
}

extension Dom0 {
    // MARK: - Reset methods (pci_init_reset_methods)

    /// Whether `method` applies to the function now (the method's PCI_RESET_PROBE answer).
    func resetMethodApplies(_ method: ResetMethod, _ address: PCIAddress) -> Bool {
        guard let device = machine[address] else { return false }
        switch method {
        case .deviceSpecific:
            // pci_dev_specific_reset: an entry of pci_dev_reset_methods whose probe succeeds.
            return DeviceSpecificReset.find(device) != nil
        case .acpi:
            // pci_dev_acpi_reset: needs an ACPI _RST method; the emulated firmware has none.
            return false
        case .flr:
            // pcie_reset_flr: the cached Device Capabilities has FLR.
            return device.hasPCIeFLR
        case .afFLR:
            // pci_af_flr: an AF capability with both TP and FLR.
            return device.hasAdvancedFeaturesFLR
        case .pm:
            // pci_pm_reset: a PM capability whose PMCSR does not have No_Soft_Reset.
            let pm = device.capabilities.powerManagement
            return pm != 0 && UInt16(device.config.read(pm + PMRegister.controlStatus, width: 2)) & PMRegister.noSoftReset == 0
        case .bus:
            // pci_reset_bus_function: no hotplug slot reset here, so pci_parent_bus_reset.
            return busResetBridge(address) != nil
        case .cxlBus:
            // cxl_reset_bus_function: CXL devices only (a CXL DVSEC); none is emulated.
            return false
        }
    }

    /// `pci_parent_bus_reset`'s conditions: not on a root bus, not a bridge with a subordinate
    /// bus, a bridge above (`bus->self`; a VF on a bus of VFs has none), and no other function
    /// on the bus. Returns that bridge.
    func busResetBridge(_ address: PCIAddress) -> PCIAddress? {
        guard let device = machine[address], !device.isBridge else { return nil }
        if let pf = device.physicalFunction, pf.bus != address.bus { return nil }
        guard let bridge = machine.parentBridge(of: address) else { return nil }
        let others = machine.order.contains { $0 != address && $0.domain == address.domain && $0.bus == address.bus }
        return others ? nil : bridge
    }

    /// `pci_init_reset_methods`: every method that applies, in the kernel's order.
    public func defaultResetMethods(_ address: PCIAddress) -> [ResetMethod] {
        ResetMethod.allCases.filter { resetMethodApplies($0, address) }
    }

    /// `dev->reset_methods`: the defaults unless `reset_method` chose others.
    public func resetMethods(_ address: PCIAddress) -> [ResetMethod] {
        guard let names = tunables[device: address].resetMethods else { return defaultResetMethods(address) }
        return names.compactMap(ResetMethod.init(rawValue:))
    }

    /// `pci_reset_supported`, as the `reset` and `reset_method` files' visibility evaluates it
    /// when the device is added.
    public func hasResetMethod(_ address: PCIAddress) -> Bool { !defaultResetMethods(address).isEmpty }

    /// `reset_method` show: the methods, space-separated.
    func resetMethodText(_ address: PCIAddress) -> [UInt8] {
        let methods = resetMethods(address)
        return methods.isEmpty ? [] : Array((methods.map(\.rawValue).joined(separator: " ") + "\n").utf8)
    }

    /// `reset_method` store: "" disables every method, "default" probes again, otherwise a
    /// space-separated list of names, each of which must apply (else EINVAL, nothing changes).
    mutating func storeResetMethod(_ address: PCIAddress, input: [UInt8]) throws(Errno) {
        var text = String(decoding: input, as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        if text.isEmpty {
            tunables[device: address].resetMethods = []
            log.device(address, "All device reset methods disabled by user", driver: bindings[address] ?? "pci")
            return
        }
        if text == "default" {
            tunables[device: address].resetMethods = nil
            return
        }
        var chosen: [ResetMethod] = []
        for word in text.split(separator: " ", omittingEmptySubsequences: true) {
            let name = word.trimmingCharacters(in: .whitespacesAndNewlines)
            guard let method = ResetMethod(rawValue: name) else {
                log.device(address, "Invalid reset method '\(name)'", driver: bindings[address] ?? "pci")
                throw .invalidArgument
            }
            guard resetMethodApplies(method, address) else {
                log.device(address, "Unsupported reset method '\(name)'", driver: bindings[address] ?? "pci")
                throw .invalidArgument
            }
            guard chosen.count < ResetMethod.allCases.count else { throw .invalidArgument }
            chosen.append(method)
        }
        if resetMethodApplies(.deviceSpecific, address), chosen.first != .deviceSpecific {
            log.device(address, "Device-specific reset disabled/de-prioritized by user", driver: bindings[address] ?? "pci")
        }
        tunables[device: address].resetMethods = chosen.map(\.rawValue)
    }

    // MARK: - Resetting

    /// `__pci_reset_function_locked`: the methods in order; a method that no longer applies
    /// answers -ENOTTY and the next is tried; the first success or other error ends it. No
    /// method: -ENOTTY. `failing` decides the injected `reset` fault (nil: fire it here).
    @discardableResult
    mutating func resetFunctionLocked(_ address: PCIAddress, failing: Bool? = nil) -> Errno? {
        guard let device = machine[address] else { return .noSuchDevice }
        for method in resetMethods(address) where resetMethodApplies(method, address) {
            if failing ?? device.faults.fire(\.resetFails) { return .ioError }
            performReset(method, address)
            return nil
        }
        return .inappropriateIoctl
    }

    /// What each method writes (the hardware does the rest).
    private mutating func performReset(_ method: ResetMethod, _ address: PCIAddress) {
        guard let device = machine[address] else { return }
        switch method {
        case .deviceSpecific:
            // The quirks' sequences end in a function-level reset of the device.
            device.hardwareReset(.functionLevel)
        case .flr:
            // pcie_flr: set Initiate FLR in Device Control.
            let devctl = device.capabilities.pciExpress + PCIeRegister.deviceControl
            let value = device.config.read(devctl, width: 2) | UInt32(PCIeRegister.devCtlInitiateFLR)
            device.hardwareWrite(devctl, width: 2, value: value)
        case .afFLR:
            // pci_af_flr: write Initiate FLR to the AF control byte.
            device.hardwareWrite(device.capabilities.advancedFeatures + AFRegister.control, width: 1,
                                 value: UInt32(AFRegister.controlInitiateFLR))
        case .pm:
            // pci_pm_reset: PMCSR as read, with D3hot, then with D0 (a set PME_Status is written
            // back as 1, so it clears).
            let pmcsr = device.capabilities.powerManagement + PMRegister.controlStatus
            let csr = device.config.read(pmcsr, width: 2) & ~UInt32(PMRegister.stateMask)
            device.hardwareWrite(pmcsr, width: 2, value: csr | 3)
            device.hardwareWrite(pmcsr, width: 2, value: csr)
        case .bus:
            // pci_bridge_secondary_bus_reset: Secondary Bus Reset set, then cleared.
            guard let bridge = busResetBridge(address), let upstream = machine[bridge] else { return }
            let control = upstream.config.read(PCIRegister.bridgeControl, width: 2)
            hostWrite(bridge, offset: PCIRegister.bridgeControl, width: 2, value: control | UInt32(PCIBridgeControl.secondaryBusReset))
            hostWrite(bridge, offset: PCIRegister.bridgeControl, width: 2, value: control & ~UInt32(PCIBridgeControl.secondaryBusReset))
        case .acpi, .cxlBus:
            break
        }
    }

    /// The hardware side of a bridge's Secondary Bus Reset: a hot reset of everything below.
    func hotResetBelow(_ bridge: PCIAddress) {
        for child in machine.children[bridge] ?? [] {
            machine[child]?.hardwareReset(.hotReset)
            hotResetBelow(child)
        }
    }

    /// `pci_reset_function` (sysfs `reset`): -ENOTTY without a method, and nothing changes;
    /// otherwise `pci_dev_save_and_disable` (D0, `pci_save_state`, Command = INTx Disable
    /// only), `__pci_reset_function_locked`, and `pci_dev_restore` (`pci_restore_state`),
    /// which runs whether or not the reset succeeded.
    public mutating func pciResetFunction(_ address: PCIAddress) throws(Errno) {
        guard let device = machine[address] else { throw .noSuchDevice }
        guard !resetMethods(address).isEmpty else { throw .inappropriateIoctl }
        try? device.setPowerState(0)
        device.saveState()
        device.hardwareWrite(PCIRegister.command, width: 2, value: UInt32(PCICommand.intxDisable))
        let error = resetFunctionLocked(address)
        restoreState(address)
        if let error { throw error }
    }

    // MARK: - pci_restore_state

    /// `pci_restore_state` from the last `pci_save_state` (or from `snapshot`, a state pciback
    /// stored and loads back). Each step names the kernel function and its condition.
    public mutating func restoreState(_ address: PCIAddress, from snapshot: [UInt8]? = nil) {
        guard let device = machine[address], let saved = snapshot ?? device.savedState else { return }
        func savedValue(_ offset: Int, _ width: Int) -> UInt32 {
            var value: UInt32 = 0
            for index in stride(from: width - 1, through: 0, by: -1) where offset + index < saved.count {
                value = value << 8 | UInt32(saved[offset + index])
            }
            return value
        }
        // 1. pci_restore_pcie_state: the Express capability's control registers the function
        //    implements (pcie_capability_write_word skips the others).
        let pcie = device.capabilities.pciExpress
        if pcie != 0, let type = device.pcieType {
            let flags = UInt16(device.config.read(pcie + PCIeRegister.flags, width: 2))
            let version2 = flags & PCIeRegister.flagsVersionMask > 1
            let hasLinkControl = [PCIeRegister.typeEndpoint, PCIeRegister.typeLegacyEndpoint, PCIeRegister.typeRootPort,
                                  PCIeRegister.typeUpstreamPort, PCIeRegister.typeDownstreamPort,
                                  PCIeRegister.typePCIeToPCIBridge, PCIeRegister.typePCIToPCIeBridge].contains(type)
            let hasSlotControl = (type == PCIeRegister.typeRootPort || type == PCIeRegister.typeDownstreamPort)
                && flags & PCIeRegister.flagsSlotImplemented != 0
            let steps: [(register: Int, implemented: Bool)] = [
                (PCIeRegister.deviceControl, true),
                (PCIeRegister.linkControl, hasLinkControl),
                (PCIeRegister.slotControl, hasSlotControl),
                (PCIeRegister.rootControl, device.hasRootPortRegisters),
                (PCIeRegister.deviceControl2, version2),
                (PCIeRegister.linkControl2, version2 && hasLinkControl),
                (PCIeRegister.slotControl2, version2),
            ]
            for step in steps where step.implemented {
                device.hardwareWrite(pcie + step.register, width: 2, value: savedValue(pcie + step.register, 2))
            }
        }
        // 2. pci_restore_{pasid,pri,ats,vc,rebar,dpc,ptm,tph}_state: capabilities the
        //    emulation does not model (a function with them keeps what the reset left).
        let aer = device.capabilities.aer
        if aer != 0 {
            // 3. pci_aer_clear_status: only when the OS owns AER (pcie_aer_is_native); Root
            //    Error Status (root ports, event collectors), then Correctable, Uncorrectable.
            if aerOwnedByOS {
                var registers = [AERRegister.correctableStatus, AERRegister.uncorrectableStatus]
                if device.hasRootPortRegisters { registers.insert(AERRegister.rootStatus, at: 0) }
                for register in registers {
                    device.hardwareWrite(aer + register, width: 4, value: device.config.read(aer + register, width: 4))
                }
            }
            // 4. pci_restore_aer_state: masks, severity, capabilities and control, and Root
            //    Error Command where it exists; whoever owns AER.
            var registers = [AERRegister.uncorrectableMask, AERRegister.uncorrectableSeverity, AERRegister.correctableMask,
                             AERRegister.capabilitiesControl]
            if device.hasRootPortRegisters { registers.append(AERRegister.rootCommand) }
            for register in registers { device.hardwareWrite(aer + register, width: 4, value: savedValue(aer + register, 4)) }
        }
        // 5. pci_restore_config_space: header dwords from the last down, each only if it
        //    differs from the saved one (a bridge's prefetch window always); type 0 writes the
        //    BARs before Command.
        let ranges: [(ClosedRange<Int>, force: Bool)]
        switch device.identity.layout {
        case .normal: ranges = [(10...15, false), (4...9, false), (0...3, false)]
        case .bridge: ranges = [(12...15, false), (9...11, true), (0...8, false)]
        default: ranges = [(0...15, false)]
        }
        for (range, force) in ranges {
            for index in range.reversed() {
                let value = savedValue(4 * index, 4)
                if !force, device.config.read(4 * index, width: 4) == value { continue }
                device.hardwareWrite(4 * index, width: 4, value: value)
            }
        }
        // 6. pci_restore_pcix_state: the PCI-X command register.
        if let (_, pcix) = CapabilityScanner.standardCapabilities(device.config).first(where: { $0.0 == CapabilityID.pcix }) {
            device.hardwareWrite(pcix + 2, width: 2, value: savedValue(pcix + 2, 2))
        }
        // 7. pci_restore_msi_state: MSI only if the kernel enabled it (dev->msi_enabled): INTx
        //    off, MSI off, the message, then Enable with the kernel's vector count.
        let msi = device.capabilities.msi
        if msi != 0, device.kernelMSIEnabled {
            device.setINTx(enabled: false)
            let flags = UInt16(device.config.read(msi + MSIRegister.flags, width: 2))
            device.hardwareWrite(msi + MSIRegister.flags, width: 2, value: UInt32(flags & ~MSIRegister.enable))
            let messageEnd = msi + 10 + (flags & MSIRegister.is64Bit != 0 ? 4 : 0) + (flags & MSIRegister.perVectorMasking != 0 ? 8 : 0)
            for offset in stride(from: msi + 4, to: messageEnd, by: 2) {
                device.hardwareWrite(offset, width: 2, value: savedValue(offset, 2))
            }
            let multiple = UInt16(savedValue(msi + MSIRegister.flags, 2)) & MSIRegister.multipleMessageEnable
            let current = UInt16(device.config.read(msi + MSIRegister.flags, width: 2))
            device.hardwareWrite(msi + MSIRegister.flags, width: 2,
                                 value: UInt32((current & ~MSIRegister.multipleMessageEnable) | multiple | MSIRegister.enable))
        }
        //    MSI-X only if the kernel enabled it (dev->msix_enabled): INTx off, Enable with
        //    Function Mask, the table (in BAR memory), then Function Mask off.
        let msix = device.capabilities.msix
        if msix != 0, device.kernelMSIXEnabled {
            device.setINTx(enabled: false)
            let flags = UInt16(device.config.read(msix + MSIXRegister.flags, width: 2))
            device.hardwareWrite(msix + MSIXRegister.flags, width: 2,
                                 value: UInt32(flags | MSIXRegister.enable | MSIXRegister.functionMask))
            device.hardwareWrite(msix + MSIXRegister.flags, width: 2,
                                 value: UInt32((flags | MSIXRegister.enable) & ~MSIXRegister.functionMask))
        }
        // 8. pci_enable_acs: ACS is not modelled.
        // 9. pci_restore_iov_state: a PF's SR-IOV registers from the kernel's cache.
        sriovRestoreState(address)
    }

    /// `sriov_restore_state` (spec sriov.md §1): nothing if VF Enable is set; otherwise the ARI
    /// bit, the VF BARs, System Page Size, NumVFs and Control from what the kernel cached.
    func sriovRestoreState(_ address: PCIAddress) {
        guard let state = sriov[address], let pf = machine[address], let capability = SRIOVCapability(pf) else { return }
        typealias R = SRIOVCapability.Register
        let base = capability.offset
        let current = UInt16(capability.read(pf, R.control, width: 2))
        if current & SRIOVCapability.vfEnable != 0 { return }
        // iov->ctrl: sriov_init leaves ARI Capable Hierarchy clear here; enabling adds VFE|MSE.
        let cachedControl: UInt16 = state.numVFs > 0 ? SRIOVCapability.vfEnable | SRIOVCapability.vfMemorySpaceEnable : 0
        pf.hardwareWrite(base + R.control, width: 2,
                         value: UInt32((current & ~SRIOVCapability.ariCapableHierarchy) | (cachedControl & SRIOVCapability.ariCapableHierarchy)))
        for (index, window) in state.windows.sorted(by: { $0.key < $1.key }) {
            let register = base + R.vfBAR0 + 4 * index
            pf.hardwareWrite(register, width: 4, value: UInt32(truncatingIfNeeded: window.address) | window.kind.typeBits)
            if window.kind.is64Bit { pf.hardwareWrite(register + 4, width: 4, value: UInt32(truncatingIfNeeded: window.address >> 32)) }
        }
        pf.hardwareWrite(base + R.systemPageSize, width: 4,
                         value: SRIOVCapability.systemPageSize(supported: capability.read(pf, R.supportedPageSizes, width: 4)))
        pf.hardwareWrite(base + R.numVFs, width: 2, value: UInt32(state.numVFs))
        pf.hardwareWrite(base + R.control, width: 2, value: UInt32(cachedControl))
    }

    // MARK: - pciback (pcistub_reset_device_state)

    /// `pcistub_reset_device_state`: the function reset, whose result is ignored; then, in a
    /// PVH dom0 only, Xen's device reset (PHYSDEVOP_pci_device_reset), whose error is returned.
    /// The injected `reset` fault is decided once for the step: it fails the function reset,
    /// and under PVH Xen's reset too.
    mutating func pcistubResetDeviceState(_ address: PCIAddress) -> Errno? {
        guard let device = machine[address] else { return .noSuchDevice }
        let failing = device.faults.fire(\.resetFails)
        resetFunctionLocked(address, failing: failing)
        guard dom0Kind == .pvh else { return nil }
        return failing ? .ioError : nil
    }
}
