/// `kstrtoul`/`kstrtoint` as sysfs stores use them: base 0 (0x hex, leading-0 octal, decimal),
/// an optional '+', one trailing newline, nothing else; overflow is ERANGE.
enum KernelNumbers {
    static func unsignedLong(_ raw: [UInt8]) throws(Errno) -> UInt64 {
        var bytes = PcibackGrammar.cString(raw)[...]
        if bytes.last == UInt8(ascii: "\n") { bytes = bytes.dropLast() }
        if bytes.first == UInt8(ascii: "+") { bytes = bytes.dropFirst() }
        return try parse(bytes)
    }

    /// `if (kstrtoul(buf, 0, &val) < 0) return -EINVAL;`: the pci-sysfs stores (msi_bus,
    /// broken_parity_status, d3cold_allowed, remove, rescan, reset, bus rescan) report every parse
    /// failure, overflow included, as EINVAL rather than kstrtoul's own ERANGE.
    static func unsignedLongOrInvalid(_ raw: [UInt8]) throws(Errno) -> UInt64 {
        do { return try unsignedLong(raw) } catch { throw .invalidArgument }
    }

    static func signedInt(_ raw: [UInt8]) throws(Errno) -> Int32 {
        var bytes = PcibackGrammar.cString(raw)[...]
        if bytes.last == UInt8(ascii: "\n") { bytes = bytes.dropLast() }
        var negative = false
        if bytes.first == UInt8(ascii: "-") {
            negative = true
            bytes = bytes.dropFirst()
        } else if bytes.first == UInt8(ascii: "+") {
            bytes = bytes.dropFirst()
        }
        let magnitude = try parse(bytes)
        if negative {
            guard magnitude <= UInt64(Int32.max) + 1 else { throw .outOfRange }
            return Int32(truncatingIfNeeded: 0 &- Int64(magnitude))
        }
        guard magnitude <= UInt64(Int32.max) else { throw .outOfRange }
        return Int32(magnitude)
    }

    private static func parse(_ input: ArraySlice<UInt8>) throws(Errno) -> UInt64 {
        var bytes = input
        var base: UInt64 = 10
        if bytes.first == UInt8(ascii: "0") {
            if bytes.count >= 2, bytes[bytes.startIndex + 1] | 0x20 == UInt8(ascii: "x") {
                base = 16
                bytes = bytes.dropFirst(2)
            } else if bytes.count >= 2 {
                base = 8
            }
        }
        guard !bytes.isEmpty else { throw .invalidArgument }
        var value: UInt64 = 0
        for byte in bytes {
            guard let digit = hexDigitValue(byte), UInt64(digit) < base else { throw .invalidArgument }
            let (product, overflow1) = value.multipliedReportingOverflow(by: base)
            let (sum, overflow2) = product.addingReportingOverflow(UInt64(digit))
            if overflow1 || overflow2 { throw .outOfRange }
            value = sum
        }
        return value
    }
}
