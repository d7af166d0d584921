/// The virtual functions of imported physical functions.
///
/// An imported dump or capture is a snapshot of a running system (sriov.md §6 item 3, revised):
/// the boot-time SR-IOV pass (§1.4) does not run for it. A PF whose capture shows VF Enable with
/// NumVFs N has the N VFs the kernel created when VFs were enabled (§2.5), at the routing IDs of
/// §3.1 (`RID(PF) + First VF Offset + n × VF Stride`, from the registers as recorded), beside the
/// PF in sysfs (§3.3; a bus number without a bridge is the kernel's VF-only bus, §3.2):
///
/// * a function the capture also holds at a VF's address is that VF: it keeps its bytes, masks
///   and driver, and takes the identity the kernel gives a VF (§4.4: the PF's vendor, the VF
///   Device ID, VF 0's class, revision and subsystem IDs) and its BARs from the PF's VF BARs;
/// * a VF the capture does not hold is created as the hardware has it (`makeVirtualFunction`),
///   unbound (a partial dump says nothing about its driver);
/// * a VF that cannot be placed is an error naming the VF and why: NumVFs above TotalVFs, a zero
///   offset or stride, a routing ID past bus ff, a bus outside the upstream bridge's bus range
///   (the kernel refuses such an enable, §2.4), or a captured function there that cannot be a VF
///   (not type 0, itself a PF, IDs of another device, or already another PF's VF).
public enum SnapshotSRIOV {
    public struct PlacementError: Error, CustomStringConvertible, Equatable {
        public var message: String
        public var description: String { message }
    }

    /// `devices` with the VFs of every imported PF whose VF Enable is set: captured functions at
    /// VF addresses become those VFs, missing ones are added. Templates are left alone.
    public static func placeVirtualFunctions(_ devices: [EmulatedDevice]) throws(PlacementError) -> [EmulatedDevice] {
        var byAddress: [PCIAddress: EmulatedDevice] = [:]
        for device in devices { byAddress[device.address] = device }
        var result = devices
        var claimedBy: [PCIAddress: (pf: PCIAddress, id: Int)] = [:]
        for pf in devices where pf.isSnapshot && pf.physicalFunction == nil {
            guard pf.isPCIExpress, pf.configSize == 4096, let capability = SRIOVCapability(pf) else { continue }
            typealias R = SRIOVCapability.Register
            let control = UInt16(capability.read(pf, R.control, width: 2))
            let count = Int(capability.read(pf, R.numVFs, width: 2))
            let total = Int(capability.read(pf, R.totalVFs, width: 2))
            guard control & SRIOVCapability.vfEnable != 0, count > 0, total > 0 else { continue }
            let offset = Int(capability.read(pf, R.firstVFOffset, width: 2))
            let stride = Int(capability.read(pf, R.vfStride, width: 2))
            let what = "\(pf.address) has VF Enable set with NumVFs \(count)"
            func fail(_ reason: String) -> PlacementError { PlacementError(message: "\(what), but \(reason)") }
            if count > total { throw fail("TotalVFs is \(total)") }
            if offset == 0 { throw fail("its First VF Offset is 0 (the kernel does not make it a PF)") }
            if count > 1, stride == 0 { throw fail("its VF Stride is 0 (the kernel does not make it a PF)") }
            let busRange = upstreamBusRange(of: pf.address, in: devices)
            let vfDeviceID = UInt16(capability.read(pf, R.vfDeviceID, width: 2))
            let windows = windows(of: pf, capability)
            var created: [EmulatedDevice] = []
            var vfZero: EmulatedDevice?
            for id in 0..<count {
                let rid = Int(pf.address.bus) << 8 + Int(pf.address.devfn) + offset + id * stride
                let place = "VF \(id) (First VF Offset \(offset), VF Stride \(stride))"
                guard rid <= 0xffff else { throw fail("\(place) would be past bus ff") }
                let address = PCIAddress(domain: pf.address.domain, bus: UInt8(rid >> 8), devfn: UInt8(rid & 0xff))
                if let range = busRange, !range.buses.contains(Int(address.bus)) {
                    throw fail("\(place) at \(address) is on bus \(hex(address.bus, width: 2)), outside the bus range "
                               + "[bus \(hex(range.buses.lowerBound, width: 2))-\(hex(range.buses.upperBound, width: 2))] "
                               + "of its upstream bridge \(range.bridge) (the kernel refuses to enable these VFs)")
                }
                if let other = claimedBy[address] {
                    throw fail("\(place) at \(address) is already VF \(other.id) of \(other.pf)")
                }
                claimedBy[address] = (pf.address, id)
                let bars = SRIOVCapability.virtualFunctionBARs(id, windows: windows)
                if let captured = byAddress[address] {
                    if let reason = notAVirtualFunction(captured, of: pf, vfDeviceID: vfDeviceID) {
                        throw fail("\(place) at \(address) is where the capture has a function that \(reason)")
                    }
                    // The kernel reads class, revision and subsystem IDs from VF 0 only (§2.5).
                    let source = vfZero ?? captured
                    captured.identity = DeviceIdentity(
                        vendor: pf.identity.vendor, device: vfDeviceID,
                        subsystemVendor: UInt16(truncatingIfNeeded: source.config.read(PCIRegister.subsystemVendorID, width: 2)),
                        subsystemDevice: UInt16(truncatingIfNeeded: source.config.read(PCIRegister.subsystemID, width: 2)),
                        classCode: source.config.read(PCIRegister.revisionID, width: 4) >> 8,
                        revision: UInt8(truncatingIfNeeded: source.config.read(PCIRegister.revisionID, width: 1)),
                        headerType: 0, interruptPin: 0)
                    captured.bars = bars
                    captured.irq = 0
                    captured.physicalFunction = pf.address
                    if id == 0 { vfZero = captured }
                } else {
                    let vf = pf.makeVirtualFunction(at: address, index: id, vfDeviceID: vfDeviceID, bars: bars)
                    vf.isSnapshot = true
                    created.append(vf)
                    if id == 0 { vfZero = vf }
                }
            }
            result += created
        }
        return result
    }

