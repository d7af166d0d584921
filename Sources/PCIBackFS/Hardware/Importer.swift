#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns captured functions (`CapturedFunction`, from an `lspci -F` dump or from sysfs) into
/// emulated devices that behave like the hardware they came from.
///
/// A capture holds register *values* only. Which bits software may change is not in it, so the
/// importer re-derives the masks from the PCI and PCI Express specifications, with the same
/// per-register semantics `DeviceBuilder` gives the built-in devices:
///
/// * **Header** (types 0, 1 and 2): Command, Status (RW1C error bits), cache line size,
///   interrupt line; the latency timer on conventional functions; a bridge's bus numbers,
///   windows, secondary status and bridge control; CardBus bus numbers and bridge control.
///   "Conventional" or "Express" is decided by the presence of a PCI Express capability.
///   Differences from `DeviceBuilder`, because a capture can show what was implemented: a
///   bridge's I/O window whose base and limit both read 0 is taken as not implemented (read-only),
///   as is a prefetchable window whose base/limit dword reads 0; the I/O and prefetchable upper
///   registers are writable only when the window's low nibble announces 32-bit I/O or 64-bit
///   memory; the secondary latency timer is writable only on conventional bridges.
/// * **BARs and the ROM**: masks from the captured sizes (`CapturedFunction.bars`), so sizing
///   (write all-ones, read back) works: memory BARs `~(size - 1)` above the four type bits, the
///   upper half of a 64-bit BAR the size's upper bits, I/O BARs 16 decoded address bits like
///   `DeviceBuilder` (32 when the captured address already uses the upper 16 bits), the ROM
///   `~(size - 1)` from bit 11 plus its enable bit. The kind comes from the register's own type
///   bits; a captured BAR whose size is unknown, not a power of two, too large for its register,
///   at an index the header type does not have, or whose I/O-ness or 64-bitness disagrees with the
///   register **stays read-only** and gets no `BARDescriptor` (the kernel view then shows no
///   resource for it, and sizing it reads back the captured address). A BAR with an address but
///   no size in the capture has one inferred before it gets here (`BARSizeInference`), so its
///   resource line and its mask agree.
/// * **Capabilities**, found by walking both lists (`CapabilityScanner`): Power Management
///   (PMCSR power state, PME_En and Data_Select RW, PME_Status RW1C); MSI (Enable and Multiple
///   Message Enable, address, upper address if 64-bit, data, and the mask bits of the capable
///   vectors if per-vector masking); MSI-X (only Enable and Function Mask); PCI Express (Device
///   Control including Initiate FLR for endpoints whose Device Capabilities announce FLR, Device
///   Status RW1C, Link Control, slot control and status on ports with a slot, root control and
///   the root status PME bit on root ports and event collectors, and for version 2 Device
///   Control 2 (only the fields Device Capabilities 2 announces) and the target link speed);
///   VPD (address and data); AER (status registers RW1C, masks and severity RW, the ECRC enables
///   when ECRC is capable, root error command and status on root ports); SR-IOV (as
///   `DeviceBuilder.addSRIOV`: control, NumVFs, system page size, and VF BARs when sysfs gave
///   their sizes). A capability that does not fit in its space is skipped.
/// * Everything else (capability headers, vendor-specific capabilities, DSN, ARI, ACS, LTR, L1 PM
///   substates, the Advanced Features capability, ...) stays **read-only**.
///
/// The captured bytes themselves are kept unchanged: reading an imported function gives exactly
/// the capture. The reset image (what FLR, a D3hot→D0 transition without No_Soft_Reset, or a
/// kernel reset restores) is the capture with every changeable bit at its reset value: 0, except
/// Device Control 0x2810, AER Uncorrectable Severity 0x00462030, AER Correctable Mask 0x2000,
/// the target link speed (the link's maximum speed) and the SR-IOV system page size 1, as
/// `DeviceBuilder` does. BARs therefore reset to their type bits.
///
/// An imported function is a snapshot of a running system (`isSnapshot`): boot-time code leaves
/// its registers as recorded. The boot-time SR-IOV pass does not run for it (its VFs come from
/// `SnapshotSRIOV`, the kernel's cache from `Dom0.adoptSnapshotSRIOV`), and binding its recorded
/// host driver at boot does not run the driver's probe (no enable, bus master or MSI/MSI-X writes).
///
/// A capture shows the function as its host driver left it (decoding, bus mastering, MSI or
/// MSI-X on). When a host driver is known, the PCI core's view is set to match, so a later driver
/// unbind (`EmulatedDevice.quiesceForDriverRemoval`) quiesces the function like a real remove:
/// enable count 1 if I/O or memory decoding is on, bus master if Command.MASTER is set, MSI and
/// MSI-X "enabled by the kernel" from their Enable bits. A captured `pciback` binding is not
/// a host driver: it means the function was seized on the system it came from, so it replays
/// seized. Its boot driver is `pciback`, which `Dom0.init` turns into a boot-time seize (its
/// address appended to the seize list after `hide`'s entries, bound to pciback with the
/// messages of a probe); it adopts no host driver's kernel state. When xen-pciback does not
/// load (a `hide` its init rejects) such a function stays unbound.
public enum DeviceImporter {
    /// An emulated device from a captured function. `defaultIRQ` is used when the capture has
    /// no IRQ; `driver` when it names no driver. The label is the capture's name.
    public static func device(from captured: CapturedFunction, defaultIRQ: UInt32 = 0, driver: String? = nil) -> EmulatedDevice {
        var layout = ImportedLayout(bytes: captured.config)
        layout.openHeader()
        let bars = layout.openBARs(captured.bars)
        layout.openCapabilities(iovBARs: captured.iovBARs)
        let bootDriver = (captured.driver ?? driver).flatMap { $0.isEmpty ? nil : $0 }
        let device = EmulatedDevice(
            address: captured.address, config: layout.config, resetImage: layout.resetImage(), bars: bars,
            irq: captured.irq ?? defaultIRQ, bootDriver: bootDriver, label: captured.name ?? "")
        if let bootDriver, bootDriver != PCIDriver.pcibackName { device.adoptCapturedKernelState() }
        device.isSnapshot = true
        return device
    }

