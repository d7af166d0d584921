/// XEN_PCI_ERR values (pciif.h), what a frontend sees in `op->err`.
public enum XenPCIError {
    public static let success: Int32 = 0
    public static let deviceNotFound: Int32 = -1
    public static let invalidOffset: Int32 = -2
    public static let accessDenied: Int32 = -3
    public static let notImplemented: Int32 = -4
    public static let operationFailed: Int32 = -5

    /// `xen_pcibios_err_to_errno`: PCIBIOS codes become XEN_PCI_ERR values; everything else
    /// (negative errnos from handlers, other codes) passes through unchanged.
    @inline(__always)
    public static func translate(_ code: Int32) -> Int32 {
        switch code {
        case PCIBIOS.successful: return success
        case PCIBIOS.deviceNotFound: return deviceNotFound
        case PCIBIOS.badRegisterNumber: return invalidOffset
        case PCIBIOS.setFailed: return accessDenied
        case PCIBIOS.funcNotSupported: return notImplemented
        default: return code
        }
    }
}

/// What the filter decided about one guest access: `err` as the frontend sees it, and for a
/// write that was dropped or refused, the rule that decided it (for the trace).
public struct FilterVerdict: Sendable, Equatable {
    public var value: UInt32
    public var error: Int32
    public var rule: String?

    public init(value: UInt32 = 0, error: Int32 = 0, rule: String? = nil) {
        self.value = value
        self.error = error
        self.rule = rule
    }
}

/// The settings that are not per device: the module's global `permissive` parameter and the
/// kernel being imitated.
public struct FilterPolicy: Sendable, Equatable {
    public var profile: KernelProfile
    public var globalPermissive: Bool
    public init(profile: KernelProfile = .current, globalPermissive: Bool = false) {
        self.profile = profile
        self.globalPermissive = globalPermissive
    }
}

/// pciback's config-space filter (`conf_space.c`, `conf_space_header.c`,
/// `conf_space_capability.c`, quirks), applied to an emulated device. Every guest config access
/// goes through `read` and `write`.
public enum ConfigFilter {
    // MARK: - Field table (spec §4.6)

    /// Builds the device's field list and runs the fields' init hooks
    /// (`xen_pcibk_config_init_dev`): command shadow from hardware, BAR state from the kernel's
    /// resources, PME_ENABLE cleared.
    public static func initialize(_ device: EmulatedDevice, _ data: inout PcibackDeviceData, profile: KernelProfile) throws(Errno) {
        var fields: [ConfigField] = [
            ConfigField(offset: PCIRegister.vendorID, size: 2, kind: .vendor),
            ConfigField(offset: PCIRegister.deviceID, size: 2, kind: .device),
            ConfigField(offset: PCIRegister.command, size: 2, kind: .command),
            ConfigField(offset: PCIRegister.interruptLine, size: 1, kind: .interruptLine),
            ConfigField(offset: PCIRegister.interruptPin, size: 1, kind: .hardwareReadOnly),
            ConfigField(offset: PCIRegister.cacheLineSize, size: 1, kind: .hardwarePassThrough),
            ConfigField(offset: PCIRegister.latencyTimer, size: 1, kind: .hardwareReadOnly),
            ConfigField(offset: PCIRegister.bist, size: 1, kind: .bist),
        ]
        data.commandShadow = device.command

        let romOffset: Int
        let barCount: Int
        switch device.identity.layout {
        case .normal:
            romOffset = PCIRegister.romAddress
            barCount = 6
        case .bridge:
            romOffset = PCIRegister.romAddressBridge
            barCount = 2
        default:
            throw .invalidArgument
        }
        data.bars = Array(repeating: nil, count: 7)
        for index in 0..<barCount {
            fields.append(ConfigField(offset: PCIRegister.bar(index), size: 4, kind: .bar(index)))
            data.bars[index] = virtualBAR(device, index: index)
        }
        fields.append(ConfigField(offset: romOffset, size: 4, kind: .rom))
        data.bars[6] = virtualBAR(device, index: 6)

        // Capabilities in registration order; the MSI and MSI-X fields arrived in 5.6.
        let caps = device.capabilities
        if caps.vpd != 0 {
            fields.append(ConfigField(offset: caps.vpd, size: 2, kind: .hardwareReadOnly))
            fields.append(ConfigField(offset: caps.vpd + VPDRegister.address, size: 2, kind: .vpdAddress))
            fields.append(ConfigField(offset: caps.vpd + VPDRegister.data, size: 4, kind: .hardwareReadOnly))
        }
        if caps.powerManagement != 0 {
            let pm = caps.powerManagement
            fields.append(ConfigField(offset: pm, size: 2, kind: .hardwareReadOnly))
            fields.append(ConfigField(offset: pm + PMRegister.capabilities, size: 2, kind: .powerManagementCapabilities))
            fields.append(ConfigField(offset: pm + PMRegister.controlStatus, size: 2, kind: .powerManagementControl))
            fields.append(ConfigField(offset: pm + PMRegister.bridgeExtensions, size: 1, kind: .hardwareReadOnly))
            fields.append(ConfigField(offset: pm + PMRegister.data, size: 1, kind: .hardwareReadOnly))
            // pm_ctrl_init: PME_ENABLE off (written back as read, so a set PME_Status clears).
            let (pmcsr, error) = device.hardwareRead(pm + PMRegister.controlStatus, width: 2)
            if error == 0, UInt16(pmcsr) & PMRegister.pmeEnable != 0 {
                device.hardwareWrite(pm + PMRegister.controlStatus, width: 2, value: pmcsr & ~UInt32(PMRegister.pmeEnable))
            }
        }
        if profile.hasInterruptControl {
            if caps.msi != 0 {
                fields.append(ConfigField(offset: caps.msi, size: 2, kind: .hardwareReadOnly))
                fields.append(ConfigField(offset: caps.msi + MSIRegister.flags, size: 2, kind: .msiFlags))
            }
            if caps.msix != 0 {
                fields.append(ConfigField(offset: caps.msix, size: 2, kind: .hardwareReadOnly))
                fields.append(ConfigField(offset: caps.msix + MSIXRegister.flags, size: 2, kind: .msixFlags))
            }
        }
        data.fields = fields
    }

