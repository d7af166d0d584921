/*
 * loadgen: the load generator of scripts/bench.sh.
 *
 *   loadgen pread     PATH [opts]        B1: one fd opened once, pread(fd, 4 bytes, offset 4) in a loop
 *   loadgen openread  PATH SIZE [opts]   B2: open(O_RDONLY) + read(SIZE) + close in a loop
 *   loadgen openwrite PATH TEXT [opts]   B3: open(O_WRONLY|O_TRUNC) + write(TEXT) + close in a loop
 *   loadgen spawnwait PROBE TIMEOUT_MS LOG -- CMD ARGS...
 *                                        B5: fork/exec CMD (stdout and stderr to LOG), poll
 *                                        stat(PROBE) every 0.5 ms, print "pid=P ready_ms=T"
 *                                        (CMD keeps running)
 *
 * Options of the loops:
 *   --secs S       run for S seconds (default 2), or
 *   --ops N        run exactly N operations per client
 *   --clients C    C processes at once (B4), each with its own descriptors, released together
 *                  after all are ready; the figure printed is the aggregate
 *
 * Output (one line on stdout): "ops_per_sec=X ops=N secs=T clients=C". Every operation is
 * checked (return value and byte count); the first failure ends the run with exit status 1.
 * TEXT accepts \n escapes.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum mode { M_PREAD, M_OPENREAD, M_OPENWRITE };

struct job {
    enum mode mode;
    const char *path;
    size_t size;        /* openread */
    char text[4096];    /* openwrite */
    size_t text_length;
    double seconds;
    long long ops;      /* 0: time-bound */
};

struct outcome {
    long long ops;
    double seconds;
    int failed;
    char message[200];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(struct outcome *out, const char *what, const char *path)
{
    out->failed = 1;
    snprintf(out->message, sizeof(out->message), "%s %s: %s", what, path, strerror(errno));
}

/* One operation; 0 on success. */
static int one(const struct job *job, int fd, char *buffer, struct outcome *out)
{
    switch (job->mode) {
    case M_PREAD: {
        ssize_t got = pread(fd, buffer, 4, 4);
        if (got != 4) {
            if (got >= 0) errno = EIO;
            fail(out, "pread", job->path);
            return -1;
        }
        return 0;
    }
    case M_OPENREAD: {
        int f = open(job->path, O_RDONLY);
        if (f < 0) {
            fail(out, "open", job->path);
            return -1;
        }
        ssize_t got = read(f, buffer, job->size);
        if (got <= 0) {
            if (got == 0) errno = ENODATA;
            fail(out, "read", job->path);
            close(f);
            return -1;
        }
        if (close(f) != 0) {
            fail(out, "close", job->path);
            return -1;
        }
        return 0;
    }
    case M_OPENWRITE: {
        int f = open(job->path, O_WRONLY | O_TRUNC);
        if (f < 0) {
            fail(out, "open", job->path);
            return -1;
        }
        ssize_t put = write(f, job->text, job->text_length);
        if (put != (ssize_t)job->text_length) {
            if (put >= 0) errno = EIO;
            fail(out, "write", job->path);
            close(f);
            return -1;
        }
        if (close(f) != 0) {
            fail(out, "close", job->path);
            return -1;
        }
        return 0;
    }
    }
    return -1;
}

/* Runs the loop; `go` (if >= 0) is read once before starting, to start clients together. */
static void run(const struct job *job, int ready, int go, struct outcome *out)
{
    memset(out, 0, sizeof(*out));
    char *buffer = malloc(job->size > 4096 ? job->size : 4096);
    int fd = -1;
    if (job->mode == M_PREAD) {
        fd = open(job->path, O_RDONLY);
        if (fd < 0) fail(out, "open", job->path);
    }
    if (ready >= 0) {
        char byte = 'r';
        if (write(ready, &byte, 1) != 1) { /* parent gone */ }
        close(ready);
    }
    if (go >= 0) {
        char byte;
        if (read(go, &byte, 1) != 1) out->failed = out->failed ? 1 : 2;
        close(go);
    }
    if (out->failed) {
        free(buffer);
        return;
    }
    /* One warm-up operation (first lookups, page-ins) outside the timing. */
    if (one(job, fd, buffer, out) != 0) {
        free(buffer);
        return;
    }
    double start = now();
    double deadline = start + job->seconds;
    long long ops = 0;
    if (job->ops > 0) {
        while (ops < job->ops) {
            if (one(job, fd, buffer, out) != 0) break;
            ops++;
        }
    } else {
        for (;;) {
            if (one(job, fd, buffer, out) != 0) break;
            ops++;
            if ((ops & 63) == 0 && now() >= deadline) break;
        }
    }
    out->seconds = now() - start;
    out->ops = ops;
    if (fd >= 0) close(fd);
    free(buffer);
}

static void unescape(const char *in, struct job *job)
{
    size_t n = 0;
    for (size_t i = 0; in[i] != '\0' && n < sizeof(job->text); i++) {
        if (in[i] == '\\' && in[i + 1] == 'n') {
            job->text[n++] = '\n';
            i++;
        } else {
            job->text[n++] = in[i];
        }
    }
    job->text_length = n;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: loadgen pread PATH [--secs S|--ops N] [--clients C]\n"
            "       loadgen openread PATH SIZE [--secs S|--ops N] [--clients C]\n"
            "       loadgen openwrite PATH TEXT [--secs S|--ops N] [--clients C]\n"
            "       loadgen spawnwait PROBE TIMEOUT_MS LOG -- CMD [ARGS...]\n");
    return 2;
}

