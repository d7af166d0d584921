public enum PCIBackFSVersion {
    public static let string = "0.1.0"
}
