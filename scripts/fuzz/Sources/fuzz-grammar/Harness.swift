// Fuzz target `grammar`: pciback's input grammars on arbitrary bytes, checked against a
// reference written here from spec §1.3, §1.9 and §2 (the kernel's vsscanf and the three
// callers str_to_slot, str_to_quirk and pcistub_init's hide loop). The two must agree on every
// input: accept or reject, and the parsed values.
import PCIBackFS

// MARK: - Reference vsscanf (only what the grammars use)

/// The kernel's ctype isspace: \t \n \v \f \r, space, and 0xa0 (Latin-1 NBSP in lib/ctype.c).
private func referenceIsSpace(_ c: UInt8) -> Bool {
    c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0b || c == 0x0c || c == 0x0d || c == 0xa0
}

private func referenceHexValue(_ c: UInt8) -> UInt64? {
    switch c {
    case 0x30...0x39: return UInt64(c - 0x30)
    case 0x41...0x46: return UInt64(c - 0x41 + 10)
    case 0x61...0x66: return UInt64(c - 0x61 + 10)
    default: return nil
    }
}

/// One `sscanf(buf, format, ...)`: returns the converted `%x` values (as `int`s) and what `%n`
/// stored, if it was reached. `buffer` is the C string (it ends at its first NUL).
private func referenceScan(_ buffer: [UInt8], _ format: String) -> (values: [Int32], count: Int?) {
    let fmt = Array(format.utf8)
    var f = 0
    var s = 0
    var values: [Int32] = []
    var count: Int?
    func ch(_ i: Int) -> UInt8 { i < buffer.count ? buffer[i] : 0 }
    while f < fmt.count {
        let c = fmt[f]
        if referenceIsSpace(c) {
            // A format space: skip the rest of the format's spaces and all input whitespace.
            while f < fmt.count, referenceIsSpace(fmt[f]) { f += 1 }
            while referenceIsSpace(ch(s)) { s += 1 }
            continue
        }
        if c != UInt8(ascii: "%") {
            // A literal must match exactly (the input's NUL never matches).
            if ch(s) != c { break }
            f += 1
            s += 1
            continue
        }
        let conversion = fmt[f + 1]
        f += 2
        if conversion == UInt8(ascii: "n") {
            count = s
            continue
        }
        precondition(conversion == UInt8(ascii: "x"))
        if ch(s) == 0 { break }
        while referenceIsSpace(ch(s)) { s += 1 }
        guard referenceHexValue(ch(s)) != nil else { break }
        // _parse_integer_fixup_radix: "0x"/"0X" is skipped even with no digit after it.
        if ch(s) == UInt8(ascii: "0"), ch(s + 1) == UInt8(ascii: "x") || ch(s + 1) == UInt8(ascii: "X") { s += 2 }
        var value: UInt64 = 0
        while let digit = referenceHexValue(ch(s)) {
            value = value &* 16 &+ digit
            s += 1
        }
        values.append(Int32(truncatingIfNeeded: UInt32(truncatingIfNeeded: value)))
    }
    return (values, count)
}

private func cString(_ bytes: [UInt8]) -> [UInt8] {
    if let nul = bytes.firstIndex(of: 0) { return Array(bytes[..<nul]) }
    return bytes
}

// MARK: - Reference callers

private typealias Slot = (Int32, Int32, Int32, Int32)

/// str_to_slot. nil: -EINVAL.
private func referenceSlot(_ raw: [UInt8]) -> Slot? {
    let buf = cString(raw)
    var parsed = 0
    func store(_ r: (values: [Int32], count: Int?), into targets: [WritableKeyPath<Box, Int32>], _ box: inout Box) {
        for (index, value) in r.values.enumerated() where index < targets.count { box[keyPath: targets[index]] = value }
        if let n = r.count { parsed = n }
    }
    var box = Box()
    func done() -> Bool { parsed != 0 && parsed >= buf.count }

    let first = referenceScan(buf, " %x:%x:%x.%x %n")
    store(first, into: [\.domain, \.bus, \.slot, \.function], &box)
    switch first.values.count {
    case 3:
        box.function = -1
        store(referenceScan(buf, " %x:%x:%x.* %n"), into: [\.domain, \.bus, \.slot], &box)
    case 2:
        box.slot = -1
        box.function = -1
        store(referenceScan(buf, " %x:%x:*.* %n"), into: [\.domain, \.bus], &box)
    default: break
    }
    if done() { return (box.domain, box.bus, box.slot, box.function) }

    box.domain = 0
    let second = referenceScan(buf, " %x:%x.%x %n")
    store(second, into: [\.bus, \.slot, \.function], &box)
    switch second.values.count {
    case 2:
        box.function = -1
        store(referenceScan(buf, " %x:%x.* %n"), into: [\.bus, \.slot], &box)
    case 1:
        box.slot = -1
        box.function = -1
        store(referenceScan(buf, " %x:*.* %n"), into: [\.bus], &box)
    default: break
    }
    if done() { return (box.domain, box.bus, box.slot, box.function) }
    return nil
}

private struct Box {
    var domain: Int32 = 0, bus: Int32 = 0, slot: Int32 = 0, function: Int32 = 0
    var register: Int32 = 0, size: Int32 = 0, mask: Int32 = 0
}

