/// What a path in the tree is.
enum SysfsNode: Equatable {
    case directory
    case link(String)
    case attribute(Attribute)
    /// A device's `config`; `frontend` set for a frontend view's copy (through the filter).
    case config(PCIAddress, frontend: UInt32?)
}

/// A text attribute: which one, and its mode.
struct Attribute: Equatable, Hashable {
    var kind: AttributeKind
    var mode: UInt32

    var isReadable: Bool { mode & 0o444 != 0 }
    var isWritable: Bool { mode & 0o222 != 0 }
}

enum AttributeKind: Equatable, Hashable {
    case device(PCIAddress, DeviceAttribute)
    case frontendDevice(domain: UInt32, host: PCIAddress, DeviceAttribute)
    case driver(String, DriverAttribute)
    case bus(BusAttribute)
    case moduleParameter(ModuleParameter)
    case control(ControlFile)
    case pciOperation(domain: UInt32)
    /// Class devices of the emulated drivers (ClassDeviceLayout.swift) and `/sys/module`.
    case netInterface(PCIAddress, NetAttribute)
    case nvmeController(PCIAddress, NVMeControllerAttribute)
    case nvmeNamespace(PCIAddress, NVMeNamespaceAttribute)
    case module(String, ModuleAttribute)
    case moduleSection(String, String)
    /// A `pci_bus` class device's file, by the bus's name (`DDDD:BB`; PCIBusLayout.swift).
    case pciBus(String, PCIBusAttribute)
}

extension AttributeKind {
    /// Stores that can make nodes appear or vanish (bindings, exports, removals), so the
    /// tree compares its dynamic entries around them.
    var mayChangeTopology: Bool {
        switch self {
        case .device(_, let attribute): return attribute == .remove || attribute == .rescan || attribute == .sriovNumVFs
            || attribute == .sriovDriversAutoprobe
        case .driver(_, let attribute): return [.bind, .unbind, .newID].contains(attribute)
        case .bus(let attribute): return attribute == .driversProbe || attribute == .rescan
        case .pciBus(_, let attribute): return attribute == .rescan
        case .control(let control): return control == .attach || control == .detach || control == .faults || control == .reset
        case .frontendDevice, .moduleParameter, .pciOperation, .netInterface, .nvmeController, .nvmeNamespace, .module,
             .moduleSection: return false
        }
    }
}

enum DeviceAttribute: String, CaseIterable, Hashable {
    case vendor, device, subsystemVendor = "subsystem_vendor", subsystemDevice = "subsystem_device", `class`, revision
    case irq, resource, enable, driverOverride = "driver_override", modalias, numaNode = "numa_node"
    case localCPUs = "local_cpus", localCPUList = "local_cpulist", msiBus = "msi_bus", powerState = "power_state"
    case dmaMaskBits = "dma_mask_bits", consistentDMAMaskBits = "consistent_dma_mask_bits"
    case brokenParityStatus = "broken_parity_status", d3coldAllowed = "d3cold_allowed", ariEnabled = "ari_enabled"
    case uevent, remove, rescan, reset, resetMethod = "reset_method"
    case currentLinkSpeed = "current_link_speed", currentLinkWidth = "current_link_width"
    case maxLinkSpeed = "max_link_speed", maxLinkWidth = "max_link_width"
    case secondaryBusNumber = "secondary_bus_number", subordinateBusNumber = "subordinate_bus_number"
    // SR-IOV: the PF's files, and the VF's one
    case sriovTotalVFs = "sriov_totalvfs", sriovNumVFs = "sriov_numvfs", sriovOffset = "sriov_offset"
    case sriovStride = "sriov_stride", sriovVFDevice = "sriov_vf_device", sriovDriversAutoprobe = "sriov_drivers_autoprobe"
    case sriovVFTotalMSIX = "sriov_vf_total_msix", sriovVFMSIXCount = "sriov_vf_msix_count"

    static let physicalFunctionSet: [DeviceAttribute] = [.sriovTotalVFs, .sriovNumVFs, .sriovOffset, .sriovStride,
                                                         .sriovVFDevice, .sriovDriversAutoprobe, .sriovVFTotalMSIX]

