// The mount tests drive Linux FUSE with glibc's calls; elsewhere they are not built.
#if canImport(Glibc)
import Foundation
import Glibc
import Testing

// Issue "Reliability", item 2: bad input through the mount, for every writable file. One daemon
// serves the whole table (SharedDaemonTrait). Each case snapshots the readable state (seize list,
// flags, quirks, irq handlers, driver links and overrides, enable counts, frontends, module
// parameter, faults, config bytes of both views), performs one syscall-level operation, checks
// the kernel's answer (its errno, or its count after clipping) and that the state is unchanged.
// Every operation has a hard deadline (the FUSE connection is aborted when it expires), the suite
// a time limit, and the harness's teardown unmounts lazily; after the last case a plain cat must
// still work.
//
// Kernel facts relied on (spec pciback.md §1.1, fuse-and-device-model.md §5.4, clients.md §2.4):
// a zero-length write never reaches the store and returns 0; a store sees at most 4096 bytes and
// a NUL-terminated copy (parsers stop at the first NUL), and a successful one returns at most
// 4096; the file position is ignored by text attributes; `config` honours it, clips at its size,
// reads 0 bytes at or past the end.
//
// Fixture (prepared once): 0000:03:00.0 (82576 PF, TotalVFs 8) moved from igb to pciback,
// exported to frontend domain 5 as 00:00.0, with permissive, allow_interrupt_control and a quirk
// field at 0xf0 set; 0000:03:00.1 stays on igb; 0000:00:05.0 has a 256-byte config space;
// nothing lives at 0000:09:00.0; the module parameter permissive is N.

private let nic = "0000:03:00.0"
private let sibling = "0000:03:00.1"
private let conventional = "0000:00:05.0"
private let absent = "0000:09:00.0"
private let pciback = "bus/pci/drivers/pciback"
private let igb = "bus/pci/drivers/igb"
private let device = "bus/pci/devices/\(nic)"
private let frontend = "fs/pcibackfs/frontends/5"
private let guestConfig = "\(frontend)/bus/pci/devices/0000:00:00.0/config"
private let uuid = "00000000-0000-0000-0000-000000000000"

// MARK: - The table

/// One bad input: a file, one operation on it, and what the kernel answers.
struct BadInputCase: Sendable, CustomTestStringConvertible {
    enum Action: Sendable {
        /// open(O_WRONLY) and one write(2), or pwrite(2) at the offset.
        case write([UInt8], at: Int?)
        /// A pci_op line: open(O_RDWR), write (or pwrite), then the result line read back at 0.
        case pciOp([UInt8], at: Int?)
        /// `config`: pread `count` bytes at `offset` and pwrite them back unchanged.
        case writeBack(offset: Int, count: Int)
        /// pread(2) on a fresh O_RDONLY descriptor.
        case read(offset: Int, count: Int)
        /// open(2) with these flags, nothing else.
        case open(Int32)
    }

    var file: String
    var input: String
    var action: Action
    var expected: RawOutcome
    /// For an input the kernel accepts and applies: what `file` reads afterwards, ...
    var readBack: [UInt8]?
    /// ... and the writes (file, bytes) that put the state back before it is compared.
    var restore: [(file: String, bytes: [UInt8])] = []
    /// A divergence from the kernel that is known and reported, not fixed yet.
    var knownIssue: String?

    var testDescription: String { "\(file) ← \(input)" }
}

private func label(_ text: String) -> String {
    let described = text.debugDescription
    return described.count > 60 ? String(described.prefix(57)) + "...\"" : described
}

private func write(_ file: String, _ text: String, at offset: Int? = nil, _ expected: RawOutcome) -> BadInputCase {
    let where_ = offset.map { " by pwrite at \($0)" } ?? ""
    return BadInputCase(file: file, input: label(text) + where_, action: .write(bytes(text), at: offset), expected: expected)
}

/// An input the store accepts without changing anything: the whole count comes back.
private func ok(_ file: String, _ text: String, at offset: Int? = nil) -> BadInputCase {
    write(file, text, at: offset, .count(text.utf8.count))
}

private func write(_ file: String, _ input: String, raw: [UInt8], at offset: Int? = nil, _ expected: RawOutcome) -> BadInputCase {
    BadInputCase(file: file, input: input, action: .write(raw, at: offset), expected: expected)
}

private func accepted(_ file: String, _ input: String, raw: [UInt8], _ expected: RawOutcome, readBack: [UInt8],
                      restore: [UInt8], knownIssue: String? = nil) -> BadInputCase {
    BadInputCase(file: file, input: input, action: .write(raw, at: nil), expected: expected, readBack: readBack,
                 restore: [(file, restore)], knownIssue: knownIssue)
}

private let einval = RawOutcome.failure(EINVAL)
private let enodev = RawOutcome.failure(ENODEV)
private let enoent = RawOutcome.failure(ENOENT)
private let erange = RawOutcome.failure(ERANGE)
private let ebusy = RawOutcome.failure(EBUSY)
private let eexist = RawOutcome.failure(EEXIST)
private let eacces = RawOutcome.openFailure(EACCES)

private let page5000 = [UInt8](repeating: UInt8(ascii: "x"), count: 5000)
private let nonUTF8: [UInt8] = [0xff, 0xfe, 0x0a]
private let huge = "99999999999999999999"  // > 2^64
private let twoTo64 = "18446744073709551616"

