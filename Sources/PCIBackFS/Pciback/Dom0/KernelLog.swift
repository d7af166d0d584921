/// The kernel's messages as pciback and the PCI core print them (`dev_warn` prefixes the
/// driver and device names), kept in a bounded ring for tools that grep for them.
public struct KernelLog: Sendable, Equatable {
    public internal(set) var lines: [String] = []
    public let capacity: Int
    /// Lines dropped off the front so far (so readers can tell the ring wrapped).
    public internal(set) var dropped = 0

    public init(capacity: Int = 1024) { self.capacity = capacity }

    public mutating func append(_ line: String) {
        lines.append(line)
        if lines.count > capacity {
            let excess = lines.count - capacity
            lines.removeFirst(excess)
            dropped += excess
        }
    }

    /// `dev_warn(&dev->dev, ...)` for a device bound to pciback.
    public mutating func device(_ address: PCIAddress, _ text: String, driver: String = "pciback") {
        append("\(driver) \(address): \(text)")
    }

    /// `pr_*` with the module's prefix.
    public mutating func module(_ text: String) {
        append("xen_pciback: \(text)")
    }
}
