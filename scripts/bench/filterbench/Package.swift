// swift-tools-version:6.0
// In-process benchmark of pciback's config filter (B6 of scripts/bench.sh): no FUSE, one
// thread. Depends on the main package by path; build it with its own scratch path:
//   swift build -c release --package-path scripts/bench/filterbench --scratch-path .build-bench
import PackageDescription

let package = Package(
    name: "filterbench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "pcibackfs", path: "../../.."),
    ],
    targets: [
        .executableTarget(
            name: "filterbench",
            dependencies: [.product(name: "PCIBackFS", package: "pcibackfs")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
