// Fuzz target `filter`: the input drives a sequence of guest config accesses (any offset,
// negative and huge included, any size, any value), flag changes (device permissive, global
// permissive, allow_interrupt_control), quirk fields, attach/detach and PV ops over every type-0
// function of the built-in machine bound to pciback, under one kernel profile picked by the
// input. After every step the hardware bytes of every function are compared with what an
// independent model of the profile's rules (written here from spec §4 - §6, §9, §11, never
// calling the implementation's rule code) allows:
//   * a write the rules refuse changes nothing and returns the rule's error;
//   * without permissive, the only bytes that change are those a field lets the guest write plus
//     the side effects the spec lists for that field (enable/disable, bus master, MWI, INTx with
//     allow_interrupt_control, PMCSR, BIST, VPD, MSI/MSI-X flags when allowed, quirk fields);
//   * guest writes never move a BAR or the ROM in hardware and never set the ROM enable bit;
//   * a read changes nothing; nothing crashes for any offset or size;
//   * the implementation's flags and command shadow agree with the model's.
#if canImport(Glibc)
import Glibc
#endif
import PCIBackFS

// MARK: - Input

private struct Reader {
    let data: UnsafeBufferPointer<UInt8>
    var position = 0
    var isDone: Bool { position >= data.count }
    mutating func byte() -> UInt8 {
        guard position < data.count else { return 0 }
        defer { position += 1 }
        return data[position]
    }
    mutating func u16() -> UInt16 { UInt16(byte()) | UInt16(byte()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func bool() -> Bool { byte() & 1 != 0 }
}

// MARK: - Constants (spec §5, §6, pci_regs.h), written out here on purpose

private let commandGuestBits: UInt16 = 0x02bc
private let cmdIO: UInt16 = 0x1, cmdMemory: UInt16 = 0x2, cmdMaster: UInt16 = 0x4, cmdInvalidate: UInt16 = 0x10
private let cmdINTxDisable: UInt16 = 0x400
private let pmcsrStateMask: UInt16 = 0x3, pmcsrNoSoftReset: UInt16 = 0x8, pmcsrOKBits: UInt16 = 0x9e00
private let pmcD1: UInt16 = 0x0200, pmcD2: UInt16 = 0x0400
private let vpdFlag: UInt16 = 0x8000
private let msiEnable: UInt16 = 0x0001
private let msixEnable: UInt16 = 0x8000, msixMaskAll: UInt16 = 0x4000
private let accessDenied: Int32 = -3, invalidOffset: Int32 = -2, deviceNotFound: Int32 = -1
private let notImplemented: Int32 = -4, operationFailed: Int32 = -5, einval: Int32 = -22

// MARK: - The model of one function bound to pciback

private enum FieldKind: Equatable {
    case ignored, cacheLine, bist, command, bar, rom, pmcsr, vpdAddress, msiFlags, msixFlags, quirk
}

private struct Field {
    var offset: Int
    var size: Int
    var kind: FieldKind
    /// Overflow-safe overlap with an access of 1, 2 or 4 bytes.
    func overlaps(_ start: Int, _ size: Int) -> Bool { start < offset + self.size && offset - size < start }
}

private struct Function {
    let address: PCIAddress
    let name: [UInt8]
    var device: EmulatedDevice  // (var: a copied world points it at its own copy)
    let pm: Int, vpd: Int, msi: Int, msix: Int
    let builtinFields: [Field]
    var quirks: [Field] = []
    var shadow: UInt16
    var permissive = false
    var allowInterruptControl = false
    var frontend: UInt32?
    var virtual: PCIAddress?
    /// Hardware right after bind: what release restores, and each BAR/ROM register's value.
    let afterBind: [UInt8]
    let barRegisters: [Int]
    var fields: [Field] { builtinFields + quirks }
}

/// The first instance of each capability, walking the standard list as the kernel does.
private func capabilities(_ bytes: [UInt8]) -> (pm: Int, vpd: Int, msi: Int, msix: Int) {
    var result = (pm: 0, vpd: 0, msi: 0, msix: 0)
    guard bytes[0x06] & 0x10 != 0 else { return result }
    var position = Int(bytes[0x34])
    var hops = 48
    while hops > 0, position >= 0x40 {
        position &= ~3
        let id = bytes[position]
        if id == 0xff { break }
        switch id {
        case 0x01 where result.pm == 0: result.pm = position
        case 0x03 where result.vpd == 0: result.vpd = position
        case 0x05 where result.msi == 0: result.msi = position
        case 0x11 where result.msix == 0: result.msix = position
        default: break
        }
        position = Int(bytes[position + 1])
        hops -= 1
    }
    return result
}

/// Spec §4.6 for a type-0 function.
private func builtinFields(pm: Int, vpd: Int, msi: Int, msix: Int, interruptControl: Bool) -> [Field] {
    var fields = [
        Field(offset: 0x00, size: 2, kind: .ignored), Field(offset: 0x02, size: 2, kind: .ignored),
        Field(offset: 0x04, size: 2, kind: .command), Field(offset: 0x3c, size: 1, kind: .ignored),
        Field(offset: 0x3d, size: 1, kind: .ignored), Field(offset: 0x0c, size: 1, kind: .cacheLine),
        Field(offset: 0x0d, size: 1, kind: .ignored), Field(offset: 0x0f, size: 1, kind: .bist),
    ]
    for index in 0..<6 { fields.append(Field(offset: 0x10 + 4 * index, size: 4, kind: .bar)) }
    fields.append(Field(offset: 0x30, size: 4, kind: .rom))
    if vpd != 0 {
        fields += [Field(offset: vpd, size: 2, kind: .ignored), Field(offset: vpd + 2, size: 2, kind: .vpdAddress),
                   Field(offset: vpd + 4, size: 4, kind: .ignored)]
    }
    if pm != 0 {
        fields += [Field(offset: pm, size: 2, kind: .ignored), Field(offset: pm + 2, size: 2, kind: .ignored),
                   Field(offset: pm + 4, size: 2, kind: .pmcsr), Field(offset: pm + 6, size: 1, kind: .ignored),
                   Field(offset: pm + 7, size: 1, kind: .ignored)]
    }
    if interruptControl, msi != 0 {
        fields += [Field(offset: msi, size: 2, kind: .ignored), Field(offset: msi + 2, size: 2, kind: .msiFlags)]
    }
    if interruptControl, msix != 0 {
        fields += [Field(offset: msix, size: 2, kind: .ignored), Field(offset: msix + 2, size: 2, kind: .msixFlags)]
    }
    return fields
}

// MARK: - Predicted hardware

/// The hardware image the model predicts, and per byte the bits whose value it leaves open.
private struct Prediction {
    var bytes: [UInt8]
    var free: [UInt8]
    /// Side effects wide enough that only the BAR/ROM and refusal checks still apply.
    var anything = false
    /// Raw writes reached hardware (permissive or a quirk): BARs may move as hardware lets them.
    var rawHardware = false
    let writable: [UInt8]
    let writeOneClear: [UInt8]

    init(_ device: EmulatedDevice) {
        bytes = device.config.bytes
        free = Array(repeating: 0, count: bytes.count)
        writable = device.config.writable
        writeOneClear = device.config.writeOneClear
    }

    func read(_ offset: Int, _ width: Int) -> UInt32 {
        var value: UInt32 = 0
        for index in stride(from: width - 1, through: 0, by: -1) {
            let position = offset + index
            value = value << 8 | UInt32(position < bytes.count ? bytes[position] : 0xff)
        }
        return value
    }

    /// A register write as the hardware's masks take it (no side effects).
    mutating func hardwareWrite(_ offset: Int, _ width: Int, _ value: UInt32) {
        for index in 0..<width where offset + index < bytes.count {
            let position = offset + index
            let byte = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index)))
            var result = (bytes[position] & ~writable[position]) | (byte & writable[position])
            result &= ~(byte & writeOneClear[position])
            bytes[position] = result
        }
    }

    mutating func release(_ offset: Int, _ width: Int, bits: UInt64 = ~0) {
        for index in 0..<width where offset + index < bytes.count {
            free[offset + index] |= index < 8 ? UInt8(truncatingIfNeeded: bits >> (8 * UInt64(index))) : 0xff
        }
    }
}

