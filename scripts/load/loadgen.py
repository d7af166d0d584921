#!/usr/bin/env python3
"""loadgen: the load generator of scripts/load-test.sh.

    loadgen.py --mount DIR --daemon-pid PID [--secs 60] [--workers 8] [--op-timeout 10] [--warmup 10]

Each worker is a process that owns one endpoint of fixtures/load-machine.json (0000:0N:00.0) and
one frontend domain (10 + N). It keeps a model of its device (driver, export, pciback flags,
fake-ISR state, the cache-line-size register) and, for the whole run, picks random operations
valid in the current state: attribute writes, config reads and writes on the dom0 view and, when
exported, on the frontend view and through pci_op, host driver unbind/bind, pciback bind/unbind,
attach/detach, reads of the shared pciback lists, and writes that must fail with a known errno.
After each of its own writes it reads the state back and compares it with the model.

The parent watches every operation in flight: one older than --op-timeout is a deadlock (the
workers are killed and the run fails). It also measures the daemon's RSS after --warmup seconds
and at the end (within 10 %), and its open descriptors before and after the run (the same).
A summary with ops/s and the result of every check is printed; the exit status is 0 only if
every check passed.
"""

import argparse
import errno
import multiprocessing as mp
import os
import random
import signal
import sys
import time

CACHE_LINE = 0x0C  # Cache Line Size: read/write on every template, passed through by pciback


class ModelError(Exception):
    """The device's state differs from what the worker's own writes should have left."""


class UnexpectedErrno(Exception):
    """A syscall failed with an errno the operation does not allow."""


