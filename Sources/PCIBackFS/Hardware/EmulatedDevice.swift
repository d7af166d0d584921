/// Positive PCIBIOS return codes from config accessors (Linux `pci.h`).
public enum PCIBIOS {
    public static let successful: Int32 = 0x00
    public static let funcNotSupported: Int32 = 0x81
    public static let badVendorID: Int32 = 0x83
    public static let deviceNotFound: Int32 = 0x86
    public static let badRegisterNumber: Int32 = 0x87
    public static let setFailed: Int32 = 0x88
    public static let bufferTooSmall: Int32 = 0x89
}

/// Where the first instance of each capability the emulation cares about sits (0 = absent).
public struct CapabilityOffsets: Sendable, Equatable {
    public var powerManagement = 0
    public var vpd = 0
    public var msi = 0
    public var msix = 0
    public var pciExpress = 0
    public var advancedFeatures = 0
    public var aer = 0
    public var ari = 0
    public var sriov = 0
    public init() {}
}

/// What the kernel cached about a function at enumeration (what sysfs `vendor`, `device`, ...
/// print and what pciback's vendor and device fields return). For an SR-IOV VF these differ
/// from its config space, whose ID registers read 0xffff.
public struct DeviceIdentity: Sendable, Equatable {
    public var vendor: UInt16
    public var device: UInt16
    public var subsystemVendor: UInt16
    public var subsystemDevice: UInt16
    /// 24-bit class code: base class, subclass, programming interface.
    public var classCode: UInt32
    public var revision: UInt8
    public var headerType: UInt8
    public var interruptPin: UInt8

    public var layout: PCIHeaderType? { PCIHeaderType(rawValue: headerType & 0x7f) }
    public var isMultiFunction: Bool { headerType & 0x80 != 0 }
}

/// The resets a function's hardware performs, by what they preserve (see `preservedRegisters`).
public enum HardwareReset: Sendable, CaseIterable {
    /// Function Level Reset: PCIe FLR, the AF capability's FLR, device-specific FLR sequences.
    case functionLevel
    /// The internal reset of a D3hot -> D0 transition without No_Soft_Reset.
    case softReset
    /// Conventional reset on the link: a secondary bus reset from the bridge above (hot reset).
    case hotReset
}

/// A register's bits that a reset keeps.
struct PreservedRegister: Equatable {
    var offset: Int
    var width: Int
    var mask: UInt32
}

/// One emulated PCI function: its configuration space with register semantics, its BARs, and
/// the PCI core's state for it (the side effects pciback triggers through the kernel).
///
/// Instances live inside the machine state and are only touched under the machine's lock.
public final class EmulatedDevice {
    public let address: PCIAddress
    // The state lock already makes every access exclusive; the runtime check would cost more
    // than the config read itself on the filter's hot path.
    @exclusivity(unchecked) public internal(set) var config: ConfigSpace
    /// The power-on values of every changeable bit (what a function reset restores).
    let resetImage: [UInt8]
    /// Set once, before the machine boots (an imported VF takes its PF's identity).
    public internal(set) var identity: DeviceIdentity
    /// BARs 0...5 and the expansion ROM at index 6.
    public internal(set) var bars: [BARDescriptor?]
    public internal(set) var capabilities: CapabilityOffsets
    /// dom0's Linux IRQ number for the function's INTx (0: none).
    public var irq: UInt32
    /// The driver the function is bound to at boot (nil: none).
    public var bootDriver: String?
    @exclusivity(unchecked) public var faults = DeviceFaults()
    public let label: String
    /// For an SR-IOV virtual function: its physical function.
    public internal(set) var physicalFunction: PCIAddress?
    /// Imported from a capture (an lspci dump, sysfs, captured bytes in a machine file): a
    /// snapshot of a running system, whose registers boot-time code leaves as recorded.
    public internal(set) var isSnapshot = false
    /// The Linux IRQ of the first MSI vector while the kernel has MSI enabled.
    public var msiIRQ: UInt32 = 0
    /// The bridge this function sits behind (`pci_upstream_bridge`), kept by `Machine`.
    weak var upstreamBridge: EmulatedDevice?

