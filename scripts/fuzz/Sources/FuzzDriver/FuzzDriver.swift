// The libFuzzer driver glue shared by every harness. SwiftPM links an executable with `main`
// renamed to the module's entry function, so libFuzzer's own `main` never runs: each harness's
// main.swift calls `runFuzzDriver` with its `LLVMFuzzerTestOneInput` (Harness.swift), which hands
// the command line to libFuzzer's driver. (Built with plain `swiftc -sanitize=fuzzer
// -parse-as-library Harness.swift`, libFuzzer's `main` finds the same callback by its C name.)
#if canImport(Glibc)
import Glibc
#endif

/// `LLVMFuzzerTestOneInput`'s C signature.
public typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>, Int) -> CInt

/// libFuzzer's entry point for programs that keep their own `main` (FuzzerInterface.h); linked in
/// by `-sanitize=fuzzer`.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: FuzzCallback
) -> CInt

/// Runs libFuzzer on this process's command line with `callback` as the target, then exits with
/// libFuzzer's status.
public func runFuzzDriver(_ callback: FuzzCallback) -> Never {
    var argumentCount = CommandLine.argc
    var arguments = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argumentCount, &arguments, callback))
}
