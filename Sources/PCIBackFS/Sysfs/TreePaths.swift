extension SysfsTree {
    /// The tree path of an inode the tree has handed out ("" for the root), for models that
    /// layer other content beside the tree's (see `MergedSysfs`).
    public func path(of inode: Inode) -> String? {
        state.withLock { $0.inodes.path(of: inode) }
    }
}
