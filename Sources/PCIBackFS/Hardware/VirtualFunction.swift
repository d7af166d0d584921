/// The SR-IOV capability of a physical function as the hardware holds it, and the virtual
/// functions it brings into existence.
public struct SRIOVCapability: Sendable, Equatable {
    public enum Register {
        public static let capabilities = 0x04
        public static let control = 0x08
        public static let status = 0x0a
        public static let initialVFs = 0x0c
        public static let totalVFs = 0x0e
        public static let numVFs = 0x10
        public static let functionDependencyLink = 0x12
        public static let firstVFOffset = 0x14
        public static let vfStride = 0x16
        public static let vfDeviceID = 0x1a
        public static let supportedPageSizes = 0x1c
        public static let systemPageSize = 0x20
        public static let vfBAR0 = 0x24
        public static let migrationStateArray = 0x3c
    }

    public static let vfEnable: UInt16 = 0x0001
    public static let vfMemorySpaceEnable: UInt16 = 0x0008
    public static let ariCapableHierarchy: UInt16 = 0x0010
    public static let vfMigrationCapable: UInt32 = 0x0001

    /// The System Page Size `sriov_init` writes (and caches as iov->pgsz): the smallest
    /// supported size of at least PAGE_SIZE (4 KiB on x86: every supported bit qualifies).
    public static func systemPageSize(supported: UInt32) -> UInt32 { supported & (~supported &+ 1) }

    /// Offset of the capability in the PF's config space.
    public let offset: Int

    public init?(_ device: EmulatedDevice) {
        guard device.capabilities.sriov != 0 else { return nil }
        offset = device.capabilities.sriov
    }

    public func read(_ device: EmulatedDevice, _ register: Int, width: Int) -> UInt32 {
        device.config.read(offset + register, width: width)
    }

    /// The addresses the VF BAR registers hold (what firmware programmed), by VF BAR index, for
    /// each implemented memory VF BAR with a non-zero address.
    public func virtualFunctionBARAddresses(_ device: EmulatedDevice) -> [Int: UInt64] {
        var result: [Int: UInt64] = [:]
        for bar in virtualFunctionBARs(device) {
            let register = offset + Register.vfBAR0 + 4 * bar.index
            var address = UInt64(device.config.read(register, width: 4) & 0xffff_fff0)
            if bar.kind.is64Bit { address |= UInt64(device.config.read(register + 4, width: 4)) << 32 }
            if address != 0 { result[bar.index] = address }
        }
        return result
    }

    /// VF `id`'s BARs from the PF's VF BAR windows: each window's address plus `id` times its
    /// per-VF size (sriov.md §3.4).
    public static func virtualFunctionBARs(_ id: Int, windows: [Int: BARDescriptor]) -> [BARDescriptor?] {
        var bars: [BARDescriptor?] = Array(repeating: nil, count: 7)
        for (index, window) in windows {
            bars[index] = BARDescriptor(kind: window.kind, size: window.size, address: window.address + window.size * UInt64(id))
        }
        return bars
    }

    /// The VF BARs as the hardware sizes them: (index, kind, per-VF size) of each implemented one.
    public func virtualFunctionBARs(_ device: EmulatedDevice) -> [(index: Int, kind: BARDescriptor.Kind, size: UInt64)] {
        var result: [(Int, BARDescriptor.Kind, UInt64)] = []
        var index = 0
        while index < 6 {
            let register = offset + Register.vfBAR0 + 4 * index
            let low = device.config.read(register, width: 4)
            let mask = device.config.writableMask(register, width: 4)
            guard mask != 0 else {
                index += 1
                continue
            }
            let is64 = low & 0x6 == 0x4
            let prefetchable = low & 0x8 != 0
            var sizeMask = UInt64(mask & 0xffff_fff0)
            if is64, index < 5 {
                sizeMask |= UInt64(device.config.writableMask(register + 4, width: 4)) << 32
            } else {
                sizeMask |= 0xffff_ffff_0000_0000
            }
            let size = (~sizeMask &+ 1)
            let kind: BARDescriptor.Kind = is64
                ? (prefetchable ? .memory64Prefetchable : .memory64)
                : (prefetchable ? .memory32Prefetchable : .memory32)
            result.append((index, kind, size))
            index += is64 ? 2 : 1
        }
        return result
    }
}