/// memcmp: the harness's own loops are instrumented for coverage, libc is not.
private func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    return a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
}

private func sizeMask(_ size: Int) -> UInt32 { size == 4 ? 0xffff_ffff : (UInt32(1) << (8 * UInt32(size))) - 1 }

/// Spec §4.4b: the written bytes placed into the field's current value.
private func merge(field current: UInt32, written: UInt32, accessSize: Int, shift: Int) -> UInt32 {
    let mask = UInt64(sizeMask(accessSize))
    let value = UInt64(written)
    let placedMask: UInt64, placedValue: UInt64
    if shift >= 0 {
        placedMask = mask << (8 * UInt64(shift))
        placedValue = value << (8 * UInt64(shift))
    } else {
        placedMask = mask >> (8 * UInt64(-shift))
        placedValue = value >> (8 * UInt64(-shift))
    }
    return UInt32(truncatingIfNeeded: (UInt64(current) & ~placedMask) | (placedValue & placedMask))
}

// MARK: - The harness state

/// FUZZ_FILTER_TRACE=1: print every write with its error and the model's (to read what an input does).
private let tracing = getenv("FUZZ_FILTER_TRACE") != nil

private struct World {
    var dom0: Dom0
    var functions: [Function]
    let profile: KernelProfile
    var log: [String] = []

    var hasInterruptControl: Bool { profile != .pre5_6 }
    var globalPermissive: Bool { dom0.policy.globalPermissive }

    func fail(_ message: String) -> Never {
        let history = log.suffix(24).joined(separator: "\n  ")
        fatalError("filter [\(profile.rawValue)]: \(message)\n  steps:\n  \(history)")
    }

    // MARK: Interrupt type (spec §6.4, §6.5, §11), from the predicted hardware

    enum TypeAnswer { case none, intx, own, other }

    /// What `xen_pcibk_get_interrupt_type` answers for `own` (msi or msix) in this profile.
    func interruptType(_ f: Function, _ p: Prediction, own: FieldKind) -> TypeAnswer {
        let msiOn = f.msi != 0 && UInt16(p.read(f.msi + 2, 2)) & msiEnable != 0
        let msixOn = f.msix != 0 && UInt16(p.read(f.msix + 2, 2)) & msixEnable != 0
        let intxOn = UInt16(p.read(0x04, 2)) & cmdINTxDisable == 0
        switch profile {
        case .current:
            if !msiOn && !msixOn { return intxOn ? .intx : .none }
            if msiOn && msixOn { return .other }
            return (msiOn && own == .msiFlags) || (msixOn && own == .msixFlags) ? .own : .other
        case .maskall2022, .original2020:
            let count = (msiOn ? 1 : 0) + (msixOn ? 1 : 0) + (intxOn ? 1 : 0)
            if count == 0 { return .none }
            if count > 1 { return .other }
            if intxOn { return .intx }
            return (msiOn && own == .msiFlags) || (msixOn && own == .msixFlags) ? .own : .other
        case .v5_6:
            // NONE is 1 << 0 but "nothing enabled" comes back as 0, which matches nothing.
            let count = (msiOn ? 1 : 0) + (msixOn ? 1 : 0) + (intxOn ? 1 : 0)
            if count == 0 { return .other }
            if count > 1 { return .other }
            if intxOn { return .intx }
            return (msiOn && own == .msiFlags) || (msixOn && own == .msixFlags) ? .own : .other
        case .pre5_6:
            return .other
        }
    }