    /// Every function of an `lspci -F` style dump (`lspci -xxx` or `-xxxx`, with or without
    /// `-vvv` text), in file order. A text without any function gives an empty array.
    public static func importDump(text: String) throws(CaptureError) -> [EmulatedDevice] {
        try LspciDump.parse(text).map { device(from: $0) }
    }

    /// Reads and imports an `lspci -F` dump file. Read failures are `CaptureError.io`, a file
    /// without any function is `CaptureError.malformedFile`; parse errors are the parser's
    /// (they carry the dump's line number, not the path).
    public static func importDump(path: String) throws(CaptureError) -> [EmulatedDevice] {
        var warnings: [String] = []
        return try importDump(path: path, warnings: &warnings)
    }

    /// `importDump(path:)`, appending a warning for each PCI Express function the dump gives
    /// with only 256 bytes (it is imported as a 256-byte function, without its extended
    /// capabilities).
    public static func importDump(path: String, warnings: inout [String]) throws(CaptureError) -> [EmulatedDevice] {
        let captured = try LspciDump.parse(path: path)
        warnings += captured.compactMap(missingExtendedSpaceWarning)
        let devices = captured.map { device(from: $0) }
        if devices.isEmpty {
            throw .malformedFile(path: path, reason: "no PCI function found; expected the output of `lspci -xxx` or `lspci -xxxx` "
                                 + "(optionally with -vvv), a header line `BB:SS.F ...` followed by hex lines")
        }
        return devices
    }

    /// The warning for a PCI Express function captured with only 256 bytes (`lspci -xxx`, or a
    /// `-xxxx` dump cut short), nil for any other function.
    public static func missingExtendedSpaceWarning(_ function: CapturedFunction) -> String? {
        guard function.config.count == 256,
              CapabilityScanner.standardCapabilities(ConfigSpace(bytes: function.config))
                .contains(where: { $0.0 == CapabilityID.pciExpress })
        else { return nil }
        return "warning: \(function.address) is a PCI Express function but only its first 256 config bytes are given: "
            + "imported as a 256-byte function, its extended capabilities (AER, SR-IOV, ARI, ...) are missing; "
            + "dump it with `lspci -xxxx` as root for all 4096 bytes"
    }