    // The PCI core's view (struct pci_dev), not hardware.
    public internal(set) var enableCount = 0
    public internal(set) var isBusmaster = false
    public internal(set) var kernelMSIEnabled = false
    public internal(set) var kernelMSIXEnabled = false
    /// What `pci_save_state` captured.
    var savedState: [UInt8]?
    /// Vital product data behind the VPD capability.
    var vpdContents: [UInt8]

    public init(
        address: PCIAddress, config: ConfigSpace, resetImage: [UInt8]? = nil, identity: DeviceIdentity? = nil,
        bars: [BARDescriptor?], irq: UInt32, bootDriver: String?, label: String = "", vpd: [UInt8] = []
    ) {
        precondition(bars.count == 7, "six BARs and the ROM")
        self.address = address
        self.config = config
        self.resetImage = resetImage ?? config.bytes
        self.bars = bars
        self.irq = irq
        self.bootDriver = bootDriver
        self.label = label
        self.vpdContents = vpd
        self.capabilities = CapabilityScanner.scan(config)
        self.identity = identity ?? DeviceIdentity(
            vendor: UInt16(config.read(PCIRegister.vendorID, width: 2)),
            device: UInt16(config.read(PCIRegister.deviceID, width: 2)),
            subsystemVendor: EmulatedDevice.subsystemIDs(config).vendor,
            subsystemDevice: EmulatedDevice.subsystemIDs(config).device,
            classCode: config.read(PCIRegister.revisionID, width: 4) >> 8,
            revision: UInt8(config.read(PCIRegister.revisionID, width: 1)),
            headerType: UInt8(config.read(PCIRegister.headerType, width: 1)),
            interruptPin: UInt8(config.read(PCIRegister.interruptPin, width: 1)))
    }

    /// Subsystem IDs as the kernel reads them: header registers for type 0, the Subsystem ID
    /// capability (0x0d) for a bridge, 0x40/0x42 for CardBus.
    static func subsystemIDs(_ config: ConfigSpace) -> (vendor: UInt16, device: UInt16) {
        switch config.read(PCIRegister.headerType, width: 1) & 0x7f {
        case 0:
            return (UInt16(config.read(PCIRegister.subsystemVendorID, width: 2)), UInt16(config.read(PCIRegister.subsystemID, width: 2)))
        case 1:
            guard let (_, position) = CapabilityScanner.standardCapabilities(config).first(where: { $0.0 == 0x0d }) else {
                return (0, 0)
            }
            return (UInt16(config.read(position + 4, width: 2)), UInt16(config.read(position + 6, width: 2)))
        case 2:
            return (UInt16(config.read(0x40, width: 2)), UInt16(config.read(0x42, width: 2)))
        default:
            return (0, 0)
        }
    }

    public var configSize: Int { config.size }
    public var isPCIExpress: Bool { capabilities.pciExpress != 0 }
    public var isBridge: Bool { identity.layout == .bridge }

    /// PCI Express FLR: Device Capabilities' Function Level Reset Capability bit.
    public var hasPCIeFLR: Bool {
        guard capabilities.pciExpress != 0 else { return false }
        return config.read(capabilities.pciExpress + PCIeRegister.deviceCapabilities, width: 4) & PCIeRegister.devCapFLR != 0
    }

    /// The Advanced Features capability's FLR: both Transactions Pending and FLR capable
    /// (AF capability byte, bits 0 and 1), as the PCI core requires before it uses it.
    public var hasAdvancedFeaturesFLR: Bool {
        guard capabilities.advancedFeatures != 0 else { return false }
        let cap = config.read(capabilities.advancedFeatures + AFRegister.capabilities, width: 1)
        return cap & AFRegister.capTransactionsPending != 0 && cap & AFRegister.capFLR != 0
    }

    /// Function-level reset is available (PCIe FLR or the AF capability's FLR).
    public var hasFunctionReset: Bool { hasPCIeFLR || hasAdvancedFeaturesFLR }

    // MARK: - Config accesses as the hardware answers them