extension EmulatedDevice {
    /// A virtual function of this PF, as the SR-IOV specification defines its config space:
    /// Vendor and Device ID read 0xffff, BARs, ROM, pin and line read 0, only bus mastering
    /// in Command; a PCI Express capability with FLR, MSI-X, AER. The kernel's identity for it
    /// is the PF's vendor and the VF Device ID; its BARs are windows of the PF's VF BARs.
    func makeVirtualFunction(at address: PCIAddress, index: Int, vfDeviceID: UInt16, bars vfBARs: [BARDescriptor?]) -> EmulatedDevice {
        var config = ConfigSpace(size: 4096)
        config.store(PCIRegister.vendorID, width: 4, value: 0xffff_ffff)
        config.store(PCIRegister.revisionID, width: 4, value: self.config.read(PCIRegister.revisionID, width: 4))
        config.store(PCIRegister.subsystemVendorID, width: 4, value: self.config.read(PCIRegister.subsystemVendorID, width: 4))
        config.setWritable(PCIRegister.command, width: 2, mask: UInt32(PCICommand.master))
        config.setWriteOneClear(PCIRegister.status, width: 2, mask: UInt32(PCIStatus.writeOneClearBits))
        config.store(PCIRegister.status, width: 2, value: UInt32(PCIStatus.capabilityList))
        // Capabilities: MSI-X at 0x70, PCI Express at 0xa0; AER and ARI in extended space.
        config.store(PCIRegister.capabilityList, width: 1, value: 0x70)
        let msix = 0x70
        config.store(msix, width: 2, value: UInt32(CapabilityID.msix) | 0xa0 << 8)
        config.store(msix + 2, width: 2, value: 2)                   // 3 vectors
        config.store(msix + 4, width: 4, value: 0x0000_0003)         // table: BAR 3, offset 0
        config.store(msix + 8, width: 4, value: 0x0000_2003)         // PBA: BAR 3, offset 0x2000
        config.setWritable(msix + 2, width: 2, mask: UInt32(MSIXRegister.enable | MSIXRegister.functionMask))
        let pcie = 0xa0
        config.store(pcie, width: 2, value: UInt32(CapabilityID.pciExpress))
        config.store(pcie + PCIeRegister.flags, width: 2, value: 0x0002)
        config.store(pcie + PCIeRegister.deviceCapabilities, width: 4, value: 0x1000_8000 | 0x1)
        // Max payload, max read request and relaxed ordering are reserved in a VF: read-only.
        config.setWritable(pcie + PCIeRegister.deviceControl, width: 2, mask: 0x090f | UInt32(PCIeRegister.devCtlInitiateFLR))
        config.setWriteOneClear(pcie + PCIeRegister.deviceStatus, width: 2, mask: 0x000f)
        let parentPCIe = capabilities.pciExpress
        if parentPCIe != 0 {
            config.store(pcie + PCIeRegister.linkCapabilities, width: 4,
                         value: self.config.read(parentPCIe + PCIeRegister.linkCapabilities, width: 4))
            config.store(pcie + PCIeRegister.linkStatus, width: 2, value: self.config.read(parentPCIe + PCIeRegister.linkStatus, width: 2))
        }
        let aer = 0x100
        config.store(aer, width: 4, value: UInt32(ExtendedCapabilityID.aer) | 2 << 16 | 0x150 << 20)
        config.setWriteOneClear(aer + 0x04, width: 4, mask: 0x03ff_f030)
        config.setWritable(aer + 0x08, width: 4, mask: 0x03ff_f030)
        config.setWriteOneClear(aer + 0x10, width: 4, mask: 0x0000_f1c1)
        config.setWritable(aer + 0x14, width: 4, mask: 0x0000_f1c1)
        config.store(0x150, width: 4, value: UInt32(ExtendedCapabilityID.ari) | 1 << 16)
        let vf = EmulatedDevice(
            address: address, config: config, resetImage: config.bytes,
            identity: DeviceIdentity(
                vendor: identity.vendor, device: vfDeviceID,
                subsystemVendor: UInt16(truncatingIfNeeded: self.config.read(PCIRegister.subsystemVendorID, width: 2)),
                subsystemDevice: UInt16(truncatingIfNeeded: self.config.read(PCIRegister.subsystemID, width: 2)),
                classCode: self.config.read(PCIRegister.revisionID, width: 4) >> 8,
                revision: UInt8(truncatingIfNeeded: self.config.read(PCIRegister.revisionID, width: 1)),
                headerType: 0, interruptPin: 0),
            bars: vfBARs, irq: 0, bootDriver: nil, label: "virtual function \(index) of \(self.address)")
        vf.physicalFunction = self.address
        return vf
    }
}
