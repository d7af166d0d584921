/// Lays out an emulated function from the PCI specification: header with its register masks,
/// BARs whose sizing falls out of the masks, and capability lists with only the spec-writable
/// bits open.
public struct DeviceBuilder {
    public private(set) var config: ConfigSpace
    public private(set) var bars: [BARDescriptor?] = Array(repeating: nil, count: 7)
    public let address: PCIAddress
    private var nextStandardCapability = 0x40
    private var lastStandardPointer: Int
    private var nextExtendedCapability = 0x100
    private var lastExtendedHeader: Int?
    private let headerType: PCIHeaderType
    private let isExpress: Bool
    public var irq: UInt32 = 0
    public var bootDriver: String?
    public var label = ""
    public var vpd: [UInt8] = []

    public struct Identity {
        public var vendor: UInt16
        public var device: UInt16
        public var subsystemVendor: UInt16 = 0
        public var subsystemDevice: UInt16 = 0
        public var classCode: UInt32
        public var revision: UInt8 = 0
        public var interruptPin: UInt8 = 0
        public var multiFunction = false
        public init(vendor: UInt16, device: UInt16, subsystemVendor: UInt16 = 0, subsystemDevice: UInt16 = 0,
                    classCode: UInt32, revision: UInt8 = 0, interruptPin: UInt8 = 0, multiFunction: Bool = false) {
            self.vendor = vendor
            self.device = device
            self.subsystemVendor = subsystemVendor
            self.subsystemDevice = subsystemDevice
            self.classCode = classCode
            self.revision = revision
            self.interruptPin = interruptPin
            self.multiFunction = multiFunction
        }
    }

    public init(address: PCIAddress, headerType: PCIHeaderType = .normal, express: Bool, identity: Identity) {
        self.address = address
        self.headerType = headerType
        self.isExpress = express
        config = ConfigSpace(size: express ? 4096 : 256)
        lastStandardPointer = headerType == .cardbus ? PCIRegister.cardbusCapabilityList : PCIRegister.capabilityList
        config.store(PCIRegister.vendorID, width: 2, value: UInt32(identity.vendor))
        config.store(PCIRegister.deviceID, width: 2, value: UInt32(identity.device))
        config.store(PCIRegister.revisionID, width: 1, value: UInt32(identity.revision))
        config.store(PCIRegister.classProgIF, width: 1, value: identity.classCode & 0xff)
        config.store(PCIRegister.classDevice, width: 2, value: identity.classCode >> 8)
        config.store(PCIRegister.headerType, width: 1,
                     value: UInt32(headerType.rawValue) | (identity.multiFunction ? 0x80 : 0))
        config.store(PCIRegister.interruptPin, width: 1, value: UInt32(identity.interruptPin))

        // Command: decode, master and INTx disable everywhere; the legacy bits only on
        // conventional functions (PCI Express hard-wires SPECIAL, MWI, palette, wait, fast
        // back-to-back to 0).
        var commandMask = PCICommand.io | PCICommand.memory | PCICommand.master | PCICommand.parity
            | PCICommand.serr | PCICommand.intxDisable
        if !express { commandMask |= PCICommand.special | PCICommand.invalidate | PCICommand.vgaPalette }
        config.setWritable(PCIRegister.command, width: 2, mask: UInt32(commandMask))
        config.setWriteOneClear(PCIRegister.status, width: 2, mask: UInt32(PCIStatus.writeOneClearBits))
        config.setWritable(PCIRegister.cacheLineSize, width: 1, mask: 0xff)
        if !express { config.setWritable(PCIRegister.latencyTimer, width: 1, mask: 0xff) }
        config.setWritable(PCIRegister.interruptLine, width: 1, mask: 0xff)

        switch headerType {
        case .normal:
            config.store(PCIRegister.subsystemVendorID, width: 2, value: UInt32(identity.subsystemVendor))
            config.store(PCIRegister.subsystemID, width: 2, value: UInt32(identity.subsystemDevice))
        case .bridge:
            for register in [PCIRegister.primaryBus, PCIRegister.secondaryBus, PCIRegister.subordinateBus,
                             PCIRegister.secondaryLatency] {
                config.setWritable(register, width: 1, mask: 0xff)
            }
            config.setWritable(PCIRegister.ioBase, width: 2, mask: 0xf0f0)
            config.store(PCIRegister.ioBase, width: 2, value: 0x0101)  // 32-bit I/O addressing
            config.setWriteOneClear(PCIRegister.secondaryStatus, width: 2, mask: 0xf900)
            config.setWritable(PCIRegister.memoryBase, width: 4, mask: 0xfff0_fff0)
            config.setWritable(PCIRegister.prefetchBase, width: 4, mask: 0xfff0_fff0)
            config.store(PCIRegister.prefetchBase, width: 4, value: 0x0001_0001)  // 64-bit prefetchable
            config.setWritable(PCIRegister.prefetchBaseUpper, width: 4, mask: 0xffff_ffff)
            config.setWritable(PCIRegister.prefetchLimitUpper, width: 4, mask: 0xffff_ffff)
            config.setWritable(PCIRegister.ioBaseUpper, width: 4, mask: 0xffff_ffff)
            config.setWritable(PCIRegister.bridgeControl, width: 2, mask: 0x0fff)
        case .cardbus:
            config.setWritable(0x18, width: 4, mask: 0xffff_ffff)  // bus numbers, latency
            config.setWritable(0x3e, width: 2, mask: 0x07ff)
        }
    }