    /// A raw config read. Offsets past 4095 fail with -EINVAL (the x86 accessor); past the
    /// function's own space read all-ones. An injected read fault answers all-ones and
    /// PCIBIOS_DEVICE_NOT_FOUND.
    public func hardwareRead(_ offset: Int, width: Int) -> (value: UInt32, error: Int32) {
        if offset < 0 || offset > 4096 - width { return (allOnes(width), -Errno.invalidArgument.rawValue) }
        if faults.configReadFails != .off, faults.fire(\.configReadFails) { return (allOnes(width), PCIBIOS.deviceNotFound) }
        return (config.read(offset, width: width), PCIBIOS.successful)
    }

    /// A run of raw reads from `offset` in one copy, when no read fault is armed (a fault
    /// fires per access, so the caller then reads access by access). Returns false if it did not.
    public func hardwareReadBytes(_ offset: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard faults.configReadFails == .off, offset >= 0, offset + buffer.count <= 4096 else { return false }
        config.copyBytes(from: offset, into: buffer)
        return true
    }

    /// A raw config write, with the hardware's side effects.
    @discardableResult
    public func hardwareWrite(_ offset: Int, width: Int, value: UInt32) -> Int32 {
        if offset < 0 || offset > 4096 - width { return -Errno.invalidArgument.rawValue }
        guard offset < config.size else { return PCIBIOS.successful }
        let before = self.snapshotOfSideEffectRegisters()
        config.write(offset, width: width, value: value)
        applySideEffects(offset: offset, width: width, value: value, before: before)
        return PCIBIOS.successful
    }

    private func allOnes(_ width: Int) -> UInt32 { width == 4 ? 0xffff_ffff : (1 << (8 * UInt32(width))) - 1 }

    private struct SideEffectRegisters {
        var powerState: UInt16
        var msiFlags: UInt16
    }

    private func snapshotOfSideEffectRegisters() -> SideEffectRegisters {
        SideEffectRegisters(
            powerState: capabilities.powerManagement == 0
                ? 0 : UInt16(config.read(capabilities.powerManagement + PMRegister.controlStatus, width: 2)),
            msiFlags: capabilities.msi == 0 ? 0 : UInt16(config.read(capabilities.msi + MSIRegister.flags, width: 2)))
    }

    private func touches(_ offset: Int, _ width: Int, register: Int, registerWidth: Int) -> Bool {
        offset < register + registerWidth && register < offset + width
    }