class Worker:
    def __init__(self, index, root, seed):
        self.index = index
        self.root = root
        self.bus = index + 1
        self.bdf = "0000:%02x:00.0" % self.bus
        self.domain = 10 + self.bus
        self.rng = random.Random(seed)
        self.dev = "%s/bus/pci/devices/%s" % (root, self.bdf)
        self.pciback = "%s/bus/pci/drivers/pciback" % root
        self.frontend = "%s/fs/pcibackfs/frontends/%d" % (root, self.domain)
        self.guest_config = self.frontend + "/bus/pci/devices/0000:00:00.0/config"
        self.counts = {}
        # The model.
        self.state = "host"  # host | unbound | pciback | attached
        self.host = os.path.basename(os.readlink(self.dev + "/driver"))
        self.permissive = False
        self.allow_interrupt_control = False
        self.isr_on = False
        self.ack = False
        config = self.pread(self.dev + "/config", 0, 64)
        self.ids = config[0:4]
        self.cache_line = config[CACHE_LINE]
        self.saved_cache_line = self.cache_line
        self.mask = self.learn_mask()

    # -- syscalls -------------------------------------------------------------------------------

    def write(self, path, text, expect=0, offset=None, flags=os.O_WRONLY):
        data = text.encode() if isinstance(text, str) else text
        try:
            fd = os.open(path, flags)
        except OSError as error:
            return self.check_errno("open", path, error.errno, expect)
        try:
            written = os.pwrite(fd, data, offset) if offset is not None else os.write(fd, data)
        except OSError as error:
            return self.check_errno("write", path, error.errno, expect)
        finally:
            os.close(fd)
        if expect:
            raise UnexpectedErrno("write %r > %s: succeeded, expected %s" % (data, path, errno.errorcode[expect]))
        if written != len(data):
            raise UnexpectedErrno("write %r > %s: %d of %d bytes" % (data, path, written, len(data)))
        return written

    @staticmethod
    def check_errno(call, path, got, expect):
        if got != expect:
            raise UnexpectedErrno("%s %s: %s, expected %s" % (call, path, errno.errorcode.get(got, got),
                                                             errno.errorcode.get(expect, "success")))
        return -got

    @staticmethod
    def read(path):
        with open(path, "rb", buffering=0) as handle:
            return handle.read(65536)

    @staticmethod
    def pread(path, offset, count):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, count, offset)
        finally:
            os.close(fd)

    def pwrite_config(self, path, offset, data):
        fd = os.open(path, os.O_RDWR)
        try:
            written = os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        if written != len(data):
            raise UnexpectedErrno("pwrite %s at %#x: %d of %d" % (path, offset, written, len(data)))

    def learn_mask(self):
        config = self.dev + "/config"
        self.pwrite_config(config, CACHE_LINE, b"\xff")
        mask = self.pread(config, CACHE_LINE, 1)[0]
        self.pwrite_config(config, CACHE_LINE, bytes([self.cache_line]))
        return mask

    def expect(self, condition, message):
        if not condition:
            raise ModelError("%s (state %s)" % (message, self.state))

    # -- read-backs -----------------------------------------------------------------------------

    def driver(self):
        try:
            return os.path.basename(os.readlink(self.dev + "/driver"))
        except FileNotFoundError:
            return None

    def listed(self, name):
        return self.bdf in self.read(self.pciback + "/" + name).decode().split()

    def irq_line(self):
        for line in self.read(self.pciback + "/irq_handlers").decode().splitlines():
            if line.startswith(self.bdf + ":"):
                return line
        return None

    def expected_irq_line(self):
        return "%s:%s:%sing:0" % (self.bdf, "on" if self.isr_on else "off", "ack" if self.ack else "not ack")

    def verify(self, what):
        """The whole model against the tree."""
        expected_driver = {"host": self.host, "unbound": None, "pciback": "pciback", "attached": "pciback"}[self.state]
        self.expect(self.driver() == expected_driver, "%s: driver %r, expected %r" % (what, self.driver(), expected_driver))
        exported = os.path.isdir(self.frontend)
        self.expect(exported == (self.state == "attached"), "%s: frontend %d present=%s" % (what, self.domain, exported))
        seized = self.state in ("pciback", "attached")
        self.expect(self.listed("permissive") == (seized and self.permissive), "%s: permissive list" % what)
        self.expect(self.listed("allow_interrupt_control") == (seized and self.allow_interrupt_control),
                    "%s: allow_interrupt_control list" % what)
        line = self.irq_line()
        self.expect(line == (self.expected_irq_line() if seized else None),
                    "%s: irq_handlers line %r, expected %r" % (what, line, self.expected_irq_line() if seized else None))
        self.expect(self.listed("slots"), "%s: %s left the seize list" % (what, self.bdf))
        value = self.pread(self.dev + "/config", CACHE_LINE, 1)[0]
        self.expect(value == self.cache_line, "%s: dom0 cache line %#x, expected %#x" % (what, value, self.cache_line))
        if self.state == "attached":
            value = self.pread(self.guest_config, CACHE_LINE, 1)[0]
            self.expect(value == self.cache_line, "%s: guest cache line %#x, expected %#x" % (what, value, self.cache_line))

    # -- operations -----------------------------------------------------------------------------

    def op_config_read(self):
        data = self.read(self.dev + "/config")
        self.expect(len(data) in (256, 4096), "config size %d" % len(data))
        self.expect(data[0:4] == self.ids and data[CACHE_LINE] == self.cache_line, "dom0 config read")

    def op_config_write(self):
        value = self.rng.randrange(256)
        self.pwrite_config(self.dev + "/config", CACHE_LINE, bytes([value]))
        self.cache_line = value & self.mask
        got = self.pread(self.dev + "/config", CACHE_LINE, 1)[0]
        self.expect(got == self.cache_line, "dom0 config write %#x read back %#x" % (value, got))

    def op_config_odd(self):
        # Three bytes at 0x0b (class, cache line, latency): a byte then a word; rewritten as read.
        path = self.dev + "/config"
        current = self.pread(path, 0x0B, 3)
        self.pwrite_config(path, 0x0B, current)
        self.expect(self.pread(path, 0x0B, 3) == current, "odd-size config write-back")

    def op_attributes(self):
        for name in ("vendor", "device", "class", "irq", "resource", "enable", "uevent", "modalias"):
            self.expect(len(self.read(self.dev + "/" + name)) > 0, "empty " + name)
        vendor = int(self.read(self.dev + "/vendor"), 16)
        self.expect(vendor == int.from_bytes(self.ids[0:2], "little"), "vendor attribute")

    def op_shared_lists(self):
        for name in ("slots", "permissive", "allow_interrupt_control", "irq_handlers", "quirks"):
            self.read(self.pciback + "/" + name)
        os.listdir(self.root + "/fs/pcibackfs/frontends")

    def op_bad_write(self):
        choice = self.rng.randrange(3)
        if choice == 0:
            self.write(self.pciback + "/new_slot", "garbage\n", expect=errno.EINVAL)
        elif choice == 1:
            self.write(self.pciback + "/permissive", self.bdf if self.state in ("pciback", "attached") else "0000:%02x:1f.7" % self.bus,
                       expect=0 if self.state in ("pciback", "attached") else errno.ENODEV)
            if self.state in ("pciback", "attached"):
                self.permissive = True
        elif self.state != "unbound":
            self.write(self.dev + "/enable", "1", expect=errno.EBUSY)  # a driver holds it
        else:
            self.write(self.dev + "/enable", "-1", expect=errno.EINVAL)

    def op_unbind_host(self):
        self.write("%s/bus/pci/drivers/%s/unbind" % (self.root, self.host), self.bdf)
        self.state = "unbound"
        self.expect(self.driver() is None, "driver link after unbind")

    def op_bind_host(self):
        if self.rng.randrange(2):
            self.write("%s/bus/pci/drivers/%s/bind" % (self.root, self.host), self.bdf + "\n")
        else:
            self.write(self.root + "/bus/pci/drivers_probe", self.bdf)  # host drivers registered first
        self.state = "host"
        self.expect(self.driver() == self.host, "driver link after host bind")
        self.write("%s/bus/pci/drivers/%s/bind" % (self.root, self.host), self.bdf, expect=errno.EBUSY)

    def op_bind_pciback(self):
        self.write(self.pciback + "/bind", self.bdf)
        self.state = "pciback"
        self.permissive = self.allow_interrupt_control = self.isr_on = self.ack = False
        self.saved_cache_line = self.cache_line
        self.expect(self.driver() == "pciback", "driver link after pciback bind")
        self.write(self.pciback + "/bind", self.bdf, expect=errno.EBUSY)

    def op_unbind_pciback(self):
        self.write(self.pciback + "/unbind", self.bdf + "\n")
        self.state = "unbound"
        self.cache_line = self.saved_cache_line  # pcistub_remove restores the state saved at bind
        self.expect(self.driver() is None and not self.listed("permissive"), "after pciback unbind")

    def op_attach(self):
        self.write(self.root + "/fs/pcibackfs/attach", "%d %s\n" % (self.domain, self.bdf))
        self.state = "attached"
        self.expect(os.listdir(self.frontend + "/bus/pci/devices") == ["0000:00:00.0"], "frontend devices after attach")
        self.write(self.root + "/fs/pcibackfs/attach", "%d %s\n" % (self.domain, self.bdf), expect=errno.EINVAL)

    def op_detach(self):
        self.write(self.root + "/fs/pcibackfs/detach", "%d %s" % (self.domain, self.bdf))
        self.state = "pciback"
        # pcistub_put_pci_dev: reset and restore, flag cleared, fake ISR no longer acking.
        self.allow_interrupt_control = False
        self.ack = False
        self.cache_line = self.saved_cache_line
        self.expect(not os.path.exists(self.frontend), "frontend after detach")
        self.write(self.root + "/fs/pcibackfs/detach", "%d %s" % (self.domain, self.bdf), expect=errno.ENODEV)

    def op_flags(self):
        choice = self.rng.randrange(3)
        if choice == 0:
            self.write(self.pciback + "/permissive", self.bdf + "\n")
            self.permissive = True
            self.expect(self.listed("permissive"), "permissive list after write")
        elif choice == 1:
            self.write(self.pciback + "/allow_interrupt_control", self.bdf)
            self.allow_interrupt_control = True
            self.expect(self.listed("allow_interrupt_control"), "allow_interrupt_control list after write")
        else:
            self.write(self.pciback + "/irq_handler_state", self.bdf)
            self.isr_on = not self.isr_on
            if self.isr_on:
                self.ack = True
            line = self.irq_line()
            self.expect(line == self.expected_irq_line(), "irq_handlers %r, expected %r" % (line, self.expected_irq_line()))

    def op_quirk(self):
        self.write(self.pciback + "/quirks", "%s-f8:1:0\n" % self.bdf)

    def op_guest_read(self):
        data = self.pread(self.guest_config, 0, 64)
        self.expect(data[0:4] == self.ids, "guest ids %s" % data[0:4].hex())
        self.expect(data[CACHE_LINE] == self.cache_line, "guest cache line %#x, expected %#x" % (data[CACHE_LINE], self.cache_line))

    def op_guest_write(self):
        value = self.rng.randrange(256)
        self.pwrite_config(self.guest_config, CACHE_LINE, bytes([value]))
        self.cache_line = value & self.mask
        guest = self.pread(self.guest_config, CACHE_LINE, 1)[0]
        host = self.pread(self.dev + "/config", CACHE_LINE, 1)[0]
        self.expect(guest == host == self.cache_line, "guest write %#x: guest %#x, dom0 %#x" % (value, guest, host))

    def op_pci_op(self):
        path = self.frontend + "/pci_op"
        fd = os.open(path, os.O_RDWR)
        try:
            line = "conf_read 00:00.0 0x0 4\n".encode()
            self.expect(os.write(fd, line) == len(line), "pci_op write")
            result = os.pread(fd, 4096, 0).decode()
        finally:
            os.close(fd)
        expected = "err 0 value 0x%08x\n" % int.from_bytes(self.ids, "little")
        self.expect(result == expected, "pci_op %r, expected %r" % (result, expected))

    def choices(self):
        common = [(self.op_config_read, 4), (self.op_config_write, 4), (self.op_config_odd, 1), (self.op_attributes, 2),
                  (self.op_shared_lists, 2), (self.op_bad_write, 2)]
        by_state = {
            "host": [(self.op_unbind_host, 2)],
            "unbound": [(self.op_bind_pciback, 3), (self.op_bind_host, 1)],
            "pciback": [(self.op_attach, 2), (self.op_unbind_pciback, 1), (self.op_flags, 3), (self.op_quirk, 1)],
            "attached": [(self.op_detach, 2), (self.op_flags, 3), (self.op_guest_read, 4), (self.op_guest_write, 4),
                         (self.op_pci_op, 2)],
        }
        return common + by_state[self.state]