/// The inputs every writable text file gets, with what its store makes of them. `garbage` is the
/// answer to unparsable text; the others default to it.
private func common(_ file: String, newline: RawOutcome? = nil, garbage: RawOutcome, page: RawOutcome? = nil,
                    nul: RawOutcome? = nil, nonUTF: RawOutcome? = nil, offset: RawOutcome? = nil) -> [BadInputCase] {
    [
        write(file, "empty write (never reaches the store)", raw: [], .count(0)),
        write(file, "a lone newline", raw: [0x0a], newline ?? garbage),
        write(file, "5000 bytes of x (cut to 4096 before the store)", raw: page5000, page ?? garbage),
        write(file, "a lone NUL", raw: [0], nul ?? garbage),
        write(file, "non-UTF-8 bytes ff fe 0a", raw: nonUTF8, nonUTF ?? garbage),
        write(file, "\"garbage\\n\" by pwrite at 100 (the position is ignored)", raw: bytes("garbage\n"), at: 100,
              offset ?? garbage),
    ]
}

/// "BDF" followed by spaces to 5000 bytes: the cut leaves BDF + 4084 spaces, which parses.
private func paddedAfter(_ text: String) -> [UInt8] { bytes(text) + [UInt8](repeating: 0x20, count: 5000 - text.utf8.count) }
/// 4090 spaces then "BDF": the cut at 4096 falls inside the BDF, which no longer parses.
private func paddedBefore(_ text: String) -> [UInt8] { [UInt8](repeating: 0x20, count: 4090) + bytes(text) }

/// The synthetic-uevent inputs (`kobject_synth_uevent`, the same for devices, drivers and the bus).
private func uevent(_ file: String, full: Bool) -> [BadInputCase] {
    var cases = common(file, garbage: einval)
    cases += [
        write(file, "ADD", einval),                                   // action names are lower case
        write(file, "add junk", einval),                              // arguments must start with a UUID
        ok(file, "change\n"),                                         // a valid action: no state change
    ]
    if full {
        cases += [
            write(file, "add ", einval),                              // a space, then no UUID
            write(file, "add\0\0", einval),                           // only one trailing NUL is dropped
            write(file, "add \(uuid) A-x=b", einval),                 // keys are alphanumeric
            write(file, "add \(uuid) A=", einval),                    // a key needs a value
            write(file, "add \(uuid) A=b ", einval),                  // a trailing space needs another key
            ok(file, "add \(uuid) KEY=v1\n"),                         // UUID and one variable: accepted
        ]
    }
    return cases
}

enum BadInputTable {
    static let pcibackAttributes: [BadInputCase] = {
        var cases: [BadInputCase] = []
        let newSlot = "\(pciback)/new_slot"
        cases += common(newSlot, garbage: einval) + [
            write(newSlot, "0000:03:20.0", einval),                   // slot > 0x1f
            write(newSlot, "0000:03:00.8", einval),                   // func > 7
            write(newSlot, "10000:03:00.0", einval),                  // domain > 0xffff
            write(newSlot, "ffffffff:03:00.0", einval),               // domain -1 after the int conversion
            write(newSlot, "-1:03:00.0", einval),                     // %x takes no sign
            write(newSlot, "*", einval),                              // no bus wildcard
            write(newSlot, "03:*.3", einval),                         // no slot wildcard with a function
            write(newSlot, "0000:*:*.*", einval),
            write(newSlot, "0000:03:00.0 junk", einval),              // trailing junk
            // 33-bit slot: truncated to 0, i.e. 0000:03:00.0 again, already listed: dropped.
            ok(newSlot, "0000:03:100000000.0"),
            write(newSlot, "0000:03:00.0 + 4988 spaces (5000 bytes: cut, still a duplicate)", raw: paddedAfter(nic),
                  .count(4096)),
            write(newSlot, "4090 spaces + 0000:03:00.0 (the cut falls inside the BDF)", raw: paddedBefore(nic), einval),
            ok(newSlot, "0000:03:00.0\0junk"),                        // the store sees a C string: a duplicate
            ok(newSlot, "0000:03:00.0\n", at: 100),                   // the position is ignored: a duplicate
        ]
        let removeSlot = "\(pciback)/remove_slot"
        cases += common(removeSlot, garbage: einval) + [
            write(removeSlot, absent, enoent),                        // not listed
            write(removeSlot, "0000:100:00.0", enoent),               // no range check, nothing matches
            write(removeSlot, "ffffffff:03:00.0", enoent),
            write(removeSlot, "0000:03:01.*", enoent),                // a wildcard is allowed, matching nothing
            write(removeSlot, "03:*.3", einval),
            write(removeSlot, absent + "\n", at: 100, enoent),
        ]
        let quirks = "\(pciback)/quirks"
        cases += common(quirks, garbage: einval) + [
            write(quirks, "\(nic)-1000:2:0", einval),                 // register > 0xfff
            // pcistub_reg_add takes `unsigned int reg`: 0xffffffff > 0xfff. Should the field be
            // added, only a release frees it: detach and export again, as the fixture did.
            BadInputCase(file: quirks, input: label("\(nic)-ffffffff:2:0"), action: .write(bytes("\(nic)-ffffffff:2:0"), at: nil),
                         expected: einval, restore: BadInputFixture.reexport),
            write(quirks, "\(nic)-f4:1:1ff", einval),                 // mask wider than the size
            write(quirks, "\(nic)-f4:0:1", einval),                   // size 0 with a mask
            write(quirks, "\(nic)-f4:3:0", einval),                   // size not 1, 2 or 4
            write(quirks, "\(nic)-f4:ffffffff:0", einval),            // huge size (unsigned in the kernel)
            write(quirks, "0000:03:00.*-f4:2:0", einval),             // the quirk grammar has no wildcard
            write(quirks, "\(nic)-f4:2:0 junk", einval),
            write(quirks, "\(absent)-f4:3:0", enodev),                // the device is checked before the size
            write(quirks, "\(sibling)-f4:2:0", enodev),               // not bound to pciback
            ok(quirks, "\(nic)-f0:4:0"),                              // a field already starts at 0xf0: success, nothing added
            ok(quirks, "\(nic)-f0:4:0\n", at: 100),
        ]
        for name in ["permissive", "allow_interrupt_control"] {
            let file = "\(pciback)/\(name)"
            cases += common(file, garbage: einval) + [
                write(file, "0000:03:00.*", enodev),                  // a wildcard finds no device
                write(file, "03:*.*", enodev),
                write(file, absent, enodev),
                write(file, sibling, enodev),                         // bound to igb, not pciback
                write(file, "ffffffff:ffffffff:ffffffff.ffffffff", enodev),
                write(file, "\(nic) junk", einval),
                write(file, "+\(nic)", einval),
                write(file, "0000:03:00.0 + 4988 spaces (5000 bytes: cut; the flag is already set)", raw: paddedAfter(nic),
                      .count(4096)),
                ok(file, nic + "\n", at: 100),                        // idempotent
                ok(file, "0000:03:00.0\0junk"),
            ]
        }
        let irqHandlerState = "\(pciback)/irq_handler_state"
        // Any accepted input toggles the flag, so only rejected ones here.
        cases += common(irqHandlerState, garbage: einval) + [
            write(irqHandlerState, "0000:03:00.*", enoent),           // ENOENT, not ENODEV, for this attribute
            write(irqHandlerState, absent, enoent),
            write(irqHandlerState, sibling, enoent),
            write(irqHandlerState, "ffffffff:ffffffff:ffffffff.ffffffff", enoent),
            write(irqHandlerState, "\(nic) junk", einval),
            write(irqHandlerState, "4090 spaces + 0000:03:00.0 (cut inside the BDF)", raw: paddedBefore(nic), einval),
        ]
        return cases
    }()

