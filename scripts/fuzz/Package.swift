// swift-tools-version:6.0
// libFuzzer harnesses for pcibackfs (on demand, not in CI). Depends on the main package by path
// and builds with its own scratch path, so it never disturbs `swift build` / `swift test`:
//   scripts/fuzz.sh TARGET SECONDS        (TARGET: filter, grammar, lspci, machinefile)
import PackageDescription

let package = Package(
    name: "pcibackfs-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "pcibackfs", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "fuzz-filter", dependencies: [.product(name: "PCIBackFS", package: "pcibackfs")]),
        .executableTarget(name: "fuzz-grammar", dependencies: [.product(name: "PCIBackFS", package: "pcibackfs")]),
        .executableTarget(name: "fuzz-lspci", dependencies: [.product(name: "PCIBackFS", package: "pcibackfs")]),
        .executableTarget(name: "fuzz-machinefile", dependencies: [.product(name: "PCIBackFS", package: "pcibackfs")]),
    ],
    swiftLanguageModes: [.v6]
)