    // MARK: Field write models

    /// command_write (spec §5.2, §9). Returns the field's error.
    func commandWrite(_ f: inout Function, _ p: inout Prediction, value v0: UInt16, permissive: Bool) -> Int32 {
        let device = f.device
        var v = v0
        let writable = UInt16(p.writable[0x04]) | UInt16(p.writable[0x05]) << 8
        func setCommand(_ new: UInt16) {
            let old = UInt16(p.read(0x04, 2))
            let result = (old & ~writable) | (new & writable)
            p.bytes[0x04] = UInt8(result & 0xff)
            p.bytes[0x05] = UInt8(result >> 8)
        }
        var command: UInt16 { UInt16(p.read(0x04, 2)) }
        var enabled = device.isEnabled
        var busmaster = device.isBusmaster
        // 1. pci_enable_device / pci_disable_device.
        if !enabled, v & (cmdIO | cmdMemory) != 0 {
            if f.pm != 0 {
                let pmcsr = UInt16(p.read(f.pm + 4, 2))
                if pmcsr & pmcsrStateMask != 0 {
                    // Power to D0 first. From D3hot without No_Soft_Reset the function resets;
                    // the PCI core restores the BARs (pci_restore_bars), so only they are checked.
                    if pmcsr & pmcsrStateMask == 3, pmcsr & pmcsrNoSoftReset == 0 { p.anything = true }
                    p.release(f.pm + 4, 2, bits: UInt64(pmcsrStateMask))
                }
            }
            var decode: UInt16 = 0
            for index in 0..<6 {
                guard let bar = device.bars[index] else { continue }
                decode |= bar.kind.isIO ? cmdIO : cmdMemory
            }
            setCommand(command | decode)
            if device.identity.interruptPin != 0, !device.kernelMSIEnabled, !device.kernelMSIXEnabled {
                setCommand(command & ~cmdINTxDisable)
            }
            enabled = true
        } else if enabled, v & (cmdIO | cmdMemory) == 0 {
            setCommand(command & ~cmdMaster)
            busmaster = false
        }
        // 2. Bus master against the kernel's flag.
        if !busmaster, v & cmdMaster != 0 {
            setCommand(command | cmdMaster)
        } else if busmaster, v & cmdMaster == 0 {
            setCommand(command & ~cmdMaster)
        }
        // 3. MWI against the shadow; pci_set_mwi programs a 64-byte cache line first.
        if f.shadow & cmdInvalidate == 0, v & cmdInvalidate != 0 {
            if p.bytes[0x0c] != 16 { p.hardwareWrite(0x0c, 1, 16) }
            if p.bytes[0x0c] != 16 {
                v &= ~cmdInvalidate
            } else {
                setCommand(command | cmdInvalidate)
            }
        } else if f.shadow & cmdInvalidate != 0, v & cmdInvalidate == 0 {
            setCommand(command & ~cmdInvalidate)
        }
        // 4. INTx, only with allow_interrupt_control and a change against the shadow.
        if hasInterruptControl, f.allowInterruptControl, (v ^ f.shadow) & cmdINTxDisable != 0 {
            if v & cmdINTxDisable != 0 {
                setCommand(command | cmdINTxDisable)
            } else if profile == .current {
                setCommand(command & ~cmdINTxDisable)
            } else {
                switch interruptType(f, p, own: .command) {
                case .none: setCommand(command & ~cmdINTxDisable)
                case .intx: break
                case .own, .other: return accessDenied  // the shadow keeps its value
                }
            }
        }
        // 5. The shadow.
        f.shadow = v
        // 6, 7. Permissive applies the guest bits.
        if permissive, command != v {
            setCommand((v & commandGuestBits) | (command & ~commandGuestBits))
        }
        return 0
    }

    /// msi_msix_flags_write (spec §6.3, §6.5).
    func flagsWrite(_ f: Function, _ p: inout Prediction, kind: FieldKind, value new: UInt16, permissive: Bool) -> Int32 {
        let offset = (kind == .msiFlags ? f.msi : f.msix) + 2
        if permissive {
            p.hardwareWrite(offset, 2, UInt32(new))
            p.release(offset, 2)  // hardware side effects (MSI multiple-message clamp)
            return 0
        }
        let old = UInt16(p.read(offset, 2))
        if new == old { return 0 }
        let allowed: UInt16
        if kind == .msiFlags {
            allowed = msiEnable
        } else {
            allowed = (profile == .current || profile == .maskall2022) ? msixEnable | msixMaskAll : msixEnable
        }
        if !f.allowInterruptControl || (new ^ old) & ~allowed != 0 { return accessDenied }
        let enableBit = kind == .msiFlags ? msiEnable : msixEnable
        if new & enableBit != 0 {
            switch interruptType(f, p, own: kind) {
            case .none, .own: break
            case .intx: if profile != .current { return accessDenied }
            case .other: return accessDenied
            }
        }
        p.hardwareWrite(offset, 2, UInt32(new))
        return 0
    }

    /// pm_ctrl_write (spec §6.1, §9).
    func pmcsrWrite(_ f: Function, _ p: inout Prediction, value new: UInt16) -> Int32 {
        let offset = f.pm + 4
        let old = UInt16(p.read(offset, 2))
        if old & pmcsrOKBits != new & pmcsrOKBits {
            p.hardwareWrite(offset, 2, UInt32((old & ~pmcsrOKBits) | (new & pmcsrOKBits)))
        }
        let requested = new & pmcsrStateMask
        let current = UInt16(p.read(offset, 2)) & pmcsrStateMask
        if requested == current { return 0 }
        let pmc = UInt16(p.read(f.pm + 2, 2))
        if (requested == 1 && pmc & pmcD1 == 0) || (requested == 2 && pmc & pmcD2 == 0) { return accessDenied }
        if current == 3, requested == 0, UInt16(p.read(offset, 2)) & pmcsrNoSoftReset == 0 { p.anything = true }
        // pci_set_power_state writes the state bits (whether PME_Status is written back as 1,
        // clearing it, is the PCI core's business: left open).
        let state = UInt16(p.read(offset, 2))
        p.hardwareWrite(offset, 2, UInt32((state & ~(pmcsrStateMask | 0x8000)) | requested))
        p.release(offset + 1, 1, bits: 0x80)
        return 0
    }