def run_worker(index, root, seed, stop, inflight, counts, names, results):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    outcome = {"index": index, "ok": True, "error": None, "ops": 0, "slowest": (0.0, "-")}
    try:
        worker = Worker(index, root, seed)
        worker.write(worker.pciback + "/new_slot", worker.bdf)
        outcome["bdf"] = worker.bdf
        while not stop.value:
            table = worker.choices()
            operation = worker.rng.choices([entry[0] for entry in table], [entry[1] for entry in table])[0]
            names[index].value = operation.__name__[3:].encode()[:31]
            began = time.monotonic()
            inflight[index] = began
            operation()
            inflight[index] = 0.0
            took = time.monotonic() - began
            if took > outcome["slowest"][0]:
                outcome["slowest"] = (took, operation.__name__[3:])
            counts[index] += 1
            worker.counts[operation.__name__] = worker.counts.get(operation.__name__, 0) + 1
        names[index].value = b"final check"
        inflight[index] = time.monotonic()
        worker.verify("final state")
        inflight[index] = 0.0
        outcome["final_state"] = worker.state
        outcome["by_op"] = worker.counts
    except (ModelError, UnexpectedErrno, OSError) as error:
        inflight[index] = 0.0
        outcome["ok"] = False
        outcome["error"] = "%s: %s" % (type(error).__name__, error)
    outcome["ops"] = counts[index]
    results.put(outcome)