    /// bind, unbind, new_id, remove_id and uevent of pciback and of a host driver (igb).
    static let driverCore: [BadInputCase] = {
        var cases: [BadInputCase] = []
        // bind/unbind look a device up by name (sysfs_streq: C string, one trailing newline).
        let bind = "\(pciback)/bind"
        cases += common(bind, garbage: enodev) + [
            write(bind, nic, ebusy),                                  // already pciback's
            write(bind, sibling, ebusy),                              // igb's; pciback's id table matches any device
            write(bind, absent, enodev),
            write(bind, "0000:03:00.*", enodev),
            write(bind, "*", enodev),
            write(bind, "03:00.0", enodev),                           // device names carry the domain
            write(bind, nic + "\n\n", enodev),                        // only one trailing newline is tolerated
            write(bind, "0000:03:00.0\0junk", ebusy),                 // the name ends at the NUL
        ]
        let unbind = "\(pciback)/unbind"
        cases += common(unbind, garbage: enodev) + [
            write(unbind, sibling, enodev),                           // bound, but to igb
            write(unbind, absent, enodev),
            write(unbind, "0000:03:00.*", enodev),
            write(unbind, nic + "\n\n", enodev),
        ]
        let newID = "\(pciback)/new_id"
        cases += common(newID, garbage: einval) + [
            write(newID, "8086", einval),                             // fewer than 2 fields
            write(newID, "-1 -1", einval),                            // %x takes no sign
            write(newID, "8086 10c9", eexist),                        // pciback's static table matches everything
            write(newID, "ffffffffff 10c9", eexist),                  // truncated to PCI_ANY_ID: matches too
            write(newID, "8086 10c9 0 0 0 0 1", einval),              // driver_data must be one of the table's (0)
        ]
        let removeID = "\(pciback)/remove_id"
        cases += common(removeID, garbage: einval) + [
            write(removeID, "8086", einval),
            write(removeID, "8086 10c9", enodev),                     // no such dynamic id
        ]
        cases += uevent("\(pciback)/uevent", full: true)

        cases += common("\(igb)/bind", garbage: enodev) + [
            write("\(igb)/bind", nic, ebusy),                         // matches igb's table, but pciback holds it
            write("\(igb)/bind", sibling, ebusy),
            write("\(igb)/bind", conventional, enodev),               // igb's table does not match an RTL8139
            write("\(igb)/bind", "0000:03:00.*", enodev),
        ]
        cases += common("\(igb)/unbind", garbage: enodev) + [
            write("\(igb)/unbind", nic, enodev),                      // bound to pciback, not igb
            write("\(igb)/unbind", conventional, enodev),
        ]
        cases += common("\(igb)/new_id", garbage: einval) + [
            write("\(igb)/new_id", "8086 10c9", eexist),              // igb's static table has it
            write("\(igb)/new_id", "8086 10c9 0 0 0 0 1", einval),    // igb's driver_data are all 0 (board_82575)
            write("\(igb)/new_id", "8086", einval),
        ]
        cases += common("\(igb)/remove_id", garbage: einval) + [
            write("\(igb)/remove_id", "8086 10c9", enodev),
        ]
        cases += uevent("\(igb)/uevent", full: false)
        return cases
    }()