    /// Imports a live sysfs device directory (`/sys/bus/pci/devices/DDDD:BB:SS.F` or a copy of
    /// one), via `SysfsCapture.read`: `config` (the full space, so read as root), `resource`,
    /// `irq` and the `driver` link.
    public static func importSysfs(deviceDirectory: String) throws(CaptureError) -> EmulatedDevice {
        device(from: try SysfsCapture.read(deviceDirectory: deviceDirectory))
    }
}

// MARK: - The PCI core's view of an imported function

extension EmulatedDevice {
    /// Sets the kernel's bookkeeping (`struct pci_dev`) from the hardware state, as a bound host
    /// driver would have left it: enabled when decoding I/O or memory, bus master when MASTER is
    /// on, MSI and MSI-X enabled by the kernel when their Enable bits are set.
    func adoptCapturedKernelState() {
        let command = self.command
        enableCount = command & (PCICommand.io | PCICommand.memory) != 0 ? 1 : 0
        isBusmaster = command & PCICommand.master != 0
        kernelMSIEnabled = (msiFlags ?? 0) & MSIRegister.enable != 0
        kernelMSIXEnabled = (msixFlags ?? 0) & MSIXRegister.enable != 0
    }
}

// MARK: - Mask derivation

/// A captured config space while its masks are opened, with the reset values of the registers
/// opened so far.
private struct ImportedLayout {
    private(set) var config: ConfigSpace
    /// Reset values of the changeable bits (0 unless a register says otherwise).
    private var resetValues: [UInt8]
    private let headerType: UInt8
    private let standardCapabilities: [(UInt8, Int)]
    private let extendedCapabilities: [(UInt16, Int)]
    private let isExpress: Bool
    /// The PCI Express device/port type (Express Capabilities bits 7:4), nil if conventional.
    private let portType: UInt32?

    init(bytes: [UInt8]) {
        let config = ConfigSpace(bytes: bytes)
        self.config = config
        resetValues = Array(repeating: 0, count: bytes.count)
        headerType = bytes[PCIRegister.headerType] & 0x7f
        standardCapabilities = CapabilityScanner.standardCapabilities(config)
        extendedCapabilities = CapabilityScanner.extendedCapabilities(config)
        let express = standardCapabilities.first { $0.0 == CapabilityID.pciExpress && $0.1 + 4 <= 0x100 }
        isExpress = express != nil
        portType = express.map { (config.read($0.1 + PCIeRegister.flags, width: 2) >> 4) & 0xf }
    }

    private func read(_ offset: Int, _ width: Int) -> UInt32 { config.read(offset, width: width) }

    /// Defines one register's semantics: `rw` bits read/write, `w1c` bits write-1-to-clear, the
    /// rest read-only; `reset` is the value its changeable bits take on a reset.
    private mutating func define(_ offset: Int, width: Int, rw: UInt32 = 0, w1c: UInt32 = 0, reset: UInt32 = 0) {
        precondition(rw & w1c == 0, "a bit is either RW or RW1C")
        guard offset >= 0, offset + width <= config.size else { return }
        config.setWritable(offset, width: width, mask: rw)
        config.setWriteOneClear(offset, width: width, mask: w1c)
        for index in 0..<width {
            resetValues[offset + index] = UInt8(truncatingIfNeeded: reset >> (8 * UInt32(index)))
        }
    }

    /// `define` for a register of a standard capability: only if it lies below 0x100.
    private mutating func defineInStandard(_ offset: Int, width: Int, rw: UInt32 = 0, w1c: UInt32 = 0, reset: UInt32 = 0) {
        guard offset + width <= 0x100 else { return }
        define(offset, width: width, rw: rw, w1c: w1c, reset: reset)
    }

    /// The capture with every changeable bit at its reset value.
    func resetImage() -> [UInt8] {
        (0..<config.size).map { position in
            let changeable = config.writable[position] | config.writeOneClear[position]
            return (config.bytes[position] & ~changeable) | (resetValues[position] & changeable)
        }
    }