    /// `bar_init`: the guest's view of a BAR comes from the kernel's resource, not hardware.
    static func virtualBAR(_ device: EmulatedDevice, index: Int) -> VirtualBAR {
        if index > 0, index < 6, let previous = device.bars[index - 1], previous.kind.is64Bit {
            // Upper dword of a 64-bit BAR.
            let value = previous.address == 0 ? 0 : UInt32(truncatingIfNeeded: previous.address >> 32)
            let sizing = UInt32(truncatingIfNeeded: (0 &- previous.size) >> 32)
            return VirtualBAR(value: value, sizingValue: sizing, sizing: false, ignoreMask: 0)
        }
        let ignoreMask: UInt32
        if index == 6 {
            ignoreMask = 0x7ff
        } else if let bar = device.bars[index], bar.kind.isIO {
            ignoreMask = 0x3
        } else {
            ignoreMask = 0xf
        }
        guard let bar = device.bars[index], bar.address != 0 else {
            return VirtualBAR(value: 0, sizingValue: 0, sizing: false, ignoreMask: ignoreMask)
        }
        let flags = UInt32(truncatingIfNeeded: bar.kernelFlags) & 0xf
        return VirtualBAR(
            value: UInt32(truncatingIfNeeded: bar.address) | flags,
            sizingValue: UInt32(truncatingIfNeeded: 0 &- bar.size) | flags,
            sizing: false, ignoreMask: ignoreMask)
    }

    // MARK: - Access (spec §4.2 - §4.4)

    @inline(__always)
    static func isValid(offset: Int, size: Int) -> Bool {
        (size == 1 || size == 2 || size == 4) && offset & (size - 1) == 0
    }

    @inline(__always)
    static func sizeMask(_ size: Int) -> UInt32 {
        size == 4 ? 0xffff_ffff : (1 << (8 * UInt32(size))) - 1
    }

    /// `merge_value`: places `newValue` (a `size`-wide value) `shift` bytes above the access
    /// start (below it when negative), replacing those bits of `value`.
    @inline(__always)
    static func merge(_ value: UInt32, _ newValue: UInt32, size: Int, shift: Int) -> UInt32 {
        var mask = sizeMask(size)
        var placed = newValue
        if shift >= 0 {
            mask = mask << (8 * UInt32(shift))
            placed = placed << (8 * UInt32(shift))
        } else {
            mask = mask >> (8 * UInt32(-shift))
            placed = placed >> (8 * UInt32(-shift))
        }
        return (value & ~mask) | (placed & mask)
    }

