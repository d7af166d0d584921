/// Register offsets and bits from the PCI and PCI Express specifications (names as Linux's
/// `pci_regs.h` spells them, so the spec text can be matched).
public enum PCIRegister {
    public static let vendorID = 0x00
    public static let deviceID = 0x02
    public static let command = 0x04
    public static let status = 0x06
    public static let revisionID = 0x08
    public static let classProgIF = 0x09
    public static let classDevice = 0x0a
    public static let cacheLineSize = 0x0c
    public static let latencyTimer = 0x0d
    public static let headerType = 0x0e
    public static let bist = 0x0f
    public static let baseAddress0 = 0x10
    public static let cardbusCIS = 0x28
    public static let subsystemVendorID = 0x2c
    public static let subsystemID = 0x2e
    public static let romAddress = 0x30
    public static let capabilityList = 0x34
    public static let interruptLine = 0x3c
    public static let interruptPin = 0x3d
    public static let minGrant = 0x3e
    public static let maxLatency = 0x3f

    // Type 1 (bridge) header
    public static let primaryBus = 0x18
    public static let secondaryBus = 0x19
    public static let subordinateBus = 0x1a
    public static let secondaryLatency = 0x1b
    public static let ioBase = 0x1c
    public static let ioLimit = 0x1d
    public static let secondaryStatus = 0x1e
    public static let memoryBase = 0x20
    public static let memoryLimit = 0x22
    public static let prefetchBase = 0x24
    public static let prefetchLimit = 0x26
    public static let prefetchBaseUpper = 0x28
    public static let prefetchLimitUpper = 0x2c
    public static let ioBaseUpper = 0x30
    public static let ioLimitUpper = 0x32
    public static let romAddressBridge = 0x38
    public static let bridgeControl = 0x3e

    // CardBus (type 2)
    public static let cardbusCapabilityList = 0x14

    /// Offset of BAR `index` (0...5).
    @inline(__always) public static func bar(_ index: Int) -> Int { baseAddress0 + 4 * index }
}

public enum PCICommand {
    public static let io: UInt16 = 0x0001
    public static let memory: UInt16 = 0x0002
    public static let master: UInt16 = 0x0004
    public static let special: UInt16 = 0x0008
    public static let invalidate: UInt16 = 0x0010
    public static let vgaPalette: UInt16 = 0x0020
    public static let parity: UInt16 = 0x0040
    public static let wait: UInt16 = 0x0080
    public static let serr: UInt16 = 0x0100
    public static let fastBack: UInt16 = 0x0200
    public static let intxDisable: UInt16 = 0x0400
    /// The bits a guest owns through pciback (PCI_COMMAND_GUEST).
    public static let guestBits: UInt16 = master | special | invalidate | vgaPalette | wait | fastBack
}

public enum PCIStatus {
    public static let interrupt: UInt16 = 0x0008
    public static let capabilityList: UInt16 = 0x0010
    public static let masterDataParity: UInt16 = 0x0100
    public static let signaledTargetAbort: UInt16 = 0x0800
    public static let receivedTargetAbort: UInt16 = 0x1000
    public static let receivedMasterAbort: UInt16 = 0x2000
    public static let signaledSystemError: UInt16 = 0x4000
    public static let detectedParity: UInt16 = 0x8000
    public static let writeOneClearBits: UInt16 = 0xf900
}

/// Bridge Control (type 1 header, 0x3e).
public enum PCIBridgeControl {
    public static let secondaryBusReset: UInt16 = 0x0040
}

public enum PCIHeaderType: UInt8, Sendable {
    case normal = 0
    case bridge = 1
    case cardbus = 2
}

/// Standard capability IDs.
public enum CapabilityID {
    public static let powerManagement: UInt8 = 0x01
    public static let vpd: UInt8 = 0x03
    public static let pcix: UInt8 = 0x07
    public static let msi: UInt8 = 0x05
    public static let vendorSpecific: UInt8 = 0x09
    public static let pciExpress: UInt8 = 0x10
    public static let msix: UInt8 = 0x11
    public static let advancedFeatures: UInt8 = 0x13
}

/// Extended (PCI Express) capability IDs.
public enum ExtendedCapabilityID {
    public static let aer: UInt16 = 0x0001
    public static let deviceSerialNumber: UInt16 = 0x0003
    public static let ari: UInt16 = 0x000e
    public static let sriov: UInt16 = 0x0010
}