    // MARK: Steps

    mutating func guestWrite(_ index: Int, offset: Int, size: Int, value: UInt32, viaOp: Bool) {
        var f = functions[index]
        let permissive = f.permissive || globalPermissive
        var p = Prediction(f.device)
        let befores = functions.map { $0.device.config.bytes }
        var expected: Int32? = 0
        var touchesBAR = false
        let valid = (size == 1 || size == 2 || size == 4) && offset & (size - 1) == 0
        if !valid {
            expected = invalidOffset
        } else {
            var handled = false
            for field in f.fields where field.overlaps(offset, size) {
                handled = true
                let shift = offset - field.offset
                let current: UInt32
                switch field.kind {
                case .command:
                    let hardware = UInt16(p.read(0x04, 2))
                    current = UInt32((hardware & commandGuestBits) | (f.shadow & ~commandGuestBits))
                default:
                    current = p.read(field.offset, field.size)
                }
                let merged = merge(field: current, written: value, accessSize: size, shift: shift) & sizeMask(field.size)
                var error: Int32 = 0
                switch field.kind {
                case .ignored:
                    break
                case .cacheLine:
                    p.hardwareWrite(0x0c, 1, merged)
                case .bist:
                    let hardware = p.read(0x0f, 1)
                    if merged == 0x40 || merged & ~0x40 == hardware & ~0x40 {
                        p.hardwareWrite(0x0f, 1, merged)
                        p.release(0x0f, 1)  // a started self-test completes
                    }
                case .command:
                    error = commandWrite(&f, &p, value: UInt16(truncatingIfNeeded: merged), permissive: permissive)
                case .bar, .rom:
                    touchesBAR = true
                    p.release(field.offset, 4)  // checked below: unchanged, or restored to the bind value
                case .pmcsr:
                    error = pmcsrWrite(f, &p, value: UInt16(truncatingIfNeeded: merged))
                case .vpdAddress:
                    if UInt16(truncatingIfNeeded: merged) & vpdFlag != 0 {
                        error = accessDenied
                    } else {
                        p.hardwareWrite(field.offset, 2, merged)
                        p.release(field.offset, 6)  // the VPD read fills the data register, sets F
                    }
                case .msiFlags, .msixFlags:
                    error = flagsWrite(f, &p, kind: field.kind, value: UInt16(truncatingIfNeeded: merged), permissive: permissive)
                case .quirk:
                    p.anything = true
                    p.rawHardware = true
                    expected = nil
                }
                if expected != nil { expected = error }
            }
            if !handled && permissive {
                // Raw to hardware: any side effect the hardware has.
                p.anything = true
                p.rawHardware = true
                expected = (offset < 0 || offset > 4096 - size) ? einval : 0
            }
        }
        let description = "write \(f.address) off \(offset) size \(size) value 0x\(String(value, radix: 16))"
            + (permissive ? " permissive" : "") + (f.allowInterruptControl ? " aic" : "") + (viaOp ? " (op)" : "")
        log.append(description)
        let error: Int32
        if viaOp {
            let result = perform(index, command: 1, offset: Int32(truncatingIfNeeded: offset), size: Int32(truncatingIfNeeded: size),
                                 value: value)
            error = result.error
        } else {
            error = dom0.guestWrite(f.address, offset: offset, size: size, value: value).error
        }
        if tracing { print("\(description) -> \(error) (model \(expected.map { String($0) } ?? "open"))") }
        if let expected, error != expected { fail("\(description): error \(error), model \(expected)") }
        functions[index] = f
        check(index, p, befores: befores, what: description, barsMayBeRestored: touchesBAR)
    }

    mutating func guestRead(_ index: Int, offset: Int, size: Int, viaOp: Bool) {
        let f = functions[index]
        let befores = functions.map { $0.device.config.bytes }
        let p = Prediction(f.device)
        let description = "read \(f.address) off \(offset) size \(size)" + (viaOp ? " (op)" : "")
        log.append(description)
        let verdict: (value: UInt32, error: Int32)
        if viaOp {
            let result = perform(index, command: 0, offset: Int32(truncatingIfNeeded: offset), size: Int32(truncatingIfNeeded: size), value: 0)
            verdict = (result.value, result.error)
        } else {
            let answer = dom0.guestRead(f.address, offset: offset, size: size)
            verdict = (answer.value, answer.error)
        }
        let valid = (size == 1 || size == 2 || size == 4) && offset & (size - 1) == 0
        if !valid {
            if verdict.error != invalidOffset || verdict.value != 0 { fail("\(description): \(verdict), model (0, -2)") }
        } else if !f.fields.contains(where: { $0.overlaps(offset, size) }) {
            let outside = offset < 0 || offset > 4096 - size
            let expected: Int32 = outside ? einval : 0
            if verdict.error != expected { fail("\(description): error \(verdict.error), model \(expected)") }
            if !outside, verdict.value & sizeMask(size) != p.read(offset, size) {
                fail("\(description): value 0x\(String(verdict.value, radix: 16)), hardware 0x\(String(p.read(offset, size), radix: 16))")
            }
        } else if !f.quirks.contains(where: { $0.overlaps(offset, size) }) {
            // (A quirk field may reach past 4095, where its hardware read fails.)
            if verdict.error != 0 { fail("\(description): error \(verdict.error), model 0") }
            if offset == 0x04, size == 2 {
                let hardware = UInt16(p.read(0x04, 2))
                let model = UInt32((hardware & commandGuestBits) | (f.shadow & ~commandGuestBits))
                if verdict.value != model { fail("\(description): command reads 0x\(String(verdict.value, radix: 16)), model 0x\(String(model, radix: 16))") }
            }
        }
        check(index, p, befores: befores, what: description, barsMayBeRestored: false)
    }

