/// `/sys/module` as a pvops dom0 shows it for the emulated drivers: one directory per module
/// with one (KernelModule.hasDirectory), named after the module, never the driver (so there is
/// `module/xen_pciback` and no `module/pciback`).
///
/// A loadable module (kernel/module/sysfs.c, mod_sysfs_setup): coresize, initsize, initstate,
/// refcnt, taint, uevent, holders/, sections/ (0400 files), drivers/, and parameters/ when it
/// has parameters with a mode. A built-in module (kernel/params.c locate_module_kobject):
/// parameters/, uevent (CONFIG_MODULES kernels) and drivers/. `drivers/pci:<driver>` is
/// module_add_driver's link back to the driver.
extension SysfsLayout {
    /// Sections a loaded module lists (a plausible minimum of what ELF modules carry).
    static let moduleSections = [".bss", ".data", ".gnu.linkonce.this_module", ".init.text", ".note.gnu.build-id",
                                 ".rodata", ".strtab", ".symtab", ".text"]

    private func moduleDirectory(_ name: String) -> (module: KernelModule, drivers: [String])? {
        dom0.moduleDirectories(pcibackBuild: options.pcibackBuild).first { $0.module.name == name }
    }

    /// The module directory `driver`'s `module` link points to, if the kernel makes one.
    func moduleLink(of driver: String) -> String? {
        let module = dom0.module(of: driver, pcibackBuild: options.pcibackBuild)
        return module.hasDirectory ? "../../../../module/" + module.name : nil
    }

    private func moduleEntries(_ entry: (module: KernelModule, drivers: [String])) -> [String] {
        // module_add_driver makes `drivers/` with the first driver that registers.
        var names = entry.drivers.isEmpty ? ["uevent"] : ["drivers", "uevent"]
        if entry.module.name == "xen_pciback" { names.append("parameters") }
        if entry.module.build == .module {
            names += ["coresize", "holders", "initsize", "initstate", "refcnt", "sections", "taint"]
        }
        return names.sorted()
    }

    func moduleNode(_ parts: [String]) -> SysfsNode? {
        if parts.isEmpty { return .directory }
        guard let entry = moduleDirectory(parts[0]) else { return nil }
        if parts.count == 1 { return .directory }
        guard moduleEntries(entry).contains(parts[1]) else { return nil }
        switch parts[1] {
        case "drivers":
            if parts.count == 2 { return .directory }
            guard parts.count == 3, parts[2].hasPrefix("pci:"), entry.drivers.contains(String(parts[2].dropFirst(4))) else { return nil }
            return .link("../../../bus/pci/drivers/" + parts[2].dropFirst(4))
        case "holders":
            return parts.count == 2 ? .directory : nil
        case "sections":
            if parts.count == 2 { return .directory }
            guard parts.count == 3, SysfsLayout.moduleSections.contains(parts[2]) else { return nil }
            return .attribute(Attribute(kind: .moduleSection(parts[0], parts[2]), mode: 0o400))
        case "parameters":
            if parts.count == 2 { return .directory }
            guard parts.count == 3, let parameter = ModuleParameter(rawValue: parts[2]) else { return nil }
            return .attribute(Attribute(kind: .moduleParameter(parameter), mode: parameter.mode))
        default:
            guard parts.count == 2, let attribute = ModuleAttribute(rawValue: parts[1]) else { return nil }
            return .attribute(Attribute(kind: .module(parts[0], attribute), mode: attribute.mode))
        }
    }

    func moduleNames(_ parts: [String]) -> [String] {
        if parts.isEmpty { return dom0.moduleDirectories(pcibackBuild: options.pcibackBuild).map(\.module.name) }
        guard let entry = moduleDirectory(parts[0]) else { return [] }
        if parts.count == 1 { return moduleEntries(entry) }
        switch parts[1] {
        case "drivers": return entry.drivers.map { "pci:" + $0 }
        case "sections": return SysfsLayout.moduleSections
        case "parameters": return ModuleParameter.allCases.map(\.rawValue)
        default: return []
        }
    }
}
