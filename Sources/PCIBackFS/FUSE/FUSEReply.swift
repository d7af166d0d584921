import CFuse

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a request handler answers. Handlers *return* one of these (or throw an `Errno`);
/// they never call `fuse_reply_*` themselves. `serve(_:_:)` sends it, so every request gets
/// exactly one reply and the errno conversion lives in one place (`send`).
enum FUSEReply {
    /// `fuse_reply_err(req, 0)`: success without data (release, releasedir).
    case success
    case failure(Errno)
    case entry(NodeStat)
    case attributes(NodeStat)
    case symlinkTarget(String)
    /// `fuse_reply_open` for open and opendir. `abandon` runs if the reply could not be
    /// delivered (interrupted or aborted request): libfuse then never calls release, so the
    /// handle stored in `fh` must be dropped here.
    case opened(UnsafeMutablePointer<fuse_file_info>, abandon: () -> Void)
    case bytes([UInt8])
    case written(Int)
    case fileSystemStatistics
}

/// Runs one request handler and sends its reply. The only entry point used by the
/// operations table for requests that expect a reply (everything except forget).
@inline(__always)
func serve(_ request: fuse_req_t?, _ handler: (FUSEDispatcher) throws(Errno) -> FUSEReply) {
    guard let request else { return }
    let dispatcher = FUSEDispatcher.from(request)
    let reply: FUSEReply
    do {
        reply = try handler(dispatcher)
    } catch {
        reply = .failure(error)
    }
    send(reply, to: request, dispatcher: dispatcher)
}

/// `serve` for READ: the handler fills a buffer on this thread's stack and the reply is sent
/// straight from it (no allocation on the most frequent request). Nothing the model serves is
/// larger than a page, so a page is what a read is answered with at most; a reader asking for
/// more gets a short read and comes back for the rest, as sysfs does.
func serveRead(_ request: fuse_req_t?, size: Int,
               _ handler: (FUSEDispatcher, UnsafeMutableRawBufferPointer) throws(Errno) -> Int) {
    guard let request else { return }
    let dispatcher = FUSEDispatcher.from(request)
    let capacity = max(1, min(size, readReplyLimit))
    withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) { buffer in
        let count: Int
        do throws(Errno) {
            count = try handler(dispatcher, UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(size, capacity)]))
        } catch {
            send(.failure(error), to: request, dispatcher: dispatcher)
            return
        }
        _ = fuse_reply_buf(request, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), max(0, min(count, size)))
    }
}

/// The most a READ reply carries (one page, what a sysfs show or a config space can hold).
let readReplyLimit = 4096

/// The single place that talks `fuse_reply_*`. A reply that can't be delivered (the caller
/// was interrupted, the connection aborted) is not an error for the daemon, except for
/// `opened`, whose handle has to be given back.
private func send(_ reply: FUSEReply, to request: fuse_req_t, dispatcher: FUSEDispatcher) {
    switch reply {
    case .success:
        _ = fuse_reply_err(request, 0)
    case .failure(let error):
        _ = fuse_reply_err(request, replyErrno(error))
    case .entry(let node):
        var entry = fuse_entry_param()
        entry.ino = node.inode
        entry.generation = 0
        entry.attr = dispatcher.makeStat(node)
        entry.attr_timeout = cacheTimeout(node)
        entry.entry_timeout = cacheTimeout(node)
        _ = fuse_reply_entry(request, &entry)
    case .attributes(let node):
        var attributes = dispatcher.makeStat(node)
        _ = fuse_reply_attr(request, &attributes, cacheTimeout(node))
    case .symlinkTarget(let target):
        _ = target.withCString { fuse_reply_readlink(request, $0) }
    case .opened(let info, let abandon):
        if fuse_reply_open(request, info) != 0 {
            abandon()
        }
    case .bytes(let bytes):
        _ = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                fuse_reply_buf(request, chars.baseAddress, chars.count)
            }
        }
    case .written(let count):
        _ = fuse_reply_write(request, count)
    case .fileSystemStatistics:
        var statistics = statvfs()
        statistics.f_bsize = 4096
        statistics.f_frsize = 4096
        statistics.f_namemax = 255
        _ = fuse_reply_statfs(request, &statistics)
    }
}

/// A positive errno for `fuse_reply_err`. Zero or a negative value would be read as success
/// or rejected by libfuse, so anything out of range becomes EIO.
func replyErrno(_ error: Errno) -> Int32 {
    let value = error.rawValue
    return value > 0 && value < 4096 ? value : EIO
}

/// Entry and attribute validity for a node, in seconds; never negative or NaN.
func cacheTimeout(_ node: NodeStat) -> Double {
    let seconds = node.cacheSeconds
    return seconds.isNaN ? 0 : max(0, seconds)
}