    // MARK: - BARs

    /// Declares BAR `index` (a 64-bit BAR also takes `index + 1`). The mask makes sizing work:
    /// all-ones written, size mask and type bits read back.
    public mutating func setBAR(_ index: Int, _ kind: BARDescriptor.Kind, size: UInt64, address: UInt64) {
        precondition(kind != .rom && index >= 0 && index < (headerType == .bridge ? 2 : 6))
        let offset = PCIRegister.bar(index)
        let bar = BARDescriptor(kind: kind, size: size, address: address)
        bars[index] = bar
        switch kind {
        case .io:
            // I/O BARs decode 16 address bits, as most hardware does.
            config.setWritable(offset, width: 4, mask: UInt32(truncatingIfNeeded: ~(size - 1)) & 0x0000_fffc)
        case .memory32, .memory32Prefetchable:
            config.setWritable(offset, width: 4, mask: UInt32(truncatingIfNeeded: ~(size - 1)) & 0xffff_fff0)
        case .memory64, .memory64Prefetchable:
            precondition(index < 5, "a 64-bit BAR needs two registers")
            config.setWritable(offset, width: 4, mask: UInt32(truncatingIfNeeded: ~(size - 1)) & 0xffff_fff0)
            config.setWritable(offset + 4, width: 4, mask: UInt32(truncatingIfNeeded: ~(size - 1) >> 32))
        case .rom:
            break
        }
        config.store(offset, width: 4, value: kind.typeBits)
    }

    public mutating func setROM(size: UInt64, address: UInt64) {
        let offset = headerType == .bridge ? PCIRegister.romAddressBridge : PCIRegister.romAddress
        bars[6] = BARDescriptor(kind: .rom, size: size, address: address)
        config.setWritable(offset, width: 4, mask: (UInt32(truncatingIfNeeded: ~(size - 1)) & 0xffff_f800) | 0x1)
    }

    // MARK: - BIST

    /// A function that implements a built-in self-test: BIST Capable (0x80) reads as set and
    /// Start BIST (0x40) is writable; the test completes at once (see `EmulatedDevice`).
    public mutating func setBISTCapable() {
        config.store(PCIRegister.bist, width: 1, value: 0x80)
        config.setWritable(PCIRegister.bist, width: 1, mask: 0x40)
    }

    // MARK: - Capabilities

    /// Puts the next standard capability at `offset` instead of right after the previous one:
    /// real functions leave gaps, and a layout from a datasheet or a test plan names offsets.
    public mutating func placeNextCapability(at offset: Int) {
        precondition(offset & 3 == 0 && offset >= nextStandardCapability && offset < 0x100,
                     "capabilities are dword aligned, in order, below 0x100")
        nextStandardCapability = offset
    }

    /// Links a standard capability of `length` bytes and returns its offset. The whole
    /// capability starts read-only; the caller opens the writable bits.
    public mutating func addCapability(_ id: UInt8, length: Int) -> Int {
        let position = nextStandardCapability
        precondition(position + length <= 0x100, "standard capabilities end at 0xff")
        config.store(position, width: 1, value: UInt32(id))
        config.store(position + 1, width: 1, value: 0)
        config.store(lastStandardPointer, width: 1, value: UInt32(position))
        lastStandardPointer = position + 1
        nextStandardCapability = (position + length + 3) & ~3
        let status = config.read(PCIRegister.status, width: 2) | UInt32(PCIStatus.capabilityList)
        config.store(PCIRegister.status, width: 2, value: status)
        return position
    }