    private func applySideEffects(offset: Int, width: Int, value: UInt32, before: SideEffectRegisters) {
        // BIST: a started self-test completes at once and reports success.
        if touches(offset, width, register: PCIRegister.bist, registerWidth: 1) {
            let bist = config.read(PCIRegister.bist, width: 1)
            if bist & 0x40 != 0 { config.store(PCIRegister.bist, width: 1, value: bist & 0x80) }
        }
        let pm = capabilities.powerManagement
        if pm != 0, touches(offset, width, register: pm + PMRegister.controlStatus, registerWidth: 2) {
            // A write of an unsupported D-state is ignored: the state field keeps its value.
            let pmc = UInt16(config.read(pm + PMRegister.capabilities, width: 2))
            let pmcsr = UInt16(config.read(pm + PMRegister.controlStatus, width: 2))
            let state = pmcsr & PMRegister.stateMask
            let unsupported = (state == 1 && pmc & PMRegister.pmcD1Support == 0)
                || (state == 2 && pmc & PMRegister.pmcD2Support == 0)
            if unsupported {
                let kept = (pmcsr & ~PMRegister.stateMask) | (before.powerState & PMRegister.stateMask)
                config.store(pm + PMRegister.controlStatus, width: 2, value: UInt32(kept))
            } else if before.powerState & PMRegister.stateMask == 3, state == 0, pmcsr & PMRegister.noSoftReset == 0 {
                // D3hot -> D0 without No_Soft_Reset: the function comes back in its reset state.
                hardwareReset(.softReset)
            }
        }
        let msi = capabilities.msi
        if msi != 0, touches(offset, width, register: msi + MSIRegister.flags, registerWidth: 2) {
            // Multiple Message Enable cannot exceed Multiple Message Capable.
            let flags = UInt16(config.read(msi + MSIRegister.flags, width: 2))
            let capable = (flags & MSIRegister.multipleMessageCapable) >> 1
            let enabled = (flags & MSIRegister.multipleMessageEnable) >> 4
            if enabled > capable {
                let clamped = (flags & ~MSIRegister.multipleMessageEnable) | (capable << 4)
                config.store(msi + MSIRegister.flags, width: 2, value: UInt32(clamped))
            }
        }
        let vpd = capabilities.vpd
        if vpd != 0, touches(offset, width, register: vpd + VPDRegister.address, registerWidth: 2) {
            runVPDOperation()
        }
        let pcie = capabilities.pciExpress
        if pcie != 0, touches(offset, width, register: pcie + PCIeRegister.deviceControl, registerWidth: 2) {
            let control = UInt16(config.read(pcie + PCIeRegister.deviceControl, width: 2))
            if control & PCIeRegister.devCtlInitiateFLR != 0 {
                config.store(pcie + PCIeRegister.deviceControl, width: 2, value: UInt32(control & ~PCIeRegister.devCtlInitiateFLR))
                if hasPCIeFLR { hardwareReset(.functionLevel) }
            }
        }
        // AF capability: writing Initiate FLR (control byte, bit 0) starts an FLR; the bit
        // always reads 0.
        let af = capabilities.advancedFeatures
        if af != 0, touches(offset, width, register: af + AFRegister.control, registerWidth: 1) {
            let written = UInt8(truncatingIfNeeded: value >> (8 * UInt32(af + AFRegister.control - offset)))
            if written & AFRegister.controlInitiateFLR != 0, hasAdvancedFeaturesFLR { hardwareReset(.functionLevel) }
        }
    }

    /// VPD: writing the address with F = 0 reads four bytes into the data register and sets F;
    /// writing it with F = 1 stores the data register and clears F.
    private func runVPDOperation() {
        let vpd = capabilities.vpd
        let address = UInt16(config.read(vpd + VPDRegister.address, width: 2))
        let location = Int(address & 0x7ffc)
        if address & VPDRegister.flag == 0 {
            var word: UInt32 = 0
            for index in stride(from: 3, through: 0, by: -1) {
                let byte = location + index < vpdContents.count ? vpdContents[location + index] : 0xff
                word = word << 8 | UInt32(byte)
            }
            config.store(vpd + VPDRegister.data, width: 4, value: word)
            config.store(vpd + VPDRegister.address, width: 2, value: UInt32(address | VPDRegister.flag))
        } else {
            let word = config.read(vpd + VPDRegister.data, width: 4)
            if location + 4 > vpdContents.count {
                vpdContents += Array(repeating: 0xff, count: location + 4 - vpdContents.count)
            }
            for index in 0..<4 { vpdContents[location + index] = UInt8(truncatingIfNeeded: word >> (8 * UInt32(index))) }
            config.store(vpd + VPDRegister.address, width: 2, value: UInt32(address & ~VPDRegister.flag))
        }
    }

    /// A reset as the hardware performs it (the layer below the kernel's sequences): every
    /// changeable bit back to its power-on value, except what this kind of reset preserves.
    public func hardwareReset(_ kind: HardwareReset) {
        let kept = preservedRegisters(kind).map { ($0, config.read($0.offset, width: $0.width)) }
        config.resetChangeableBits(to: resetImage)
        for (register, value) in kept {
            let now = config.read(register.offset, width: register.width)
            config.store(register.offset, width: register.width, value: (now & ~register.mask) | (value & register.mask))
        }
    }