    /// A PV op through the frontend path (the device must be attached for the lookup to work).
    mutating func perform(_ index: Int, command: Int32, offset: Int32 = 0, size: Int32 = 0, value: UInt32 = 0,
                          entries: [PCIOperation.MSIXEntry] = []) -> PCIOperationResult {
        let f = functions[index]
        let target = f.virtual ?? f.address
        let op = PCIOperation(command: command, domain: dom0.passthroughBackend ? target.domain : 0,
                              bus: dom0.passthroughBackend ? UInt32(target.bus) : 0, devfn: UInt32(target.devfn),
                              offset: offset, size: size, value: value, entries: entries)
        // Not exported: ask as a frontend domain that has nothing; the lookup must fail.
        let result = dom0.perform(op, frontend: f.frontend ?? 0x7fff_ffff)
        if f.frontend == nil, result.error != deviceNotFound {
            fail("op \(command) on unexported \(f.address): error \(result.error), model -1")
        }
        return result
    }

    mutating func interruptOp(_ index: Int, command: Int32, vectors: UInt32, entries: [PCIOperation.MSIXEntry]) {
        let f = functions[index]
        let befores = functions.map { $0.device.config.bytes }
        var p = Prediction(f.device)
        let device = f.device
        let description = "op \(command) \(f.address) nvec \(vectors) entries \(entries.count)"
        log.append(description)
        let exported = f.frontend != nil
        let kernelMSI = device.kernelMSIEnabled, kernelMSIX = device.kernelMSIXEnabled
        let memoryDecode = device.command & cmdMemory != 0
        let result = perform(index, command: command, value: vectors, entries: entries)
        guard exported else {
            if result.error == deviceNotFound { check(index, p, befores: befores, what: description, barsMayBeRestored: false) }
            return
        }
        var expected: Int32?
        var changes = true
        switch command {
        case 2:
            if kernelMSI || kernelMSIX || f.msi == 0 { expected = operationFailed; changes = false }
        case 3, 5:
            expected = 0
        case 4:
            if vectors > 128 { expected = einval; changes = false }
            else if kernelMSIX { expected = -114; changes = false }
            else if kernelMSI || !memoryDecode { expected = -6; changes = false }
        default:
            expected = notImplemented
            changes = false
        }
        if let expected, result.error != expected { fail("\(description): error \(result.error), model \(expected)") }
        if changes {
            // The PCI core's MSI code: the flags and INTx (pci_intx) of this function.
            if f.msi != 0 { p.release(f.msi + 2, 2) }
            if f.msix != 0 { p.release(f.msix + 2, 2) }
            p.release(0x05, 1, bits: UInt64(cmdINTxDisable >> 8))
        }
        check(index, p, befores: befores, what: description, barsMayBeRestored: false)
    }

    // MARK: The checks after every step

    func check(_ index: Int, _ p: Prediction, befores: [[UInt8]], what: String, barsMayBeRestored: Bool) {
        for (other, function) in functions.enumerated() where other != index {
            if !sameBytes(function.device.config.bytes, befores[other]) { fail("\(what): \(function.address) changed") }
        }
        let f = functions[index]
        let after = f.device.config.bytes
        let before = befores[index]
        if !p.anything, !sameBytes(after, p.bytes) {
            for position in 0..<after.count where (after[position] ^ p.bytes[position]) & ~p.free[position] != 0 {
                fail("\(what): hardware byte 0x\(String(position, radix: 16)) is 0x\(String(after[position], radix: 16)), "
                     + "was 0x\(String(before[position], radix: 16)), model 0x\(String(p.bytes[position], radix: 16)) "
                     + "(free bits 0x\(String(p.free[position], radix: 16)))")
            }
        }
        if !p.rawHardware {
            for register in f.barRegisters {
                let now = Array(after[register..<register + 4]), then = Array(before[register..<register + 4])
                let bound = Array(f.afterBind[register..<register + 4])
                if now != then && !(barsMayBeRestored && now == bound) {
                    fail("\(what): BAR/ROM register 0x\(String(register, radix: 16)) moved from \(then) to \(now) (bind \(bound))")
                }
            }
            if before[0x30] & 1 == 0, after[0x30] & 1 != 0 { fail("\(what): the ROM was enabled") }
        }
        let data = dom0.deviceData[f.address]
        guard let data else { fail("\(what): \(f.address) lost its pciback data") }
        if data.permissive != f.permissive { fail("\(what): permissive \(data.permissive), model \(f.permissive)") }
        if data.allowInterruptControl != f.allowInterruptControl {
            fail("\(what): allow_interrupt_control \(data.allowInterruptControl), model \(f.allowInterruptControl)")
        }
        if data.commandShadow != f.shadow {
            fail("\(what): command shadow 0x\(String(data.commandShadow, radix: 16)), model 0x\(String(f.shadow, radix: 16))")
        }
        let quirks = data.fields.filter(\.isDynamic).map { [$0.offset, $0.size] }
        if quirks != f.quirks.map({ [$0.offset, $0.size] }) { fail("\(what): quirk fields \(quirks), model \(f.quirks)") }
    }

    // MARK: sysfs and frontend steps

    mutating func setPermissive(_ index: Int) {
        log.append("permissive \(functions[index].address)")
        let befores = functions.map { $0.device.config.bytes }
        do { try dom0.setPermissive(input: functions[index].name + [0x0a]) } catch { fail("permissive store failed: \(error)") }
        functions[index].permissive = true
        check(index, Prediction(functions[index].device), befores: befores, what: "permissive", barsMayBeRestored: false)
    }

