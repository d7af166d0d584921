/*
 * CFuse: the only C in pcibackfs.
 *
 * It pins the libfuse API level and gives Swift stable, callable names for the parts of
 * libfuse that Swift cannot see or must not bind to directly:
 *
 *   - function-like macros (in libfuse >= 3.17 `fuse_session_new` is a macro around a
 *     versioned symbol, and `fuse_session_loop_mt` maps to `_31`/`_32`/`_312` variants
 *     depending on FUSE_USE_VERSION and on how libfuse was built);
 *   - `sizeof(struct fuse_lowlevel_ops)`, which must be the C compiler's value for the
 *     header we compiled against, not whatever Swift computes for the imported struct;
 *   - the opaque `struct fuse_loop_config` (public before API 3.12, opaque since), which is
 *     created, configured and freed here around one call of the multithreaded loop.
 *
 * Swift code calls only `cfuse_*` for these and plain libfuse functions for the rest.
 *
 * It also gives `pcibackfsd run` the Linux process calls that Swift cannot see: glibc declares
 * unshare(2) only under _GNU_SOURCE, and prctl(2) is variadic (`csys_*` below). The shim must
 * not define _GNU_SOURCE itself: the system headers it includes would then define types such
 * as fd_set differently from Swift's Glibc module, and the two modules would not build together.
 *
 * Only Sources/PCIBackFS/FUSE/ (libfuse) and Sources/PCIBackFS/Runner/ (`csys_*`) import it.
 */
#ifndef PCIBACKFS_CFUSE_SHIM_H
#define PCIBACKFS_CFUSE_SHIM_H

/* API level 3.12: the floor shipped by Debian 12 (3.14) and Ubuntu 24.04 (3.14). It selects
   the opaque loop config and the `fuse_session_loop_mt(se, config)` signature. */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <stddef.h>
#include <fuse3/fuse_lowlevel.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>

/* glibc's <sched.h> declares unshare(2) only under _GNU_SOURCE; this is its prototype. */
extern int unshare(int flags);

#if !defined(FUSE_MAJOR_VERSION) || !defined(FUSE_MINOR_VERSION)
#error "CFuse: <fuse3/fuse_lowlevel.h> did not define FUSE_MAJOR_VERSION/FUSE_MINOR_VERSION"
#endif
#if FUSE_MAJOR_VERSION != 3 || FUSE_MINOR_VERSION < 12
#error "CFuse: pcibackfs needs libfuse 3.12 or newer within major version 3"
#endif
_Static_assert(FUSE_USE_VERSION == 312,
               "CFuse: the Swift adapter is written against FUSE_USE_VERSION 312");
_Static_assert(FUSE_ROOT_ID == 1, "CFuse: the model assumes the root inode is 1");

/* Creates a low-level session. Wraps the `fuse_session_new` macro of libfuse >= 3.17 and
   supplies the operations table's C size. `args` is parsed (and may be modified) by libfuse;
   the caller frees it with fuse_opt_free_args afterwards. Returns NULL on bad options. */
static inline struct fuse_session *
cfuse_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *ops, void *userdata)
{
    return fuse_session_new(args, ops, sizeof(*ops), userdata);
}

/* Runs the multithreaded loop until the session exits (unmount, fuse_session_exit, or a
   signal handler installed by fuse_set_signal_handlers). Returns what the loop returns:
   0 after an unmount, a positive signal number, or a negative errno. */
static inline int
cfuse_session_loop_mt(struct fuse_session *se, unsigned int max_threads, int clone_fd)
{
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) {
        return -ENOMEM;
    }
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_clone_fd(config, clone_fd ? 1u : 0u);
    int result = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return result;
}

/* Capability and setattr bits as typed constants, so Swift never depends on how the
   importer treats the shift-expression macros. */
static const unsigned int CFUSE_CAP_ATOMIC_O_TRUNC = FUSE_CAP_ATOMIC_O_TRUNC;
static const unsigned int CFUSE_CAP_CACHE_SYMLINKS = FUSE_CAP_CACHE_SYMLINKS;
static const unsigned int CFUSE_CAP_WRITEBACK_CACHE = FUSE_CAP_WRITEBACK_CACHE;
static const unsigned int CFUSE_CAP_READDIRPLUS = FUSE_CAP_READDIRPLUS;
static const unsigned int CFUSE_CAP_READDIRPLUS_AUTO = FUSE_CAP_READDIRPLUS_AUTO;

static const int CFUSE_SET_ATTR_MODE = FUSE_SET_ATTR_MODE;
static const int CFUSE_SET_ATTR_UID = FUSE_SET_ATTR_UID;
static const int CFUSE_SET_ATTR_GID = FUSE_SET_ATTR_GID;
static const int CFUSE_SET_ATTR_SIZE = FUSE_SET_ATTR_SIZE;
static const int CFUSE_SET_ATTR_ATIME = FUSE_SET_ATTR_ATIME;
static const int CFUSE_SET_ATTR_MTIME = FUSE_SET_ATTR_MTIME;
static const int CFUSE_SET_ATTR_ATIME_NOW = FUSE_SET_ATTR_ATIME_NOW;
static const int CFUSE_SET_ATTR_MTIME_NOW = FUSE_SET_ATTR_MTIME_NOW;
static const int CFUSE_SET_ATTR_CTIME = FUSE_SET_ATTR_CTIME;

/* Namespaces and process lifetime for `pcibackfsd run`. */
static const int CSYS_CLONE_NEWNS = CLONE_NEWNS;
static const int CSYS_CLONE_NEWNET = CLONE_NEWNET;
static const int CSYS_CLONE_NEWPID = CLONE_NEWPID;
static const int CSYS_CLONE_NEWUSER = CLONE_NEWUSER;

/* unshare(2); returns 0 or -1 with errno set. */
static inline int
csys_unshare(int flags)
{
    return unshare(flags);
}

/* prctl(PR_SET_PDEATHSIG): `signal` is sent to the caller when its parent thread exits. */
static inline int
csys_set_parent_death_signal(int signal)
{
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}

#endif /* PCIBACKFS_CFUSE_SHIM_H */
