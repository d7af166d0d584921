/// Faults a test bench can inject into one emulated function.
public struct DeviceFaults: Sendable, Equatable, Codable {
    public enum Mode: String, Sendable, Equatable, Codable {
        case off
        /// Fires once, then clears itself.
        case once
        /// Fires every time until cleared.
        case sticky
    }

    public var resetFails: Mode = .off
    public var enableFails: Mode = .off
    public var lowPowerStatesRefused: Mode = .off
    public var msiEnableFails: Mode = .off
    public var msixEnableFails: Mode = .off
    public var configReadFails: Mode = .off

    public init() {}

    private enum CodingKeys: String, CodingKey {
        case resetFails, enableFails, lowPowerStatesRefused, msiEnableFails, msixEnableFails, configReadFails
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