    /// The register bits a reset of `kind` leaves alone.
    ///
    /// * Sticky bits (RW1CS, RWS) survive every reset short of power loss (PCIe Base spec,
    ///   "sticky" attribute; §6.6.1 conventional/hot reset, §6.6.2 FLR): AER Uncorrectable
    ///   Error Status, Mask and Severity, Correctable Error Status and Mask, Capabilities and
    ///   Control, Root Error Status.
    /// * PME context (PMCSR PME_Status, PME_En): sticky only where the function can signal PME
    ///   from D3cold, i.e. keeps them on aux power (PCI PM 1.2, PMCSR); a D3hot->D0 soft reset
    ///   keeps them always (the PME context is preserved across the internal reset).
    /// * FLR leaves link and payload settings (PCIe Base spec §6.6.2): Device Control's
    ///   Max_Payload_Size; Link Control's ASPM Control, Read Completion Boundary, Common Clock
    ///   Configuration and Extended Synch.
    func preservedRegisters(_ kind: HardwareReset) -> [PreservedRegister] {
        var kept: [PreservedRegister] = []
        let aer = capabilities.aer
        if aer != 0 {
            for register in [AERRegister.uncorrectableStatus, AERRegister.uncorrectableMask, AERRegister.uncorrectableSeverity,
                             AERRegister.correctableStatus, AERRegister.correctableMask, AERRegister.capabilitiesControl] {
                kept.append(PreservedRegister(offset: aer + register, width: 4, mask: 0xffff_ffff))
            }
            if hasRootPortRegisters { kept.append(PreservedRegister(offset: aer + AERRegister.rootStatus, width: 4, mask: 0xffff_ffff)) }
        }
        let pm = capabilities.powerManagement
        if pm != 0 {
            let pmc = UInt16(config.read(pm + PMRegister.capabilities, width: 2))
            if kind == .softReset || pmc & PMRegister.pmcPMEFromD3cold != 0 {
                kept.append(PreservedRegister(offset: pm + PMRegister.controlStatus, width: 2,
                                              mask: UInt32(PMRegister.pmeStatus | PMRegister.pmeEnable)))
            }
        }
        let pcie = capabilities.pciExpress
        if kind == .functionLevel, pcie != 0 {
            kept.append(PreservedRegister(offset: pcie + PCIeRegister.deviceControl, width: 2, mask: UInt32(PCIeRegister.devCtlMaxPayload)))
            kept.append(PreservedRegister(offset: pcie + PCIeRegister.linkControl, width: 2, mask: UInt32(PCIeRegister.lnkCtlKeptByFLR)))
        }
        return kept
    }

    /// The PCI Express port type (Express capability flags, bits 7:4); nil without one.
    public var pcieType: UInt16? {
        capabilities.pciExpress == 0 ? nil : UInt16(config.read(capabilities.pciExpress + PCIeRegister.flags, width: 2) >> 4) & 0xf
    }

    /// Root ports and root complex event collectors carry Root Control/Status (`pcie_cap_has_rtctl`).
    public var hasRootPortRegisters: Bool { pcieType == PCIeRegister.typeRootPort || pcieType == PCIeRegister.typeEventCollector }

    // MARK: - Register helpers

    public var command: UInt16 { UInt16(config.read(PCIRegister.command, width: 2)) }

    func setCommandBits(_ bits: UInt16, on: Bool) {
        let current = command
        let updated = on ? current | bits : current & ~bits
        if updated != current { config.write(PCIRegister.command, width: 2, value: UInt32(updated)) }
    }

    public var msiFlags: UInt16? {
        capabilities.msi == 0 ? nil : UInt16(config.read(capabilities.msi + MSIRegister.flags, width: 2))
    }

    public var msixFlags: UInt16? {
        capabilities.msix == 0 ? nil : UInt16(config.read(capabilities.msix + MSIXRegister.flags, width: 2))
    }

    public var powerState: UInt8 {
        let pm = capabilities.powerManagement
        guard pm != 0 else { return 0 }
        return UInt8(config.read(pm + PMRegister.controlStatus, width: 2) & 0x3)
    }

    /// Number of MSI-X table entries (0 without MSI-X).
    public var msixTableSize: Int {
        guard let flags = msixFlags else { return 0 }
        return Int(flags & MSIXRegister.tableSizeMask) + 1
    }
}

// MARK: - The PCI core's operations (drivers/pci/pci.c), as pciback calls them

