// swift-tools-version:6.0
// libFuzzer harnesses for pcibackfs (on demand, not in CI). Depends on the main package by path
// and builds with its own scratch path, so it never disturbs `swift build` / `swift test`:
//   scripts/fuzz.sh TARGET SECONDS        (TARGET: filter, grammar, lspci, machinefile)
import PackageDescription

/// What each harness links: the code under test and the shared driver.
let harness: [Target.Dependency] = ["FuzzDriver", .product(name: "PCIBackFS", package: "pcibackfs")]

let package = Package(
    name: "pcibackfs-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "pcibackfs", path: "../.."),
    ],
    targets: [
        // The libFuzzer driver glue (LLVMFuzzerRunDriver) every harness's main.swift calls.
        .target(name: "FuzzDriver"),
        .executableTarget(name: "fuzz-filter", dependencies: harness),
        .executableTarget(name: "fuzz-grammar", dependencies: harness),
        .executableTarget(name: "fuzz-lspci", dependencies: harness),
        .executableTarget(name: "fuzz-machinefile", dependencies: harness),
    ],
    swiftLanguageModes: [.v6]
)