    /// `xen_pcibk_config_read`. The value is not masked to the access size: bytes of a field that
    /// extends past the access stay in the upper bits, as the kernel leaves them.
    public static func read(_ device: EmulatedDevice, _ data: inout PcibackDeviceData, offset: Int, size: Int) -> FilterVerdict {
        guard isValid(offset: offset, size: size) else { return FilterVerdict(error: XenPCIError.invalidOffset) }
        var (value, error) = device.hardwareRead(offset, width: size)
        for field in data.fields where field.overlaps(offset, size) {
            let (fieldValue, fieldError) = readField(field, device, &data)
            error = fieldError
            if fieldError != 0 { break }
            value = merge(value, fieldValue, size: field.size, shift: field.offset - offset)
        }
        return FilterVerdict(value: value, error: XenPCIError.translate(error))
    }

    /// `xen_pcibk_config_write`. "Handled" is all-or-nothing: bytes of an access that no field
    /// covers are dropped when any byte is covered, even in permissive mode.
    public static func write(
        _ device: EmulatedDevice, _ data: inout PcibackDeviceData, offset: Int, size: Int, value: UInt32,
        policy: FilterPolicy, log: inout KernelLog
    ) -> FilterVerdict {
        guard isValid(offset: offset, size: size) else {
            return FilterVerdict(error: XenPCIError.invalidOffset, rule: "size must be 1, 2 or 4 and the offset aligned to it")
        }
        var error: Int32 = 0
        var handled = false
        var rule: String?
        for field in data.fields where field.overlaps(offset, size) {
            let (current, readError) = readField(field, device, &data)
            error = readError
            if readError != 0 { break }
            let merged = merge(current, value, size: size, shift: offset - field.offset) & sizeMask(field.size)
            let outcome = writeField(field, device, &data, value: merged, policy: policy, log: &log)
            error = outcome.error
            if let reason = outcome.rule { rule = reason }
            handled = true
        }
        if !handled && error == 0 {
            if data.permissive || policy.globalPermissive {
                error = device.hardwareWrite(offset, width: size, value: value & sizeMask(size))
            } else {
                rule = "no field covers offset 0x\(hex(offset, width: 2)): read-only unless permissive"
                if !data.warnedOnWrite {
                    data.warnedOnWrite = true
                    log.device(device.address, """
                        Driver tried to write to a read-only configuration space field at offset 0x\(String(offset, radix: 16)), \
                        size \(size). This may be harmless, but if you have problems with your device:
                        1) see permissive attribute in sysfs
                        2) report problems to the xen-devel mailing list along with details of your device obtained from lspci.
                        """)
                }
            }
        }
        return FilterVerdict(error: XenPCIError.translate(error), rule: error == 0 ? rule : (rule ?? "hardware or PCI core error"))
    }

    // MARK: - Field handlers

    private static func readField(_ field: ConfigField, _ device: EmulatedDevice, _ data: inout PcibackDeviceData) -> (UInt32, Int32) {
        switch field.kind {
        case .vendor:
            return (UInt32(device.identity.vendor), 0)
        case .device:
            return (UInt32(device.identity.device), 0)
        case .command:
            let (hardware, error) = device.hardwareRead(field.offset, width: 2)
            let guest = UInt32(PCICommand.guestBits)
            return ((hardware & guest) | (UInt32(data.commandShadow) & ~guest & 0xffff), error)
        case .interruptLine:
            return (device.irq & 0xff, 0)
        case .bar(let index):
            return (barValue(data.bars[index]), 0)
        case .rom:
            return (barValue(data.bars[6]), 0)
        case .powerManagementCapabilities:
            let (hardware, error) = device.hardwareRead(field.offset, width: 2)
            return (hardware & ~UInt32(PMRegister.pmcPMESupportMask), error)
        case .hardwareReadOnly, .hardwarePassThrough, .bist, .powerManagementControl, .vpdAddress, .msiFlags,
             .msixFlags, .quirk:
            return device.hardwareRead(field.offset, width: field.size)
        }
    }

    @inline(__always)
    private static func barValue(_ bar: VirtualBAR?) -> UInt32 {
        guard let bar else { return 0 }
        return bar.sizing ? bar.sizingValue : bar.value
    }

