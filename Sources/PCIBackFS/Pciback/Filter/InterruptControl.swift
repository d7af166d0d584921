/// The command register's write path and the MSI/MSI-X flag fields: where
/// `allow_interrupt_control` and the interrupt-type rules of each kernel profile live
/// (spec §5.2, §6.3 - §6.5, §11).
enum CommandRegister {
    /// `command_write`, steps 1 - 7 of spec §5.2.
    static func write(
        _ device: EmulatedDevice, _ data: inout PcibackDeviceData, value requested: UInt16, policy: FilterPolicy,
        log: inout KernelLog
    ) -> (error: Int32, rule: String?) {
        var value = requested
        var rule: String?
        // 1. Enable or disable through the PCI core; IO/MEMORY are never written as given.
        if !device.isEnabled, value & (PCICommand.io | PCICommand.memory) != 0 {
            do {
                try device.enableDevice()
            } catch {
                return (-error.rawValue, "command: pci_enable_device failed")
            }
            data.enableINTx = true
        } else if device.isEnabled, value & (PCICommand.io | PCICommand.memory) == 0 {
            device.disableDevice()
            data.enableINTx = false
        }
        // 2. Bus master, against the kernel's is_busmaster.
        if !device.isBusmaster, value & PCICommand.master != 0 {
            device.setBusMaster(true)
        } else if device.isBusmaster, value & PCICommand.master == 0 {
            device.setBusMaster(false)
        }
        // 3. Memory write and invalidate, against the shadow.
        if data.commandShadow & PCICommand.invalidate == 0, value & PCICommand.invalidate != 0 {
            do {
                try device.setMemoryWriteInvalidate()
            } catch {
                log.device(device.address, "cannot enable memory-write-invalidate (\(-error.rawValue))")
                value &= ~PCICommand.invalidate
            }
        } else if data.commandShadow & PCICommand.invalidate != 0, value & PCICommand.invalidate == 0 {
            device.clearMemoryWriteInvalidate()
        }
        // 4. INTx, only with allow_interrupt_control and only when the bit differs from the shadow.
        if policy.profile.hasInterruptControl, data.allowInterruptControl,
           (value ^ data.commandShadow) & PCICommand.intxDisable != 0 {
            if value & PCICommand.intxDisable != 0 {
                device.setINTx(enabled: false)
            } else if !policy.profile.checksINTxEnable {
                device.setINTx(enabled: true)
            } else {
                let type = InterruptControl.interruptType(device, profile: policy.profile)
                let constants = policy.profile.interruptTypeConstants
                if type == constants.none {
                    device.setINTx(enabled: true)
                } else if type != constants.intx {
                    return (PCIBIOS.setFailed,
                            "INTx enable: MSI or MSI-X enabled in hardware, profile \(policy.profile.rawValue)")
                }
            }
        } else if (value ^ data.commandShadow) & PCICommand.intxDisable != 0 {
            rule = policy.profile.hasInterruptControl
                ? "INTx disable bit: allow_interrupt_control not set; shadowed only"
                : "INTx disable bit: not a guest bit; shadowed only (profile pre-5.6)"
        }
        // 5. The shadow takes the value.
        data.commandShadow = value
        // 6, 7. Permissive applies the guest bits directly.
        guard data.permissive || policy.globalPermissive else { return (0, rule) }
        let (hardware, error) = device.hardwareRead(PCIRegister.command, width: 2)
        if error != 0 { return (error, rule) }
        if UInt16(truncatingIfNeeded: hardware) == value { return (0, rule) }
        let guest = PCICommand.guestBits
        let merged = (value & guest) | (UInt16(truncatingIfNeeded: hardware) & ~guest)
        return (device.hardwareWrite(PCIRegister.command, width: 2, value: UInt32(merged)), rule)
    }
}

enum InterruptControl {
    enum Capability {
        case msi
        case msix
    }

