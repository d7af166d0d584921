// Fuzz target `lspci`: LspciDump.parse and DeviceImporter on arbitrary text. Nothing may crash;
// when the parse succeeds, every function's config space is 256 or 4096 bytes, and importing
// each function (and reading its config back) works.
import PCIBackFS

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let functions = try? LspciDump.parse(text) else { return 0 }
    for function in functions {
        guard function.config.count == 256 || function.config.count == 4096 else {
            fatalError("lspci: \(function.address) parsed with \(function.config.count) config bytes")
        }
        let device = DeviceImporter.device(from: function)
        guard device.configSize == function.config.count, device.config.bytes.count == device.configSize else {
            fatalError("lspci: \(function.address) imported with \(device.configSize) bytes, captured \(function.config.count)")
        }
        // The imported function answers raw accesses anywhere, as dom0 would make them.
        for offset in stride(from: 0, to: device.configSize, by: 4) {
            _ = device.hardwareRead(offset, width: 4)
        }
    }
    // The whole-dump path (what `--lspci-dump` uses).
    _ = try? DeviceImporter.importDump(text: text)
    return 0
}
