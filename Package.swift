// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "pcibackfs",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "pcibackfsd", targets: ["pcibackfsd"]),
        .library(name: "PCIBackFS", targets: ["PCIBackFS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C only: libfuse3 through pkg-config and one shim header. Only Sources/PCIBackFS/FUSE imports it.
        .systemLibrary(
            name: "CFuse",
            pkgConfig: "fuse3",
            providers: [.apt(["libfuse3-dev"])]
        ),
        .target(
            name: "PCIBackFS",
            dependencies: ["CFuse"]
        ),
        .executableTarget(
            name: "pcibackfsd",
            dependencies: [
                "PCIBackFS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "PCIBackFSTests",
            dependencies: ["PCIBackFS"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