    static let busAttributes: [BadInputCase] = {
        var cases: [BadInputCase] = []
        let probe = "bus/pci/drivers_probe"
        cases += common(probe, garbage: enodev) + [
            write(probe, absent, enodev),
            write(probe, "0000:03:00.*", enodev),
            ok(probe, nic),                                           // already bound: success, nothing happens
        ]
        // drivers_autoprobe_store parses nothing: buf[0] == '0' turns autoprobe off, anything else
        // on (it is on), and the count is returned. So "bad" input is accepted and changes nothing.
        let autoprobe = "bus/pci/drivers_autoprobe"
        cases += common(autoprobe, newline: .count(1), garbage: .count(7), page: .count(4096), nul: .count(1),
                        nonUTF: .count(3), offset: .count(8)) + [
            ok(autoprobe, "garbage"),
            ok(autoprobe, "-1"),
            ok(autoprobe, huge),
        ]
        // The pci-sysfs numeric stores map every kstrtoul failure to EINVAL (overflow too).
        let rescan = "bus/pci/rescan"
        cases += common(rescan, garbage: einval) + [
            write(rescan, "-1", einval),
            write(rescan, huge, einval),
            write(rescan, " 1", einval),
            ok(rescan, "0"),                                          // zero: nothing to do
            ok(rescan, "0\n", at: 100),
        ]
        cases += uevent("bus/pci/uevent", full: false)
        return cases
    }()

    static let deviceAttributes: [BadInputCase] = {
        var cases: [BadInputCase] = []
        let enable = "\(device)/enable"
        // enable_store passes kstrtoul's own error through (ERANGE), then EBUSY while a driver is bound.
        cases += common(enable, garbage: einval) + [
            write(enable, "-1", einval),
            write(enable, huge, erange),
            write(enable, twoTo64, erange),
            write(enable, "0x", einval),
            write(enable, " 1", einval),
            write(enable, "1 ", einval),
            write(enable, "1", ebusy),
            write(enable, "0", ebusy),
            write(enable, "18446744073709551615", ebusy),             // ULONG_MAX parses; the driver check refuses
        ]
        for (name, current) in [("msi_bus", "1"), ("broken_parity_status", "0"), ("d3cold_allowed", "1")] {
            let file = "\(device)/\(name)"
            cases += common(file, garbage: einval) + [
                write(file, "-1", einval),
                write(file, huge, einval),                            // EINVAL, not ERANGE: `kstrtoul() < 0` → -EINVAL
                write(file, twoTo64, einval),
                write(file, " 1", einval),
                ok(file, current),                                    // the value it has: accepted, unchanged
            ]
        }
        let numa = "\(device)/numa_node"
        // kstrtoint's own errors (ERANGE for overflow); then only -1 and online nodes. Chosen: a
        // single-node dom0, so node 1 is offline (EINVAL).
        cases += common(numa, garbage: einval) + [
            write(numa, "-2", einval),
            write(numa, "1", einval),
            write(numa, "2147483648", erange),
            write(numa, "-2147483649", erange),
            write(numa, huge, erange),
            ok(numa, "-1"),                                           // NUMA_NO_NODE, what it reads: unchanged
        ]
        let override = "\(device)/driver_override"
        cases += [
            write(override, "empty write (never reaches the store)", raw: [], .count(0)),
            ok(override, "\n"),                                       // clears: there is nothing to clear
            write(override, "a lone NUL (strlen 0: clears)", raw: [0], .count(1)),
            write(override, "NUL then pciback (strlen 0: clears)", raw: [0] + bytes("pciback"), .count(8)),
            write(override, "5000 bytes of x (cut to 4096, >= PAGE_SIZE - 1)", raw: page5000, einval),
            write(override, "4095 bytes of x (>= PAGE_SIZE - 1)", raw: [UInt8](repeating: 0x78, count: 4095), einval),
            ok(override, "\n", at: 100),
            accepted(override, "4094 bytes of x (the longest accepted)", raw: [UInt8](repeating: 0x78, count: 4094),
                     .count(4094), readBack: [UInt8](repeating: 0x78, count: 4094) + [0x0a], restore: [0x0a]),
            // Every kernel since 3.16 cuts at the first newline: "\n\n" clears, "bogus\nmore" is "bogus".
            accepted(override, "two newlines", raw: bytes("\n\n"), .count(2), readBack: bytes("(null)\n"), restore: [0x0a]),
            accepted(override, "\"bogus\\nmore\"", raw: bytes("bogus\nmore"), .count(10), readBack: bytes("bogus\n"),
                     restore: [0x0a]),
            // The kernel keeps the bytes as they are and shows them back.
            accepted(override, "non-UTF-8 bytes ff fe", raw: [0xff, 0xfe], .count(2), readBack: nonUTF8, restore: [0x0a]),
        ]
        cases += uevent("\(device)/uevent", full: true)
        for name in ["remove", "rescan"] {
            let file = "\(device)/\(name)"
            cases += common(file, garbage: einval) + [
                write(file, "-1", einval),
                write(file, huge, einval),
                write(file, " 1", einval),
                ok(file, "0"),                                        // zero: nothing happens
                ok(file, "0\n", at: 100),
            ]
        }
        let reset = "\(device)/reset"
        cases += common(reset, garbage: einval) + [
            write(reset, "0", einval),                                // only 1 resets
            write(reset, "2", einval),
            write(reset, "-1", einval),
            write(reset, huge, einval),
            write(reset, "1 ", einval),
        ]
        let numVFs = "\(device)/sriov_numvfs"
        // kstrtou16: every parse failure, overflow included, is EINVAL (sriov.md §2.3).
        cases += common(numVFs, garbage: einval) + [
            write(numVFs, "-1", einval),
            write(numVFs, "70000", einval),
            write(numVFs, huge, einval),
            write(numVFs, " 4", einval),
            write(numVFs, "4 ", einval),
            write(numVFs, "9", erange),                               // > TotalVFs (8)
            write(numVFs, "4", enoent),                               // pciback has no sriov_configure
            ok(numVFs, "0"),                                          // equal to num_VFs: success, nothing done
        ]
        let autoprobe = "\(device)/sriov_drivers_autoprobe"
        cases += common(autoprobe, garbage: einval) + [
            write(autoprobe, "2", einval),
            write(autoprobe, "-1", einval),
            write(autoprobe, "o", einval),                            // "o" needs n/N or f/F after it
            write(autoprobe, " 1", einval),
            ok(autoprobe, "yes"),                                     // kstrtobool: true, as it is
        ]
        return cases
    }()