    // MARK: Header

    mutating func openHeader() {
        var command = PCICommand.io | PCICommand.memory | PCICommand.master | PCICommand.parity | PCICommand.serr
            | PCICommand.intxDisable
        if !isExpress { command |= PCICommand.special | PCICommand.invalidate | PCICommand.vgaPalette }
        define(PCIRegister.command, width: 2, rw: UInt32(command))
        define(PCIRegister.status, width: 2, w1c: UInt32(PCIStatus.writeOneClearBits))
        define(PCIRegister.cacheLineSize, width: 1, rw: 0xff)
        if !isExpress { define(PCIRegister.latencyTimer, width: 1, rw: 0xff) }
        define(PCIRegister.interruptLine, width: 1, rw: 0xff)

        switch headerType {
        case PCIHeaderType.bridge.rawValue:
            define(PCIRegister.primaryBus, width: 1, rw: 0xff)
            define(PCIRegister.secondaryBus, width: 1, rw: 0xff)
            define(PCIRegister.subordinateBus, width: 1, rw: 0xff)
            if !isExpress { define(PCIRegister.secondaryLatency, width: 1, rw: 0xff) }
            let ioBase = read(PCIRegister.ioBase, 1)
            if ioBase != 0 || read(PCIRegister.ioLimit, 1) != 0 {
                define(PCIRegister.ioBase, width: 2, rw: 0xf0f0)
                if ioBase & 0x0f == 0x01 { define(PCIRegister.ioBaseUpper, width: 4, rw: 0xffff_ffff) }
            }
            define(PCIRegister.secondaryStatus, width: 2, w1c: UInt32(PCIStatus.writeOneClearBits))
            define(PCIRegister.memoryBase, width: 4, rw: 0xfff0_fff0)
            let prefetchable = read(PCIRegister.prefetchBase, 4)
            if prefetchable != 0 {
                define(PCIRegister.prefetchBase, width: 4, rw: 0xfff0_fff0)
                if prefetchable & 0x0f == 0x01 {
                    define(PCIRegister.prefetchBaseUpper, width: 4, rw: 0xffff_ffff)
                    define(PCIRegister.prefetchLimitUpper, width: 4, rw: 0xffff_ffff)
                }
            }
            define(PCIRegister.bridgeControl, width: 2, rw: 0x0fff)
        case PCIHeaderType.cardbus.rawValue:
            define(0x18, width: 4, rw: 0xffff_ffff)  // PCI bus, CardBus bus, subordinate bus, latency
            define(PCIRegister.bridgeControl, width: 2, rw: 0x07ff)
        default:
            break
        }
    }

    // MARK: BARs

    /// How many BAR registers the header type has.
    private var barRegisterCount: Int {
        switch headerType {
        case PCIHeaderType.normal.rawValue: 6
        case PCIHeaderType.bridge.rawValue: 2
        case PCIHeaderType.cardbus.rawValue: 1
        default: 0
        }
    }

    private var romRegister: Int? {
        switch headerType {
        case PCIHeaderType.normal.rawValue: PCIRegister.romAddress
        case PCIHeaderType.bridge.rawValue: PCIRegister.romAddressBridge
        default: nil
        }
    }

    /// The indices of registers that are the upper half of a 64-bit memory BAR below them, from
    /// the registers' type bits.
    private func upperHalves(registerAt offset: (Int) -> Int, count: Int) -> Set<Int> {
        var result = Set<Int>()
        var index = 0
        while index < count {
            let register = read(offset(index), 4)
            if register & 0x1 == 0, (register >> 1) & 0x3 == 0x2 {
                result.insert(index + 1)
                index += 2
            } else {
                index += 1
            }
        }
        return result
    }

