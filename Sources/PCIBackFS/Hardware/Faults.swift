/// Faults a test bench can inject into one emulated function.
public struct DeviceFaults: Sendable, Equatable, Codable {
    public enum Mode: String, Sendable, Equatable, Codable, CaseIterable {
        case off
        /// Fires once, then clears itself.
        case once
        /// Fires every time until cleared.
        case sticky
    }

    /// The function reset fails (-EIO); in a PVH dom0 Xen's device reset at pciback's bind too.
    public var resetFails: Mode = .off
    public var enableFails: Mode = .off
    public var lowPowerStatesRefused: Mode = .off
    public var msiEnableFails: Mode = .off
    public var msixEnableFails: Mode = .off
    public var configReadFails: Mode = .off

    public init() {}

    /// The faults' names in a machine file (and in `pcibackfsd check`).
    public enum CodingKeys: String, CodingKey, CaseIterable, Sendable {
        case resetFails, enableFails, lowPowerStatesRefused, msiEnableFails, msixEnableFails, configReadFails

        public var keyPath: WritableKeyPath<DeviceFaults, Mode> {
            switch self {
            case .resetFails: \.resetFails
            case .enableFails: \.enableFails
            case .lowPowerStatesRefused: \.lowPowerStatesRefused
            case .msiEnableFails: \.msiEnableFails
            case .msixEnableFails: \.msixEnableFails
            case .configReadFails: \.configReadFails
            }
        }
    }

    /// The faults that are not off, by machine-file name, e.g. `resetFails=once`.
    public var armedDescriptions: [String] {
        CodingKeys.allCases.compactMap { key in
            let mode = self[keyPath: key.keyPath]
            return mode == .off ? nil : "\(key.rawValue)=\(mode.rawValue)"
        }
    }

    /// A machine file names only the faults it arms; the rest are off.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        resetFails = try container.decodeIfPresent(Mode.self, forKey: .resetFails) ?? .off
        enableFails = try container.decodeIfPresent(Mode.self, forKey: .enableFails) ?? .off
        lowPowerStatesRefused = try container.decodeIfPresent(Mode.self, forKey: .lowPowerStatesRefused) ?? .off
        msiEnableFails = try container.decodeIfPresent(Mode.self, forKey: .msiEnableFails) ?? .off
        msixEnableFails = try container.decodeIfPresent(Mode.self, forKey: .msixEnableFails) ?? .off
        configReadFails = try container.decodeIfPresent(Mode.self, forKey: .configReadFails) ?? .off
    }

    /// Whether the fault fires now; a one-shot fault is consumed.
    public mutating func fire(_ path: WritableKeyPath<DeviceFaults, Mode>) -> Bool {
        switch self[keyPath: path] {
        case .off: return false
        case .sticky: return true
        case .once:
            self[keyPath: path] = .off
            return true
        }
    }
}