    /// Why a captured function cannot be a VF of `pf`, or nil if it can.
    private static func notAVirtualFunction(_ device: EmulatedDevice, of pf: EmulatedDevice, vfDeviceID: UInt16) -> String? {
        let vendor = UInt16(truncatingIfNeeded: device.config.read(PCIRegister.vendorID, width: 2))
        let deviceID = UInt16(truncatingIfNeeded: device.config.read(PCIRegister.deviceID, width: 2))
        let ids = "\(hex(vendor, width: 4)):\(hex(deviceID, width: 4))"
        if device.config.read(PCIRegister.headerType, width: 1) & 0x7f != 0 { return "has a type 1 or 2 header (a VF is type 0)" }
        if device.capabilities.sriov != 0 { return "is itself an SR-IOV PF (\(ids))" }
        if !device.isSnapshot { return "is not from a capture (\(ids))" }
        // A VF reads 0xffff in both ID registers (§4.1); a tool may show the kernel's IDs instead.
        if (vendor, deviceID) == (0xffff, 0xffff) || (vendor == pf.identity.vendor && deviceID == vfDeviceID) { return nil }
        return "has IDs \(ids), neither ffff:ffff nor the VF's \(hex(pf.identity.vendor, width: 4)):\(hex(vfDeviceID, width: 4))"
    }

    /// The PF's upstream bridge and its bus range [secondary, subordinate] among `devices`, nil on a
    /// root bus (whose bus range is 00-ff).
    private static func upstreamBusRange(of address: PCIAddress, in devices: [EmulatedDevice]) -> (bridge: PCIAddress, buses: ClosedRange<Int>)? {
        var best: (PCIAddress, ClosedRange<Int>)?
        for bridge in devices where bridge.isBridge && bridge.address.domain == address.domain && bridge.address != address {
            let secondary = Int(bridge.config.read(PCIRegister.secondaryBus, width: 1))
            let subordinate = Int(bridge.config.read(PCIRegister.subordinateBus, width: 1))
            guard secondary > Int(bridge.address.bus), secondary <= Int(address.bus), Int(address.bus) <= subordinate else { continue }
            if best == nil || secondary > best!.1.lowerBound { best = (bridge.address, secondary...max(secondary, subordinate)) }
        }
        return best.map { (bridge: $0.0, buses: $0.1) }
    }

    /// The VF BAR windows the PF's registers hold: VF 0's address and the per-VF size, by index
    /// (only implemented VF BARs with an address; sizes are known from a sysfs capture).
    static func windows(of pf: EmulatedDevice, _ capability: SRIOVCapability) -> [Int: BARDescriptor] {
        let addresses = capability.virtualFunctionBARAddresses(pf)
        var result: [Int: BARDescriptor] = [:]
        for bar in capability.virtualFunctionBARs(pf) {
            guard let address = addresses[bar.index] else { continue }
            result[bar.index] = BARDescriptor(kind: bar.kind, size: bar.size, address: address)
        }
        return result
    }
}