    static let moduleAndControls: [BadInputCase] = {
        var cases: [BadInputCase] = []
        let permissive = "module/xen_pciback/parameters/permissive"
        // param_set_bool = kstrtobool: first character (two for o/O); it is N here.
        cases += common(permissive, garbage: einval) + [
            write(permissive, "-1", einval),
            write(permissive, "2", einval),
            write(permissive, "o", einval),
            write(permissive, huge, einval),
            ok(permissive, "nope"),                                   // n: false, as it is
            ok(permissive, "false\n"),                                // f: false (kstrtobool since 5.17)
            ok(permissive, "off"),
        ]
        // pcibackfs's own controls (README): "DOMID BDF", a decimal domain 1...0x7fef.
        let attach = "fs/pcibackfs/attach"
        cases += common(attach, garbage: einval) + [
            write(attach, "5 \(nic)", einval),                        // already exported
            write(attach, "0 \(nic)", einval),                        // domain 0 is dom0
            write(attach, "-1 \(nic)", einval),
            write(attach, "4294967296 \(nic)", einval),
            write(attach, "6 0000:03:00.*", einval),
            write(attach, "6 \(sibling)", einval),                    // not bound to pciback
            write(attach, "6 \(absent)", einval),
            write(attach, "6", einval),
            write(attach, "6 \(nic) extra", einval),
        ]
        let detach = "fs/pcibackfs/detach"
        cases += common(detach, garbage: einval) + [
            write(detach, "6 \(nic)", enodev),                        // domain 6 does not own it
            write(detach, "5 \(sibling)", enodev),
            write(detach, "5 0000:03:00.*", einval),
            write(detach, "5", einval),
        ]
        let faults = "fs/pcibackfs/faults"
        cases += common(faults, garbage: einval) + [
            write(faults, "\(nic) bogus once", einval),
            write(faults, "\(nic) reset always", einval),
            write(faults, "0000:03:00.* reset once", einval),
            write(faults, "\(nic) vanish now", einval),
            write(faults, "\(absent) reset once", enodev),
            ok(faults, "\(nic) reset off"),                           // already off
        ]
        return cases
    }()

    /// frontends/5/pci_op: a bad line fails the write; a well-formed op that pciback refuses is
    /// written and reads back pcifront's error code.
    static let pciOperations: [BadInputCase] = {
        let file = "\(frontend)/pci_op"
        func op(_ text: String, at offset: Int? = nil, result: String) -> BadInputCase {
            op(text, at: offset, .result(text.utf8.count, result))
        }
        func op(_ text: String, at offset: Int? = nil, _ expected: RawOutcome) -> BadInputCase {
            let where_ = offset.map { " by pwrite at \($0)" } ?? ""
            return BadInputCase(file: file, input: label(text) + where_, action: .pciOp(bytes(text), at: offset), expected: expected)
        }
        func op(_ input: String, raw: [UInt8], at offset: Int? = nil, _ expected: RawOutcome) -> BadInputCase {
            BadInputCase(file: file, input: input, action: .pciOp(raw, at: offset), expected: expected)
        }
        return [
            op("empty write", raw: [], .count(0)),
            op("a lone newline", raw: [0x0a], einval),
            op("5000 bytes of x (cut to 4096)", raw: page5000, einval),
            op("a lone NUL", raw: [0], einval),
            op("non-UTF-8 bytes ff fe 0a", raw: nonUTF8, einval),
            op("garbage\n", at: 100, einval),
            op("conf_read 00:00.0 -1 4", einval),
            op("conf_read 00:00.0 \(huge) 4", erange),               // numbers are kstrtoul's: overflow is ERANGE
            op("conf_read 00:00.* 0 4", einval),
            op("conf_write 00:00.0 0x04 2", einval),                  // no value
            op("bogus 00:00.0", einval),
            op("op x 00:00.0", einval),
            op("conf_read 00:00.0 0x1000 4\n", result: "err -22 value 0xffffffff\n"),  // past 4095: -EINVAL
            op("conf_write 00:00.0 0x1000 4 0xffffffff\n", result: "err -22 value 0xffffffff\n"),
            op("conf_read 00:00.0 0 3\n", result: "err -2 value 0x00000000\n"),        // invalid size
            op("conf_write 00:00.0 0x0 3 0\n", result: "err -2 value 0x00000000\n"),
            op("conf_read 01:00.0 0 4\n", result: "err -1 value 0x00000000\n"),        // no such device
            op("op 99 00:00.0\n", result: "err -4 value 0x00000000\n"),                // not implemented
            op("conf_read 00:00.0 0 4\n", at: 100, result: "err 0 value 0x10c98086\n"),  // position ignored
        ]
    }()