    /// Links an extended capability (4-byte header: id, version, next) and returns its offset.
    public mutating func addExtendedCapability(_ id: UInt16, version: UInt8, length: Int) -> Int {
        precondition(isExpress, "extended capabilities need 4 KiB config space")
        let position = nextExtendedCapability
        config.store(position, width: 4, value: UInt32(id) | UInt32(version) << 16)
        if let previous = lastExtendedHeader {
            let header = config.read(previous, width: 4) & 0x000f_ffff
            config.store(previous, width: 4, value: header | UInt32(position) << 20)
        }
        lastExtendedHeader = position
        nextExtendedCapability = (position + length + 3) & ~3
        return position
    }

    /// Power management, version 3. PMCSR: power state and PME enable and data select are
    /// read/write, PME status is write-1-to-clear.
    @discardableResult
    public mutating func addPowerManagement(d1: Bool = false, d2: Bool = false, pmeSupport: UInt16 = 0,
                                            noSoftReset: Bool = true) -> Int {
        let cap = addCapability(CapabilityID.powerManagement, length: 8)
        var pmc: UInt16 = 0x0003 | pmeSupport << 11
        if d1 { pmc |= PMRegister.pmcD1Support }
        if d2 { pmc |= PMRegister.pmcD2Support }
        config.store(cap + PMRegister.capabilities, width: 2, value: UInt32(pmc))
        config.store(cap + PMRegister.controlStatus, width: 2, value: noSoftReset ? UInt32(PMRegister.noSoftReset) : 0)
        config.setWritable(cap + PMRegister.controlStatus, width: 2,
                           mask: UInt32(PMRegister.stateMask | PMRegister.pmeEnable | PMRegister.dataSelect))
        config.setWriteOneClear(cap + PMRegister.controlStatus + 1, width: 1, mask: UInt32(PMRegister.pmeStatus >> 8))
        return cap
    }

    /// MSI with `vectors` (a power of two up to 32), 32- or 64-bit, optionally per-vector masking.
    @discardableResult
    public mutating func addMSI(vectors: Int, is64Bit: Bool, perVectorMasking: Bool) -> Int {
        precondition(vectors > 0 && vectors <= 32 && vectors & (vectors - 1) == 0)
        let length = 10 + (is64Bit ? 4 : 0) + (perVectorMasking ? 10 : 0)
        let cap = addCapability(CapabilityID.msi, length: length)
        var flags = UInt16(vectors.trailingZeroBitCount) << 1
        if is64Bit { flags |= MSIRegister.is64Bit }
        if perVectorMasking { flags |= MSIRegister.perVectorMasking }
        config.store(cap + 2, width: 2, value: UInt32(flags))
        config.setWritable(cap + 2, width: 2, mask: UInt32(MSIRegister.enable | MSIRegister.multipleMessageEnable))
        config.setWritable(cap + 4, width: 4, mask: 0xffff_fffc)
        var next = cap + 8
        if is64Bit {
            config.setWritable(next, width: 4, mask: 0xffff_ffff)
            next += 4
        }
        config.setWritable(next, width: 2, mask: 0xffff)  // message data
        if perVectorMasking {
            let maskBits: UInt32 = vectors == 32 ? 0xffff_ffff : (1 << UInt32(vectors)) - 1
            config.setWritable(next + 4, width: 4, mask: maskBits)
        }
        return cap
    }

    /// MSI-X with `tableSize` entries; table and PBA live in BAR memory. Only Enable and
    /// Function Mask are writable in config space.
    @discardableResult
    public mutating func addMSIX(tableSize: Int, tableBAR: Int, tableOffset: UInt32, pbaBAR: Int, pbaOffset: UInt32) -> Int {
        precondition(tableSize >= 1 && tableSize <= 2048)
        let cap = addCapability(CapabilityID.msix, length: 12)
        config.store(cap + 2, width: 2, value: UInt32(tableSize - 1))
        config.store(cap + 4, width: 4, value: tableOffset | UInt32(tableBAR))
        config.store(cap + 8, width: 4, value: pbaOffset | UInt32(pbaBAR))
        config.setWritable(cap + 2, width: 2, mask: UInt32(MSIXRegister.enable | MSIXRegister.functionMask))
        return cap
    }

    public enum PortType: UInt16 {
        case endpoint = 0
        case legacyEndpoint = 1
        case rootPort = 4
        case rootComplexIntegrated = 9
    }

