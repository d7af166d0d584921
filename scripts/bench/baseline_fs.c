/*
 * baseline_fs: the C reference for scripts/bench.sh.
 *
 * A minimal libfuse3 low-level file system, written against the documented API in
 * <fuse3/fuse_lowlevel.h>, that serves only the paths the benchmarks touch, at the same depth
 * and with the same FUSE policy as pcibackfsd:
 *
 *   - direct_io on every file, keep_cache off, noflush (no FLUSH round trip on close);
 *   - atomic_o_trunc and symlink caching wanted (its links never change target; pcibackfsd
 *     caches its links too and invalidates one when a store changes it); writeback cache and
 *     readdirplus off;
 *   - entry/attr timeout 3600 s for static directories; for everything dynamic (links, device
 *     and driver directories, files) --dynamic-timeout S (default 3600, pcibackfsd's policy
 *     since it invalidates what a store changes; 0 was its earlier policy; bench.sh probes the
 *     daemon and passes the matching value);
 *   - mount options default_permissions,fsname=...,subtype=...;
 *   - fuse_session_loop_mt with a fuse_loop_config: max_threads 8 and clone_fd by default
 *     (--max-threads N, --no-clone-fd as in pcibackfsd).
 *
 * Tree (the real layout of the built-in machine's NIC 0000:03:00.0 behind root port 00:1c.1):
 *
 *   bus/pci/devices/0000:03:00.0 -> ../../../devices/pci0000:00/0000:00:1c.1/0000:03:00.0
 *   bus/pci/drivers/pciback/allow_interrupt_control          0644 "BDF" list, write adds one
 *   devices/pci0000:00/0000:00:1c.1/0000:03:00.0/{config (4096 bytes, 0644), vendor (0444)}
 *   fs/pcibackfs/frontends/1/bus/pci/devices/0000:00:00.0/{config, vendor}
 *
 * The per-request work is what a sysfs imitation needs at the least: a lock around shared
 * state, a copy of config bytes, an attribute rendered into a per-open snapshot at offset 0,
 * and a parsed store.
 *
 * Usage: baseline_fs MOUNTPOINT [--max-threads N] [--no-clone-fd] [--dynamic-timeout S] [--debug]
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE

#include <fuse3/fuse_lowlevel.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind { K_DIR, K_LINK, K_CONFIG, K_VENDOR, K_AIC };

struct node {
    fuse_ino_t parent;
    const char *name;
    enum kind kind;
    int is_static;   /* directories: 3600 s cache */
    mode_t mode;
    const char *target; /* links */
};

#define STATIC_TIMEOUT 3600.0
static double dynamic_timeout = 3600.0;

/* Index == inode number; 0 unused, 1 is FUSE_ROOT_ID. */
static const struct node nodes[] = {
    [0] = { 0, NULL, K_DIR, 0, 0, NULL },
    [1] = { 0, "", K_DIR, 1, 0755, NULL },
    [2] = { 1, "bus", K_DIR, 1, 0755, NULL },
    [3] = { 2, "pci", K_DIR, 1, 0755, NULL },
    [4] = { 3, "devices", K_DIR, 0, 0755, NULL },
    [5] = { 4, "0000:03:00.0", K_LINK, 0, 0777, "../../../devices/pci0000:00/0000:00:1c.1/0000:03:00.0" },
    [6] = { 3, "drivers", K_DIR, 1, 0755, NULL },
    [7] = { 6, "pciback", K_DIR, 0, 0755, NULL },
    [8] = { 7, "allow_interrupt_control", K_AIC, 0, 0644, NULL },
    [9] = { 1, "devices", K_DIR, 1, 0755, NULL },
    [10] = { 9, "pci0000:00", K_DIR, 0, 0755, NULL },
    [11] = { 10, "0000:00:1c.1", K_DIR, 0, 0755, NULL },
    [12] = { 11, "0000:03:00.0", K_DIR, 0, 0755, NULL },
    [13] = { 12, "config", K_CONFIG, 0, 0644, NULL },
    [14] = { 12, "vendor", K_VENDOR, 0, 0444, NULL },
    [15] = { 1, "fs", K_DIR, 1, 0755, NULL },
    [16] = { 15, "pcibackfs", K_DIR, 1, 0755, NULL },
    [17] = { 16, "frontends", K_DIR, 0, 0755, NULL },
    [18] = { 17, "1", K_DIR, 0, 0755, NULL },
    [19] = { 18, "bus", K_DIR, 0, 0755, NULL },
    [20] = { 19, "pci", K_DIR, 0, 0755, NULL },
    [21] = { 20, "devices", K_DIR, 0, 0755, NULL },
    [22] = { 21, "0000:00:00.0", K_DIR, 0, 0755, NULL },
    [23] = { 22, "config", K_CONFIG, 0, 0644, NULL },
    [24] = { 22, "vendor", K_VENDOR, 0, 0444, NULL },
};
#define NODE_COUNT (sizeof(nodes) / sizeof(nodes[0]))

