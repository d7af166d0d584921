/// A function's configuration space with per-bit hardware semantics (the QEMU mask model).
///
/// Each byte has a value and two masks: `writable` (plain read/write bits) and `writeOneClear`
/// (writing 1 clears the bit, writing 0 leaves it). A bit in neither mask is read-only and writes
/// to it are ignored, as the PCI specification requires. Side effects (FLR, BIST, VPD, power
/// states) belong to the device, which calls `write` and then looks at what changed.
public struct ConfigSpace: Sendable, Equatable {
    /// 256 for conventional functions, 4096 for PCI Express ones.
    public let size: Int
    public private(set) var bytes: [UInt8]
    public private(set) var writable: [UInt8]
    public private(set) var writeOneClear: [UInt8]

    public init(size: Int) {
        precondition(size == 256 || size == 4096, "config space is 256 or 4096 bytes")
        self.size = size
        bytes = Array(repeating: 0, count: size)
        writable = Array(repeating: 0, count: size)
        writeOneClear = Array(repeating: 0, count: size)
    }

    /// Builds a space from captured bytes: every bit read-only until masks are opened.
    public init(bytes: [UInt8]) {
        self.init(size: bytes.count)
        self.bytes = bytes
    }

    // MARK: - Access by the hardware's rules

    /// Copies `buffer.count` bytes from `offset` (bytes past the end read 0xff): what a run of
    /// little-endian `read`s gives, in one copy.
    public func copyBytes(from offset: Int, into buffer: UnsafeMutableRawBufferPointer) {
        let inside = max(0, min(buffer.count, size - offset))
        if inside > 0 {
            bytes.withUnsafeBytes { source in
                buffer.baseAddress!.copyMemory(from: source.baseAddress! + offset, byteCount: inside)
            }
        }
        if inside < buffer.count {
            (buffer.baseAddress! + inside).initializeMemory(as: UInt8.self, repeating: 0xff, count: buffer.count - inside)
        }
    }

    /// Little-endian read of `width` bytes (1, 2 or 4). Bytes past the end read as 0xff, like a
    /// config access the host bridge cannot complete.
    @inline(__always)
    public func read(_ offset: Int, width: Int) -> UInt32 {
        if offset >= 0, offset + width <= size {
            return bytes.withUnsafeBufferPointer { buffer in
                var value: UInt32 = 0
                for index in stride(from: width - 1, through: 0, by: -1) {
                    value = value << 8 | UInt32(buffer[offset + index])
                }
                return value
            }
        }
        var value: UInt32 = 0
        for index in stride(from: width - 1, through: 0, by: -1) {
            let byteOffset = offset + index
            let byte: UInt8 = (byteOffset >= 0 && byteOffset < size) ? bytes[byteOffset] : 0xff
            value = value << 8 | UInt32(byte)
        }
        return value
    }

    /// A write as the hardware takes it: writable bits take the new value, write-1-to-clear bits
    /// clear where the value has ones, everything else stays. Bytes past the end are ignored.
    public mutating func write(_ offset: Int, width: Int, value: UInt32) {
        for index in 0..<width {
            let position = offset + index
            guard position >= 0, position < size else { continue }
            let byte = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index)))
            let mask = writable[position]
            var result = (bytes[position] & ~mask) | (byte & mask)
            result &= ~(byte & writeOneClear[position])
            bytes[position] = result
        }
    }

    // MARK: - Building and emulation-side updates

    /// Sets bytes regardless of the masks (device construction, hardware-side state changes).
    public mutating func store(_ offset: Int, width: Int, value: UInt32) {
        for index in 0..<width where offset + index < size {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index)))
        }
    }

    public mutating func store(_ offset: Int, bytes newBytes: [UInt8]) {
        for (index, byte) in newBytes.enumerated() where offset + index < size {
            bytes[offset + index] = byte
        }
    }

    /// Declares which bits of a register are read/write. Clears them from the W1C mask.
    public mutating func setWritable(_ offset: Int, width: Int, mask: UInt32) {
        for index in 0..<width where offset + index < size {
            let byte = UInt8(truncatingIfNeeded: mask >> (8 * UInt32(index)))
            writable[offset + index] = byte
            writeOneClear[offset + index] &= ~byte
        }
    }

    /// Declares which bits of a register are write-1-to-clear. Clears them from the RW mask.
    public mutating func setWriteOneClear(_ offset: Int, width: Int, mask: UInt32) {
        for index in 0..<width where offset + index < size {
            let byte = UInt8(truncatingIfNeeded: mask >> (8 * UInt32(index)))
            writeOneClear[offset + index] = byte
            writable[offset + index] &= ~byte
        }
    }

    /// Makes a range read-only (both masks cleared).
    public mutating func setReadOnly(_ range: Range<Int>) {
        for position in range where position < size {
            writable[position] = 0
            writeOneClear[position] = 0
        }
    }

    public func writableMask(_ offset: Int, width: Int) -> UInt32 {
        var mask: UInt32 = 0
        for index in stride(from: width - 1, through: 0, by: -1) where offset + index < size {
            mask = mask << 8 | UInt32(writable[offset + index])
        }
        return mask
    }

    /// Every register bit that software can change (RW or RW1C), back to its value in `image`;
    /// read-only bits keep their current value. This is what a function reset does.
    public mutating func resetChangeableBits(to image: [UInt8]) {
        for position in 0..<size {
            let changeable = writable[position] | writeOneClear[position]
            bytes[position] = (bytes[position] & ~changeable) | (image[position] & changeable)
        }
    }

    /// Restores the read/write bits from a saved copy (the kernel's restore-state writes); status
    /// bits (RW1C) and read-only bits are not touched.
    public mutating func restoreWritableBits(from saved: [UInt8]) {
        for position in 0..<size {
            let mask = writable[position]
            bytes[position] = (bytes[position] & ~mask) | (saved[position] & mask)
        }
    }
}
