/// One base address register as the hardware implements it and the kernel assigned it.
public struct BARDescriptor: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Equatable, Codable {
        case io
        case memory32
        case memory32Prefetchable
        case memory64
        case memory64Prefetchable
        case rom

        public var isIO: Bool { self == .io }
        public var isMemory: Bool { self != .io && self != .rom }
        public var is64Bit: Bool { self == .memory64 || self == .memory64Prefetchable }
        public var isPrefetchable: Bool { self == .memory32Prefetchable || self == .memory64Prefetchable }

        /// The read-only type bits in the BAR's low nibble.
        public var typeBits: UInt32 {
            switch self {
            case .io: return 0x1
            case .memory32: return 0x0
            case .memory32Prefetchable: return 0x8
            case .memory64: return 0x4
            case .memory64Prefetchable: return 0xc
            case .rom: return 0x0
            }
        }
    }

    public var kind: Kind
    /// A power of two.
    public var size: UInt64
    /// The address firmware or the kernel assigned; 0 means unassigned.
    public var address: UInt64

    public init(kind: Kind, size: UInt64, address: UInt64) {
        precondition(size > 0 && size & (size - 1) == 0, "BAR sizes are powers of two")
        self.kind = kind
        self.size = size
        self.address = address
    }

    /// The kernel's `IORESOURCE_*` flags for this BAR, as `resource` prints them. The low byte
    /// is the BAR's own type bits (what libxl tests with `flags & 1`).
    public var kernelFlags: UInt64 {
        switch kind {
        case .io: return 0x40101                     // IO | SIZEALIGN, bit 0 from the BAR
        case .memory32: return 0x40200               // MEM | SIZEALIGN
        case .memory32Prefetchable: return 0x42208   // MEM | PREFETCH | SIZEALIGN
        case .memory64: return 0x140204              // MEM | MEM_64 | SIZEALIGN
        case .memory64Prefetchable: return 0x14220c  // MEM | PREFETCH | MEM_64 | SIZEALIGN
        case .rom: return 0x46200                    // MEM | PREFETCH | READONLY | SIZEALIGN
        }
    }
}