    /// Opens the masks of the captured BARs and the ROM and returns their descriptors.
    mutating func openBARs(_ captured: [CapturedBAR]) -> [BARDescriptor?] {
        var descriptors = [BARDescriptor?](repeating: nil, count: 7)
        let count = barRegisterCount
        let uppers = upperHalves(registerAt: PCIRegister.bar, count: count)
        for bar in captured {
            guard bar.size & (bar.size - 1) == 0 else { continue }
            if bar.isROM {
                guard let offset = romRegister, bar.size <= 1 << 31 else { continue }
                define(offset, width: 4, rw: (UInt32(truncatingIfNeeded: ~(bar.size - 1)) & 0xffff_f800) | 0x1)
                descriptors[CapturedBAR.romIndex] = BARDescriptor(kind: .rom, size: bar.size, address: bar.base)
                continue
            }
            guard bar.index < count, !uppers.contains(bar.index),
                  let kind = openBAR(at: PCIRegister.bar(bar.index), size: bar.size, captured: bar,
                                     hasUpperRegister: bar.index + 1 < count)
            else { continue }
            descriptors[bar.index] = BARDescriptor(kind: kind, size: bar.size, address: bar.base)
        }
        return descriptors
    }

    /// Opens one BAR register (and its upper half) for `size`, with the kind its type bits give;
    /// nil (nothing opened) when the capture and the register disagree or the size cannot fit.
    private mutating func openBAR(at offset: Int, size: UInt64, captured: CapturedBAR, hasUpperRegister: Bool) -> BARDescriptor.Kind? {
        let register = read(offset, 4)
        if register & 0x1 != 0 {
            guard captured.isIO else { return nil }
            // 16 decoded address bits, unless the assigned address already needs 32.
            let decode: UInt32 = register & 0xffff_0000 != 0 ? 0xffff_fffc : 0x0000_fffc
            guard size <= UInt64(decode) + 4 else { return nil }
            define(offset, width: 4, rw: UInt32(truncatingIfNeeded: ~(size - 1)) & decode)
            return .io
        }
        let type = (register >> 1) & 0x3
        guard !captured.isIO, type != 0x3 else { return nil }
        let is64Bit = type == 0x2
        guard is64Bit == captured.is64Bit else { return nil }
        let prefetchable = register & 0x8 != 0
        if is64Bit {
            guard hasUpperRegister else { return nil }
            define(offset, width: 4, rw: UInt32(truncatingIfNeeded: ~(size - 1)) & 0xffff_fff0)
            define(offset + 4, width: 4, rw: UInt32(truncatingIfNeeded: ~(size - 1) >> 32))
            return prefetchable ? .memory64Prefetchable : .memory64
        }
        guard size <= 1 << 31 else { return nil }
        define(offset, width: 4, rw: UInt32(truncatingIfNeeded: ~(size - 1)) & 0xffff_fff0)
        return prefetchable ? .memory32Prefetchable : .memory32
    }

    // MARK: Capabilities

    mutating func openCapabilities(iovBARs: [CapturedBAR]) {
        for (id, position) in standardCapabilities {
            switch id {
            case CapabilityID.powerManagement: openPowerManagement(position)
            case CapabilityID.msi: openMSI(position)
            case CapabilityID.msix: openMSIX(position)
            case CapabilityID.pciExpress: openPCIExpress(position)
            case CapabilityID.vpd: openVPD(position)
            default: break
            }
        }
        for (id, position) in extendedCapabilities {
            switch id {
            case ExtendedCapabilityID.aer: openAER(position)
            case ExtendedCapabilityID.sriov: openSRIOV(position, vfBARs: iovBARs)
            default: break
            }
        }
    }

    /// A standard capability of `length` bytes at `position` fits below 0x100.
    private func fitsStandard(_ position: Int, _ length: Int) -> Bool { position + length <= 0x100 }

    private func fitsExtended(_ position: Int, _ length: Int) -> Bool { position + length <= config.size }

    private mutating func openPowerManagement(_ cap: Int) {
        guard fitsStandard(cap, 8) else { return }
        define(cap + PMRegister.controlStatus, width: 2,
               rw: UInt32(PMRegister.stateMask | PMRegister.pmeEnable | PMRegister.dataSelect),
               w1c: UInt32(PMRegister.pmeStatus))
    }

