// Entry point. SwiftPM links an executable with `main` renamed to the module's entry function,
// so libFuzzer's own `main` is not used: the top-level code hands the command line to
// libFuzzer's driver with `LLVMFuzzerTestOneInput` (Harness.swift) as the callback. Built with
// plain `swiftc -sanitize=fuzzer -parse-as-library Harness.swift`, libFuzzer's `main` finds the
// same callback by its C name.
#if canImport(Glibc)
import Glibc
#endif

typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>, Int) -> CInt

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: FuzzCallback
) -> CInt

var argumentCount = CommandLine.argc
var arguments = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argumentCount, &arguments, fuzz))