public enum PMRegister {
    public static let capabilities = 2
    public static let controlStatus = 4
    public static let bridgeExtensions = 6
    public static let data = 7
    public static let pmcD1Support: UInt16 = 0x0200
    public static let pmcD2Support: UInt16 = 0x0400
    public static let pmcPMESupportMask: UInt16 = 0xf800
    /// PME can be signalled from D3cold: the PME context is kept on aux power (sticky).
    public static let pmcPMEFromD3cold: UInt16 = 0x8000
    public static let stateMask: UInt16 = 0x0003
    public static let noSoftReset: UInt16 = 0x0008
    public static let pmeEnable: UInt16 = 0x0100
    public static let dataSelect: UInt16 = 0x1e00
    public static let dataScale: UInt16 = 0x6000
    public static let pmeStatus: UInt16 = 0x8000
}

public enum MSIRegister {
    public static let flags = 2
    public static let enable: UInt16 = 0x0001
    public static let multipleMessageCapable: UInt16 = 0x000e
    public static let multipleMessageEnable: UInt16 = 0x0070
    public static let is64Bit: UInt16 = 0x0080
    public static let perVectorMasking: UInt16 = 0x0100
}

public enum MSIXRegister {
    public static let flags = 2
    public static let table = 4
    public static let pba = 8
    public static let tableSizeMask: UInt16 = 0x07ff
    public static let functionMask: UInt16 = 0x4000
    public static let enable: UInt16 = 0x8000
}

public enum PCIeRegister {
    public static let flags = 2
    public static let deviceCapabilities = 4
    public static let deviceControl = 8
    public static let deviceStatus = 0x0a
    public static let linkCapabilities = 0x0c
    public static let linkControl = 0x10
    public static let linkStatus = 0x12
    public static let slotCapabilities = 0x14
    public static let slotControl = 0x18
    public static let slotStatus = 0x1a
    public static let rootControl = 0x1c
    public static let rootCapabilities = 0x1e
    public static let rootStatus = 0x20
    public static let deviceCapabilities2 = 0x24
    public static let deviceControl2 = 0x28
    public static let linkCapabilities2 = 0x2c
    public static let linkControl2 = 0x30
    public static let linkStatus2 = 0x32
    public static let slotControl2 = 0x38
    public static let devCapFLR: UInt32 = 0x1000_0000
    public static let devCtlInitiateFLR: UInt16 = 0x8000
    public static let devCtlMaxPayload: UInt16 = 0x00e0
    /// Link Control fields an FLR leaves alone: ASPM Control, RCB, Common Clock, Extended Synch.
    public static let lnkCtlKeptByFLR: UInt16 = 0x00cb
    public static let flagsVersionMask: UInt16 = 0x000f
    public static let flagsSlotImplemented: UInt16 = 0x0100
    // Device/port types (flags bits 7:4)
    public static let typeEndpoint: UInt16 = 0
    public static let typeLegacyEndpoint: UInt16 = 1
    public static let typeRootPort: UInt16 = 4
    public static let typeUpstreamPort: UInt16 = 5
    public static let typeDownstreamPort: UInt16 = 6
    public static let typePCIeToPCIBridge: UInt16 = 7
    public static let typePCIToPCIeBridge: UInt16 = 8
    public static let typeEventCollector: UInt16 = 10
}

/// Advanced Error Reporting extended capability registers.
public enum AERRegister {
    public static let uncorrectableStatus = 0x04
    public static let uncorrectableMask = 0x08
    public static let uncorrectableSeverity = 0x0c
    public static let correctableStatus = 0x10
    public static let correctableMask = 0x14
    public static let capabilitiesControl = 0x18
    public static let rootCommand = 0x2c
    public static let rootStatus = 0x30
}

/// Advanced Features capability (PCI_CAP_ID_AF) registers.
public enum AFRegister {
    public static let capabilities = 3
    public static let control = 4
    public static let capTransactionsPending: UInt32 = 0x01
    public static let capFLR: UInt32 = 0x02
    public static let controlInitiateFLR: UInt8 = 0x01
}

public enum VPDRegister {
    public static let address = 2
    public static let data = 4
    public static let flag: UInt16 = 0x8000
}