    private mutating func openMSI(_ cap: Int) {
        let flags = UInt16(read(cap + MSIRegister.flags, 2))
        let is64Bit = flags & MSIRegister.is64Bit != 0
        let masking = flags & MSIRegister.perVectorMasking != 0
        guard fitsStandard(cap, 10 + (is64Bit ? 4 : 0) + (masking ? 10 : 0)) else { return }
        define(cap + MSIRegister.flags, width: 2, rw: UInt32(MSIRegister.enable | MSIRegister.multipleMessageEnable))
        define(cap + 4, width: 4, rw: 0xffff_fffc)
        var data = cap + 8
        if is64Bit {
            define(data, width: 4, rw: 0xffff_ffff)
            data += 4
        }
        define(data, width: 2, rw: 0xffff)
        if masking {
            let vectors = 1 << min(Int((flags & MSIRegister.multipleMessageCapable) >> 1), 5)
            define(data + 4, width: 4, rw: vectors == 32 ? 0xffff_ffff : (1 << UInt32(vectors)) - 1)
        }
    }

    private mutating func openMSIX(_ cap: Int) {
        guard fitsStandard(cap, 12) else { return }
        define(cap + MSIXRegister.flags, width: 2, rw: UInt32(MSIXRegister.enable | MSIXRegister.functionMask))
    }

    private mutating func openVPD(_ cap: Int) {
        guard fitsStandard(cap, 8) else { return }
        define(cap + VPDRegister.address, width: 2, rw: 0xffff)
        define(cap + VPDRegister.data, width: 4, rw: 0xffff_ffff)
    }

    /// PCI Express port types (Express Capabilities bits 7:4).
    private enum PortType {
        static let endpoint: UInt32 = 0
        static let legacyEndpoint: UInt32 = 1
        static let rootPort: UInt32 = 4
        static let downstreamPort: UInt32 = 6
        static let rootComplexIntegrated: UInt32 = 9
        static let rootComplexEventCollector: UInt32 = 10
    }

    private var isRootPortLike: Bool {
        portType == PortType.rootPort || portType == PortType.rootComplexEventCollector
    }

    private mutating func openPCIExpress(_ cap: Int) {
        // A version 1 capability may end after the registers its port type has (an endpoint's
        // after Link Status), so each register is opened only if it lies below 0x100.
        guard fitsStandard(cap, PCIeRegister.deviceStatus + 2) else { return }
        let flags = read(cap + PCIeRegister.flags, 2)
        let version = flags & 0xf
        let type = (flags >> 4) & 0xf

        let devcap = read(cap + PCIeRegister.deviceCapabilities, 4)
        var control: UInt32 = 0x7fff
        let isEndpoint = type == PortType.endpoint || type == PortType.legacyEndpoint || type == PortType.rootComplexIntegrated
        if isEndpoint, devcap & PCIeRegister.devCapFLR != 0 { control |= UInt32(PCIeRegister.devCtlInitiateFLR) }
        // Reset: 512-byte read requests, relaxed ordering and no snoop enabled.
        defineInStandard(cap + PCIeRegister.deviceControl, width: 2, rw: control, reset: 0x2810)
        defineInStandard(cap + PCIeRegister.deviceStatus, width: 2, w1c: 0x000f)

        let hasLink = type != PortType.rootComplexIntegrated && type != PortType.rootComplexEventCollector
        if hasLink { defineInStandard(cap + PCIeRegister.linkControl, width: 2, rw: 0x01c3) }
        let hasSlot = flags & 0x0100 != 0 && (type == PortType.rootPort || type == PortType.downstreamPort)
        if hasSlot {
            defineInStandard(cap + PCIeRegister.slotControl, width: 2, rw: 0x1fff)
            // Attention button, power fault, MRL sensor, presence detect, command completed, DLL state changed.
            defineInStandard(cap + PCIeRegister.slotStatus, width: 2, w1c: 0x011f)
        }
        if type == PortType.rootPort || type == PortType.rootComplexEventCollector {
            defineInStandard(cap + PCIeRegister.rootControl, width: 2, rw: 0x001f)
            defineInStandard(cap + PCIeRegister.rootStatus, width: 4, w1c: 0x0001_0000)  // PME Status
        }
        guard version >= 2, fitsStandard(cap, 0x3c) else { return }
        let devcap2 = read(cap + PCIeRegister.deviceCapabilities2, 4)
        var control2: UInt32 = 0
        if devcap2 & 0x000f != 0 { control2 |= 0x000f }  // completion timeout value
        if devcap2 & 0x0010 != 0 { control2 |= 0x0010 }  // completion timeout disable
        if devcap2 & 0x0020 != 0, type == PortType.rootPort || type == PortType.downstreamPort {
            control2 |= 0x0020  // ARI forwarding
        }
        if devcap2 & 0x0800 != 0 { control2 |= 0x0400 }  // LTR mechanism
        defineInStandard(cap + PCIeRegister.deviceControl2, width: 2, rw: control2)
        if hasLink {
            // Target Link Speed resets to the highest speed the link supports.
            let maxSpeed = read(cap + PCIeRegister.linkCapabilities, 4) & 0xf
            defineInStandard(cap + PCIeRegister.linkControl2, width: 2, rw: 0x000f, reset: maxSpeed)
        }
    }