extension EmulatedDevice {
    public var isEnabled: Bool { enableCount > 0 }

    /// `pci_enable_device`: power to D0, IO/MEMORY decode from the BAR types, INTx unmasked when
    /// the function has a pin and the kernel has not enabled MSI/MSI-X.
    public func enableDevice() throws(Errno) {
        if enableCount > 0 {
            enableCount += 1
            return
        }
        // The path from the root must decode and forward the function's transactions.
        upstreamBridge?.enableAsUpstreamBridge()
        if faults.fire(\.enableFails) { throw .invalidArgument }
        var decode: UInt16 = 0
        for index in 0..<6 {
            guard let bar = bars[index] else { continue }
            if bar.address == 0 { throw .invalidArgument }
            decode |= bar.kind.isIO ? PCICommand.io : PCICommand.memory
        }
        if powerState != 0 { writePowerState(0) }
        setCommandBits(decode, on: true)
        if identity.interruptPin != 0, !kernelMSIEnabled, !kernelMSIXEnabled {
            setCommandBits(PCICommand.intxDisable, on: false)
        }
        enableCount = 1
    }

    /// `pci_enable_bridge`: the chain above first; an enabled bridge only gains bus mastering,
    /// and a bridge that fails to enable still gets it (the kernel logs and continues).
    func enableAsUpstreamBridge() {
        upstreamBridge?.enableAsUpstreamBridge()
        if isEnabled {
            if !isBusmaster { setBusMaster(true) }
            return
        }
        try? enableDevice()
        setBusMaster(true)
    }

    /// `pci_disable_device`: when the count drops to 0, bus mastering goes off; IO and MEMORY stay.
    public func disableDevice() {
        guard enableCount > 0 else { return }
        enableCount -= 1
        guard enableCount == 0 else { return }
        setCommandBits(PCICommand.master, on: false)
        isBusmaster = false
    }

    /// `pci_set_master` / `pci_clear_master`.
    public func setBusMaster(_ on: Bool) {
        setCommandBits(PCICommand.master, on: on)
        isBusmaster = on
    }

    /// `pci_set_mwi`: programs the cache line size (64 bytes), failing if it does not stick, then
    /// sets Memory Write and Invalidate.
    public func setMemoryWriteInvalidate() throws(Errno) {
        let wanted: UInt32 = 64 / 4
        if config.read(PCIRegister.cacheLineSize, width: 1) != wanted {
            config.write(PCIRegister.cacheLineSize, width: 1, value: wanted)
            if config.read(PCIRegister.cacheLineSize, width: 1) != wanted { throw .invalidArgument }
        }
        setCommandBits(PCICommand.invalidate, on: true)
    }

    public func clearMemoryWriteInvalidate() {
        setCommandBits(PCICommand.invalidate, on: false)
    }

    /// `pci_intx`: INTX_DISABLE written only when it changes.
    public func setINTx(enabled: Bool) {
        setCommandBits(PCICommand.intxDisable, on: !enabled)
    }

    /// `pci_set_power_state` for D0...D3hot. D1/D2 fail where the PM capability lacks them.
    public func setPowerState(_ state: UInt8) throws(Errno) {
        let pm = capabilities.powerManagement
        guard pm != 0 else { return }
        if state == powerState { return }
        let pmc = UInt16(config.read(pm + PMRegister.capabilities, width: 2))
        if state == 1 || state == 2 {
            if faults.fire(\.lowPowerStatesRefused) { throw .ioError }
            let supported = state == 1 ? pmc & PMRegister.pmcD1Support != 0 : pmc & PMRegister.pmcD2Support != 0
            if !supported { throw .ioError }
        }
        writePowerState(state)
    }