    /// `xen_pcibk_get_interrupt_type`, read from hardware, in the profile's constants. A read
    /// error comes back as the PCIBIOS code, which matches no type.
    static func interruptType(_ device: EmulatedDevice, profile: KernelProfile) -> Int32 {
        let constants = profile.interruptTypeConstants
        var result: Int32 = 0
        let caps = device.capabilities
        if caps.msi != 0 {
            let (flags, error) = device.hardwareRead(caps.msi + MSIRegister.flags, width: 2)
            if error != 0 { return error }
            if UInt16(truncatingIfNeeded: flags) & MSIRegister.enable != 0 { result |= constants.msi }
        }
        if caps.msix != 0 {
            let (flags, error) = device.hardwareRead(caps.msix + MSIXRegister.flags, width: 2)
            if error != 0 { return error }
            if UInt16(truncatingIfNeeded: flags) & MSIXRegister.enable != 0 { result |= constants.msix }
        }
        if !profile.intxYieldsToMSI || result == 0 {
            let (command, error) = device.hardwareRead(PCIRegister.command, width: 2)
            if error != 0 { return error }
            if UInt16(truncatingIfNeeded: command) & PCICommand.intxDisable == 0 { result |= constants.intx }
        }
        // 5.6 returned 0 for "nothing", which is not its NONE; later kernels map it to NONE (0).
        return result
    }

    /// `msi_msix_flags_write`.
    static func flagsWrite(
        _ device: EmulatedDevice, _ data: inout PcibackDeviceData, offset: Int, value: UInt16, capability: Capability,
        policy: FilterPolicy
    ) -> (error: Int32, rule: String?) {
        if data.permissive || policy.globalPermissive {
            return (device.hardwareWrite(offset, width: 2, value: UInt32(value)), nil)
        }
        let (oldValue, error) = device.hardwareRead(offset, width: 2)
        if error != 0 { return (error, nil) }
        let old = UInt16(truncatingIfNeeded: oldValue)
        if value == old { return (0, nil) }
        let name = capability == .msi ? "MSI" : "MSI-X"
        let profile = policy.profile
        let allowedBits = capability == .msi ? MSIRegister.enable : profile.msixAllowedBits
        let enableBit = capability == .msi ? MSIRegister.enable : MSIXRegister.enable
        if !data.allowInterruptControl {
            return (PCIBIOS.setFailed, "\(name) flags: allow_interrupt_control not set")
        }
        if (value ^ old) & ~allowedBits != 0 {
            let changed = String((value ^ old) & ~allowedBits, radix: 16)
            return (PCIBIOS.setFailed, "\(name) flags: bits 0x\(changed) may not change, profile \(profile.rawValue)")
        }
        if value & enableBit != 0 {
            let constants = profile.interruptTypeConstants
            let own = capability == .msi ? constants.msi : constants.msix
            let type = interruptType(device, profile: profile)
            let allowed = type == constants.none || type == own || (profile.intxYieldsToMSI && type == constants.intx)
            guard allowed else {
                return (PCIBIOS.setFailed, "\(name) flags: " + describe(type, constants: constants, profile: profile))
            }
        }
        return (device.hardwareWrite(offset, width: 2, value: UInt32(value)), nil)
    }

    private static func describe(_ type: Int32, constants: InterruptTypeConstants, profile: KernelProfile) -> String {
        var enabled: [String] = []
        if type > 0x80 { return "config read error \(type), profile \(profile.rawValue)" }
        if type & constants.msi != 0 { enabled.append("MSI") }
        if type & constants.msix != 0 { enabled.append("MSI-X") }
        if type & constants.intx != 0 { enabled.append("INTx") }
        if enabled.isEmpty { return "no interrupt type enabled reads as \(type), not NONE (\(constants.none)), profile \(profile.rawValue)" }
        return enabled.joined(separator: " and ") + " enabled in hardware, profile \(profile.rawValue)"
    }
}
