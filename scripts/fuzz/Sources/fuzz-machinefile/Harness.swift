// Fuzz target `machinefile`: a machine file's JSON decoded from arbitrary bytes, then its
// devices built. Nothing may crash. `lspciDump` entries are kept only as relative paths without
// `..`, resolved in an empty directory, so the harness never reads a real file (or /dev/zero).
import Foundation
import PCIBackFS

private let emptyDirectory: String = {
    let path = NSTemporaryDirectory() + "pcibackfs-fuzz-machinefile-\(getpid())"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(UnsafeBufferPointer(start: data, count: size))
    guard var file = try? JSONDecoder().decode(MachineFile.self, from: bytes) else { return 0 }
    for index in file.devices.indices {
        if let dump = file.devices[index].lspciDump, dump.hasPrefix("/") || dump.contains("..") {
            file.devices[index].lspciDump = nil
        }
    }
    guard let devices = try? file.devices(relativeTo: emptyDirectory) else { return 0 }
    for device in devices {
        guard device.configSize == 256 || device.configSize == 4096 else {
            fatalError("machinefile: \(device.address) has \(device.configSize) config bytes")
        }
        _ = device.hardwareRead(0, width: 4)
    }
    // Round trip: what a machine file encodes decodes again.
    if let encoded = try? JSONEncoder().encode(file), (try? JSONDecoder().decode(MachineFile.self, from: encoded)) != file {
        fatalError("machinefile: encode/decode round trip differs")
    }
    return 0
}