    /// PCI Express capability, version 2.
    @discardableResult
    public mutating func addPCIExpress(_ type: PortType, functionReset: Bool, maxPayload: UInt32 = 1,
                                       linkSpeed: UInt32 = 2, linkWidth: UInt32 = 4, slotImplemented: Bool = false) -> Int {
        let cap = addCapability(CapabilityID.pciExpress, length: 0x3c)
        var flags: UInt16 = 0x0002 | type.rawValue << 4
        if slotImplemented { flags |= 0x0100 }
        config.store(cap + PCIeRegister.flags, width: 2, value: UInt32(flags))
        var devcap: UInt32 = maxPayload | 0x8000  // role-based error reporting
        if functionReset { devcap |= PCIeRegister.devCapFLR }
        config.store(cap + PCIeRegister.deviceCapabilities, width: 4, value: devcap)
        // Device Control resets to 512-byte reads, relaxed ordering and no snoop enabled.
        config.store(cap + PCIeRegister.deviceControl, width: 2, value: 0x2810)
        var control: UInt32 = 0x7fff
        if functionReset && (type == .endpoint || type == .legacyEndpoint || type == .rootComplexIntegrated) {
            control |= UInt32(PCIeRegister.devCtlInitiateFLR)
        }
        config.setWritable(cap + PCIeRegister.deviceControl, width: 2, mask: control)
        config.setWriteOneClear(cap + PCIeRegister.deviceStatus, width: 2, mask: 0x000f)
        if type != .rootComplexIntegrated {
            config.store(cap + PCIeRegister.linkCapabilities, width: 4, value: linkSpeed | linkWidth << 4 | 0x0c00)
            config.setWritable(cap + PCIeRegister.linkControl, width: 2, mask: 0x01c3)
            config.store(cap + PCIeRegister.linkStatus, width: 2, value: linkSpeed | linkWidth << 4)
            config.store(cap + PCIeRegister.linkCapabilities2, width: 4, value: ((1 << linkSpeed) - 1) << 1)
            config.store(cap + PCIeRegister.linkControl2, width: 2, value: linkSpeed)
            config.setWritable(cap + PCIeRegister.linkControl2, width: 2, mask: 0x000f)
        }
        if type == .rootPort {
            config.setWritable(cap + PCIeRegister.slotControl, width: 2, mask: 0x1fff)
            config.setWritable(cap + PCIeRegister.rootControl, width: 2, mask: 0x001f)
            config.setWriteOneClear(cap + PCIeRegister.rootStatus + 2, width: 1, mask: 0x01)
        }
        config.store(cap + PCIeRegister.deviceCapabilities2, width: 4, value: 0x0000_0010)
        config.setWritable(cap + PCIeRegister.deviceControl2, width: 2, mask: 0x041f)
        return cap
    }

    /// Vital product data: address (with the F flag) and data registers writable.
    @discardableResult
    public mutating func addVPD(contents: [UInt8]) -> Int {
        let cap = addCapability(CapabilityID.vpd, length: 8)
        config.setWritable(cap + VPDRegister.address, width: 2, mask: 0xffff)
        config.setWritable(cap + VPDRegister.data, width: 4, mask: 0xffff_ffff)
        vpd = contents
        return cap
    }

    /// A vendor-specific capability holding `payload` (read-only).
    @discardableResult
    public mutating func addVendorSpecific(payload: [UInt8]) -> Int {
        let cap = addCapability(CapabilityID.vendorSpecific, length: 3 + payload.count)
        config.store(cap + 2, width: 1, value: UInt32(3 + payload.count))
        config.store(cap + 3, bytes: payload)
        return cap
    }

    /// Advanced Error Reporting, version 2: status registers RW1C, masks and severity RW.
    @discardableResult
    public mutating func addAER() -> Int {
        let cap = addExtendedCapability(ExtendedCapabilityID.aer, version: 2, length: 0x48)
        config.setWriteOneClear(cap + 0x04, width: 4, mask: 0x03ff_f030)
        config.setWritable(cap + 0x08, width: 4, mask: 0x03ff_f030)
        config.store(cap + 0x0c, width: 4, value: 0x0046_2030)
        config.setWritable(cap + 0x0c, width: 4, mask: 0x03ff_f030)
        config.setWriteOneClear(cap + 0x10, width: 4, mask: 0x0000_f1c1)
        config.store(cap + 0x14, width: 4, value: 0x0000_2000)
        config.setWritable(cap + 0x14, width: 4, mask: 0x0000_f1c1)
        config.store(cap + 0x18, width: 4, value: 0x0000_00a0)  // ECRC generation/check capable
        config.setWritable(cap + 0x18, width: 4, mask: 0x0000_0140)
        return cap
    }

