// Captured PCI functions: a neutral, source-independent description of one real function (its
// config space, BAR sizes, IRQ and host driver), and the importers that build it from
//   * an `lspci -F` dump (`lspci -xxx`/`-xxxx`, optionally with `-vvv` text), see `LspciDump`;
//   * a sysfs `resource` file, see `SysfsResource`;
//   * a live sysfs device directory, or a raw config blob plus a `resource` text, see `SysfsCapture`.
// Everything here is pure value code (plus plain POSIX file reads in `SysfsCapture`).
//
// Layering: Capture sits between PCI/ and Hardware/. It calls only PCI/ (PCIAddress, Errno,
// `hex`); it never names a Hardware type. Hardware calls it: `DeviceImporter` (Importer.swift)
// turns a `CapturedFunction` into an `EmulatedDevice`, and `MachineFile` converts to and from it,
// so both stay in Hardware/.
//
// Files: CapturedFunction (the model: CapturedBAR, CapturedFunction), CaptureError,
// LspciDump (the `lspci -F` reader and writer), SysfsResource (the `resource` file, read and
// written), SysfsCapture (a live sysfs device directory), CaptureFiles (POSIX file reads) and
// CaptureText (byte-level parsing helpers the readers share).

/// One address range of a captured function: a BAR (index 0...5) or the expansion ROM (index 6).
/// In `CapturedFunction.iovBARs` the index is the VF BAR number (0...5) instead.
public struct CapturedBAR: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        case io
        case memory(is64Bit: Bool, prefetchable: Bool)
        /// The expansion ROM; `enabled` is the ROM BAR's enable bit (IORESOURCE_ROM_ENABLE).
        case rom(enabled: Bool)
    }

    /// The `index` of the expansion ROM, as in the sysfs `resource` file (line 6).
    public static let romIndex = 6

    public var index: Int
    /// Bus address; 0 when the range is unassigned (lspci `<unassigned>`/`<ignored>`).
    public var base: UInt64
    /// Size in bytes, always > 0 (a range with an address but no size gets an inferred one,
    /// `BARSizeInference`; an unassigned range of unknown size is not captured at all).
    public var size: UInt64
    public var kind: Kind
    /// The capture gave no size: it was inferred from the address (`BARSizeInference`).
    public var sizeInferred: Bool

    public init(index: Int, base: UInt64, size: UInt64, kind: Kind, sizeInferred: Bool = false) {
        precondition((0...6).contains(index), "BAR index out of range")
        precondition(size > 0, "BAR size must be known")
        if case .rom = kind {
            precondition(index == Self.romIndex, "the ROM has index 6")
        } else {
            precondition(index != Self.romIndex, "index 6 is the ROM")
        }
        self.index = index
        self.base = base
        self.size = size
        self.kind = kind
        self.sizeInferred = sizeInferred
    }

    public var isIO: Bool { kind == .io }
    public var isROM: Bool { if case .rom = kind { true } else { false } }
    /// Only memory BARs can be 64-bit.
    public var is64Bit: Bool { if case .memory(true, _) = kind { true } else { false } }
    /// Only memory BARs report this (the kernel also marks the ROM prefetchable, see `SysfsResource`).
    public var isPrefetchable: Bool { if case .memory(_, true) = kind { true } else { false } }
    /// The ROM's enable bit; nil for BARs.
    public var romEnabled: Bool? { if case .rom(let enabled) = kind { enabled } else { nil } }
    /// The last byte's address (the `end` column of sysfs `resource`).
    public var end: UInt64 { base &+ (size &- 1) }

    public var description: String {
        let what: String
        switch kind {
        case .io: what = "I/O"
        case .memory(let is64Bit, let prefetchable):
            what = (is64Bit ? "mem64" : "mem32") + (prefetchable ? " pref" : "")
        case .rom(let enabled): what = enabled ? "ROM enabled" : "ROM disabled"
        }
        return "\(index == Self.romIndex ? "ROM" : "BAR\(index)") \(what) 0x\(hex(base, width: 1)) size 0x\(hex(size, width: 1))"
            + (sizeInferred ? " (inferred)" : "")
    }
}

/// One captured PCI function, whatever it was captured from.
public struct CapturedFunction: Sendable, Hashable {
    public var address: PCIAddress
    /// The whole config space: exactly 256 or 4096 bytes.
    public var config: [UInt8]
    /// BARs 0...5 and the ROM (index 6) whose size is known, in index order.
    public var bars: [CapturedBAR]
    /// SR-IOV VF BARs (sysfs `resource` lines 7...12, index = VF BAR number), when known.
    public var iovBARs: [CapturedBAR]
    /// The sysfs `irq` value (for lspci dumps: the IRQ of the `Interrupt:` line), or nil.
    public var irq: UInt32?
    /// The host driver's name (the sysfs `driver` link's basename, or lspci "Kernel driver in use").
    public var driver: String?
    /// Free description text, e.g. the lspci header line's text after the address.
    public var name: String?

    public init(address: PCIAddress, config: [UInt8], bars: [CapturedBAR] = [], iovBARs: [CapturedBAR] = [],
                irq: UInt32? = nil, driver: String? = nil, name: String? = nil) {
        precondition(config.count == 256 || config.count == 4096, "config must be 256 or 4096 bytes")
        self.address = address
        self.config = config
        self.bars = bars.sorted { $0.index < $1.index }
        self.iovBARs = iovBARs.sorted { $0.index < $1.index }
        self.irq = irq
        self.driver = driver
        self.name = name
    }

    public var vendorID: UInt16 { UInt16(config[0]) | UInt16(config[1]) << 8 }
    public var deviceID: UInt16 { UInt16(config[2]) | UInt16(config[3]) << 8 }
    /// Config byte 0x0e without the multi-function bit: 0 normal, 1 bridge, 2 CardBus.
    public var headerType: UInt8 { config[0x0e] & 0x7f }
    public var hasExtendedConfig: Bool { config.count == 4096 }

    public func bar(_ index: Int) -> CapturedBAR? { bars.first { $0.index == index } }
    public var rom: CapturedBAR? { bar(CapturedBAR.romIndex) }
}
