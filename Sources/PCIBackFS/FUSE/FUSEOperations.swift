import CFuse

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The low-level operations table. Each entry is a closure literal that captures nothing
/// (so it converts to a C function pointer); state arrives through the request's userdata
/// (`FUSEDispatcher`). Each closure only unpacks C arguments and hands them to the
/// dispatcher inside `serve`, which sends the one reply.
///
/// create, mknod, mkdir, unlink, rmdir, symlink, rename and link are registered only to give
/// sysfs's refusals (`NamespaceChange.sysfsAnswer`): left NULL, the kernel would report ENOSYS.
///
/// Deliberately left NULL: poll (the kernel then answers poll itself and never wakes the
/// daemon), flush and fsync (ENOSYS is remembered by the kernel, saving a round trip per
/// close), xattrs, locks, readdirplus, ioctl.
enum FUSEOperations {
    static func make() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()

        ops.`init` = { _, connection in
            guard let connection else { return }
            // open(O_TRUNC) arrives as OPEN with O_TRUNC and no SETATTR.
            connection.pointee.want |= CFUSE_CAP_ATOMIC_O_TRUNC & connection.pointee.capable
            // Symlink targets are cached by the kernel: every path through
            // bus/pci/devices/<BDF> would otherwise cost a READLINK round trip. A store that
            // changes a target (bind, unbind, remove, SR-IOV) returns an inode invalidation
            // for the link, which drops the cached target before write(2) returns.
            connection.pointee.want |= CFUSE_CAP_CACHE_SYMLINKS & connection.pointee.capable
            // No writeback cache (writes must reach the model synchronously), no readdirplus
            // (not implemented).
            connection.pointee.want &= ~(CFUSE_CAP_WRITEBACK_CACHE | CFUSE_CAP_READDIRPLUS | CFUSE_CAP_READDIRPLUS_AUTO)
        }

        ops.lookup = { request, parent, name in
            serve(request) { dispatcher throws(Errno) in
                guard let name else { throw .invalidArgument }
                return try dispatcher.lookup(parent: parent, name: String(cString: name))
            }
        }

        ops.forget = { request, _, _ in
            // Inodes are the model's and live as long as it does; nothing to drop.
            fuse_reply_none(request)
        }

        ops.getattr = { request, inode, _ in
            serve(request) { dispatcher throws(Errno) in
                try dispatcher.getattr(inode)
            }
        }

        ops.setattr = { request, inode, _, changes, _ in
            serve(request) { dispatcher throws(Errno) in
                try dispatcher.setattr(inode, changes: changes, caller: FUSEDispatcher.caller(of: request!))
            }
        }

        ops.readlink = { request, inode in
            serve(request) { dispatcher throws(Errno) in
                try dispatcher.readlink(inode)
            }
        }

        ops.open = { request, inode, info in
            serve(request) { dispatcher throws(Errno) in
                guard let info else { throw .invalidArgument }
                return try dispatcher.open(inode, info: info, caller: FUSEDispatcher.caller(of: request!))
            }
        }

        ops.read = { request, _, size, offset, info in
            serveRead(request, size: size) { dispatcher, buffer throws(Errno) in
                guard let info else { throw .badFileDescriptor }
                guard offset >= 0 else { throw .invalidArgument }
                return try dispatcher.read(info, offset: Int(offset), into: buffer)
            }
        }

        ops.write = { request, _, buffer, size, offset, info in
            serve(request) { dispatcher throws(Errno) in
                guard let info else { throw .badFileDescriptor }
                guard offset >= 0 else { throw .invalidArgument }
                let data = UnsafeRawBufferPointer(start: UnsafeRawPointer(buffer), count: buffer == nil ? 0 : size)
                return try dispatcher.write(info, offset: Int(offset), data: data)
            }
        }

        ops.release = { request, _, info in
            serve(request) { dispatcher throws(Errno) in
                guard let info else { throw .badFileDescriptor }
                return dispatcher.release(info)
            }
        }

        ops.opendir = { request, inode, info in
            serve(request) { dispatcher throws(Errno) in
                guard let info else { throw .invalidArgument }
                return try dispatcher.opendir(inode, info: info, caller: FUSEDispatcher.caller(of: request!))
            }
        }

        ops.readdir = { request, _, size, offset, info in
            serve(request) { dispatcher throws(Errno) in
                guard let info else { throw .badFileDescriptor }
                return dispatcher.readdir(request!, info: info, offset: Int(offset), size: size)
            }
        }

        ops.releasedir = { request, _, info in
            serve(request) { dispatcher throws(Errno) in
                guard let info else { throw .badFileDescriptor }
                return dispatcher.releasedir(info)
            }
        }

        ops.create = { request, _, _, _, _ in
            serve(request) { _ throws(Errno) in .failure(NamespaceChange.create.sysfsAnswer) }
        }

        ops.mknod = { request, _, _, mode, _ in
            serve(request) { _ throws(Errno) in .failure(NamespaceChange.mknod(mode: UInt32(mode)).sysfsAnswer) }
        }

        ops.mkdir = { request, _, _, _ in
            serve(request) { _ throws(Errno) in .failure(NamespaceChange.mkdir.sysfsAnswer) }
        }

        ops.unlink = { request, _, _ in
            serve(request) { _ throws(Errno) in .failure(NamespaceChange.unlink.sysfsAnswer) }
        }

        ops.rmdir = { request, _, _ in
            serve(request) { _ throws(Errno) in .failure(NamespaceChange.rmdir.sysfsAnswer) }
        }

        ops.symlink = { request, _, _, _ in
            serve(request) { _ throws(Errno) in .failure(NamespaceChange.symlink.sysfsAnswer) }
        }

        ops.link = { request, _, _, _ in
            serve(request) { _ throws(Errno) in .failure(NamespaceChange.link.sysfsAnswer) }
        }

        ops.rename = { request, _, _, _, _, flags in
            serve(request) { _ throws(Errno) in .failure(NamespaceChange.rename(flags: UInt32(flags)).sysfsAnswer) }
        }

        ops.statfs = { request, _ in
            serve(request) { _ throws(Errno) in .fileSystemStatistics }
        }

        return ops
    }
}