    /// Opening against the mode (EACCES even for root), and reads past the end of a text attribute.
    static let openModes: [BadInputCase] = {
        let writeOnly = ["new_slot", "remove_slot", "irq_handler_state", "bind", "unbind", "new_id", "remove_id", "uevent"]
            .map { "\(pciback)/\($0)" }
            + ["\(igb)/bind", "\(igb)/unbind", "bus/pci/drivers_probe", "bus/pci/rescan", "bus/pci/uevent",
               "\(device)/remove", "\(device)/rescan", "\(device)/reset", "fs/pcibackfs/attach", "fs/pcibackfs/detach"]
        let readOnly = ["\(pciback)/slots", "\(pciback)/irq_handlers", "\(device)/vendor", "\(device)/resource",
                        "\(device)/sriov_totalvfs", "fs/pcibackfs/profile", "fs/pcibackfs/log", "fs/pcibackfs/trace",
                        "module/xen_pciback/parameters/hide", "module/xen_pciback/parameters/passthrough",
                        "\(frontend)/bus/pci/devices/0000:00:00.0/vendor"]
        var cases = writeOnly.map { BadInputCase(file: $0, input: "open O_RDONLY", action: .open(O_RDONLY), expected: eacces) }
        cases += readOnly.map { BadInputCase(file: $0, input: "open O_WRONLY", action: .open(O_WRONLY), expected: eacces) }
        cases += [
            BadInputCase(file: "\(pciback)/slots", input: "pread 16 at 100000", action: .read(offset: 100_000, count: 16),
                         expected: .count(0)),
            BadInputCase(file: "\(pciback)/slots", input: "pread 100 at 5", action: .read(offset: 5, count: 100),
                         expected: .count(8)),
            BadInputCase(file: "\(device)/vendor", input: "pread 10 at 7 (its length)", action: .read(offset: 7, count: 10),
                         expected: .count(0)),
        ]
        return cases
    }()

    /// `config` of both views and both sizes: reads clip at the size and give 0 bytes at or past
    /// it; odd sizes and offsets are split; writes clip at the size.
    static let configAccesses: [BadInputCase] = {
        var cases: [BadInputCase] = []
        for (file, size) in [("\(device)/config", 4096), ("bus/pci/devices/\(conventional)/config", 256), (guestConfig, 4096)] {
            func read(_ offset: Int, _ count: Int, _ expected: Int) -> BadInputCase {
                BadInputCase(file: file, input: "pread \(count) at \(offset)", action: .read(offset: offset, count: count),
                             expected: .count(expected))
            }
            func write(_ input: String, _ raw: [UInt8], at offset: Int, _ expected: RawOutcome, knownIssue: String? = nil) -> BadInputCase {
                BadInputCase(file: file, input: input, action: .write(raw, at: offset), expected: expected, knownIssue: knownIssue)
            }
            cases += [
                read(size, 4, 0),
                read(1 << 40, 4, 0),
                read(size - 2, 4, 2),
                read(size - 1, 10, 1),
                read(size - 6, 10, 6),
                read(0, 5000, size),
                read(1, 3, 3),
                read(3, 5, 5),
                read(0x3d, 1, 1),
                read(0, 0, 0),
                write("pwrite 4 zero bytes at its size (\(size))", [0, 0, 0, 0], at: size, .failure(EFBIG)),
                write("pwrite 1 byte at 2^40", [0], at: 1 << 40, .failure(EFBIG)),
                write("pwrite 3 zero bytes at \(size - 2) (clipped to 2)", [0, 0, 0], at: size - 2, .count(2)),
                write("pwrite 0 bytes at 0", [], at: 0, .count(0)),
                BadInputCase(file: file, input: "pwrite back 3 bytes at 0x3c (byte + word)", action: .writeBack(offset: 0x3c, count: 3),
                             expected: .count(3)),
                BadInputCase(file: file, input: "pwrite back 5 bytes at 0x2b (byte, dword)", action: .writeBack(offset: 0x2b, count: 5),
                             expected: .count(5)),
            ]
            if size == 4096 {
                // A page is cut to 4096 first, then clipped to size - offset.
                cases.append(write("pwrite 5000 zero bytes at 4000 (clipped to 96)", [UInt8](repeating: 0, count: 5000), at: 4000,
                                   .count(96)))
            }
        }
        return cases
    }()

