import Testing

@testable import PCIBackFS

// Regressions found by the libFuzzer harnesses in scripts/fuzz (scripts/fuzz.sh TARGET SECONDS).
// Each test names the target and the input that found the problem; each failed on the code
// before its fix. Crashes are checked in a child process (exit tests), so a regression fails
// the test instead of killing the test run.

@Suite("fuzz regressions")
struct FuzzRegressionTests {
    /// The host bridge 0000:00:00.0 of the built-in machine (no host driver), bound to pciback.
    static func hostBridgeBound(permissive: Bool = false) throws -> (Dom0, PCIAddress) {
        var dom0 = try Dom0(machine: BuiltinMachine.make(), policy: FilterPolicy(globalPermissive: permissive))
        let name = Array("0000:00:00.0\n".utf8)
        try dom0.newSlot(input: name)
        try dom0.bind(driver: PCIDriver.pcibackName, input: name)
        return (dom0, PCIAddress(bus: 0, slot: 0, function: 0))
    }

    /// Target `filter`, input 00 00 00 00 2f 01: a guest write of 4 bytes at offset Int.max - 3
    /// (aligned, so valid) trapped with "arithmetic overflow" in `ConfigField.overlaps`
    /// (`offset + size`); reads trapped the same way in `EmulatedDevice.hardwareRead`. Such an
    /// offset is beyond config space: the access reaches the PCI core, which answers -EINVAL.
    @Test("guest accesses at offsets near Int.max do not trap")
    func accessNearIntMax() async throws {
        try await #require(processExitsWith: .success) {
            for (offset, size) in [(Int.max - 3, 4), (Int.max - 1, 2), (Int.max, 1)] {
                var (dom0, address) = try FuzzRegressionTests.hostBridgeBound()
                _ = dom0.guestRead(address, offset: offset, size: size)
                _ = dom0.guestWrite(address, offset: offset, size: size, value: 0)
                dom0.policy.globalPermissive = true
                _ = dom0.guestWrite(address, offset: offset, size: size, value: 0)
                _ = dom0.hostRead(address, offset: offset, width: size)
                dom0.hostWrite(address, offset: offset, width: size, value: 0)
            }
        }
        // What the accesses answer (in this process, now that the child showed they do not trap).
        for (offset, size) in [(Int.max - 3, 4), (Int.max - 1, 2), (Int.max, 1)] {
            var (dom0, address) = try Self.hostBridgeBound()
            let read = dom0.guestRead(address, offset: offset, size: size)
            #expect(read.error == -22)
            #expect(read.value == (size == 4 ? 0xffff_ffff : (1 << (8 * UInt32(size))) - 1))
            // Not permissive: an access no field covers is dropped with success; permissive:
            // the PCI core's -EINVAL.
            #expect(dom0.guestWrite(address, offset: offset, size: size, value: 0).error == 0)
            dom0.policy.globalPermissive = true
            #expect(dom0.guestWrite(address, offset: offset, size: size, value: 0).error == -22)
        }
    }

    /// Target `filter`, input 00 | 00 01 01 10 14 03 00 | 00 01 01 10 14 00 00 (profile
    /// current; two 2-byte guest writes to PMCSR of the RTL8139 at 0000:00:05.0, whose PM
    /// capability lacks No_Soft_Reset): D3hot, then D0. The emulated function reset itself on
    /// the way back to D0 and its BARs read 0 in hardware (BAR0 0x0000c001 -> 0x00000001,
    /// BAR1 0xfebf1000 -> 0), so a guest moved its BARs through pciback. The kernel's
    /// pci_set_power_state restores them (pci_power_up -> pci_restore_bars).
    @Test("a guest D3hot -> D0 cycle keeps the BARs where the kernel put them")
    func powerCycleKeepsBARs() throws {
        var dom0 = try Dom0(machine: BuiltinMachine.make())
        let address = PCIAddress(bus: 0, slot: 5, function: 0)
        let name = Array("0000:00:05.0\n".utf8)
        try dom0.unbind(driver: "8139too", input: name)
        try dom0.newSlot(input: name)
        try dom0.bind(driver: PCIDriver.pcibackName, input: name)
        let device = try #require(dom0.device(address))
        let pmcsr = device.capabilities.powerManagement + PMRegister.controlStatus
        #expect(device.config.read(pmcsr, width: 2) & UInt32(PMRegister.noSoftReset) == 0)
        let bars = (0..<6).map { device.config.read(PCIRegister.bar($0), width: 4) }
        let rom = device.config.read(PCIRegister.romAddress, width: 4)
        #expect(bars[0] == 0x0000_c001 && bars[1] == 0xfebf_1000)

        #expect(dom0.guestWrite(address, offset: pmcsr, size: 2, value: 3).error == 0)
        #expect(device.powerState == 3)
        #expect(dom0.guestWrite(address, offset: pmcsr, size: 2, value: 0).error == 0)
        #expect(device.powerState == 0)
        #expect((0..<6).map { device.config.read(PCIRegister.bar($0), width: 4) } == bars)
        #expect(device.config.read(PCIRegister.romAddress, width: 4) == rom)

        // The same through pci_enable_device (a command write with MEMORY while in D3hot).
        #expect(dom0.guestWrite(address, offset: pmcsr, size: 2, value: 3).error == 0)
        #expect(dom0.guestWrite(address, offset: PCIRegister.command, size: 2, value: UInt32(PCICommand.memory)).error == 0)
        #expect(device.powerState == 0)
        #expect((0..<6).map { device.config.read(PCIRegister.bar($0), width: 4) } == bars)
    }
}
