/// Which dom0 kernel's pciback to imitate. The interrupt-control rules changed three times
/// since 2020 (spec §6.5, §11); a toolstack can be tested against the kernel it will meet.
public enum KernelProfile: String, CaseIterable, Sendable, Codable {
    /// Upstream with e9cb9c1c5579 (kernels ≥ 6.7 and stable backports): INTx is not counted
    /// while MSI or MSI-X is on, MASKALL is writable, INTx may always be toggled.
    case current
    /// 5e29500eba2a without e9cb9c1c5579 (6.1 to 6.6): MASKALL writable, INTx still counted.
    case maskall2022 = "maskall-2022"
    /// 476878e4b2be with the constant fix 69086bd69857 (5.7 to 6.0): one type at a time, INTx
    /// off before MSI/MSI-X, any MASKALL change refused.
    case original2020 = "original-2020"
    /// 476878e4b2be as released in 5.6, with its constant bug: nothing can be enabled from the
    /// all-off state.
    case v5_6 = "5.6"
    /// Before 5.6: no `allow_interrupt_control`, no MSI/MSI-X fields (their flag writes are
    /// unhandled: dropped with success, or raw in permissive mode).
    case pre5_6 = "pre-5.6"

    /// The `allow_interrupt_control` attribute and the MSI/MSI-X flag fields exist.
    public var hasInterruptControl: Bool { self != .pre5_6 }

    /// MSI-X flag bits a guest may change (`allowed_bits`).
    public var msixAllowedBits: UInt16 {
        switch self {
        case .current, .maskall2022: return MSIXRegister.enable | MSIXRegister.functionMask
        case .original2020, .v5_6, .pre5_6: return MSIXRegister.enable
        }
    }

    /// INTx counts as enabled only while MSI and MSI-X are both off (e9cb9c1c5579).
    public var intxYieldsToMSI: Bool { self == .current }

    /// Enabling INTx through the command register is checked against the interrupt type.
    public var checksINTxEnable: Bool { self != .current }

    /// The v5.6 constants (NONE = 1, INTX = 2, MSI = 4, MSIX = 8) with "nothing" still 0.
    var interruptTypeConstants: InterruptTypeConstants {
        self == .v5_6
            ? InterruptTypeConstants(none: 1, intx: 2, msi: 4, msix: 8)
            : InterruptTypeConstants(none: 0, intx: 1, msi: 2, msix: 4)
    }
}

struct InterruptTypeConstants {
    var none: Int32
    var intx: Int32
    var msi: Int32
    var msix: Int32
}