    mutating func setAllowInterruptControl(_ index: Int) {
        log.append("allow_interrupt_control \(functions[index].address)")
        let befores = functions.map { $0.device.config.bytes }
        let succeeded = (try? dom0.setAllowInterruptControl(input: functions[index].name + [0x0a])) != nil
        if succeeded != hasInterruptControl { fail("allow_interrupt_control store: \(succeeded), model \(hasInterruptControl)") }
        if succeeded { functions[index].allowInterruptControl = true }
        check(index, Prediction(functions[index].device), befores: befores, what: "allow_interrupt_control", barsMayBeRestored: false)
    }

    mutating func addQuirk(_ index: Int, register: Int, size: Int, mask: UInt32) {
        let f = functions[index]
        let text = "\(f.address)-\(String(register, radix: 16)):\(String(size, radix: 16)):\(String(mask, radix: 16))\n"
        log.append("quirk \(text.dropLast())")
        let befores = functions.map { $0.device.config.bytes }
        var expected: Errno?
        if register > 0xfff {
            expected = .invalidArgument
        } else if size < 4, UInt64(mask) >> (8 * UInt64(size)) != 0 {
            expected = .invalidArgument
        } else if size != 1 && size != 2 && size != 4 {
            expected = .invalidArgument
        }
        var actual: Errno?
        do { try dom0.addQuirk(input: Array(text.utf8)) } catch { actual = error }
        if actual != expected { fail("quirk \(text.dropLast()): \(String(describing: actual)), model \(String(describing: expected))") }
        if expected == nil, !f.fields.contains(where: { $0.offset == register }) {
            functions[index].quirks.append(Field(offset: register, size: size, kind: .quirk))
        }
        check(index, Prediction(f.device), befores: befores, what: "quirk", barsMayBeRestored: false)
    }

    mutating func attach(_ index: Int, domain: UInt32) {
        let f = functions[index]
        log.append("attach \(f.address) to \(domain)")
        let befores = functions.map { $0.device.config.bytes }
        let bridgeClass = f.device.config.bytes[0x0b] == 0x06
        let expectSuccess = f.frontend == nil && (dom0.passthroughBackend || !bridgeClass)
        do {
            let virtual = try dom0.attach(domain: domain, address: f.address)
            if !expectSuccess { fail("attach \(f.address) succeeded, model refuses") }
            functions[index].frontend = domain
            functions[index].virtual = virtual
        } catch {
            if expectSuccess { fail("attach \(f.address) failed: \(error)") }
        }
        check(index, Prediction(f.device), befores: befores, what: "attach", barsMayBeRestored: false)
    }

    mutating func detach(_ index: Int, domain: UInt32) {
        let f = functions[index]
        log.append("detach \(f.address) from \(domain)")
        let befores = functions.map { $0.device.config.bytes }
        let expectSuccess = f.frontend == domain
        do {
            try dom0.detach(domain: domain, address: f.address)
            if !expectSuccess { fail("detach \(f.address) from \(domain) succeeded, model refuses") }
        } catch {
            if expectSuccess { fail("detach \(f.address) failed: \(error)") }
        }
        guard expectSuccess else {
            check(index, Prediction(f.device), befores: befores, what: "detach (refused)", barsMayBeRestored: false)
            return
        }
        // Release (spec §3.3): the bind-time state comes back; quirks and
        // allow_interrupt_control go; permissive and the command shadow stay.
        functions[index].frontend = nil
        functions[index].virtual = nil
        functions[index].quirks = []
        functions[index].allowInterruptControl = false
        var p = Prediction(f.device)
        p.bytes = befores[index]
        for position in 0..<p.bytes.count {
            let mask = p.writable[position]
            p.bytes[position] = (p.bytes[position] & ~mask) | (f.afterBind[position] & mask)
            p.free[position] = p.writeOneClear[position]  // status bits are not restored
        }
        check(index, p, befores: befores.enumerated().map { $0.offset == index ? f.afterBind : $0.element },
              what: "detach", barsMayBeRestored: true)
    }
}

// MARK: - Setup

private func name(_ address: PCIAddress) -> [UInt8] { Array("\(address)".utf8) }

private func makeWorld(profile: KernelProfile, passthrough: Bool) -> World {
    var dom0: Dom0
    do {
        dom0 = try Dom0(machine: BuiltinMachine.make(), policy: FilterPolicy(profile: profile), passthrough: passthrough)
    } catch { fatalError("filter: Dom0 init failed: \(error)") }
    var functions: [Function] = []
    for address in dom0.machine.order {
        guard let device = dom0.device(address), device.config.bytes[0x0e] & 0x7f == 0 else { continue }
        let bdf = name(address)
        do {
            if let driver = dom0.driverName(of: address), driver != "pciback" {
                try dom0.unbind(driver: driver, input: bdf + [0x0a])
            }
            try dom0.newSlot(input: bdf + [0x0a])
            let shadow = device.command  // command_init reads hardware before pci_enable_device
            try dom0.bind(driver: "pciback", input: bdf + [0x0a])
            let caps = capabilities(device.config.bytes)
            functions.append(Function(
                address: address, name: bdf, device: device, pm: caps.pm, vpd: caps.vpd, msi: caps.msi, msix: caps.msix,
                builtinFields: builtinFields(pm: caps.pm, vpd: caps.vpd, msi: caps.msi, msix: caps.msix,
                                             interruptControl: profile != .pre5_6),
                shadow: shadow, afterBind: device.config.bytes, barRegisters: [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30]))
        } catch {
            fatalError("filter: binding \(address) to pciback failed: \(error)")
        }
    }
    return World(dom0: dom0, functions: functions, profile: profile)
}