static int spawnwait(int argc, char **argv)
{
    /* argv: spawnwait PROBE TIMEOUT_MS LOG -- CMD ... */
    if (argc < 7 || strcmp(argv[5], "--") != 0) return usage();
    const char *probe = argv[2];
    double timeout = atof(argv[3]) / 1000.0;
    const char *log = argv[4];
    char **command = argv + 6;
    double start = now();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        /* Its own session, and no descriptor shared with our caller (a shell's $(...) pipe
           would otherwise stay open as long as the daemon runs). */
        setsid();
        int out = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (out < 0 || in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) _exit(126);
        execvp(command[0], command);
        _exit(127);
    }
    struct stat st;
    for (;;) {
        if (stat(probe, &st) == 0) {
            double elapsed = now() - start;
            printf("pid=%d ready_ms=%.1f\n", (int)pid, elapsed * 1000.0);
            return 0;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "loadgen: %s exited (status %d) before %s appeared (see %s)\n", command[0], status,
                    probe, log);
            return 1;
        }
        if (now() - start > timeout) {
            printf("pid=%d ready_ms=timeout\n", (int)pid);
            return 1;
        }
        usleep(500);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) return usage();
    if (strcmp(argv[1], "spawnwait") == 0) return spawnwait(argc, argv);

    struct job job;
    memset(&job, 0, sizeof(job));
    job.seconds = 2.0;
    job.size = 4;
    job.path = argv[2];
    int next = 3;
    if (strcmp(argv[1], "pread") == 0) {
        job.mode = M_PREAD;
    } else if (strcmp(argv[1], "openread") == 0) {
        if (argc < 4) return usage();
        job.mode = M_OPENREAD;
        job.size = (size_t)atol(argv[3]);
        if (job.size == 0 || job.size > (1 << 20)) return usage();
        next = 4;
    } else if (strcmp(argv[1], "openwrite") == 0) {
        if (argc < 4) return usage();
        job.mode = M_OPENWRITE;
        unescape(argv[3], &job);
        next = 4;
    } else {
        return usage();
    }
    int clients = 1;
    for (int i = next; i < argc; i++) {
        if (strcmp(argv[i], "--secs") == 0 && i + 1 < argc) {
            job.seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc) {
            job.ops = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            clients = atoi(argv[++i]);
        } else {
            return usage();
        }
    }
    if (clients < 1 || clients > 64) return usage();

    struct outcome total;
    memset(&total, 0, sizeof(total));
    if (clients == 1) {
        run(&job, -1, -1, &total);
        if (total.failed) {
            fprintf(stderr, "loadgen: %s\n", total.message);
            return 1;
        }
        printf("ops_per_sec=%.1f ops=%lld secs=%.3f clients=1\n",
               total.seconds > 0 ? (double)total.ops / total.seconds : 0.0, total.ops, total.seconds);
        return 0;
    }

    /* Several clients: each child reports its outcome through a pipe. */
    int go[2], ready[2];
    if (pipe(go) != 0 || pipe(ready) != 0) {
        perror("pipe");
        return 1;
    }
    pid_t pids[64];
    int results[64];
    for (int c = 0; c < clients; c++) {
        int result[2];
        if (pipe(result) != 0) {
            perror("pipe");
            return 1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            close(result[0]);
            close(go[1]);
            close(ready[0]);
            struct outcome out;
            run(&job, ready[1], go[0], &out);
            if (write(result[1], &out, sizeof(out)) != (ssize_t)sizeof(out)) _exit(1);
            _exit(0);
        }
        close(result[1]);
        pids[c] = pid;
        results[c] = result[0];
    }
    close(go[0]);
    close(ready[1]);
    for (int c = 0; c < clients; c++) {
        char byte;
        if (read(ready[0], &byte, 1) != 1) break;
    }
    /* Release everyone at once: closing the write end makes every read(go) return. */
    char bytes[64];
    memset(bytes, 'g', sizeof(bytes));
    if (write(go[1], bytes, (size_t)clients) != clients) { /* children see EOF anyway */ }
    close(go[1]);
    double max_seconds = 0;
    int failed = 0;
    double rate = 0;
    for (int c = 0; c < clients; c++) {
        struct outcome out;
        ssize_t got = read(results[c], &out, sizeof(out));
        close(results[c]);
        waitpid(pids[c], NULL, 0);
        if (got != (ssize_t)sizeof(out) || out.failed) {
            fprintf(stderr, "loadgen: client %d: %s\n", c, got == (ssize_t)sizeof(out) ? out.message : "no result");
            failed = 1;
            continue;
        }
        total.ops += out.ops;
        if (out.seconds > max_seconds) max_seconds = out.seconds;
        if (out.seconds > 0) rate += (double)out.ops / out.seconds;
    }
    if (failed) return 1;
    /* Aggregate: the sum of the clients' own rates (they run over the same window). */
    printf("ops_per_sec=%.1f ops=%lld secs=%.3f clients=%d\n", rate, total.ops, max_seconds, clients);
    return 0;
}
