import Foundation
import Testing
@testable import PCIBackFS

// The pciutils dumps are read at run time from ../shared/testdata/pciutils (relative to the package
// root). No bytes or values from them are written into this file: every expectation below is
// computed from the dump being tested (its hex lines, its BAR sizes) or from the PCI specification.

private enum ImportFixtures {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let dumpDirectory = packageRoot.deletingLastPathComponent()
        .appendingPathComponent("shared").appendingPathComponent("testdata").appendingPathComponent("pciutils")
    static let dumpNames: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: dumpDirectory.path)) ?? [])
        .filter { !$0.hasPrefix(".") && !$0.hasSuffix(".md") }
        .sorted()

    static func path(_ name: String) -> String { dumpDirectory.appendingPathComponent(name).path }

    static func dumpText(_ name: String) throws -> String {
        try String(contentsOf: dumpDirectory.appendingPathComponent(name), encoding: .utf8)
    }

    /// The captured functions and the imported devices of a dump, paired.
    static func imported(_ name: String) throws -> [(captured: CapturedFunction, device: EmulatedDevice)] {
        let captured = try LspciDump.parse(try dumpText(name))
        return captured.map { ($0, DeviceImporter.device(from: $0)) }
    }

    static func importedDevices(_ name: String) throws -> [EmulatedDevice] {
        try DeviceImporter.importDump(path: path(name))
    }

    /// The config bytes of each device of a dump, read straight off its hex lines (independent of
    /// `LspciDump`): a header line starts a device, `OO: xx xx ...` lines fill it.
    static func hexBytesPerDevice(_ text: String) throws -> [[Int: UInt8]] {
        let header = try Regex(#"^([0-9a-fA-F]{4,6}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7] "#)
        let hexLine = try Regex(#"^([0-9a-fA-F]{2,8}): ((?:[0-9a-fA-F]{2} ?)+)\s*$"#)
        var devices: [[Int: UInt8]] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.prefixMatch(of: header) != nil {
                devices.append([:])
            } else if let match = line.wholeMatch(of: hexLine), !devices.isEmpty,
                      let offsetText = match.output[1].substring, let bytesText = match.output[2].substring,
                      let offset = Int(offsetText, radix: 16) {
                for (index, pair) in bytesText.split(separator: " ").enumerated() {
                    devices[devices.count - 1][offset + index] = UInt8(pair, radix: 16)
                }
            }
        }
        return devices
    }

    static func dword(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }

    static func read(_ device: EmulatedDevice, _ offset: Int, _ width: Int) -> UInt32 {
        device.hardwareRead(offset, width: width).value
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("importer-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Positions of a device's standard and extended capabilities.
    static func capabilityPositions(_ device: EmulatedDevice) -> (standard: [(UInt8, Int)], extended: [(UInt16, Int)]) {
        (CapabilityScanner.standardCapabilities(device.config), CapabilityScanner.extendedCapabilities(device.config))
    }

    /// The end of the region that starts at `position`: the next capability (or BAR-free header
    /// boundary) above it, at most `limit`.
    static func regionEnd(_ position: Int, among positions: [Int], limit: Int) -> Int {
        min(positions.filter { $0 > position }.min() ?? limit, limit)
    }

    /// A 64-byte-only (unprivileged `lspci -x`) dump of a synthetic function.
    static func truncatedDump() -> String {
        var config = [UInt8](repeating: 0, count: 64)
        config[0] = 0x34; config[1] = 0x12; config[2] = 0x78; config[3] = 0x56
        config[0x0b] = 0x02
        var text = "05:00.0 Ethernet controller: Synthetic 64-byte capture\n"
        for line in stride(from: 0, to: 64, by: 16) {
            text += String(format: "%02x:", line) + config[line..<line + 16].map { String(format: " %02x", $0) }.joined() + "\n"
        }
        return text + "\n"
    }
}

@Suite("Importer")
struct ImporterTests {
    @Test func dumpDirectoryIsThere() {
        #expect(!ImportFixtures.dumpNames.isEmpty, "no dumps in \(ImportFixtures.dumpDirectory.path)")
        for name in ["cap-pcie-2", "cap-vendor-virtio"] {
            #expect(ImportFixtures.dumpNames.contains(name))
        }
    }

    // MARK: - Byte-identical import

    @Test("every dump imports; every dword reads back exactly as captured", arguments: ImportFixtures.dumpNames)
    func importsByteIdentical(name: String) throws {
        let text = try ImportFixtures.dumpText(name)
        let devices = try ImportFixtures.importedDevices(name)
        let captured = try LspciDump.parse(text)
        let hexBytes = try ImportFixtures.hexBytesPerDevice(text)
        #expect(devices.count == captured.count)
        #expect(devices.count == hexBytes.count)
        for (device, (function, fileBytes)) in zip(devices, zip(captured, hexBytes)) {
            #expect(device.address == function.address)
            #expect(device.configSize == function.config.count)
            #expect(fileBytes.count == device.configSize, "the dump holds every byte of \(device.address)")
            for offset in stride(from: 0, to: device.configSize, by: 4) {
                let (value, error) = device.hardwareRead(offset, width: 4)
                #expect(error == PCIBIOS.successful)
                let fromFile = (0..<4).reduce(UInt32(0)) { $0 | UInt32(fileBytes[offset + $1] ?? 0) << (8 * UInt32($1)) }
                #expect(value == ImportFixtures.dword(function.config, offset), "\(device.address) offset 0x\(String(offset, radix: 16))")
                #expect(value == fromFile, "\(device.address) offset 0x\(String(offset, radix: 16)) differs from the file")
            }
            // Identity from the bytes, the rest from the capture.
            #expect(device.identity.vendor == function.vendorID)
            #expect(device.identity.device == function.deviceID)
            #expect(device.irq == (function.irq ?? 0))
            #expect(device.bootDriver == function.driver)
            #expect(device.label == (function.name ?? ""))
            #expect(device.isPCIExpress == CapabilityScanner.standardCapabilities(device.config).contains { $0.0 == CapabilityID.pciExpress })
        }
    }

    @Test("masks are well-formed and the reset image keeps every read-only bit", arguments: ImportFixtures.dumpNames)
    func masksAndResetImage(name: String) throws {
        for (function, device) in try ImportFixtures.imported(name) {
            let space = device.config
            #expect(device.resetImage.count == space.size)
            for position in 0..<space.size {
                #expect(space.writable[position] & space.writeOneClear[position] == 0)
                let changeable = space.writable[position] | space.writeOneClear[position]
                #expect(device.resetImage[position] & ~changeable == function.config[position] & ~changeable,
                        "\(device.address) 0x\(String(position, radix: 16)): a read-only bit differs in the reset image")
            }
            // Identification registers and the capability pointer are read-only everywhere.
            for position in [0, 1, 2, 3, 8, 9, 0x0a, 0x0b, 0x0e, 0x34, 0x3d] {
                #expect(space.writable[position] | space.writeOneClear[position] == 0, "\(device.address) 0x\(String(position, radix: 16))")
            }
            // The reset values DeviceBuilder uses: Device Control 0x2810, AER severity 0x00462030.
            if device.capabilities.pciExpress != 0 {
                let control = device.capabilities.pciExpress + PCIeRegister.deviceControl
                let mask = space.writableMask(control, width: 2)
                #expect(mask & 0x7fff == 0x7fff)
                #expect(ImportFixtures.dword(device.resetImage, control) & 0xffff & mask == 0x2810)
            }
            if device.capabilities.aer != 0 {
                let severity = device.capabilities.aer + 0x0c
                let mask = space.writableMask(severity, width: 4)
                #expect(ImportFixtures.dword(device.resetImage, severity) & mask == 0x0046_2030 & mask)
            }
            // The Command register's changeable bits reset to 0.
            #expect(ImportFixtures.dword(device.resetImage, 4) & space.writableMask(4, width: 2) == 0)
        }
    }

    // MARK: - Register semantics on imported functions

    @Test("writing 0xffff to Status clears only the RW1C bits", arguments: ImportFixtures.dumpNames)
    func statusWriteOneToClear(name: String) throws {
        for device in try ImportFixtures.importedDevices(name) {
            let captured = UInt16(ImportFixtures.read(device, PCIRegister.status, 2))
            device.hardwareWrite(PCIRegister.status, width: 2, value: 0xffff)
            #expect(UInt16(ImportFixtures.read(device, PCIRegister.status, 2)) == captured & ~PCIStatus.writeOneClearBits)

            // The hardware reports every error bit; writing 0 changes nothing, one bit clears one.
            device.config.store(PCIRegister.status, width: 2, value: UInt32(captured | PCIStatus.writeOneClearBits))
            device.hardwareWrite(PCIRegister.status, width: 2, value: 0)
            #expect(UInt16(ImportFixtures.read(device, PCIRegister.status, 2)) == captured | PCIStatus.writeOneClearBits)
            device.hardwareWrite(PCIRegister.status, width: 2, value: UInt32(PCIStatus.detectedParity))
            #expect(UInt16(ImportFixtures.read(device, PCIRegister.status, 2))
                    == (captured | PCIStatus.writeOneClearBits) & ~PCIStatus.detectedParity)
            device.hardwareWrite(PCIRegister.status, width: 2, value: 0xffff)
            let after = UInt16(ImportFixtures.read(device, PCIRegister.status, 2))
            #expect(after == captured & ~PCIStatus.writeOneClearBits)
            // Read-only status bits (capability list, DEVSEL timing, ...) never move.
            #expect(after & ~PCIStatus.writeOneClearBits == captured & ~PCIStatus.writeOneClearBits)

            if device.isBridge {
                let secondary = UInt16(ImportFixtures.read(device, PCIRegister.secondaryStatus, 2))
                device.config.store(PCIRegister.secondaryStatus, width: 2, value: UInt32(secondary | 0xf900))
                device.hardwareWrite(PCIRegister.secondaryStatus, width: 2, value: 0xffff)
                #expect(UInt16(ImportFixtures.read(device, PCIRegister.secondaryStatus, 2)) == secondary & ~0xf900)
            }
        }
    }

    @Test("the Command register takes only the spec's RW bits", arguments: ImportFixtures.dumpNames)
    func commandMask(name: String) throws {
        for device in try ImportFixtures.importedDevices(name) {
            var expected = PCICommand.io | PCICommand.memory | PCICommand.master | PCICommand.parity | PCICommand.serr
                | PCICommand.intxDisable
            if !device.isPCIExpress { expected |= PCICommand.special | PCICommand.invalidate | PCICommand.vgaPalette }
            #expect(device.config.writableMask(PCIRegister.command, width: 2) == UInt32(expected))
            let before = device.command
            device.hardwareWrite(PCIRegister.command, width: 2, value: 0xffff)
            #expect(device.command == before | expected)
            device.hardwareWrite(PCIRegister.command, width: 2, value: 0)
            #expect(device.command == before & ~expected)
        }
    }

    @Test("capability headers (id and next) are read-only", arguments: ImportFixtures.dumpNames)
    func capabilityHeadersReadOnly(name: String) throws {
        for device in try ImportFixtures.importedDevices(name) {
            let (standard, extended) = ImportFixtures.capabilityPositions(device)
            for (_, position) in standard {
                let header = ImportFixtures.read(device, position, 2)
                device.hardwareWrite(position, width: 2, value: ~header & 0xffff)
                device.hardwareWrite(position, width: 1, value: 0)
                device.hardwareWrite(position + 1, width: 1, value: 0xff)
                #expect(ImportFixtures.read(device, position, 2) == header, "\(device.address) capability at 0x\(String(position, radix: 16))")
            }
            for (_, position) in extended {
                let header = ImportFixtures.read(device, position, 4)
                device.hardwareWrite(position, width: 4, value: ~header)
                device.hardwareWrite(position, width: 4, value: 0)
                #expect(ImportFixtures.read(device, position, 4) == header, "\(device.address) capability at 0x\(String(position, radix: 16))")
            }
            let pointer = ImportFixtures.read(device, PCIRegister.capabilityList, 1)
            device.hardwareWrite(PCIRegister.capabilityList, width: 1, value: ~pointer & 0xff)
            #expect(ImportFixtures.read(device, PCIRegister.capabilityList, 1) == pointer)
        }
    }

    @Test func msixOnlyEnableAndFunctionMaskWritable() throws {
        var checked = 0
        for name in ImportFixtures.dumpNames {
            for device in try ImportFixtures.importedDevices(name) {
                let (standard, _) = ImportFixtures.capabilityPositions(device)
                for (id, cap) in standard where id == CapabilityID.msix {
                    checked += 1
                    let flags = ImportFixtures.read(device, cap + 2, 2)
                    let table = ImportFixtures.read(device, cap + 4, 4)
                    let pba = ImportFixtures.read(device, cap + 8, 4)
                    #expect(device.config.writableMask(cap + 2, width: 2) == 0xc000)
                    device.hardwareWrite(cap + 2, width: 2, value: ~flags & 0xffff)
                    #expect(ImportFixtures.read(device, cap + 2, 2) == (flags & 0x3fff) | (~flags & 0xc000))
                    device.hardwareWrite(cap + 4, width: 4, value: ~table)
                    device.hardwareWrite(cap + 8, width: 4, value: ~pba)
                    #expect(ImportFixtures.read(device, cap + 4, 4) == table)
                    #expect(ImportFixtures.read(device, cap + 8, 4) == pba)
                }
            }
        }
        #expect(checked >= 3, "cap-pcie-2 and both virtio functions have MSI-X")
    }

    @Test func msiSemantics() throws {
        var checked = 0
        for name in ImportFixtures.dumpNames {
            for device in try ImportFixtures.importedDevices(name) {
                let (standard, _) = ImportFixtures.capabilityPositions(device)
                for (id, cap) in standard where id == CapabilityID.msi {
                    checked += 1
                    let flags = UInt16(ImportFixtures.read(device, cap + 2, 2))
                    #expect(device.config.writableMask(cap + 2, width: 2) == 0x0071)
                    #expect(device.config.writableMask(cap + 4, width: 4) == 0xffff_fffc)
                    let is64Bit = flags & MSIRegister.is64Bit != 0
                    let data = cap + (is64Bit ? 0x0c : 0x08)
                    if is64Bit { #expect(device.config.writableMask(cap + 8, width: 4) == 0xffff_ffff) }
                    #expect(device.config.writableMask(data, width: 2) == 0xffff)
                    if flags & MSIRegister.perVectorMasking != 0 {
                        let vectors = 1 << min(Int((flags >> 1) & 0x7), 5)
                        let expected: UInt32 = vectors == 32 ? 0xffff_ffff : (1 << UInt32(vectors)) - 1
                        #expect(device.config.writableMask(data + 4, width: 4) == expected)
                        #expect(device.config.writableMask(data + 8, width: 4) == 0, "pending bits are read-only")
                    }
                    // Multiple Message Enable cannot exceed Multiple Message Capable.
                    device.hardwareWrite(cap + 2, width: 2, value: UInt32(flags | 0x0070))
                    let after = UInt16(ImportFixtures.read(device, cap + 2, 2))
                    #expect((after >> 4) & 0x7 == (flags >> 1) & 0x7)
                    #expect(after & 0xff8e == flags & 0xff8e, "capable count, 64-bit and masking flags are read-only")
                }
            }
        }
        #expect(checked >= 3)
    }

    @Test("BAR sizing: all-ones reads back the size mask and type bits", arguments: ImportFixtures.dumpNames)
    func barSizing(name: String) throws {
        for (function, device) in try ImportFixtures.imported(name) {
            let headerType = function.headerType
            let registers = headerType == 0 ? 6 : headerType == 1 ? 2 : headerType == 2 ? 1 : 0
            var upperHalves = Set<Int>()
            for index in 0..<6 {
                guard let bar = device.bars[index] else { continue }
                #expect(index < registers)
                let captured = try #require(function.bar(index))
                #expect(bar.size == captured.size)
                #expect(bar.address == captured.base)
                #expect(bar.kind.isIO == captured.isIO)
                #expect(bar.kind.is64Bit == captured.is64Bit)
                let offset = PCIRegister.bar(index)
                let original = ImportFixtures.read(device, offset, 4)
                device.hardwareWrite(offset, width: 4, value: 0xffff_ffff)
                let sized = ImportFixtures.read(device, offset, 4)
                let sizeMask = ~(bar.size - 1)
                if bar.kind.isIO {
                    #expect(original & 0x1 == 0x1)
                    let decode: UInt32 = original & 0xffff_0000 == 0 ? 0x0000_fffc : 0xffff_fffc
                    #expect(sized == (UInt32(truncatingIfNeeded: sizeMask) & decode) | 0x1)
                } else {
                    #expect(sized == (UInt32(truncatingIfNeeded: sizeMask) & 0xffff_fff0) | (original & 0xf))
                    #expect(original & 0xf == bar.kind.typeBits | (bar.kind.isPrefetchable ? 0x8 : 0))
                }
                if bar.kind.is64Bit {
                    upperHalves.insert(index + 1)
                    let upper = ImportFixtures.read(device, offset + 4, 4)
                    device.hardwareWrite(offset + 4, width: 4, value: 0xffff_ffff)
                    #expect(ImportFixtures.read(device, offset + 4, 4) == UInt32(truncatingIfNeeded: sizeMask >> 32))
                    device.hardwareWrite(offset + 4, width: 4, value: upper)
                    #expect(ImportFixtures.read(device, offset + 4, 4) == upper)
                }
                // Writing the original back restores it (the address was aligned to the size).
                device.hardwareWrite(offset, width: 4, value: original)
                #expect(ImportFixtures.read(device, offset, 4) == original)
            }
            // BARs of unknown size stay read-only: sizing reads back the captured register.
            for index in 0..<registers where device.bars[index] == nil && !upperHalves.contains(index) {
                let offset = PCIRegister.bar(index)
                let original = ImportFixtures.read(device, offset, 4)
                device.hardwareWrite(offset, width: 4, value: 0xffff_ffff)
                #expect(ImportFixtures.read(device, offset, 4) == original, "\(device.address) BAR\(index) has no known size")
            }
            // The ROM: size mask from bit 11 plus the enable bit.
            if let rom = device.bars[6] {
                let offset = headerType == 1 ? PCIRegister.romAddressBridge : PCIRegister.romAddress
                let original = ImportFixtures.read(device, offset, 4)
                device.hardwareWrite(offset, width: 4, value: 0xffff_ffff)
                #expect(ImportFixtures.read(device, offset, 4) == (UInt32(truncatingIfNeeded: ~(rom.size - 1)) & 0xffff_f800) | 0x1)
                device.hardwareWrite(offset, width: 4, value: original)
                #expect(ImportFixtures.read(device, offset, 4) == original)
            }
        }
    }

    @Test("the BAR sizing test meets I/O, 32-bit, 64-bit and ROM BARs")
    func barSizingCoverage() throws {
        func kinds(_ name: String) throws -> Set<BARDescriptor.Kind> {
            Set(try ImportFixtures.importedDevices(name).flatMap { $0.bars.compactMap { $0?.kind } })
        }
        let nic = try kinds("cap-pcie-2")
        #expect(nic.contains(.io) && nic.contains(.memory32) && nic.contains(.rom))
        let virtio = try kinds("cap-vendor-virtio")
        #expect(virtio.contains(.io))
        #expect(virtio.contains { $0.is64Bit })
    }

    @Test("vendor-specific and unknown capability registers are read-only", arguments: ImportFixtures.dumpNames)
    func unknownRegistersReadOnly(name: String) throws {
        let handledStandard: Set<UInt8> = [CapabilityID.powerManagement, CapabilityID.vpd, CapabilityID.msi, CapabilityID.msix,
                                           CapabilityID.pciExpress]
        let handledExtended: Set<UInt16> = [ExtendedCapabilityID.aer, ExtendedCapabilityID.sriov]
        for device in try ImportFixtures.importedDevices(name) {
            let (standard, extended) = ImportFixtures.capabilityPositions(device)
            var regions: [Range<Int>] = []
            let standardPositions = standard.map(\.1)
            for (id, position) in standard where !handledStandard.contains(id) {
                var end = ImportFixtures.regionEnd(position, among: standardPositions, limit: min(position + 16, 0x100))
                if id == CapabilityID.vendorSpecific {
                    end = min(end, position + max(Int(ImportFixtures.read(device, position + 2, 1)), 3))
                }
                regions.append(position..<end)
            }
            let extendedPositions = extended.map(\.1)
            for (id, position) in extended where !handledExtended.contains(id) {
                regions.append(position..<ImportFixtures.regionEnd(position, among: extendedPositions,
                                                                   limit: min(position + 16, device.configSize)))
            }
            for region in regions {
                for position in region {
                    let before = ImportFixtures.read(device, position, 1)
                    device.hardwareWrite(position, width: 1, value: 0xff)
                    device.hardwareWrite(position, width: 1, value: 0x00)
                    #expect(ImportFixtures.read(device, position, 1) == before, "\(device.address) 0x\(String(position, radix: 16))")
                }
            }
        }
    }

    @Test func virtioVendorCapabilitiesAreReadOnly() throws {
        var checked = 0
        for device in try ImportFixtures.importedDevices("cap-vendor-virtio") {
            for (id, position) in CapabilityScanner.standardCapabilities(device.config) where id == CapabilityID.vendorSpecific {
                let length = Int(ImportFixtures.read(device, position, 4) >> 16 & 0xff)
                for byte in position..<position + length {
                    #expect(device.config.writable[byte] == 0 && device.config.writeOneClear[byte] == 0)
                }
                checked += 1
            }
        }
        #expect(checked > 0)
    }

    // MARK: - Reset and driver state

    @Test("FLR through Device Control resets changeable bits and keeps read-only ones")
    func functionLevelReset() throws {
        let device = try #require(try ImportFixtures.importedDevices("cap-pcie-2").first)
        let pcie = device.capabilities.pciExpress
        #expect(pcie != 0)
        #expect(device.hasFunctionReset)
        let msix = device.capabilities.msix
        #expect(msix != 0)
        let before = device.config.bytes
        let space = device.config
        #expect(device.command & (PCICommand.master | PCICommand.memory) != 0, "captured with a driver bound")
        #expect((device.msixFlags ?? 0) & MSIXRegister.enable != 0, "captured with MSI-X on")
        #expect(space.writableMask(pcie + PCIeRegister.deviceControl, width: 2) & 0x8000 != 0, "Initiate FLR is writable")

        let control = ImportFixtures.read(device, pcie + PCIeRegister.deviceControl, 2)
        device.hardwareWrite(pcie + PCIeRegister.deviceControl, width: 2, value: control | UInt32(PCIeRegister.devCtlInitiateFLR))

        #expect(device.command == 0)
        #expect((device.msixFlags ?? 0) & MSIXRegister.enable == 0)
        // The reset value, but Max_Payload_Size, which an FLR keeps (PCIe Base 6.6.2).
        let expectedControl = 0x2810 | (control & UInt32(PCIeRegister.devCtlMaxPayload))
        #expect(ImportFixtures.read(device, pcie + PCIeRegister.deviceControl, 2) == expectedControl, "Initiate FLR reads 0")
        #expect(ImportFixtures.read(device, pcie + PCIeRegister.deviceStatus, 2) & 0x000f == 0)
        for (index, bar) in device.bars.enumerated() where index < 6 {
            guard let bar else { continue }
            let typeBits = UInt32(before[PCIRegister.bar(index)] & (bar.kind.isIO ? 0x3 : 0xf))
            #expect(ImportFixtures.read(device, PCIRegister.bar(index), 4) == typeBits, "BAR\(index) back to its type bits")
        }
        // Sticky bits and FLR's exceptions (EmulatedDevice.preservedRegisters) keep their values.
        var kept = [UInt8](repeating: 0, count: before.count)
        for register in device.preservedRegisters(.functionLevel) {
            for index in 0..<register.width { kept[register.offset + index] |= UInt8(truncatingIfNeeded: register.mask >> (8 * UInt32(index))) }
        }
        let after = device.config.bytes
        for position in 0..<after.count {
            let changeable = (space.writable[position] | space.writeOneClear[position]) & ~kept[position]
            #expect(after[position] & ~changeable == before[position] & ~changeable,
                    "read-only and preserved bits at 0x\(String(position, radix: 16)) kept")
            #expect(after[position] & changeable == device.resetImage[position] & changeable,
                    "changeable bits at 0x\(String(position, radix: 16)) at their reset value")
        }
    }

    @Test("driver unbind quiesces a function captured with MSI-X and bus mastering on")
    func driverUnbindQuiesces() throws {
        let device = try #require(try ImportFixtures.importedDevices("cap-pcie-2").first)
        #expect(device.bootDriver == "igb")
        #expect(device.kernelMSIXEnabled)
        #expect(!device.kernelMSIEnabled)
        #expect(device.isBusmaster)
        #expect(device.enableCount == 1)
        #expect(device.command & PCICommand.master != 0)

        device.quiesceForDriverRemoval()
        #expect((device.msixFlags ?? 0) & MSIXRegister.enable == 0)
        #expect(device.command & PCICommand.master == 0)
        #expect(device.enableCount == 0)
        #expect(!device.isBusmaster)
        #expect(!device.kernelMSIXEnabled)
    }

    @Test("the kernel view follows the captured bytes when a driver is known", arguments: ImportFixtures.dumpNames)
    func kernelViewFromCapture(name: String) throws {
        for device in try ImportFixtures.importedDevices(name) {
            let command = device.command
            let msi = (device.msiFlags ?? 0) & MSIRegister.enable != 0
            let msix = (device.msixFlags ?? 0) & MSIXRegister.enable != 0
            if device.bootDriver != nil {
                #expect(device.enableCount == (command & (PCICommand.io | PCICommand.memory) != 0 ? 1 : 0))
                #expect(device.isBusmaster == (command & PCICommand.master != 0))
                #expect(device.kernelMSIEnabled == msi)
                #expect(device.kernelMSIXEnabled == msix)
            } else {
                #expect(device.enableCount == 0 && !device.isBusmaster && !device.kernelMSIEnabled && !device.kernelMSIXEnabled)
            }
            device.quiesceForDriverRemoval()
            #expect((device.msiFlags ?? 0) & MSIRegister.enable == 0)
            #expect((device.msixFlags ?? 0) & MSIXRegister.enable == 0)
            #expect(device.command & PCICommand.master == 0)
            #expect(device.enableCount == 0)
        }
    }

    @Test func driverAndIRQDefaults() throws {
        let captured = try #require(try LspciDump.parse(try ImportFixtures.dumpText("cap-pcie-2")).first)
        var anonymous = captured
        anonymous.driver = nil
        anonymous.irq = nil

        let bare = DeviceImporter.device(from: anonymous)
        #expect(bare.bootDriver == nil)
        #expect(bare.irq == 0)
        #expect(bare.enableCount == 0 && !bare.isBusmaster && !bare.kernelMSIXEnabled)

        let named = DeviceImporter.device(from: anonymous, defaultIRQ: 42, driver: "igb")
        #expect(named.bootDriver == "igb")
        #expect(named.irq == 42)
        #expect(named.enableCount == 1 && named.isBusmaster && named.kernelMSIXEnabled)

        // The capture's own values win over the defaults.
        let own = DeviceImporter.device(from: captured, defaultIRQ: 42, driver: "other")
        #expect(own.bootDriver == captured.driver)
        #expect(own.irq == captured.irq)

        // pciback is not a host driver: the function replays seized (Dom0.init), with no host
        // driver's kernel state.
        var seized = captured
        seized.driver = "pciback"
        let pciback = DeviceImporter.device(from: seized)
        #expect(pciback.bootDriver == "pciback")
        #expect(pciback.enableCount == 0 && !pciback.kernelMSIXEnabled)
    }

    // MARK: - Agreement with DeviceBuilder

    @Test("a built-in device re-imported from its bytes gets the builder's masks (documented refinements aside)")
    func agreesWithDeviceBuilder() throws {
        let machine = BuiltinMachine.make()
        for address in machine.order {
            let original = try #require(machine[address])
            let kinds: [BARDescriptor.Kind: CapturedBAR.Kind] = [
                .io: .io, .memory32: .memory(is64Bit: false, prefetchable: false),
                .memory32Prefetchable: .memory(is64Bit: false, prefetchable: true),
                .memory64: .memory(is64Bit: true, prefetchable: false),
                .memory64Prefetchable: .memory(is64Bit: true, prefetchable: true),
            ]
            var bars: [CapturedBAR] = []
            for (index, bar) in original.bars.enumerated() {
                guard let bar else { continue }
                let kind: CapturedBAR.Kind = bar.kind == .rom ? .rom(enabled: false) : kinds[bar.kind]!
                bars.append(CapturedBAR(index: index, base: bar.address, size: bar.size, kind: kind))
            }
            var iovBARs: [CapturedBAR] = []
            let sriov = original.capabilities.sriov
            if sriov != 0 {
                // sysfs shows a VF BAR's resource for all TotalVFs.
                let totalVFs = UInt64(original.config.read(sriov + 0x0e, width: 2))
                for index in 0..<6 {
                    let mask = original.config.writableMask(sriov + 0x24 + 4 * index, width: 4)
                    guard mask != 0, index == 0 || original.config.read(sriov + 0x24 + 4 * (index - 1), width: 4) & 0x6 != 0x4 else { continue }
                    let register = original.config.read(sriov + 0x24 + 4 * index, width: 4)
                    let is64Bit = register & 0x6 == 0x4
                    let upper = is64Bit ? original.config.writableMask(sriov + 0x28 + 4 * index, width: 4) : 0xffff_ffff
                    let size = ~(UInt64(upper) << 32 | UInt64(mask)) &+ 1
                    iovBARs.append(CapturedBAR(index: index, base: 0, size: size * totalVFs,
                                               kind: .memory(is64Bit: is64Bit, prefetchable: register & 0x8 != 0)))
                }
            }
            let captured = CapturedFunction(address: address, config: original.config.bytes, bars: bars, iovBARs: iovBARs,
                                            irq: original.irq, driver: original.bootDriver, name: original.label)
            let imported = DeviceImporter.device(from: captured)
            #expect(imported.bars == original.bars)
            #expect(imported.capabilities == original.capabilities)

            // Where the importer reads more out of the bytes than the builder assumed.
            var refined = Set<Int>()
            let pcie = original.capabilities.pciExpress
            if pcie != 0 {
                for offset in [PCIRegister.secondaryLatency] where original.isBridge { refined.insert(offset) }
                for offset in [PCIeRegister.slotStatus, PCIeRegister.deviceControl2] {
                    refined.formUnion(pcie + offset..<pcie + offset + 2)
                }
            }
            if original.capabilities.aer != 0, original.isBridge {
                refined.formUnion(original.capabilities.aer + 0x2c..<original.capabilities.aer + 0x34)
            }
            if sriov != 0 { refined.formUnion(sriov + 0x08..<sriov + 0x0a) }

            for position in 0..<original.configSize where !refined.contains(position) {
                #expect(imported.config.writable[position] == original.config.writable[position],
                        "\(address) RW mask at 0x\(String(position, radix: 16))")
                #expect(imported.config.writeOneClear[position] == original.config.writeOneClear[position],
                        "\(address) RW1C mask at 0x\(String(position, radix: 16))")
                let changeable = original.config.writable[position] | original.config.writeOneClear[position]
                #expect(imported.resetImage[position] & changeable == original.resetImage[position] & changeable,
                        "\(address) reset value at 0x\(String(position, radix: 16))")
            }
        }
    }

    // MARK: - Errors and other sources

    @Test func sixtyFourByteDumpIsRefused() throws {
        let text = ImportFixtures.truncatedDump()
        let error = #expect(throws: CaptureError.self) {
            _ = try DeviceImporter.importDump(text: text)
        }
        guard case .truncatedConfig(_, 64, 256, _) = error else {
            Issue.record("expected a truncated-config error, got \(String(describing: error))")
            return
        }
        #expect(error?.description.contains("lspci -xxx") == true)
        let directory = try ImportFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("short.dump")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let fileError = #expect(throws: CaptureError.self) {
            _ = try DeviceImporter.importDump(path: file.path)
        }
        guard case .truncatedConfig(_, 64, 256, _) = fileError else {
            Issue.record("expected a truncated-config error, got \(String(describing: fileError))")
            return
        }
    }

    @Test func unreadableOrEmptyDumpFiles() throws {
        let directory = try ImportFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let missing = directory.appendingPathComponent("missing").path
        do throws(CaptureError) {
            _ = try DeviceImporter.importDump(path: missing)
            Issue.record("a missing file imported")
        } catch {
            #expect(error == .io(path: missing, errno: .noSuchFileOrDirectory))
            #expect(error.description.contains(missing))
        }
        let empty = directory.appendingPathComponent("empty")
        try "just some text\n".write(to: empty, atomically: true, encoding: .utf8)
        do throws(CaptureError) {
            _ = try DeviceImporter.importDump(path: empty.path)
            Issue.record("a file without functions imported")
        } catch {
            guard case .malformedFile(let path, let reason) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(path == empty.path)
            #expect(reason.contains("lspci"))
        }
        #expect(try DeviceImporter.importDump(text: "").isEmpty)
    }

    @Test("a sysfs device directory imports like the dump it was written from")
    func sysfsDirectory() throws {
        let captured = try #require(try LspciDump.parse(try ImportFixtures.dumpText("cap-pcie-2")).first)
        let root = try ImportFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let directory = root.appendingPathComponent(captured.address.description)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data(captured.config).write(to: directory.appendingPathComponent("config"))
        try SysfsResource.text(bars: captured.bars).write(to: directory.appendingPathComponent("resource"), atomically: true, encoding: .utf8)
        try "\(captured.irq ?? 0)\n".write(to: directory.appendingPathComponent("irq"), atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: directory.appendingPathComponent("driver").path,
                                                   withDestinationPath: "../../../bus/pci/drivers/igb")

        let device = try DeviceImporter.importSysfs(deviceDirectory: directory.path)
        let fromDump = DeviceImporter.device(from: captured)
        #expect(device.address == captured.address)
        #expect(device.config == fromDump.config)
        #expect(device.resetImage == fromDump.resetImage)
        #expect(device.bars == fromDump.bars)
        #expect(device.irq == captured.irq)
        #expect(device.bootDriver == "igb")
        #expect(device.kernelMSIXEnabled && device.isBusmaster && device.enableCount == 1)

        #expect(throws: CaptureError.self) {
            _ = try DeviceImporter.importSysfs(deviceDirectory: root.appendingPathComponent("not-a-device").path)
        }
    }
}
