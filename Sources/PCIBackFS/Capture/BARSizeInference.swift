/// Sizes for BARs that a capture shows with an address but without a size.
///
/// An `lspci -xxx` dump without `-v` text, a dump made through another access method, a dump
/// whose `Region` lines carry no `[size=]`, and a raw config blob without its `resource` file all
/// give a BAR register's address but not its size. Sizing would need a write to the hardware,
/// which a capture cannot make, so only an upper bound is known: an assigned BAR is naturally
/// aligned to its size (PCI Local Bus 3.0 §6.2.5.1), so the size divides the address. The rule:
///
/// * the size is the largest power of two that divides the address (its natural alignment),
/// * capped so that the BAR ends before the next BAR of the same function in the same address
///   space starts (I/O, or memory together with the ROM; the other BARs' known or recorded
///   addresses), since a function's BARs never overlap,
/// * capped by what the register can hold: an I/O BAR at most 256 bytes (PCI 3.0 §6.2.5.1), a
///   32-bit memory BAR at most 2 GiB, the expansion ROM at most 16 MiB (§6.2.5.2),
/// * and at least the smallest size of its kind: 4 bytes of I/O, 16 bytes of memory, 2 KiB of ROM.
///
/// A register holding 0 (unassigned) has no bound and gets no size; neither does a reserved
/// memory type (11b) nor a 64-bit BAR in the last register. The BARs found are marked
/// `sizeInferred`, which a machine file keeps (`"sizeInferred": true`) so that its `size` can be
/// corrected by hand.
public enum BARSizeInference {
    public static let ioMaximum: UInt64 = 256
    public static let memory32Maximum: UInt64 = 1 << 31
    public static let romMaximum: UInt64 = 16 << 20
    public static let ioMinimum: UInt64 = 4
    public static let memoryMinimum: UInt64 = 16
    public static let romMinimum: UInt64 = 2048

    /// A BAR register's decoded contents: index, kind, address (0 when unassigned).
    struct Register {
        var index: Int
        var kind: CapturedBAR.Kind
        var address: UInt64
    }

    /// The BAR registers of a config space by its header type, with the ROM (index 6) last.
    static func registers(_ config: [UInt8]) -> [Register] {
        func dword(_ offset: Int) -> UInt32 {
            UInt32(config[offset]) | UInt32(config[offset + 1]) << 8 | UInt32(config[offset + 2]) << 16 | UInt32(config[offset + 3]) << 24
        }
        let count: Int
        let rom: Int?
        switch config[0x0e] & 0x7f {
        case 0: (count, rom) = (6, 0x30)
        case 1: (count, rom) = (2, 0x38)
        case 2: (count, rom) = (1, nil)
        default: (count, rom) = (0, nil)
        }
        var result: [Register] = []
        var index = 0
        while index < count {
            let value = dword(0x10 + 4 * index)
            if value & 0x1 != 0 {
                result.append(Register(index: index, kind: .io, address: UInt64(value & 0xffff_fffc)))
                index += 1
                continue
            }
            let prefetchable = value & 0x8 != 0
            switch (value >> 1) & 0x3 {
            case 0x2:
                guard index + 1 < count else { return result }
                let address = UInt64(value & 0xffff_fff0) | UInt64(dword(0x10 + 4 * (index + 1))) << 32
                result.append(Register(index: index, kind: .memory(is64Bit: true, prefetchable: prefetchable), address: address))
                index += 2
            case 0x3:
                index += 1
            default:
                result.append(Register(index: index, kind: .memory(is64Bit: false, prefetchable: prefetchable),
                                      address: UInt64(value & 0xffff_fff0)))
                index += 1
            }
        }
        if let rom {
            let value = dword(rom)
            result.append(Register(index: CapturedBAR.romIndex, kind: .rom(enabled: value & 1 != 0), address: UInt64(value & 0xffff_f800)))
        }
        return result
    }

    /// The function with a size inferred for every BAR (and the ROM) that has an address in its
    /// config space but no captured size; the other BARs are kept as they are.
    public static func completing(_ function: CapturedFunction) -> CapturedFunction {
        let known = Set(function.bars.map(\.index))
        let registers = registers(function.config)
        let missing = registers.filter { !known.contains($0.index) && $0.address != 0 }
        guard !missing.isEmpty else { return function }
        // Every other BAR's start in the same space, and the ranges of the known ones.
        let starts = function.bars.filter { $0.base != 0 }.map { ($0.base, $0.isIO) }
            + registers.filter { !known.contains($0.index) && $0.address != 0 }.map { ($0.address, $0.kind == .io) }
        let knownRanges = function.bars.filter { $0.base != 0 }.map { ($0.base...$0.end, $0.isIO) }
        var bars = function.bars
        for register in missing {
            let isIO = register.kind == .io
            let (minimum, maximum): (UInt64, UInt64)
            switch register.kind {
            case .io: (minimum, maximum) = (ioMinimum, ioMaximum)
            case .memory(let is64Bit, _): (minimum, maximum) = (memoryMinimum, is64Bit ? UInt64(1) << 63 : memory32Maximum)
            case .rom: (minimum, maximum) = (romMinimum, romMaximum)
            }
            let alignment = register.address & (~register.address &+ 1)
            var limit = min(alignment, maximum)
            for (start, startIsIO) in starts where startIsIO == isIO && start > register.address {
                limit = min(limit, start - register.address)
            }
            let inside = knownRanges.contains { $0.1 == isIO && $0.0.contains(register.address) }
            var size = inside ? minimum : UInt64(1) << (63 - UInt64(limit.leadingZeroBitCount))
            size = max(size, minimum)
            bars.append(CapturedBAR(index: register.index, base: register.address, size: size, kind: register.kind, sizeInferred: true))
        }
        var result = function
        result.bars = bars.sorted { $0.index < $1.index }
        return result
    }
}