    var mode: UInt32 {
        switch self {
        case .enable, .driverOverride, .numaNode, .msiBus, .brokenParityStatus, .d3coldAllowed, .uevent, .sriovNumVFs,
             .sriovDriversAutoprobe, .resetMethod: return 0o644
        case .remove: return 0o220
        case .rescan, .reset, .sriovVFMSIXCount: return 0o200
        default: return 0o444
        }
    }

    /// The read-only identity files a frontend (pcifront guest) sees for its devices.
    static let frontendSet: [DeviceAttribute] = [.vendor, .device, .subsystemVendor, .subsystemDevice, .class, .revision,
                                                  .irq, .resource, .modalias]
}

enum DriverAttribute: String, CaseIterable, Hashable {
    case bind, unbind, newID = "new_id", removeID = "remove_id", uevent
    // pciback's own, in pcistub_init's order
    case newSlot = "new_slot", removeSlot = "remove_slot", slots, quirks, permissive
    case allowInterruptControl = "allow_interrupt_control", irqHandlers = "irq_handlers"
    case irqHandlerState = "irq_handler_state"

    static let generic: [DriverAttribute] = [.bind, .unbind, .newID, .removeID, .uevent]
    static let pcibackOwn: [DriverAttribute] = [.newSlot, .removeSlot, .slots, .quirks, .permissive,
                                                .allowInterruptControl, .irqHandlers, .irqHandlerState]

    /// Current modes, or those of kernels before ~4.14 (0400/0600) with `legacy`.
    func mode(legacy: Bool) -> UInt32 {
        switch self {
        case .slots, .irqHandlers: return legacy ? 0o400 : 0o444
        case .quirks, .permissive, .allowInterruptControl: return legacy ? 0o600 : 0o644
        default: return 0o200
        }
    }
}

enum BusAttribute: String, CaseIterable, Hashable {
    case driversProbe = "drivers_probe", driversAutoprobe = "drivers_autoprobe", rescan, uevent

    var mode: UInt32 { self == .driversAutoprobe ? 0o644 : 0o200 }
}

enum ModuleParameter: String, CaseIterable, Hashable {
    case hide, permissive, passthrough, verboseRequest = "verbose_request"

    var mode: UInt32 {
        switch self {
        case .permissive, .verboseRequest: return 0o644
        case .hide, .passthrough: return 0o444
        }
    }
}

/// pcibackfs's own controls under `fs/pcibackfs/`: what xenstore and pcifront do on a host.
enum ControlFile: String, CaseIterable, Hashable {
    case attach, detach, profile, log, trace, faults, reset

    var mode: UInt32 {
        switch self {
        case .attach, .detach, .reset: return 0o200
        case .profile: return 0o444
        case .log, .trace: return 0o400
        case .faults: return 0o600
        }
    }
}

/// A network interface's files (net/core/net-sysfs.c), those tools read.
enum NetAttribute: String, CaseIterable, Hashable {
    case addrAssignType = "addr_assign_type", addrLen = "addr_len", address, broadcast, carrier, devID = "dev_id"
    case devPort = "dev_port", flags, ifindex, iflink, mtu, operstate, txQueueLen = "tx_queue_len", type, uevent

    var mode: UInt32 {
        switch self {
        case .carrier, .flags, .mtu, .txQueueLen, .uevent: return 0o644
        default: return 0o444
        }
    }
}

/// An NVMe controller's files (drivers/nvme/host/sysfs.c, `dev` from the driver core).
enum NVMeControllerAttribute: String, CaseIterable, Hashable {
    case address, cntlid, dev, firmwareRev = "firmware_rev", model, serial, state, transport, uevent

    var mode: UInt32 { self == .uevent ? 0o644 : 0o444 }
}

/// A namespace disk's files (block/genhd.c, and the namespace's nsid).
enum NVMeNamespaceAttribute: String, CaseIterable, Hashable {
    case dev, extRange = "ext_range", hidden, nsid, range, removable, ro, size, uevent

    var mode: UInt32 { self == .uevent ? 0o644 : 0o444 }
}

/// A module directory's files (kernel/module/sysfs.c, kernel/params.c).
enum ModuleAttribute: String, CaseIterable, Hashable {
    case coresize, initsize, initstate, refcnt, taint, uevent

    var mode: UInt32 { self == .uevent ? 0o200 : 0o444 }
}