    private mutating func openAER(_ cap: Int) {
        guard fitsExtended(cap, 0x2c) else { return }
        let uncorrectable: UInt32 = 0x03ff_f030  // bit 5 is Surprise Down
        define(cap + 0x04, width: 4, w1c: uncorrectable)                     // Uncorrectable Error Status
        define(cap + 0x08, width: 4, rw: uncorrectable)                      // Uncorrectable Error Mask
        define(cap + 0x0c, width: 4, rw: uncorrectable, reset: 0x0046_2030)  // Uncorrectable Error Severity
        let correctable: UInt32 = 0x0000_f1c1
        define(cap + 0x10, width: 4, w1c: correctable)                       // Correctable Error Status
        define(cap + 0x14, width: 4, rw: correctable, reset: 0x0000_2000)    // Correctable Error Mask (Advisory Non-Fatal)
        let capabilities = read(cap + 0x18, 4)
        var control: UInt32 = 0
        if capabilities & 0x20 != 0 { control |= 0x40 }   // ECRC generation enable, if capable
        if capabilities & 0x80 != 0 { control |= 0x100 }  // ECRC check enable, if capable
        define(cap + 0x18, width: 4, rw: control)
        if isRootPortLike, fitsExtended(cap, 0x38) {
            define(cap + 0x2c, width: 4, rw: 0x0000_0007)   // Root Error Command
            define(cap + 0x30, width: 4, w1c: 0x0000_007f)  // Root Error Status
        }
    }

    private mutating func openSRIOV(_ cap: Int, vfBARs: [CapturedBAR]) {
        guard fitsExtended(cap, 0x40) else { return }
        let migrationCapable = read(cap + 0x04, 4) & 0x1 != 0
        // VF Enable, VF MSE, ARI Capable Hierarchy; VF Migration (and its interrupt) if capable.
        define(cap + 0x08, width: 2, rw: 0x0019 | (migrationCapable ? 0x0006 : 0))
        if migrationCapable { define(cap + 0x0a, width: 2, w1c: 0x0001) }
        define(cap + 0x10, width: 2, rw: 0xffff)                       // NumVFs
        define(cap + 0x20, width: 4, rw: 0xffff_ffff, reset: 0x1)      // System Page Size
        // sysfs gives a VF BAR's resource for all TotalVFs; one VF's BAR is that divided by TotalVFs.
        let totalVFs = UInt64(read(cap + 0x0e, 2))
        guard totalVFs > 0 else { return }
        let uppers = upperHalves(registerAt: { cap + 0x24 + 4 * $0 }, count: 6)
        for bar in vfBARs where !bar.isROM && bar.index < 6 && !uppers.contains(bar.index) {
            guard bar.size % totalVFs == 0 else { continue }
            let size = bar.size / totalVFs
            guard size & (size - 1) == 0, !bar.isIO else { continue }
            _ = openBAR(at: cap + 0x24 + 4 * bar.index, size: size, captured: bar, hasUpperRegister: bar.index + 1 < 6)
        }
    }
}