/* Shared state, behind one lock like the daemon's model. */
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char config_space[4096];
static int interrupt_control_allowed;
static time_t start_time;

/* Per-open state kept in fi->fh. */
struct handle {
    fuse_ino_t ino;
    size_t snapshot_length;
    int has_snapshot;
    char snapshot[64];
};

static int valid_ino(fuse_ino_t ino)
{
    return ino >= 1 && ino < NODE_COUNT;
}

static double timeout_of(fuse_ino_t ino)
{
    return nodes[ino].kind == K_DIR && nodes[ino].is_static ? STATIC_TIMEOUT : dynamic_timeout;
}

static void fill_stat(fuse_ino_t ino, struct stat *st)
{
    const struct node *n = &nodes[ino];
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    switch (n->kind) {
    case K_DIR:
        st->st_mode = S_IFDIR | n->mode;
        st->st_nlink = 2;
        break;
    case K_LINK:
        st->st_mode = S_IFLNK | n->mode;
        st->st_nlink = 1;
        st->st_size = (off_t)strlen(n->target);
        break;
    default:
        st->st_mode = S_IFREG | n->mode;
        st->st_nlink = 1;
        st->st_size = 4096;
        break;
    }
    st->st_blksize = 4096;
    st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = start_time;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->want |= (FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_CACHE_SYMLINKS) & conn->capable;
    conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    for (fuse_ino_t ino = 2; ino < NODE_COUNT; ino++) {
        if (nodes[ino].parent == parent && strcmp(nodes[ino].name, name) == 0) {
            struct fuse_entry_param e;
            memset(&e, 0, sizeof(e));
            e.ino = ino;
            fill_stat(ino, &e.attr);
            e.attr_timeout = timeout_of(ino);
            e.entry_timeout = timeout_of(ino);
            fuse_reply_entry(req, &e);
            return;
        }
    }
    fuse_reply_err(req, ENOENT);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    (void)ino;
    (void)nlookup;
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    if (!valid_ino(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct stat st;
    fill_stat(ino, &st);
    fuse_reply_attr(req, &st, timeout_of(ino));
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
    (void)attr;
    (void)fi;
    if (!valid_ino(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if ((to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) || !(to_set & FUSE_SET_ATTR_SIZE)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    if (nodes[ino].kind == K_DIR || nodes[ino].kind == K_LINK) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    struct stat st;
    fill_stat(ino, &st);
    fuse_reply_attr(req, &st, timeout_of(ino));
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    if (!valid_ino(ino) || nodes[ino].kind != K_LINK) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    fuse_reply_readlink(req, nodes[ino].target);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (!valid_ino(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    const struct node *n = &nodes[ino];
    if (n->kind == K_LINK) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    int access = fi->flags & O_ACCMODE;
    int wants_read = access == O_RDONLY || access == O_RDWR;
    int wants_write = access == O_WRONLY || access == O_RDWR;
    if (n->kind == K_DIR && wants_write) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    /* Like kernfs: the mode is checked even for root. */
    if ((wants_read && !(n->mode & 0444)) || (wants_write && !(n->mode & 0222))) {
        fuse_reply_err(req, EACCES);
        return;
    }
    struct handle *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    h->ino = ino;
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    fi->keep_cache = 0;
    fi->noflush = 1;
    if (fuse_reply_open(req, fi) != 0) {
        free(h);
    }
}

static size_t render(fuse_ino_t ino, char *out, size_t capacity)
{
    int length = 0;
    pthread_mutex_lock(&state_lock);
    if (nodes[ino].kind == K_VENDOR) {
        length = snprintf(out, capacity, "0x%02x%02x\n", config_space[1], config_space[0]);
    } else if (nodes[ino].kind == K_AIC) {
        length = interrupt_control_allowed ? snprintf(out, capacity, "0000:03:00.0\n") : 0;
    }
    pthread_mutex_unlock(&state_lock);
    return length < 0 ? 0 : (size_t)length;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    if (off < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    switch (nodes[h->ino].kind) {
    case K_CONFIG: {
        if (off >= 4096 || size == 0) {
            fuse_reply_buf(req, NULL, 0);
            return;
        }
        size_t count = size < (size_t)(4096 - off) ? size : (size_t)(4096 - off);
        unsigned char buffer[4096];
        pthread_mutex_lock(&state_lock);
        memcpy(buffer, config_space + off, count);
        pthread_mutex_unlock(&state_lock);
        fuse_reply_buf(req, (const char *)buffer, count);
        return;
    }
    case K_VENDOR:
    case K_AIC:
        if (off == 0 || !h->has_snapshot) {
            h->snapshot_length = render(h->ino, h->snapshot, sizeof(h->snapshot));
            h->has_snapshot = 1;
        }
        if ((size_t)off >= h->snapshot_length) {
            fuse_reply_buf(req, NULL, 0);
            return;
        }
        size_t count = h->snapshot_length - (size_t)off;
        if (count > size) {
            count = size;
        }
        fuse_reply_buf(req, h->snapshot + off, count);
        return;
    default:
        fuse_reply_err(req, EISDIR);
        return;
    }
}

/* "DDDD:BB:DD.F" with optional trailing newline, as the daemon's grammar accepts. */
static int parse_address(const char *buf, size_t size, unsigned *domain, unsigned *bus, unsigned *slot,
                         unsigned *function)
{
    char text[64];
    if (size == 0 || size >= sizeof(text)) {
        return -1;
    }
    memcpy(text, buf, size);
    text[size] = '\0';
    int consumed = 0;
    if (sscanf(text, "%x:%x:%x.%x%n", domain, bus, slot, function, &consumed) != 4) {
        return -1;
    }
    return 0;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino;
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    switch (nodes[h->ino].kind) {
    case K_CONFIG: {
        if (off < 0 || off >= 4096 || size == 0) {
            fuse_reply_write(req, 0);
            return;
        }
        size_t count = size < (size_t)(4096 - off) ? size : (size_t)(4096 - off);
        pthread_mutex_lock(&state_lock);
        memcpy(config_space + off, buf, count);
        pthread_mutex_unlock(&state_lock);
        fuse_reply_write(req, count);
        return;
    }
    case K_AIC: {
        if (size == 0) {
            fuse_reply_write(req, 0);
            return;
        }
        size_t count = size > 4096 ? 4096 : size;
        unsigned domain, bus, slot, function;
        if (parse_address(buf, count, &domain, &bus, &slot, &function) != 0) {
            fuse_reply_err(req, EINVAL);
            return;
        }
        if (domain != 0 || bus != 3 || slot != 0 || function != 0) {
            fuse_reply_err(req, ENODEV);
            return;
        }
        pthread_mutex_lock(&state_lock);
        interrupt_control_allowed = 1;
        pthread_mutex_unlock(&state_lock);
        fuse_reply_write(req, count);
        return;
    }
    default:
        fuse_reply_err(req, EACCES);
        return;
    }
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    free((void *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (!valid_ino(ino) || nodes[ino].kind != K_DIR) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    fi->fh = 0;
    fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    char *buffer = calloc(1, size ? size : 1);
    if (buffer == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    /* Offsets: 1 = ".", 2 = "..", 2 + i = i-th node (by inode order). */
    fuse_ino_t children[NODE_COUNT + 2];
    const char *names[NODE_COUNT + 2];
    size_t count = 0;
    children[count] = ino;
    names[count++] = ".";
    children[count] = ino;
    names[count++] = "..";
    for (fuse_ino_t child = 2; child < NODE_COUNT; child++) {
        if (nodes[child].parent == ino) {
            children[count] = child;
            names[count++] = nodes[child].name;
        }
    }
    for (size_t index = (size_t)off; index < count; index++) {
        struct stat st;
        fill_stat(children[index], &st);
        size_t needed = fuse_add_direntry(req, buffer + used, size - used, names[index], &st, (off_t)(index + 1));
        if (needed > size - used) {
            break;
        }
        used += needed;
    }
    fuse_reply_buf(req, buffer, used);
    free(buffer);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct statvfs st;
    memset(&st, 0, sizeof(st));
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops operations = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .release = op_release,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
};

/* A plausible 82576 header so vendor and config reads return real-looking bytes. */
static void fill_config(void)
{
    memset(config_space, 0, sizeof(config_space));
    const unsigned char header[16] = { 0x86, 0x80, 0xc9, 0x10, 0x07, 0x04, 0x10, 0x00,
                                       0x01, 0x00, 0x00, 0x02, 0x10, 0x00, 0x80, 0x00 };
    memcpy(config_space, header, sizeof(header));
}

int main(int argc, char **argv)
{
    const char *mountpoint = NULL;
    unsigned max_threads = 8;
    int clone_fd = 1;
    int debug = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--max-threads") == 0 && i + 1 < argc) {
            max_threads = (unsigned)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--no-clone-fd") == 0) {
            clone_fd = 0;
        } else if (strcmp(argv[i], "--dynamic-timeout") == 0 && i + 1 < argc) {
            dynamic_timeout = atof(argv[++i]);
            if (dynamic_timeout < 0) dynamic_timeout = 0;
        } else if (strcmp(argv[i], "--debug") == 0) {
            debug = 1;
        } else if (mountpoint == NULL && argv[i][0] != '-') {
            mountpoint = argv[i];
        } else {
            fprintf(stderr, "usage: %s MOUNTPOINT [--max-threads N] [--no-clone-fd] [--dynamic-timeout S] [--debug]\n", argv[0]);
            return 2;
        }
    }
    if (mountpoint == NULL || max_threads < 1) {
        fprintf(stderr, "usage: %s MOUNTPOINT [--max-threads N] [--no-clone-fd] [--dynamic-timeout S] [--debug]\n", argv[0]);
        return 2;
    }
    start_time = time(NULL);
    fill_config();

    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    if (fuse_opt_add_arg(&args, argv[0]) != 0 || (debug && fuse_opt_add_arg(&args, "-d") != 0)
        || fuse_opt_add_arg(&args, "-o") != 0
        || fuse_opt_add_arg(&args, "default_permissions,fsname=baselinefs,subtype=baselinefs") != 0) {
        fprintf(stderr, "baseline_fs: out of memory\n");
        return 1;
    }
    struct fuse_session *se = fuse_session_new(&args, &operations, sizeof(operations), NULL);
    fuse_opt_free_args(&args);
    if (se == NULL) {
        return 1;
    }
    if (fuse_set_signal_handlers(se) != 0) {
        fuse_session_destroy(se);
        return 1;
    }
    if (fuse_session_mount(se, mountpoint) != 0) {
        fuse_remove_signal_handlers(se);
        fuse_session_destroy(se);
        return 1;
    }
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) {
        fuse_session_unmount(se);
        fuse_remove_signal_handlers(se);
        fuse_session_destroy(se);
        return 1;
    }
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_clone_fd(config, (unsigned)clone_fd);
    int result = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return result < 0 ? 1 : 0;
}
