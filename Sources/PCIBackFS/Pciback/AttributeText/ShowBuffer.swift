/// A show() buffer: one page, and `scnprintf` never fills the last byte, so at most 4095
/// characters come out; a final partial line is possible, as in the kernel.
struct ShowBuffer {
    static let pageSize = 4096
    private(set) var bytes: [UInt8] = []

    var isFull: Bool { bytes.count >= ShowBuffer.pageSize - 1 }

    mutating func print(_ text: String) {
        let room = ShowBuffer.pageSize - 1 - bytes.count
        guard room > 0 else { return }
        let utf8 = text.utf8
        if utf8.count <= room {
            bytes.append(contentsOf: utf8)
        } else {
            bytes.append(contentsOf: utf8.prefix(room))
        }
    }
}

/// The store side of a sysfs attribute: kernfs cuts a write to one page and hands the store
/// a NUL-terminated copy.
public enum StoreInput {
    public static func clip(_ data: [UInt8]) -> [UInt8] {
        data.count > ShowBuffer.pageSize ? Array(data.prefix(ShowBuffer.pageSize)) : data
    }

    /// `sysfs_streq`-style comparison of a device name: the C string up to a NUL, one trailing
    /// newline ignored, otherwise exact.
    public static func deviceName(_ data: [UInt8]) -> PCIAddress? {
        var text = PcibackGrammar.cString(data)
        if text.last == UInt8(ascii: "\n") { text.removeLast() }
        guard let string = String(validating: text, as: UTF8.self) else { return nil }
        return PCIAddress(kernelName: string)
    }
}