    static let cases: [BadInputCase] = pcibackAttributes + driverCore + busAttributes + deviceAttributes + moduleAndControls
        + pciOperations + openModes + configAccesses
}

// MARK: - Fixture and state

enum BadInputFixture {
    /// Detach and export again: the release frees dynamic (quirk) fields and clears
    /// allow_interrupt_control, so both are set again.
    static let reexport: [(file: String, bytes: [UInt8])] = [
        ("fs/pcibackfs/detach", bytes("5 \(nic)\n")), ("fs/pcibackfs/attach", bytes("5 \(nic)\n")),
        ("\(pciback)/allow_interrupt_control", bytes(nic)), ("\(pciback)/quirks", bytes("\(nic)-f0:2:ffff\n")),
    ]

    /// Seizes 0000:03:00.0 for pciback the way libxl does, exports it to domain 5 and sets its
    /// flags and a quirk, so that the snapshot has state to lose.
    static func prepare(_ shared: SharedMount) throws {
        let mount = shared.mount
        func must(_ text: String, _ file: String) throws {
            let outcome = Raw.write(mount.path(file), bytes(text))
            guard outcome == .count(text.utf8.count) else { throw HarnessError("fixture: \(text.debugDescription) > \(file): \(outcome)") }
        }
        try must(nic, "\(device)/driver/unbind")
        try must(nic, "\(pciback)/new_slot")
        try must(nic, "\(pciback)/bind")
        try must("5 \(nic)\n", "fs/pcibackfs/attach")
        try must(nic, "\(pciback)/allow_interrupt_control")
        try must(nic, "\(pciback)/permissive")
        try must("\(nic)-f0:2:ffff\n", "\(pciback)/quirks")
        let expectations = [
            ("\(pciback)/slots", "\(nic)\n"), ("\(pciback)/permissive", "\(nic)\n"),
            ("\(pciback)/allow_interrupt_control", "\(nic)\n"), ("\(device)/sriov_totalvfs", "8\n"),
            ("module/xen_pciback/parameters/permissive", "N\n"), ("\(device)/driver_override", "(null)\n"),
        ]
        for (file, text) in expectations {
            let got = try mount.cat(file)
            guard got == text else { throw HarnessError("fixture: \(file) reads \(got.debugDescription), not \(text.debugDescription)") }
        }
        guard try mount.cat("\(pciback)/quirks").contains("\t\t000000f0:2:0000ffff\n") else { throw HarnessError("fixture: no quirk at 0xf0") }
        // The config writes of the table rewrite these bytes with zeros: they must be zero already.
        for (file, range) in [("\(device)/config", 4000..<4096), ("bus/pci/devices/\(conventional)/config", 250..<256),
                              (guestConfig, 4000..<4096)] {
            let content = try Sys.readBytes(mount.path(file))
            guard content.count >= range.upperBound, content[range].allSatisfy({ $0 == 0 }) else {
                throw HarnessError("fixture: \(file) bytes \(range) are not all zero")
            }
        }
    }
}

/// The readable state a bad input must not change, file by file.
struct ObservedState: Equatable {
    var entries: [String: [UInt8]] = [:]

    static let configFiles = ["\(device)/config", "bus/pci/devices/\(conventional)/config", guestConfig]

    static func take(_ mount: DaemonMount) -> ObservedState {
        var snapshot = ObservedState()
        func record(_ key: String, _ body: () throws -> [UInt8]) {
            do { snapshot.entries[key] = try body() } catch { snapshot.entries[key] = Array("<\(error)>".utf8) }
        }
        func file(_ relative: String) { record(relative) { try Sys.readBytes(mount.path(relative)) } }
        func listing(_ relative: String) { record(relative + "/") { Array(try mount.list(relative).sorted().joined(separator: " ").utf8) } }

        for name in ["slots", "permissive", "allow_interrupt_control", "quirks", "irq_handlers"] { file("\(pciback)/\(name)") }
        file("module/xen_pciback/parameters/permissive")
        file("bus/pci/drivers_autoprobe")
        file("fs/pcibackfs/faults")
        listing("bus/pci/devices")
        listing("bus/pci/drivers")
        for driver in (try? mount.list("bus/pci/drivers")) ?? [] { listing("bus/pci/drivers/\(driver)") }
        for address in (try? mount.list("bus/pci/devices")) ?? [] {
            record("bus/pci/devices/\(address)/driver@") { Array(((try? mount.readlink("bus/pci/devices/\(address)/driver")) ?? "-").utf8) }
            file("bus/pci/devices/\(address)/driver_override")
            file("bus/pci/devices/\(address)/enable")
        }
        listing("fs/pcibackfs/frontends")
        listing("\(frontend)/bus/pci/devices")
        for name in ["sriov_numvfs", "sriov_drivers_autoprobe", "numa_node", "msi_bus", "broken_parity_status", "d3cold_allowed"] {
            file("\(device)/\(name)")
        }
        for config in configFiles { file(config) }
        return snapshot
    }