    @discardableResult
    public mutating func addDeviceSerialNumber(_ serial: UInt64) -> Int {
        let cap = addExtendedCapability(ExtendedCapabilityID.deviceSerialNumber, version: 1, length: 0x0c)
        config.store(cap + 4, width: 4, value: UInt32(truncatingIfNeeded: serial))
        config.store(cap + 8, width: 4, value: UInt32(truncatingIfNeeded: serial >> 32))
        return cap
    }

    @discardableResult
    public mutating func addARI(nextFunction: UInt8) -> Int {
        let cap = addExtendedCapability(ExtendedCapabilityID.ari, version: 1, length: 8)
        config.store(cap + 4, width: 2, value: UInt32(nextFunction) << 8)
        return cap
    }

    /// SR-IOV: VF Enable / MSE / ARI Capable Hierarchy, NumVFs and the System Page Size are
    /// writable; the VF BARs size like ordinary BARs.
    @discardableResult
    public mutating func addSRIOV(initialVFs: UInt16, totalVFs: UInt16, firstVFOffset: UInt16, vfStride: UInt16,
                                  vfDeviceID: UInt16, vfBARs: [(index: Int, kind: BARDescriptor.Kind, size: UInt64)]) -> Int {
        let cap = addExtendedCapability(ExtendedCapabilityID.sriov, version: 1, length: 0x40)
        config.store(cap + 0x04, width: 4, value: 0)                    // SR-IOV capabilities
        config.setWritable(cap + 0x08, width: 2, mask: 0x0019)          // VF Enable, MSE, ARI hierarchy (no migration)
        config.store(cap + 0x0c, width: 2, value: UInt32(initialVFs))
        config.store(cap + 0x0e, width: 2, value: UInt32(totalVFs))
        config.store(cap + 0x12, width: 1, value: UInt32(address.function))  // depends on itself: no dependency
        config.setWritable(cap + 0x10, width: 2, mask: 0xffff)          // NumVFs
        config.store(cap + 0x14, width: 2, value: UInt32(firstVFOffset))
        config.store(cap + 0x16, width: 2, value: UInt32(vfStride))
        config.store(cap + 0x1a, width: 2, value: UInt32(vfDeviceID))
        config.store(cap + 0x1c, width: 4, value: 0x0000_0553)          // supported page sizes
        config.store(cap + 0x20, width: 4, value: 0x0000_0001)          // system page size: 4 KiB
        config.setWritable(cap + 0x20, width: 4, mask: 0xffff_ffff)
        for bar in vfBARs {
            let offset = cap + 0x24 + 4 * bar.index
            config.store(offset, width: 4, value: bar.kind.typeBits)
            config.setWritable(offset, width: 4, mask: UInt32(truncatingIfNeeded: ~(bar.size - 1)) & 0xffff_fff0)
            if bar.kind.is64Bit {
                config.setWritable(offset + 4, width: 4, mask: UInt32(truncatingIfNeeded: ~(bar.size - 1) >> 32))
            }
        }
        return cap
    }

    // MARK: - Result

    /// The function as firmware left it: reset values captured first, then the BAR addresses,
    /// the interrupt line and the cache line size programmed.
    public func build(firmwareCommand: UInt16 = 0) -> EmulatedDevice {
        let resetImage = config.bytes
        var configured = config
        for index in 0..<6 {
            guard let bar = bars[index] else { continue }
            let offset = PCIRegister.bar(index)
            configured.store(offset, width: 4, value: UInt32(truncatingIfNeeded: bar.address) & ~0xf | bar.kind.typeBits)
            if bar.kind.is64Bit {
                configured.store(offset + 4, width: 4, value: UInt32(truncatingIfNeeded: bar.address >> 32))
            }
        }
        if let rom = bars[6] {
            let offset = headerType == .bridge ? PCIRegister.romAddressBridge : PCIRegister.romAddress
            configured.store(offset, width: 4, value: UInt32(truncatingIfNeeded: rom.address) & 0xffff_f800)
        }
        if headerType != .cardbus { configured.store(PCIRegister.interruptLine, width: 1, value: irq & 0xff) }
        configured.write(PCIRegister.command, width: 2, value: UInt32(firmwareCommand))
        return EmulatedDevice(address: address, config: configured, resetImage: resetImage, bars: bars, irq: irq,
                              bootDriver: bootDriver, label: label, vpd: vpd)
    }
}