    private func writePowerState(_ state: UInt8) {
        let pm = capabilities.powerManagement
        guard pm != 0 else { return }
        let pmcsr = UInt16(config.read(pm + PMRegister.controlStatus, width: 2))
        // Write back with PME_Status as 0 so the RW1C bit is not cleared by the state change.
        let value = (pmcsr & ~(PMRegister.stateMask | PMRegister.pmeStatus)) | UInt16(state)
        hardwareWrite(pm + PMRegister.controlStatus, width: 2, value: UInt32(value))
        // pci_power_up: D3hot -> D0 without No_Soft_Reset reset the function; the PCI core puts
        // the BARs back (pci_restore_bars), so the function keeps its assigned addresses.
        if pmcsr & PMRegister.stateMask == 3, state == 0, pmcsr & PMRegister.noSoftReset == 0 { restoreBARs() }
    }

    /// `pci_restore_bars`: every assigned BAR and the ROM back at its address (the ROM enable bit
    /// as the reset left it).
    private func restoreBARs() {
        for index in 0..<6 {
            guard let bar = bars[index], bar.address != 0 else { continue }
            let offset = PCIRegister.bar(index)
            config.store(offset, width: 4, value: UInt32(truncatingIfNeeded: bar.address) & ~0xf | bar.kind.typeBits)
            if bar.kind.is64Bit { config.store(offset + 4, width: 4, value: UInt32(truncatingIfNeeded: bar.address >> 32)) }
        }
        if let rom = bars[6], rom.address != 0 {
            let offset = identity.layout == .bridge ? PCIRegister.romAddressBridge : PCIRegister.romAddress
            let enable = config.read(offset, width: 4) & 0x1
            config.store(offset, width: 4, value: UInt32(truncatingIfNeeded: rom.address) & 0xffff_f800 | enable)
        }
    }

    /// `pci_save_state`: the registers it saves (header, PCI Express control registers, PCI-X
    /// command, AER masks and control, ...) are read back from this copy by the kernel's
    /// restore (Dom0.restoreState, FunctionReset.swift).
    public func saveState() { savedState = config.bytes }

    /// `pci_enable_msi` (one vector) as the kernel does it for a PV frontend op.
    public func enableMSI() throws(Errno) {
        guard let flags = msiFlags else { throw .invalidArgument }
        if faults.fire(\.msiEnableFails) { throw .noSpace }
        setINTx(enabled: false)
        let value = (flags & ~MSIRegister.multipleMessageEnable) | MSIRegister.enable
        hardwareWrite(capabilities.msi + MSIRegister.flags, width: 2, value: UInt32(value))
        kernelMSIEnabled = true
    }

    public func disableMSI() {
        guard let flags = msiFlags else { return }
        hardwareWrite(capabilities.msi + MSIRegister.flags, width: 2, value: UInt32(flags & ~MSIRegister.enable))
        if identity.interruptPin != 0 { setINTx(enabled: true) }
        kernelMSIEnabled = false
    }

    /// `pci_enable_msix_exact` with `count` vectors.
    public func enableMSIX(vectors count: Int) throws(Errno) {
        guard let flags = msixFlags else { throw .invalidArgument }
        if count <= 0 { throw .invalidArgument }
        if count > msixTableSize { throw .invalidArgument }
        if faults.fire(\.msixEnableFails) { throw .noSpace }
        setINTx(enabled: false)
        let value = (flags | MSIXRegister.enable) & ~MSIXRegister.functionMask
        hardwareWrite(capabilities.msix + MSIXRegister.flags, width: 2, value: UInt32(value))
        kernelMSIXEnabled = true
    }

    public func disableMSIX() {
        guard let flags = msixFlags else { return }
        hardwareWrite(capabilities.msix + MSIXRegister.flags, width: 2, value: UInt32(flags & ~MSIXRegister.enable))
        if identity.interruptPin != 0 { setINTx(enabled: true) }
        kernelMSIXEnabled = false
    }

    /// What a real driver's remove does before letting go: MSI and MSI-X off, bus mastering off,
    /// the device disabled.
    public func quiesceForDriverRemoval() {
        if (msixFlags ?? 0) & MSIXRegister.enable != 0 { disableMSIX() }
        if (msiFlags ?? 0) & MSIRegister.enable != 0 { disableMSI() }
        kernelMSIEnabled = false
        kernelMSIXEnabled = false
        setBusMaster(false)
        enableCount = 0
    }