// MARK: - Starting worlds, built once and copied
//
// Building a world (BuiltinMachine.make, Dom0's boot, unbind/new_slot/bind of every function)
// took about 80% of each execution, so each of the ten (profile, passthrough) worlds is built
// once and every input starts from a deep copy of it. Everything in a World is a value except
// the EmulatedDevice instances (a class): a plain copy would share the devices, and one input's
// writes would leak into the next. The copy therefore gets new devices: EmulatedDevice.clone
// copies the hardware (config bytes and masks, BARs, VPD, ...), and the PCI core's state that
// clone starts afresh (pci_save_state's buffer, enable count, bus mastering) is put back through
// the core's own operations. Whether that reproduces the template exactly is not assumed: at
// start-up each copy is compared with its template over every stored property, private ones
// included (Mirror), and must share no object with it. Should that ever fail (a new field the
// copy does not know about), the target says so on stderr and builds that world afresh for
// every input, as it did before. FUZZ_FILTER_REBUILD=1 forces the rebuild (to compare speed).

/// What a copy must redo for one function, read once from the template.
private struct CoreState {
    let address: PCIAddress
    /// pci_save_state was called. The copy saves its config as cloned, which matches the
    /// template's buffer after bind (the start-up comparison checks it).
    let saved: Bool
    /// Upstream bridges stay enabled, with bus mastering, after their children's enable.
    let enableCount: Int
    let busmaster: Bool
}

private struct Template {
    let world: World
    let core: [CoreState]
    /// false: the copy was not exact; every input rebuilds the world.
    let copyable: Bool
}

private func coreStates(_ world: World) -> [CoreState] {
    world.dom0.machine.order.map { address in
        let device = world.dom0.machine[address]!
        let saved = Mirror(reflecting: device).children.contains { $0.label == "savedState" && !isNil($0.value) }
        return CoreState(address: address, saved: saved, enableCount: device.enableCount, busmaster: device.isBusmaster)
    }
}

private func isNil(_ value: Any) -> Bool {
    let mirror = Mirror(reflecting: value)
    return mirror.displayStyle == .optional && mirror.children.isEmpty
}

/// A copy of `template.world` that shares no EmulatedDevice with it.
private func copyWorld(_ template: Template) -> World {
    var world = template.world
    let machine = template.world.dom0.machine
    var copies: [EmulatedDevice] = []
    for state in template.core {
        let original = machine[state.address]!
        let copy = original.clone(at: state.address, irq: original.irq, bootDriver: original.bootDriver)
        copy.faults = original.faults
        copy.msiIRQ = original.msiIRQ
        if state.saved { copy.saveState() }
        copies.append(copy)
    }
    // A new Machine links each copy to its upstream bridge (the copy's, not the template's).
    world.dom0.machine = Machine(name: machine.name, devices: copies)
    for state in template.core {
        let copy = world.dom0.machine[state.address]!
        for _ in 0..<state.enableCount { try? copy.enableDevice() }
        if state.busmaster { copy.setBusMaster(true) }
    }
    for index in world.functions.indices {
        world.functions[index].device = world.dom0.machine[world.functions[index].address]!
    }
    return world
}

/// A structural dump of a value graph: every stored property (private ones included), dictionary
/// and set entries in sorted order, each class instance by its order of first appearance (two
/// graphs with the same shape and values dump the same). `objects` collects the instances seen.
private struct GraphDump {
    var objects: [ObjectIdentifier: Int] = [:]
    var text = ""

    mutating func dump(_ value: Any) {
        if let bytes = value as? [UInt8] {  // config spaces: hex, as Array's description is slow
            text += "bytes:"
            text += String(unsafeUninitializedCapacity: 2 * bytes.count) { buffer in
                let digits = Array("0123456789abcdef".utf8)
                for (index, byte) in bytes.enumerated() {
                    buffer[2 * index] = digits[Int(byte >> 4)]
                    buffer[2 * index + 1] = digits[Int(byte & 0xf)]
                }
                return 2 * bytes.count
            }
            return
        }
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .class?:
            let id = ObjectIdentifier(value as AnyObject)
            if let ordinal = objects[id] {
                text += "@\(ordinal)"
                return
            }
            objects[id] = objects.count
            text += "\(type(of: value))#\(objects.count - 1){"
            var level: Mirror? = mirror
            while let current = level {
                dumpChildren(current)
                level = current.superclassMirror
            }
            text += "}"
        case .dictionary?, .set?:
            // Storage order depends on history; the entries' own dumps give a stable order.
            var entries: [(key: String, value: Any)] = []
            for child in mirror.children {
                let parts = Array(Mirror(reflecting: child.value).children)
                var key = GraphDump()
                key.dump(mirror.displayStyle == .set ? child.value : parts[0].value)
                entries.append((key.text, mirror.displayStyle == .set ? () : parts[1].value))
            }
            text += "["
            for entry in entries.sorted(by: { $0.key < $1.key }) {
                text += entry.key + ":"
                dump(entry.value)
                text += ","
            }
            text += "]"
        default:
            if mirror.children.isEmpty, mirror.displayStyle != .optional {
                text += "\(type(of: value))(\(String(describing: value)))"
                return
            }
            text += "\(type(of: value)){"
            dumpChildren(mirror)
            text += "}"
        }
    }

    private mutating func dumpChildren(_ mirror: Mirror) {
        for child in mirror.children {
            text += (child.label ?? "_") + "="
            dump(child.value)
            text += ";"
        }
    }
}

