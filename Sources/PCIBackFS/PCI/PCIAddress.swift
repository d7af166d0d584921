/// A PCI function's address: domain, bus, device (slot) and function.
///
/// Formats as the kernel's `pci_name()`: `%04x:%02x:%02x.%d`.
public struct PCIAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var domain: UInt32
    public var bus: UInt8
    public var slot: UInt8
    public var function: UInt8

    public init(domain: UInt32 = 0, bus: UInt8, slot: UInt8, function: UInt8) {
        precondition(slot < 32 && function < 8, "slot or function out of range")
        self.domain = domain
        self.bus = bus
        self.slot = slot
        self.function = function
    }

    /// The address packed in one word (domain, bus, devfn).
    @inline(__always)
    var packed: UInt64 { UInt64(domain) << 16 | UInt64(bus) << 8 | UInt64(devfn) }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(packed)
    }

    /// What dictionaries keyed by address use: a multiply-xorshift mix of the packed address
    /// and the seed instead of a full SipHash round (a few instructions instead of ~250; every
    /// config access looks its device up). Addresses are not attacker-chosen keys.
    public func _rawHashValue(seed: Int) -> Int {
        var mixed = packed &+ UInt64(UInt(bitPattern: seed)) &* 0x9e37_79b9_7f4a_7c15
        mixed = (mixed ^ (mixed >> 30)) &* 0xbf58_476d_1ce4_e5b9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94d0_49bb_1331_11eb
        return Int(truncatingIfNeeded: mixed ^ (mixed >> 31))
    }

    /// devfn as the kernel packs it: slot << 3 | function.
    public var devfn: UInt8 { slot << 3 | function }

    public init(domain: UInt32 = 0, bus: UInt8, devfn: UInt8) {
        self.init(domain: domain, bus: bus, slot: devfn >> 3, function: devfn & 7)
    }

    public var description: String {
        // Built byte by byte: names are formatted for every path and link the tree resolves.
        guard domain <= 0xffff else {
            return hex(domain, width: 4) + ":" + hex(bus, width: 2) + ":" + hex(slot, width: 2) + "." + String(function)
        }
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 12) { buffer in
            digits.withUTF8Buffer { digit in
                buffer[0] = digit[Int(domain >> 12 & 0xf)]
                buffer[1] = digit[Int(domain >> 8 & 0xf)]
                buffer[2] = digit[Int(domain >> 4 & 0xf)]
                buffer[3] = digit[Int(domain & 0xf)]
                buffer[4] = UInt8(ascii: ":")
                buffer[5] = digit[Int(bus >> 4)]
                buffer[6] = digit[Int(bus & 0xf)]
                buffer[7] = UInt8(ascii: ":")
                buffer[8] = digit[Int(slot >> 4)]
                buffer[9] = digit[Int(slot & 0xf)]
                buffer[10] = UInt8(ascii: ".")
                buffer[11] = digit[Int(function & 0x7)]
            }
            return 12
        }
    }

    /// `BB:SS.F`, the form the quirks listing and lspci without -D use.
    public var shortDescription: String {
        hex(bus, width: 2) + ":" + hex(slot, width: 2) + "." + String(function)
    }

    /// Parses a kernel device name exactly: `DDDD:BB:SS.F` with 4, 2, 2 and 1 hex digits (what
    /// `bus_find_device_by_name` compares against, after one trailing newline is dropped).
    public init?(kernelName text: Substring) {
        guard text.utf8.count == 12 else { return nil }
        let bytes = Array(text.utf8)
        guard bytes[4] == UInt8(ascii: ":"), bytes[7] == UInt8(ascii: ":"),
              bytes[10] == UInt8(ascii: ".")
        else { return nil }
        func value(_ range: Range<Int>) -> UInt32? {
            var result: UInt32 = 0
            for byte in bytes[range] {
                // Kernel names are lower case, and the comparison is exact.
                guard let digit = hexDigitValue(byte), !(UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte) else {
                    return nil
                }
                result = result << 4 | UInt32(digit)
            }
            return result
        }
        guard let domain = value(0..<4), let bus = value(5..<7), let slot = value(8..<10),
              let function = value(11..<12), slot < 32, function < 8
        else { return nil }
        self.init(domain: domain, bus: UInt8(bus), slot: UInt8(slot), function: UInt8(function))
    }

    public init?(kernelName text: String) { self.init(kernelName: Substring(text)) }

    public static func < (lhs: PCIAddress, rhs: PCIAddress) -> Bool {
        (lhs.domain, lhs.bus, lhs.devfn) < (rhs.domain, rhs.bus, rhs.devfn)
    }
}

/// Lower-case hex, zero-padded to `width` digits (like `%0Nx`).
@inlinable
public func hex<T: BinaryInteger>(_ value: T, width: Int) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}

@inlinable
func hexDigitValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
    default: return nil
    }
}

extension PCIAddress {
    /// Whether `name` is a bus's kernel name: `DDDD:BB`, lowercase hex.
    static func isBusName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard bytes.count == 7, bytes[4] == UInt8(ascii: ":") else { return false }
        return bytes.enumerated().allSatisfy { index, byte in
            index == 4 || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
        }
    }
}
