#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Captures functions from sysfs: a live device directory, or a raw config blob plus `resource` text.
public enum SysfsCapture {
    /// Reads `/sys/bus/pci/devices/DDDD:BB:SS.F` (or any directory laid out like it): `config`
    /// (required; needs root for more than 64 bytes), `resource` (optional), `irq` (optional), and
    /// the `driver` link (optional). The address comes from the directory's name.
    public static func read(deviceDirectory: String) throws(CaptureError) -> CapturedFunction {
        var directory = deviceDirectory
        while directory.count > 1, directory.hasSuffix("/") { directory.removeLast() }
        let name = directory.split(separator: "/").last.map(String.init) ?? directory
        guard let address = SysfsCapture.address(fromDeviceName: name) else { throw .invalidDeviceName(name) }

        let config = try CaptureFiles.readWholeFile(directory + "/config", limit: 65536)
        let resourcePath = directory + "/resource"
        let resourceText = try CaptureFiles.readOptionalTextFile(resourcePath)
        let irqPath = directory + "/irq"
        var irq: UInt32?
        if let text = try CaptureFiles.readOptionalTextFile(irqPath) {
            guard let value = CaptureText.parseDecimal(text.hasSuffix("\n") ? text.dropLast() : text[...]), let number = UInt32(exactly: value) else {
                throw .malformedFile(path: irqPath, reason: "expected a decimal IRQ number")
            }
            irq = number
        }
        let driver = try CaptureFiles.readOptionalLink(directory + "/driver").map { target in
            String(target.split(separator: "/").last ?? Substring(target))
        }
        do throws(CaptureError) {
            return try readRaw(config: config, resourceText: resourceText, address: address, irq: irq, driver: driver)
        } catch .malformedResourceLine(let line, let reason) {
            throw .malformedFile(path: resourcePath, reason: "line \(line): \(reason)")
        }
    }

    /// Builds a function from a raw binary config space (256 or 4096 bytes; fewer than 256 is
    /// refused as truncated) and, optionally, the text of its sysfs `resource` file. Without a
    /// `resource` text the BARs' sizes are inferred from their addresses (`BARSizeInference`).
    public static func readRaw(config: [UInt8], resourceText: String?, address: PCIAddress, irq: UInt32? = nil,
                               driver: String? = nil, name: String? = nil) throws(CaptureError) -> CapturedFunction {
        guard config.count >= 256 else {
            throw .truncatedConfig(address: address, bytes: config.count, required: 256, line: nil)
        }
        guard config.count == 256 || config.count == 4096 else {
            throw .invalidConfigSize(address: address, bytes: config.count)
        }
        let resource = try resourceText.map { (text: String) throws(CaptureError) in try SysfsResource(parsing: text) }
        let function = CapturedFunction(address: address, config: config, bars: resource?.bars ?? [], iovBARs: resource?.iovBARs ?? [],
                                        irq: irq, driver: driver, name: name)
        // The kernel's `resource` file is the authority on sizes; without it they are inferred.
        return resource == nil ? BARSizeInference.completing(function) : function
    }

    /// `DDDD:BB:SS.F` with a 4-to-8-digit domain (the kernel prints `%04x`), as sysfs names devices.
    public static func address(fromDeviceName name: String) -> PCIAddress? {
        let bytes = ArraySlice(Array(name.utf8))
        guard let firstColon = bytes.firstIndex(of: CaptureText.colon), (4...8).contains(firstColon),
              let domain = CaptureText.parseHex(bytes[..<firstColon]),
              let rest = CaptureText.parseBusSlotFunction(bytes, from: firstColon + 1), rest.next == bytes.endIndex,
              rest.slot < 32, rest.function < 8
        else { return nil }
        return PCIAddress(domain: UInt32(domain), bus: rest.bus, slot: rest.slot, function: rest.function)
    }

    /// Every function under a `devices` directory (default `/sys/bus/pci/devices`), by address.
    public static func readAll(devicesDirectory: String = "/sys/bus/pci/devices") throws(CaptureError) -> [CapturedFunction] {
        var functions: [CapturedFunction] = []
        for name in try entries(of: devicesDirectory) {
            functions.append(try read(deviceDirectory: devicesDirectory + "/" + name))
        }
        return functions.sorted { $0.address < $1.address }
    }

    /// The `devices` directory a user means by `path`: a sysfs root (`/sys`, or a pcibackfs
    /// mount point), its `bus/pci`, or `bus/pci/devices` itself, with or without a trailing
    /// slash; also any directory holding only device directories (`DDDD:BB:SS.F`).
    public static func devicesDirectory(for path: String) throws(CaptureError) -> String {
        var base = path
        while base.count > 1, base.hasSuffix("/") { base.removeLast() }
        let join = base == "/" ? "" : base
        var candidates = [join + "/bus/pci/devices"]
        if base.hasSuffix("/pci") || base == "pci" { candidates.append(join + "/devices") }
        candidates.append(base)
        for candidate in candidates {
            guard let names = try? entries(of: candidate) else { continue }
            if names.allSatisfy({ address(fromDeviceName: $0) != nil }) { return candidate }
        }
        _ = try entries(of: base)  // the path's own error (missing, not a directory, ...) if it has one
        throw .malformedFile(path: path, reason: "not a PCI sysfs directory; give /sys, /sys/bus/pci or /sys/bus/pci/devices "
                             + "(or the same under a mount point)")
    }

    /// The names in a directory, without `.` entries.
    private static func entries(of directory: String) throws(CaptureError) -> [String] {
        guard let dir = opendir(directory) else {
            throw .io(path: directory, errno: Errno(errno))
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if !name.hasPrefix(".") { names.append(name) }
        }
        return names
    }
}