    private static func writeField(
        _ field: ConfigField, _ device: EmulatedDevice, _ data: inout PcibackDeviceData, value: UInt32,
        policy: FilterPolicy, log: inout KernelLog
    ) -> (error: Int32, rule: String?) {
        switch field.kind {
        case .vendor, .device, .interruptLine, .hardwareReadOnly, .powerManagementCapabilities:
            return (0, "read-only field at 0x\(hex(field.offset, width: 2)): write ignored")
        case .hardwarePassThrough, .quirk:
            return (device.hardwareWrite(field.offset, width: field.size, value: value), nil)
        case .command:
            return CommandRegister.write(device, &data, value: UInt16(truncatingIfNeeded: value), policy: policy, log: &log)
        case .bist:
            // Only starting the self-test, or leaving every other bit as it is, reaches hardware.
            let (current, error) = device.hardwareRead(field.offset, width: 1)
            if error != 0 { return (error, nil) }
            if value == 0x40 || (value & ~0x40) == (current & ~0x40) {
                return (device.hardwareWrite(field.offset, width: 1, value: value), nil)
            }
            return (0, "BIST: only the start bit may change")
        case .bar(let index):
            return (barWrite(device, &data, index: index, offset: field.offset, value: value), barRule(data.bars[index], value))
        case .rom:
            return (barWrite(device, &data, index: 6, offset: field.offset, value: value), barRule(data.bars[6], value))
        case .powerManagementControl:
            return powerManagementControlWrite(device, offset: field.offset, value: UInt16(truncatingIfNeeded: value))
        case .vpdAddress:
            if UInt16(truncatingIfNeeded: value) & VPDRegister.flag != 0 {
                return (PCIBIOS.setFailed, "VPD: writes (F flag set) are refused")
            }
            return (device.hardwareWrite(field.offset, width: 2, value: value), nil)
        case .msiFlags:
            return InterruptControl.flagsWrite(
                device, &data, offset: field.offset, value: UInt16(truncatingIfNeeded: value), capability: .msi, policy: policy)
        case .msixFlags:
            return InterruptControl.flagsWrite(
                device, &data, offset: field.offset, value: UInt16(truncatingIfNeeded: value), capability: .msix, policy: policy)
        }
    }

    /// `bar_write` / `rom_write`: all-ones (ignoring the type bits) enters sizing; writing the
    /// original value restores hardware after a reset; anything else is ignored with success.
    private static func barWrite(_ device: EmulatedDevice, _ data: inout PcibackDeviceData, index: Int, offset: Int, value: UInt32) -> Int32 {
        guard var bar = data.bars[index] else { return 0 }
        defer { data.bars[index] = bar }
        if value | bar.ignoreMask == 0xffff_ffff {
            bar.sizing = true
            return 0
        }
        bar.sizing = false
        let (hardware, error) = device.hardwareRead(offset, width: 4)
        if error == 0, hardware != bar.value, value == bar.value {
            return device.hardwareWrite(offset, width: 4, value: bar.value)
        }
        return 0
    }

    private static func barRule(_ bar: VirtualBAR?, _ value: UInt32) -> String? {
        guard let bar else { return nil }
        if value | bar.ignoreMask == 0xffff_ffff || value == bar.value { return nil }
        return "BAR: the guest cannot move a BAR or enable the ROM; write ignored"
    }

    /// `pm_ctrl_write`: only PME_Status and Data_Select reach hardware directly; the power state
    /// goes through the PCI core.
    private static func powerManagementControlWrite(_ device: EmulatedDevice, offset: Int, value: UInt16) -> (Int32, String?) {
        let okBits = PMRegister.pmeStatus | PMRegister.dataSelect
        let (oldValue, error) = device.hardwareRead(offset, width: 2)
        if error != 0 { return (error, nil) }
        let old = UInt16(truncatingIfNeeded: oldValue)
        let requestedState = UInt8(value & PMRegister.stateMask)
        if old & okBits != value & okBits {
            let merged = (old & ~okBits) | (value & okBits)
            let writeError = device.hardwareWrite(offset, width: 2, value: UInt32(merged))
            if writeError != 0 { return (writeError, nil) }
        }
        do {
            try device.setPowerState(requestedState)
        } catch {
            return (PCIBIOS.setFailed, "PM: the PCI core refused D\(requestedState)")
        }
        return (0, nil)
    }
}