/// str_to_quirk. nil: -EINVAL.
private func referenceQuirk(_ raw: [UInt8]) -> Box? {
    let buf = cString(raw)
    var parsed = 0
    var box = Box()
    let first = referenceScan(buf, " %x:%x:%x.%x-%x:%x:%x %n")
    let firstTargets: [WritableKeyPath<Box, Int32>] = [\.domain, \.bus, \.slot, \.function, \.register, \.size, \.mask]
    for (index, value) in first.values.enumerated() { box[keyPath: firstTargets[index]] = value }
    if let n = first.count { parsed = n }
    if parsed != 0 && parsed >= buf.count { return box }
    box.domain = 0
    let second = referenceScan(buf, " %x:%x.%x-%x:%x:%x %n")
    let secondTargets: [WritableKeyPath<Box, Int32>] = [\.bus, \.slot, \.function, \.register, \.size, \.mask]
    for (index, value) in second.values.enumerated() { box[keyPath: secondTargets[index]] = value }
    if let n = second.count { parsed = n }
    if parsed != 0 && parsed >= buf.count { return box }
    return nil
}

/// pcistub_init's loop over `hide`: the groups, or the offset of the group that failed.
private func referenceHide(_ buf: [UInt8]) -> Result<[Slot], HideFailure> {
    var position = 0
    var slots: [Slot] = []
    while position < buf.count {
        let rest = Array(buf[position...])
        var parsed = 0
        var box = Box()
        func take(_ r: (values: [Int32], count: Int?), _ targets: [WritableKeyPath<Box, Int32>]) {
            for (index, value) in r.values.enumerated() where index < targets.count { box[keyPath: targets[index]] = value }
            if let n = r.count { parsed = n }
        }
        let first = referenceScan(rest, " (%x:%x:%x.%x) %n")
        take(first, [\.domain, \.bus, \.slot, \.function])
        switch first.values.count {
        case 3:
            box.function = -1
            take(referenceScan(rest, " (%x:%x:%x.*) %n"), [\.domain, \.bus, \.slot])
        case 2:
            box.slot = -1
            box.function = -1
            take(referenceScan(rest, " (%x:%x:*.*) %n"), [\.domain, \.bus])
        default: break
        }
        if parsed == 0 {
            box.domain = 0
            let second = referenceScan(rest, " (%x:%x.%x) %n")
            take(second, [\.bus, \.slot, \.function])
            switch second.values.count {
            case 2:
                box.function = -1
                take(referenceScan(rest, " (%x:%x.*) %n"), [\.bus, \.slot])
            case 1:
                box.slot = -1
                box.function = -1
                take(referenceScan(rest, " (%x:*.*) %n"), [\.bus])
            default: break
            }
        }
        if parsed <= 0 { return .failure(HideFailure(position: position)) }
        slots.append((box.domain, box.bus, box.slot, box.function))
        position += parsed
    }
    return .success(slots)
}

private struct HideFailure: Error { var position: Int }

// MARK: - Harness

private func describe(_ bytes: [UInt8]) -> String { bytes.map { String($0, radix: 16) }.joined(separator: " ") }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))

    // str_to_slot
    let expectedSlot = referenceSlot(input)
    let actualSlot = try? PcibackGrammar.slot(input)
    switch (expectedSlot, actualSlot) {
    case (nil, nil): break
    case (let e?, let a?) where e == (a.domain, a.bus, a.slot, a.function): break
    default:
        fatalError("grammar: slot(\(describe(input))): reference \(String(describing: expectedSlot)), implementation \(String(describing: actualSlot))")
    }

    // str_to_quirk
    let expectedQuirk = referenceQuirk(input)
    let actualQuirk = try? PcibackGrammar.quirk(input)
    switch (expectedQuirk, actualQuirk) {
    case (nil, nil): break
    case (let e?, let a?)
        where (e.domain, e.bus, e.slot, e.function) == (a.slot.domain, a.slot.bus, a.slot.slot, a.slot.function)
            && (e.register, e.size, e.mask) == (a.register, a.size, a.mask): break
    default:
        fatalError("grammar: quirk(\(describe(input))): reference \(String(describing: expectedQuirk)), implementation \(String(describing: actualQuirk))")
    }

    // hide: a module parameter is a C string (it comes from the kernel command line or argv),
    // so it ends at the first NUL; it is text, so only valid UTF-8 reaches the String API.
    let parameter = cString(input)
    if let text = String(validating: parameter, as: UTF8.self) {
        let expected = referenceHide(parameter)
        let actual = PcibackGrammar.hide(text)
        switch (expected, actual) {
        case (.success(let e), .success(let a)):
            guard e.count == a.count, zip(e, a).allSatisfy({ $0 == ($1.domain, $1.bus, $1.slot, $1.function) }) else {
                fatalError("grammar: hide(\(describe(parameter))): reference \(e), implementation \(a)")
            }
        case (.failure(let e), .failure(let a)):
            let rest = String(decoding: parameter[e.position...], as: UTF8.self)
            guard a.rest == rest, a.errno == .invalidArgument else {
                fatalError("grammar: hide(\(describe(parameter))): reference fails at \(e.position), implementation at \(a.rest.debugDescription)")
            }
        default:
            fatalError("grammar: hide(\(describe(parameter))): reference \(expected), implementation \(actual)")
        }
    }
    return 0
}