def daemon_rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def daemon_fds(pid):
    directory = "/proc/%d/fd" % pid
    targets = []
    for name in os.listdir(directory):
        try:
            targets.append(os.readlink(directory + "/" + name))
        except OSError:
            pass
    return targets


def daemon_threads(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mount", required=True)
    parser.add_argument("--daemon-pid", type=int, required=True)
    parser.add_argument("--secs", type=float, default=60)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--op-timeout", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    arguments = parser.parse_args()
    if not 1 <= arguments.workers <= 8:
        parser.error("--workers must be 1...8 (the load machine has eight endpoints)")

    pid = arguments.daemon_pid
    fds_before = daemon_fds(pid)
    threads_before = daemon_threads(pid)
    rss_start = daemon_rss_kib(pid)
    context = mp.get_context("fork")
    stop = context.Value("b", 0)
    inflight = context.Array("d", arguments.workers)
    counts = context.Array("q", arguments.workers)
    per_worker_names = [context.Array("c", 32) for _ in range(arguments.workers)]
    results = context.Queue()
    processes = []
    for index in range(arguments.workers):
        process = context.Process(target=run_worker, args=(index, arguments.mount, arguments.seed * 100 + index, stop, inflight,
                                                           counts, per_worker_names, results))
        process.start()
        processes.append(process)

    started = time.monotonic()
    deadline = started + arguments.secs
    rss_warm = None
    fds_warm = []
    hung = None
    outcomes = {}
    while True:
        now = time.monotonic()
        if rss_warm is None and now - started >= min(arguments.warmup, arguments.secs / 2):
            rss_warm = daemon_rss_kib(pid)
            fds_warm = daemon_fds(pid)
        if now >= deadline:
            stop.value = 1
        for index in range(arguments.workers):
            began = inflight[index]
            if began and now - began > arguments.op_timeout:
                hung = (index, per_worker_names[index].value.decode(), now - began)
        while not results.empty():
            outcome = results.get()
            outcomes[outcome["index"]] = outcome
        if hung or len(outcomes) == arguments.workers:
            break
        if now > deadline + arguments.op_timeout * 3:
            hung = (-1, "workers did not finish after the stop", now - deadline)
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    if hung:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)  # a fatal signal ends a FUSE wait
    for process in processes:
        process.join(5)
    while not results.empty():
        outcome = results.get()
        outcomes[outcome["index"]] = outcome

    time.sleep(1.0)  # let the daemon release the workers' last handles
    alive = os.path.exists("/proc/%d" % pid)
    rss_end = daemon_rss_kib(pid) if alive else 0
    fds_after = daemon_fds(pid) if alive else []
    threads_after = daemon_threads(pid) if alive else 0
    total_ops = sum(counts[index] for index in range(arguments.workers))

    checks = []
    checks.append(("no deadlock: every op completed within %.0f s" % arguments.op_timeout, hung is None,
                   "" if hung is None else "worker %d stuck in %s for %.1f s" % hung))
    errors = [outcome for outcome in outcomes.values() if not outcome["ok"]]
    missing = [index for index in range(arguments.workers) if index not in outcomes]
    checks.append(("no error outside the expected errnos, every final state as predicted", not errors and not missing,
                   "; ".join("worker %d: %s" % (outcome["index"], outcome["error"]) for outcome in errors)
                   + ("; no result from workers %s" % missing if missing else "")))
    checks.append(("daemon alive", alive, ""))
    growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm else 0.0
    checks.append(("RSS after warm-up vs end within 10 %%: %d KiB -> %d KiB (%+.1f %%)" % (rss_warm or 0, rss_end, growth),
                   alive and rss_warm and abs(growth) <= 10, ""))
    # libfuse's clone_fd gives every worker thread its own /dev/fuse descriptor, and idle worker
    # threads stay (up to --max-threads): those descriptors come with the threads the load
    # started, not with requests. So: the count after warm-up comes back at the end, every other
    # descriptor is exactly the one open before the run, and every added /dev/fuse descriptor
    # belongs to an added worker thread.
    other_before = sorted(target for target in fds_before if target != "/dev/fuse")
    other_after = sorted(target for target in fds_after if target != "/dev/fuse")
    fuse_before = len(fds_before) - len(other_before)
    fuse_after = len(fds_after) - len(other_after)
    added_threads = threads_after - threads_before
    fds_ok = (alive and other_before == other_after and fuse_after - fuse_before == added_threads
              and (len(fds_after) == len(fds_warm) or len(fds_after) == len(fds_before)))
    detail = []
    if other_before != other_after:
        detail.append("non-FUSE descriptors differ: %s -> %s" % (other_before, other_after))
    if fuse_after - fuse_before != added_threads:
        detail.append("%d more /dev/fuse descriptors but %d more threads" % (fuse_after - fuse_before, added_threads))
    checks.append(("open fds back to the start count: before %d, after warm-up %d, end %d (/dev/fuse %d -> %d, "
                   "threads %d -> %d)" % (len(fds_before), len(fds_warm), len(fds_after), fuse_before, fuse_after,
                                          threads_before, threads_after), fds_ok, "; ".join(detail)))

    print("pcibackfs load test: %d workers, %.1f s, seed %d" % (arguments.workers, elapsed, arguments.seed))
    print("  operations: %d (%.0f ops/s)" % (total_ops, total_ops / elapsed if elapsed else 0))
    for index in sorted(outcomes):
        outcome = outcomes[index]
        detail = outcome.get("final_state", "-")
        print("  worker %d %s: %d ops, final state %s%s" % (index, outcome.get("bdf", "?"), outcome["ops"], detail,
                                                             "" if outcome["ok"] else " FAILED"))
    by_op = {}
    for outcome in outcomes.values():
        for name, count in outcome.get("by_op", {}).items():
            by_op[name[3:]] = by_op.get(name[3:], 0) + count
    print("  by operation: " + ", ".join("%s %d" % item for item in sorted(by_op.items())))
    slowest = max((outcome["slowest"] for outcome in outcomes.values()), default=(0.0, "-"))
    print("  slowest operation: %.1f ms (%s)" % (slowest[0] * 1000, slowest[1]))
    print("  daemon RSS: start %d KiB, after warm-up %d KiB, end %d KiB" % (rss_start, rss_warm or 0, rss_end))
    failed = 0
    for title, passed, detail in checks:
        print("  [%s] %s%s" % ("PASS" if passed else "FAIL", title, (": " + detail) if detail else ""))
        failed += 0 if passed else 1
    print("%d passed, %d failed" % (len(checks) - failed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
