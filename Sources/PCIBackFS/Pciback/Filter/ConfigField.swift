/// One virtual config-space field of a device bound to pciback (`struct config_field` bound
/// to an offset). Behaviour is a closed set of kinds instead of function pointers, so the table
/// stays a plain value that can be listed, compared and saved.
public struct ConfigField: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case vendor
        case device
        case command
        case interruptLine
        /// Read from hardware, writes swallowed (latency, pin, capability headers, PM bridge
        /// extension and data, VPD data).
        case hardwareReadOnly
        /// Read and written straight through (cache line size).
        case hardwarePassThrough
        case bist
        case bar(Int)
        case rom
        case powerManagementCapabilities
        case powerManagementControl
        case vpdAddress
        case msiFlags
        case msixFlags
        /// Added through the `quirks` attribute: a plain pass-through, freed at release.
        case quirk
    }

    /// Absolute offset in config space.
    public var offset: Int
    public var size: Int
    /// Informational only (printed by `quirks`, never enforced).
    public var mask: UInt32
    public var kind: Kind

    public init(offset: Int, size: Int, mask: UInt32 = 0, kind: Kind) {
        self.offset = offset
        self.size = size
        self.mask = mask
        self.kind = kind
    }

    public var isDynamic: Bool { kind == .quirk }

    @inline(__always)
    func overlaps(_ offset: Int, _ size: Int) -> Bool {
        // Written without `offset + size`, which overflows for offsets near Int.max.
        offset > self.offset - size && self.offset + self.size > offset
    }
}

/// pciback's virtual view of one BAR or the ROM (`struct pci_bar_info`).
public struct VirtualBAR: Sendable, Equatable {
    /// The address as the guest sees it.
    public var value: UInt32
    /// The sizing answer.
    public var sizingValue: UInt32
    /// 1 after an all-ones write: reads return the sizing answer.
    public var sizing: Bool
    /// Ignore-mask for the all-ones test: 0x3 (I/O), 0 (upper half of 64-bit), 0xf, 0x7ff (ROM).
    public var ignoreMask: UInt32
}

/// pciback's per-device state (`struct xen_pcibk_dev_data` plus the shadows kept beside it).
public struct PcibackDeviceData: Sendable, Equatable {
    public var fields: [ConfigField] = []
    public var permissive = false
    public var allowInterruptControl = false
    public var warnedOnWrite = false
    public var enableINTx = false
    public var isrOn = false
    public var ackInterrupts = false
    public var handledInterrupts = 0
    /// The legacy IRQ the fake ISR was installed on (0: none).
    public var isrIRQ: UInt32 = 0
    public let irqName: String
    /// `cmd->val`: the last command value the guest wrote (bind-time hardware value at first).
    public var commandShadow: UInt16 = 0
    /// BARs 0...5 and the ROM at index 6 (only those the header type has).
    public var bars: [VirtualBAR?] = Array(repeating: nil, count: 7)
    /// Config snapshot taken at bind; restored on every release.
    public var savedState: [UInt8] = []

    public init(address: PCIAddress) {
        irqName = "xen-pciback[\(address)]"
    }
}
