/// How xen-pciback is built into the dom0 kernel (`--pciback-build`): Debian ships it as a
/// loadable module (CONFIG_XEN_PCIDEV_BACKEND=m), other dom0 kernels build it in.
public enum ModuleBuild: String, CaseIterable, Sendable, Codable {
    case module, builtin
}

/// The kernel module behind a PCI driver, as `/sys/module` shows it. Module names are not driver
/// names: the directory is the object's KBUILD_MODNAME (`-` becomes `_`), the driver registers
/// under its own `.name`.
public struct KernelModule: Sendable, Equatable {
    public var name: String
    public var build: ModuleBuild
    /// Whether a built-in module has parameters (or a version): then param_sysfs_builtin gives
    /// it a `/sys/module` directory. Loadable modules always have one.
    public var hasBuiltinAttributes: Bool
    /// `coresize` of a loadable module (a plausible size of the real one, for tools that print it).
    public var coreSize: Int

    /// Whether `/sys/module/<name>` exists, and so whether `drivers/<drv>/module` does.
    ///
    /// Decision, from drivers/base/module.c `module_add_driver`: a loadable driver links to its
    /// module's kobject; a built-in one (mod == NULL) looks its `mod_name` up in module_kset and
    /// links only when the directory is already there, i.e. when the built-in module has
    /// parameters or a version (kernel/params.c `param_sysfs_builtin` / `version_sysfs_builtin`
    /// create those at subsys_initcall, before drivers register). That is the long-standing
    /// behaviour Debian's dom0 kernels have: no `module/pcieportdrv`, no `drivers/pcieport/module`,
    /// while a built-in xen-pciback (parameters hide, permissive, ...) has both.
    /// Not modelled: kernels 6.3 to 6.14, where param_sysfs_builtin moved to late_initcall and
    /// built-in drivers lost the link altogether, and later ones, whose
    /// `lookup_or_create_module_kobject` creates the directory for every built-in driver.
    public var hasDirectory: Bool { build == .module || hasBuiltinAttributes }
}

extension Dom0 {
    /// Drivers known to be built into Debian's kernels; any other driver is a loadable module.
    static let builtinDrivers: [String: String] = ["pcieport": "pcieportdrv"]

    /// Module names that differ from the driver's name beyond `-` -> `_`.
    static let moduleNames: [String: String] = [
        PCIDriver.pcibackName: "xen_pciback", "xhci_hcd": "xhci_pci", "ehci-pci": "ehci_pci", "ohci-pci": "ohci_pci",
        "i801_smbus": "i2c_i801", "virtio-pci": "virtio_pci", "snd_hda_intel": "snd_hda_intel",
    ]

    static let coreSizes: [String: Int] = [
        "xen_pciback": 77_824, "igb": 294_912, "8139too": 40_960, "nvme": 61_440, "xhci_pci": 24_576, "radeon": 2_301_952,
    ]

    /// The module `driver` belongs to, with xen-pciback built as `pcibackBuild` says.
    public func module(of driver: String, pcibackBuild: ModuleBuild) -> KernelModule {
        if driver == PCIDriver.pcibackName {
            return KernelModule(name: "xen_pciback", build: pcibackBuild, hasBuiltinAttributes: true,
                                coreSize: Dom0.coreSizes["xen_pciback"]!)
        }
        if let name = Dom0.builtinDrivers[driver] {
            return KernelModule(name: name, build: .builtin, hasBuiltinAttributes: false, coreSize: 0)
        }
        let name = Dom0.moduleNames[driver] ?? driver.replacingOccurrences(of: "-", with: "_")
        return KernelModule(name: name, build: .module, hasBuiltinAttributes: false, coreSize: Dom0.coreSizes[name] ?? 16_384)
    }

    /// The modules with a `/sys/module` directory, by name, each with the drivers it registered.
    public func moduleDirectories(pcibackBuild: ModuleBuild) -> [(module: KernelModule, drivers: [String])] {
        var result: [String: (module: KernelModule, drivers: [String])] = [:]
        for driver in drivers {
            let module = module(of: driver.name, pcibackBuild: pcibackBuild)
            guard module.hasDirectory else { continue }
            result[module.name, default: (module, [])].drivers.append(driver.name)
        }
        // xen-pciback whose init failed: a loadable module is unloaded again (modprobe fails); a
        // built-in one keeps the directory its parameters gave it, without a driver.
        let pciback = module(of: PCIDriver.pcibackName, pcibackBuild: pcibackBuild)
        if pcibackLoadFailure != nil, pciback.build == .builtin { result[pciback.name] = (pciback, []) }
        return result.keys.sorted().map { result[$0]! }
    }
}