    /// A driver's probe: enable and take bus mastering (the state a bound host driver leaves).
    public func driverProbeEnable() {
        try? enableDevice()
        setBusMaster(true)
    }
}

extension Errno {
    public static let noSpace = Errno(28)  // ENOSPC, what the MSI code returns with no vectors left
}

/// Walks the capability lists of a config space.
public enum CapabilityScanner {
    public static func scan(_ config: ConfigSpace) -> CapabilityOffsets {
        var offsets = CapabilityOffsets()
        for (id, position) in standardCapabilities(config) {
            switch id {
            case CapabilityID.powerManagement where offsets.powerManagement == 0: offsets.powerManagement = position
            case CapabilityID.vpd where offsets.vpd == 0: offsets.vpd = position
            case CapabilityID.msi where offsets.msi == 0: offsets.msi = position
            case CapabilityID.msix where offsets.msix == 0: offsets.msix = position
            case CapabilityID.pciExpress where offsets.pciExpress == 0: offsets.pciExpress = position
            case CapabilityID.advancedFeatures where offsets.advancedFeatures == 0: offsets.advancedFeatures = position
            default: break
            }
        }
        for (id, position) in extendedCapabilities(config) {
            switch id {
            case ExtendedCapabilityID.aer where offsets.aer == 0: offsets.aer = position
            case ExtendedCapabilityID.ari where offsets.ari == 0: offsets.ari = position
            case ExtendedCapabilityID.sriov where offsets.sriov == 0: offsets.sriov = position
            default: break
            }
        }
        return offsets
    }

    /// (id, offset) of each standard capability, following the list from 0x34 (0x14 for
    /// CardBus) as the kernel does: at most 48 hops, pointers below 0x40 end the walk.
    public static func standardCapabilities(_ config: ConfigSpace) -> [(UInt8, Int)] {
        let status = UInt16(config.read(PCIRegister.status, width: 2))
        guard status & PCIStatus.capabilityList != 0 else { return [] }
        let headerType = config.read(PCIRegister.headerType, width: 1) & 0x7f
        let pointerRegister = headerType == 2 ? PCIRegister.cardbusCapabilityList : PCIRegister.capabilityList
        var position = Int(config.read(pointerRegister, width: 1))
        var result: [(UInt8, Int)] = []
        var hops = 48
        while hops > 0, position >= 0x40 {
            position &= ~3
            let id = UInt8(config.read(position, width: 1))
            if id == 0xff { break }
            result.append((id, position))
            position = Int(config.read(position + 1, width: 1))
            hops -= 1
        }
        return result
    }

    /// (id, offset) of each extended capability from 0x100, as the kernel walks them.
    public static func extendedCapabilities(_ config: ConfigSpace) -> [(UInt16, Int)] {
        guard config.size > 256 else { return [] }
        var position = 0x100
        var result: [(UInt16, Int)] = []
        var hops = (4096 - 256) / 8
        while hops > 0 {
            let header = config.read(position, width: 4)
            if header == 0 || header == 0xffff_ffff { break }
            result.append((UInt16(header & 0xffff), position))
            position = Int(header >> 20) & 0xffc
            if position < 0x100 { break }
            hops -= 1
        }
        return result
    }
}

extension EmulatedDevice {
    /// An independent function in the same state (the upstream bridge link is left to the
    /// machine that holds the copy, see `Machine.copied()`).
    func copied() -> EmulatedDevice {
        let copy = EmulatedDevice(address: address, config: config, resetImage: resetImage, identity: identity, bars: bars,
                                  irq: irq, bootDriver: bootDriver, label: label, vpd: vpdContents)
        copy.capabilities = capabilities
        copy.faults = faults
        copy.physicalFunction = physicalFunction
        copy.isSnapshot = isSnapshot
        copy.msiIRQ = msiIRQ
        copy.enableCount = enableCount
        copy.isBusmaster = isBusmaster
        copy.kernelMSIEnabled = kernelMSIEnabled
        copy.kernelMSIXEnabled = kernelMSIXEnabled
        copy.savedState = savedState
        return copy
    }
}