    /// The keys whose content differs, with both versions (shortened).
    func differences(to other: ObservedState) -> [String] {
        Set(entries.keys).union(other.entries.keys).sorted().compactMap { key in
            let a = entries[key], b = other.entries[key]
            guard a != b else { return nil }
            func show(_ bytes: [UInt8]?) -> String {
                guard let bytes else { return "(missing)" }
                let text = String(decoding: bytes.prefix(200), as: UTF8.self)
                return text.debugDescription + (bytes.count > 200 ? "... (\(bytes.count) bytes)" : "")
            }
            if ObservedState.configFiles.contains(key), let a, let b, a.count == b.count {
                let offsets = a.indices.filter { a[$0] != b[$0] }
                return "\(key): bytes differ at offsets \(offsets.prefix(16).map { "0x" + String($0, radix: 16) })"
            }
            return "\(key): \(show(a)) -> \(show(b))"
        }
    }
}

extension BadInputCase {
    /// Performs the operation; the outcome, and the bytes a read returned.
    func perform(on mount: DaemonMount) -> (RawOutcome, [UInt8]) {
        let path = mount.path(file)
        switch action {
        case .open(let flags):
            return (Raw.open(path, flags: flags), [])
        case .read(let offset, let count):
            return Raw.read(path, offset: offset, count: count)
        case .write(let data, let offset):
            return (Raw.write(path, data, at: offset), [])
        case .writeBack(let offset, let count):
            let fd = open(path, O_RDWR | O_CLOEXEC)
            if fd < 0 { return (.openFailure(errno), []) }
            defer { close(fd) }
            guard let current = try? Sys.pread(fd: fd, path: path, offset: offset, count: count), current.count == count else {
                return (.failure(EIO), [])
            }
            return (Raw.transfer(fd, current, at: offset), current)
        case .pciOp(let data, let offset):
            let fd = open(path, O_RDWR | O_CLOEXEC)
            if fd < 0 { return (.openFailure(errno), []) }
            defer { close(fd) }
            let written = Raw.transfer(fd, data, at: offset)
            guard case .count(let count) = written, count > 0 else { return (written, []) }
            guard let result = try? Sys.pread(fd: fd, path: path, offset: 0, count: 4096) else { return (.failure(EIO), []) }
            return (.result(count, String(decoding: result, as: UTF8.self)), result)
        }
    }
}

// MARK: - The test

@Suite("Reliability: bad input through the mount", .serialized, .requiresDaemonMount, .timeLimit(.minutes(5)),
       .sharedDaemon(prepare: BadInputFixture.prepare))
struct BadInputTests {
    @Test("a bad input gets the kernel's answer and leaves the state as it was", arguments: BadInputTable.cases)
    func badInput(_ entry: BadInputCase) throws {
        let shared = try #require(SharedMount.current, "no shared daemon")
        let mount = shared.mount
        let before = shared.withDeadline("snapshot before", seconds: 30) { ObservedState.take(mount) }
        let (outcome, data) = shared.withDeadline(entry.testDescription) { entry.perform(on: mount) }

        func checkOutcome() {
            #expect(outcome == entry.expected, "\(entry.testDescription)")
            if let readBack = entry.readBack {
                let got = shared.withDeadline("read back") { try? Sys.readBytes(mount.path(entry.file)) }
                #expect(got == readBack, "\(entry.file) reads \(String(decoding: got ?? [], as: UTF8.self).debugDescription)")
            }
        }
        if let issue = entry.knownIssue {
            withKnownIssue(Comment(rawValue: issue)) { checkOutcome() }
        } else {
            checkOutcome()
        }
        // A read returns the bytes a whole-file read shows there.
        if case .read(let offset, _) = entry.action, case .count(let count) = outcome, count > 0,
           let whole = before.entries[entry.file], offset + count <= whole.count {
            #expect(data == Array(whole[offset..<(offset + count)]), "pread content differs from the file's")
        }
        for step in entry.restore {
            let outcome = shared.withDeadline("restore") { Raw.write(mount.path(step.file), step.bytes) }
            #expect(outcome == .count(step.bytes.count), "restoring \(step.file): \(outcome)")
        }
        let after = shared.withDeadline("snapshot after", seconds: 30) { ObservedState.take(mount) }
        let changes = before.differences(to: after)
        #expect(changes.isEmpty, "the state changed:\n\(changes.joined(separator: "\n"))")
        #expect(mount.isRunning, "pcibackfsd died:\n\(mount.daemonLog)")
    }

    @Test("the table covers every writable file the brief lists")
    func coverage() {
        let files = Set(BadInputTable.cases.map(\.file))
        let required = ["new_slot", "remove_slot", "quirks", "permissive", "allow_interrupt_control", "irq_handler_state", "bind",
                        "unbind", "new_id", "remove_id", "uevent"].map { "\(pciback)/\($0)" }
            + ["bind", "unbind", "new_id", "remove_id"].map { "\(igb)/\($0)" }
            + ["drivers_probe", "drivers_autoprobe", "rescan", "uevent"].map { "bus/pci/\($0)" }
            + ["enable", "driver_override", "msi_bus", "numa_node", "broken_parity_status", "d3cold_allowed", "uevent", "remove",
               "rescan", "reset", "sriov_numvfs", "sriov_drivers_autoprobe", "config"].map { "\(device)/\($0)" }
            + ["module/xen_pciback/parameters/permissive", "fs/pcibackfs/attach", "fs/pcibackfs/detach", "fs/pcibackfs/faults",
               "\(frontend)/pci_op", guestConfig]
        #expect(Set(required).subtracting(files).isEmpty, "not covered: \(Set(required).subtracting(files).sorted())")
    }
}
#endif