private func makeTemplate(profile: KernelProfile, passthrough: Bool) -> Template {
    let world = makeWorld(profile: profile, passthrough: passthrough)
    let core = coreStates(world)
    if getenv("FUZZ_FILTER_REBUILD") != nil { return Template(world: world, core: core, copyable: false) }
    let copy = copyWorld(Template(world: world, core: core, copyable: true))
    var original = GraphDump(), copied = GraphDump()
    original.dump(world)
    copied.dump(copy)
    let shared = Set(original.objects.keys).intersection(copied.objects.keys)
    let exact = original.text == copied.text && shared.isEmpty && !original.objects.isEmpty
    if !exact {
        let difference = zip(original.text, copied.text).prefix { $0 == $1 }.count
        let context = { (text: String) in String(text.dropFirst(max(0, difference - 120)).prefix(240)) }
        let message = """
            fuzz-filter: the copied \(profile.rawValue)/\(passthrough) world is not an exact copy \
            (\(shared.count) shared objects; first difference at \(difference):
              template: \(context(original.text))
              copy:     \(context(copied.text)));
            building it afresh for every input instead (slower, same checks)

            """
        _ = message.withCString { write(2, $0, strlen($0)) }
    }
    return Template(world: world, core: core, copyable: exact)
}

/// The ten starting worlds (every profile, both backends), built on first use.
nonisolated(unsafe) private let templates: [Template] = profiles.flatMap { profile in
    [false, true].map { makeTemplate(profile: profile, passthrough: $0) }
}

private func startingWorld(profile: KernelProfile, passthrough: Bool) -> World {
    let template = templates[profiles.firstIndex(of: profile)! * 2 + (passthrough ? 1 : 0)]
    return template.copyable ? copyWorld(template) : makeWorld(profile: profile, passthrough: passthrough)
}

// MARK: - Input decoding

private let extremeOffsets: [Int] = [Int.min, Int.max, Int.max - 3, Int.min + 4, Int(Int32.max), Int(Int32.min),
                                     Int(Int32.max) - 3, 4092, 4094, 4095, 4096, 4100, 252, 254, 255, 256, -1, -2, -4]
private let sizes: [Int] = [1, 2, 4, 1, 2, 4, 1, 2, 4, 0, 3, 8, -1, -4, Int.max, Int.min]

private func access(_ r: inout Reader, _ f: Function) -> (offset: Int, size: Int) {
    let size = sizes[Int(r.byte()) % sizes.count]
    let mode = r.byte()
    var offset: Int
    switch mode % 8 {
    case 0, 1, 2, 3:
        let fields = f.fields
        let field = fields[Int(r.byte()) % fields.count]
        offset = field.offset + Int(mode >> 3 & 7) - 2
        if mode & 0x80 == 0, size == 1 || size == 2 || size == 4 { offset &= ~(size - 1) }
    case 4: offset = Int(r.u16() % 0x1000)
    case 5: offset = Int(r.u16())
    case 6: offset = -Int(r.byte()) - 1
    default: offset = extremeOffsets[Int(r.byte()) % extremeOffsets.count]
    }
    return (offset, size)
}

private let profiles: [KernelProfile] = [.current, .maskall2022, .original2020, .v5_6, .pre5_6]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var r = Reader(data: UnsafeBufferPointer(start: data, count: size))
    let header = r.byte()
    let profile = profiles[Int(header & 7) % profiles.count]
    var world = startingWorld(profile: profile, passthrough: header & 0x08 != 0)
    if header & 0x10 != 0 { world.dom0.policy.globalPermissive = true }
    var steps = 0
    while !r.isDone, steps < 64 {
        steps += 1
        let op = r.byte()
        let index = Int(r.byte()) % world.functions.count
        switch op % 16 {
        case 0, 1, 2, 3, 4, 5:
            var (offset, size) = access(&r, world.functions[index])
            let value: UInt32 = op & 0x80 != 0 ? r.u32() : UInt32(r.u16())
            let viaOp = op & 0x40 != 0 && world.functions[index].frontend != nil
            if viaOp {  // xen_pci_op carries 32-bit offset and size
                offset = Int(Int32(truncatingIfNeeded: offset))
                size = Int(Int32(truncatingIfNeeded: size))
            }
            world.guestWrite(index, offset: offset, size: size, value: value, viaOp: viaOp)
        case 6, 7:
            var (offset, size) = access(&r, world.functions[index])
            let viaOp = op & 0x40 != 0 && world.functions[index].frontend != nil
            if viaOp {
                offset = Int(Int32(truncatingIfNeeded: offset))
                size = Int(Int32(truncatingIfNeeded: size))
            }
            world.guestRead(index, offset: offset, size: size, viaOp: viaOp)
        case 8:
            world.setPermissive(index)
        case 9:
            world.log.append("global permissive \(!world.globalPermissive)")
            world.dom0.policy.globalPermissive.toggle()
        case 10, 11:
            world.setAllowInterruptControl(index)
        case 12:
            world.attach(index, domain: op & 0x80 != 0 ? 2 : 1)
        case 13:
            world.detach(index, domain: op & 0x80 != 0 ? 2 : (world.functions[index].frontend ?? 1))
        case 14:
            let command = Int32(op >> 4 & 7) + 1  // 1 ... 8: enable/disable MSI/MSI-X and unknown ops
            let vectorsByte = r.byte()
            let vectors: UInt32 = vectorsByte & 0x80 != 0 ? r.u32() : UInt32(vectorsByte & 0x3f)
            let count = Int(r.byte() % 40)
            var entries: [PCIOperation.MSIXEntry] = []
            for _ in 0..<count { entries.append(PCIOperation.MSIXEntry(entry: UInt16(r.byte() % 48), vector: 0)) }
            world.interruptOp(index, command: command == 1 ? 2 : command, vectors: vectors, entries: entries)
        default:
            let register = Int(r.u16() % 0x1100)
            let sizes = [1, 2, 4, 0, 3, 5, 8, 0x10]
            let size = sizes[Int(r.byte()) % sizes.count]
            let mask = r.byte() & 1 != 0 ? r.u32() : UInt32(r.byte())
            world.addQuirk(index, register: register, size: size, mask: mask)
        }
    }
    return 0
}
