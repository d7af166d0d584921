/// Writable kernel settings that only remember a value: the bus's `drivers_autoprobe`,
/// `xen_pciback.verbose_request`, and per device `numa_node`, `msi_bus`,
/// `broken_parity_status`, `d3cold_allowed`.
public struct KernelTunables: Codable, Sendable, Equatable {
    public struct Device: Codable, Sendable, Equatable {
        public var numaNode: Int32 = -1
        public var msiBus = true
        public var brokenParityStatus = false
        public var d3coldAllowed = true
        /// `reset_method` as stored (names, in order); nil: the defaults the kernel probes.
        public var resetMethods: [String]? = nil
    }

    public var verboseRequest: Int32 = 0
    /// `bus/pci/drivers_autoprobe`: new devices get a driver on their own.
    public var driversAutoprobe = true
    /// By kernel device name; devices absent here have the defaults.
    public var devices: [String: Device] = [:]

    public subscript(device address: PCIAddress) -> Device {
        get { devices[address.description] ?? Device() }
        set { devices[address.description] = newValue == Device() ? nil : newValue }
    }
}
