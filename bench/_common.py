"""Helpers shared by the bench scripts: machine facts, Markdown tables, the C
fork-storm generator and the watchers it is measured with.

Nothing here is part of kstructs. Each bench script runs as ``python bench/NAME.py``,
so this module is imported as ``_common`` from the script's own directory.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import datetime
import io
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Started in the background by a non-interactive shell (`... &`), a process
# inherits SIGINT ignored, and so would the watchers: Python then installs no
# KeyboardInterrupt handler, and SIGINT could not stop them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ---------------------------------------------------------------- reporting


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> str:
    """One Markdown line that says where and when the numbers were taken."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Machine: {os.cpu_count()} CPUs ({cpu_model()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}; {now}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [
        all(_is_number(r[i]) for r in cells) and any(_is_plain_number(r[i]) for r in cells) for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True)
    )
    return "\n".join([line(headers), rule + "|", *(line(r) for r in cells)])


def _is_plain_number(text: str) -> bool:
    return _is_number(text) and any(c.isdigit() for c in text) and not text.startswith("not ")


def _is_number(text: str) -> bool:
    text = text.replace(",", "").replace("%", "").replace("µs", "").rstrip("x").strip()
    if text in {"", "-", "n/a"} or text.startswith("not "):
        return True  # neutral: does not make a column text
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- datagrams, built from the layouts


def datagram(
    what: int,
    member: str | None = None,
    payload: ctypes.Structure | None = None,
    *,
    cpu: int = 0,
    seq: int = 0,
    ack: int = 0,
    timestamp_ns: int = 0,
    nlmsg_pid: int = 0,
) -> bytes:
    """One datagram as the kernel sends it: nlmsghdr + cn_msg + proc_event, with
    ``payload`` as member ``member`` of ``event_data``."""
    from kstructs.cn_proc import proc_event
    from kstructs.connector import CN_IDX_PROC, CN_VAL_PROC, cb_id, cn_msg
    from kstructs.netlink import NLMSG_DONE, nlmsghdr

    ev = proc_event(what=what, cpu=cpu, timestamp_ns=timestamp_ns)
    if member is not None and payload is not None:
        setattr(ev.event_data, member, payload)
    body = bytes(ev)
    msg = cn_msg(id=cb_id(CN_IDX_PROC, CN_VAL_PROC), seq=seq, ack=ack, len=len(body))
    size = ctypes.sizeof(nlmsghdr) + ctypes.sizeof(cn_msg) + len(body)
    # The kernel copies the connector seq into nlmsg_seq (cn_netlink_send_mult).
    hdr = nlmsghdr(nlmsg_len=size, nlmsg_type=NLMSG_DONE, nlmsg_seq=seq, nlmsg_pid=nlmsg_pid)
    return bytes(hdr) + bytes(msg) + body


def event_mix(count: int, seed: int = 1) -> list[bytes]:
    """``count`` datagrams, a quarter each of fork, exec, comm and exit, in a
    shuffled order, with plausible pids and a rising per-CPU seq."""
    from kstructs import cn_proc

    rng = random.Random(seed)
    seqs = [0] * (os.cpu_count() or 1)
    out: list[bytes] = []
    for i in range(count):
        cpu = rng.randrange(len(seqs))
        seqs[cpu] += 1
        parent, child = rng.randrange(1, 4_194_304), rng.randrange(1, 4_194_304)
        kind = i % 4
        if kind == 0:
            what, member = cn_proc.PROC_EVENT_FORK, "fork"
            payload: ctypes.Structure = cn_proc.fork_proc_event(parent, parent, child, child)
        elif kind == 1:
            what, member = cn_proc.PROC_EVENT_EXEC, "exec"
            payload = cn_proc.exec_proc_event(child, child)
        elif kind == 2:
            what, member = cn_proc.PROC_EVENT_COMM, "comm"
            name = rng.choice([b"bash", b"python3", b"kworker/u4:2", b"systemd-journal", b"sh"])
            payload = cn_proc.comm_proc_event(child, child, name)
        else:
            what, member = cn_proc.PROC_EVENT_EXIT, "exit"
            payload = cn_proc.exit_proc_event(child, child, 0, 17, parent, parent)
        ts = 1_000_000_000 * 3600 + i * 50_000
        out.append(datagram(what, member, payload, cpu=cpu, seq=seqs[cpu], timestamp_ns=ts))
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------- CPU time of another process


def cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of ``pid``, in ns, from ``/proc/PID/task/*/schedstat``.

    This is the quantity ``getrusage`` reports as utime + stime, read at ns
    resolution while the process runs (``/proc/PID/stat`` ticks at 10 ms).
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------- netlink sockets of a process


@dataclass(frozen=True)
class NetlinkSocketInfo:
    portid: int
    groups: int
    rmem: int
    drops: int


def connector_sockets(pid: int) -> list[NetlinkSocketInfo]:
    """The NETLINK_CONNECTOR sockets ``pid`` holds, from ``/proc/net/netlink``.

    ``Drops`` is the kernel's count of datagrams it could not queue to the
    socket (receive buffer full): the ground truth for loss.
    """
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    found: list[NetlinkSocketInfo] = []
    for line in Path("/proc/net/netlink").read_text().splitlines()[1:]:
        cols = line.split()
        if int(cols[1]) == 11 and int(cols[9]) in inodes:  # NETLINK_CONNECTOR
            found.append(NetlinkSocketInfo(int(cols[2]), int(cols[3], 16), int(cols[4]), int(cols[8])))
    return found


# ---------------------------------------------------------------- the C fork-storm generator

STORM_C = textwrap.dedent(
    r"""
    /* storm N START_NS RATE OUT: fork N children that _exit(0) at once.
     * SIGCHLD is ignored, so the kernel reaps them and no wait() slows the
     * loop. Forking starts at CLOCK_MONOTONIC START_NS so that parallel
     * generators start together; RATE > 0 paces the forks (per second).
     * With STORM_EXEC set, each child execs that program instead.
     * OUT receives "t0_ns t1_ns forks" and then one child pid per line. */
    #define _GNU_SOURCE
    #include <errno.h>
    #include <signal.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <time.h>
    #include <unistd.h>

    static long long now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }

    static void sleep_until(long long t) {
        struct timespec ts = { t / 1000000000LL, t % 1000000000LL };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
    }

    int main(int argc, char **argv) {
        if (argc != 5) { fprintf(stderr, "usage: storm N START_NS RATE OUT\n"); return 2; }
        long n = atol(argv[1]);
        long long start = atoll(argv[2]);
        double rate = atof(argv[3]);
        pid_t *pids = malloc((size_t)n * sizeof *pids);
        FILE *out = fopen(argv[4], "w");
        if (!pids || !out) { perror("storm"); return 1; }
        const char *prog = getenv("STORM_EXEC");
        signal(SIGCHLD, SIG_IGN);
        sleep_until(start);
        long long t0 = now();
        long done = 0;
        while (done < n) {
            if (rate > 0) sleep_until(t0 + (long long)(done * 1e9 / rate));
            pid_t p = fork();
            if (p == 0) {
                if (prog) execl(prog, prog, (char *)NULL);
                _exit(0);
            }
            if (p < 0) {
                if (errno == EAGAIN) { usleep(200); continue; }
                perror("fork");
                break;
            }
            pids[done++] = p;
        }
        long long t1 = now();
        fprintf(out, "%lld %lld %ld\n", t0, t1, done);
        for (long i = 0; i < done; i++) fprintf(out, "%d\n", (int)pids[i]);
        return fclose(out) != 0;
    }
    """
)


FLOOR_C = textwrap.dedent(
    r"""
    /* floor OUT: the least a watcher can do. Subscribe to fork and exit
     * events, recv() each datagram, keep (what, pid) -- the parent tgid of a
     * fork, the pid of an exit -- and write them to OUT on SIGINT. */
    #define _GNU_SOURCE
    #include <errno.h>
    #include <linux/cn_proc.h>
    #include <linux/connector.h>
    #include <linux/netlink.h>
    #include <signal.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/socket.h>
    #include <unistd.h>

    static volatile sig_atomic_t stop;
    static void on_int(int sig) { (void)sig; stop = 1; }

    int main(int argc, char **argv) {
        if (argc != 2) return 2;
        struct sigaction sa = { .sa_handler = on_int };
        sigaction(SIGINT, &sa, NULL);  /* no SA_RESTART: recv() returns EINTR */
        int fd = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_CONNECTOR);
        int rcvbuf = 8 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
        struct sockaddr_nl sa_nl = { .nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC };
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa_nl, sizeof sa_nl) < 0) { perror("floor"); return 1; }
        /* struct proc_input (Linux 6.6), spelled out for older headers */
        struct { __u32 mcast_op, event_type; } __attribute__((packed)) in_;
        struct { struct nlmsghdr nl; struct cn_msg cn; __typeof__(in_) in; } __attribute__((packed)) req;
        memset(&req, 0, sizeof req);
        req.nl.nlmsg_len = sizeof req;
        req.nl.nlmsg_type = NLMSG_DONE;
        req.cn.id.idx = CN_IDX_PROC;
        req.cn.id.val = CN_VAL_PROC;
        req.cn.len = sizeof req.in;
        req.in.mcast_op = PROC_CN_MCAST_LISTEN;
        req.in.event_type = PROC_EVENT_FORK | PROC_EVENT_EXIT;
        if (send(fd, &req, sizeof req, 0) < 0) { perror("floor: send"); return 1; }
        size_t cap = 1 << 20, n = 0;
        unsigned *kind = malloc(cap * sizeof *kind);
        int *pid = malloc(cap * sizeof *pid);
        long long enobufs = 0;
        char buf[8192] __attribute__((aligned(8)));
        fprintf(stderr, "ready\n");
        while (!stop) {
            ssize_t len = recv(fd, buf, sizeof buf, 0);
            if (len < 0) { if (errno == ENOBUFS) enobufs++; continue; }
            struct proc_event ev;
            if ((size_t)len < NLMSG_HDRLEN + sizeof(struct cn_msg) + sizeof ev) continue;
            memcpy(&ev, buf + NLMSG_HDRLEN + sizeof(struct cn_msg), sizeof ev);
            if (n == cap) { cap *= 2; kind = realloc(kind, cap * sizeof *kind); pid = realloc(pid, cap * sizeof *pid); }
            if (ev.what == PROC_EVENT_FORK) { kind[n] = 1; pid[n++] = ev.event_data.fork.parent_tgid; }
            else if (ev.what == PROC_EVENT_EXIT) { kind[n] = 2; pid[n++] = ev.event_data.exit.process_pid; }
        }
        req.in.mcast_op = PROC_CN_MCAST_IGNORE;
        send(fd, &req, sizeof req, 0);
        FILE *out = fopen(argv[1], "w");
        fprintf(out, "%lld\n", enobufs);
        for (size_t i = 0; i < n; i++) fprintf(out, "%u %d\n", kind[i], pid[i]);
        return fclose(out) != 0;
    }
    """
)


def c_compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("bench: no C compiler (set CC or install gcc) to build the fork-storm generator")
    return cc


def build_storm(workdir: Path) -> Path:
    src, exe = workdir / "storm.c", workdir / "storm"
    src.write_text(STORM_C)
    subprocess.run([c_compiler(), "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def build_floor(workdir: Path) -> Path:
    src, exe = workdir / "floor.c", workdir / "floor"
    src.write_text(FLOOR_C)
    subprocess.run([c_compiler(), "-O2", "-o", str(exe), str(src)], check=True)
    return exe


@dataclass
class Storm:
    """What the generators did: their pids, their children and the rate."""

    generators: list[int]
    children: collections.Counter[int]  # pid -> how many children had it (pids wrap)
    forks: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.forks / self.seconds if self.seconds > 0 else 0.0

    def matched(self, pids: Iterable[int]) -> int:
        """How many of these exit pids are the storm's children, each pid counted
        at most as often as a child had it."""
        seen = collections.Counter(p for p in pids if p in self.children)
        return sum(min(n, self.children[p]) for p, n in seen.items())

    @property
    def events(self) -> int:
        """Fork events whose parent is a generator + exit events of the children."""
        return 2 * self.forks


def start_storm(
    exe: Path, workdir: Path, children: int, generators: int = 1, *, rate: float = 0.0, exec_path: str | None = None
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """Start ``generators`` parallel generators, each to fork ``children``
    children; ``rate`` (forks/s per generator) paces them, 0 = as fast as
    possible; with ``exec_path`` each child execs it."""
    start = time.monotonic_ns() + 100_000_000
    env = dict(os.environ)
    env.pop("STORM_EXEC", None)
    if exec_path:
        env["STORM_EXEC"] = exec_path
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    for _ in range(generators):
        out = Path(tempfile.mkstemp(prefix="storm-", suffix=".out", dir=workdir)[1])
        cmd = [str(exe), str(children), str(start), str(rate), str(out)]
        procs.append((subprocess.Popen(cmd, env=env), out))
    return procs


def finish_storm(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> Storm:
    """Wait for the generators and read what they did."""
    t0s: list[int] = []
    t1s: list[int] = []
    kids: collections.Counter[int] = collections.Counter()
    forks = 0
    for proc, out in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"storm generator failed with status {proc.returncode}")
        lines = out.read_text().split("\n")
        out.unlink()
        t0, t1, n = (int(x) for x in lines[0].split())
        t0s.append(t0)
        t1s.append(t1)
        forks += n
        kids.update(int(x) for x in lines[1 : n + 1])
    return Storm([p.pid for p, _ in procs], kids, forks, (max(t1s) - min(t0s)) / 1e9)


def run_storm(exe: Path, workdir: Path, children: int, generators: int = 1, *, rate: float = 0.0) -> Storm:
    """A storm, start to end: see ``start_storm``."""
    return finish_storm(start_storm(exe, workdir, children, generators, rate=rate))


# ---------------------------------------------------------------- watchers

# A watcher is a process subscribed to process events. The runner starts it,
# waits until it holds a connector socket bound to the proc group, storms,
# waits until its CPU time stops growing (it has drained its queue), then
# stops it with SIGINT and reads what it received.

_KSTRUCTS_LIB = textwrap.dedent(
    """
    import collections, json, sys
    from kstructs.cn_proc import EventKind
    from kstructs.listener import Listener
    rcvbuf = int(sys.argv[2]) or None
    # The loop only keeps what the iterator yields: its CPU is the library's.
    # Counting happens after SIGINT, once the measurement is over.
    items = []
    keep = items.append
    try:
        with Listener(EventKind.FORK | EventKind.EXIT, rcvbuf=rcvbuf) as listener:
            print("ready", file=sys.stderr, flush=True)
            try:
                for ev in listener:
                    keep(ev)
            except KeyboardInterrupt:
                pass
            s = listener.stats
            stats = {k: getattr(s, k) for k in ("received", "rejected", "lost", "enobufs")}
    except KeyboardInterrupt:
        stats = {}
    forks = collections.Counter(ev.parent_tgid for ev in items if ev.event == "fork")
    exits = [ev.process_pid for ev in items if ev.event == "exit"]
    losses = [ev for ev in items if ev.event == "lost"]
    lost = sum(ev.count for ev in losses)
    losses = [[ev.count, ev.reason, ev.cpu] for ev in losses[:50]]
    with open(sys.argv[1], "w") as f:
        json.dump({"forks": forks, "exits": exits, "lost": lost, "losses": losses, "stats": stats}, f)
    """
)

_PYROUTE2 = textwrap.dedent(
    """
    import collections, errno, json, socket, sys
    from pyroute2 import ProcEventSocket

    def subscribe():
        sock = ProcEventSocket()
        sock.bind()
        sock.control(True)
        return sock, sock.fileno()  # fileno() too raises once the socket has failed

    # Like the kstructs watcher: keep what arrives, count after the run.
    kept = []
    keep = kept.extend
    reopened = 0
    try:
        sock, fd = subscribe()
        print("ready", file=sys.stderr, flush=True)
        while True:
            try:
                msgs = sock.get()
            except OSError as e:
                # pyroute2 0.9.7 keeps the first ENOBUFS and raises it from every
                # later call: the socket is dead. Recover the only way there is.
                if e.errno != errno.ENOBUFS:
                    raise
                try:
                    sock.close()  # raises the same ENOBUFS again
                except OSError:
                    # Leave the fd to its owner but stop its deliveries.
                    dead = socket.socket(fileno=fd)
                    dead.setsockopt(270, 2, 1)  # SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, CN_IDX_PROC
                    dead.detach()
                sock, fd = subscribe()
                reopened += 1
                continue
            keep(msgs)
    except KeyboardInterrupt:
        pass
    forks = collections.Counter(m.get("parent_tgid") for m in kept if m.get("what") == 0x1)
    exits = [m.get("process_pid") for m in kept if m.get("what") == 0x80000000]
    with open(sys.argv[1], "w") as f:
        json.dump({"forks": forks, "exits": exits, "stats": {"reopened": reopened}}, f)
    """
)


@dataclass
class Received:
    """What a watcher delivered of one storm."""

    forks: int
    exits: int
    lost_reported: int | None = None  # kstructs only: sum of Loss.count
    stats: dict[str, int] = field(default_factory=dict)


class Watcher:
    name = "watcher"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.result = workdir / f"{self.slug()}.result"
        self.stderr_path = workdir / f"{self.slug()}.stderr"

    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name)

    @classmethod
    def available(cls) -> bool:
        return True

    def command(self) -> list[str]:
        raise NotImplementedError

    def stdout_path(self) -> Path | None:
        return None

    def start(self) -> None:
        self.result.unlink(missing_ok=True)  # a watcher object runs more than once
        out = self.stdout_path()
        stdout = out.open("wb") if out else subprocess.DEVNULL
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(self.command(), stdout=stdout, stderr=err, cwd=ROOT)
        if out and not isinstance(stdout, int):
            stdout.close()
        self._wait_subscribed()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _wait_subscribed(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early: {self.stderr_path.read_text()[-2000:]}")
            if any(s.groups & 1 for s in connector_sockets(self.pid)):
                # Bound to the proc group; the LISTEN request follows at once.
                time.sleep(0.5)
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not subscribe within {timeout} s")

    def drops(self) -> int:
        return sum(s.drops for s in connector_sockets(self.pid))

    def wait_drained(self, idle: float = 0.4, limit: float = 30.0) -> None:
        """Wait until the watcher's CPU time stops growing: its queue is empty."""
        deadline = time.monotonic() + limit
        last = cpu_ns(self.pid)
        while time.monotonic() < deadline:
            time.sleep(idle)
            now = cpu_ns(self.pid)
            if now - last < 2_000_000:  # < 0.5 % of a CPU over the idle period
                return
            last = now

    def stop(self) -> int:
        """SIGINT, then SIGKILL after 30 s; the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(f"bench: {self.name} ignored SIGINT for 30 s: killed", file=sys.stderr)
            self.proc.kill()
            return self.proc.wait()

    def received(self, storm: Storm) -> Received:
        raise NotImplementedError

    def _from_result(self, storm: Storm) -> Received:
        data = json.loads(self.result.read_text())
        forks = sum(int(n) for pid, n in data["forks"].items() if int(pid) in storm.generators)
        exits = storm.matched(data["exits"])
        return Received(forks, exits, data.get("lost"), data.get("stats", {}))


class KstructsLibrary(Watcher):
    name = "kstructs Listener"

    def __init__(self, workdir: Path, rcvbuf: int = 0) -> None:
        self.rcvbuf = rcvbuf
        super().__init__(workdir)

    def command(self) -> list[str]:
        return [sys.executable, "-c", _KSTRUCTS_LIB, str(self.result), str(self.rcvbuf)]

    def received(self, storm: Storm) -> Received:
        return self._from_result(storm)


class KstructsWatch(Watcher):
    name = "kstructs watch --format json"

    @classmethod
    def available(cls) -> bool:
        cmd = [sys.executable, "-m", "kstructs", "watch", "--help"]
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "kstructs", "watch", "--format", "json", "--events", "fork,exit"]

    def stdout_path(self) -> Path:
        return self.workdir / "watch.jsonl"

    def received(self, storm: Storm) -> Received:
        forks = lost = 0
        exits: list[int] = []
        with self.stdout_path().open() as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                kind = ev.get("event")
                if kind == "fork" and ev.get("parent_tgid") in storm.generators:
                    forks += 1
                elif kind == "exit":
                    exits.append(ev.get("process_pid"))
                elif kind == "lost":
                    lost += int(ev.get("count", 0))
        return Received(forks, storm.matched(exits), lost)


class Forkstat(Watcher):
    name = "forkstat -e fork,exit"

    @classmethod
    def available(cls) -> bool:
        return shutil.which("forkstat") is not None

    def command(self) -> list[str]:
        # Output to a file, block-buffered: forkstat's cheapest way to log.
        return [shutil.which("forkstat") or "forkstat", "-e", "fork,exit"]

    def stdout_path(self) -> Path:
        return self.workdir / "forkstat.out"

    def received(self, storm: Storm) -> Received:
        # "HH:MM:SS fork   PID parent ..." then "HH:MM:SS fork   PID child ..." per
        # fork, and "HH:MM:SS exit   PID STATUS ...". The parent line shows pid 0
        # ("[swapper]") when forkstat has no record of the parent, so a fork is
        # counted by its child line.
        children: list[int] = []
        exits: list[int] = []
        with self.stdout_path().open(errors="replace") as f:
            for line in f:
                cols = line.split()
                if len(cols) < 4 or not cols[2].isdigit():
                    continue
                if cols[1] == "fork" and cols[3] == "child":
                    children.append(int(cols[2]))
                elif cols[1] == "exit":
                    exits.append(int(cols[2]))
        forks = storm.matched(children)
        return Received(forks, storm.matched(exits))


class Floor(Watcher):
    """A C recv loop that only records: what any watcher must pay per event."""

    name = "C recv loop (floor)"

    def command(self) -> list[str]:
        exe = self.workdir / "floor"
        if not exe.exists():
            build_floor(self.workdir)
        return [str(exe), str(self.result)]

    def received(self, storm: Storm) -> Received:
        lines = self.result.read_text().split("\n")
        forks = 0
        exits: list[int] = []
        for line in lines[1:]:
            if line:
                kind, pid = line.split()
                if kind == "1" and int(pid) in storm.generators:
                    forks += 1
                elif kind == "2":
                    exits.append(int(pid))
        return Received(forks, storm.matched(exits), stats={"enobufs": int(lines[0])})


class Pyroute2(Watcher):
    name = "pyroute2 ProcEventSocket"

    @classmethod
    def available(cls) -> bool:
        try:
            import pyroute2  # noqa: F401
        except ImportError:
            return False
        return True

    def command(self) -> list[str]:
        return [sys.executable, "-c", _PYROUTE2, str(self.result)]

    def received(self, storm: Storm) -> Received:
        return self._from_result(storm)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kstructs-bench-") as tmp:
        yield Path(tmp)


def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("bench: needs root (CAP_NET_ADMIN) to listen to process events")


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[Path]:
    """The ``kstructs`` package at git revision ``rev``, extracted with ``git
    archive`` into a temporary directory (removed on exit). Exits with one
    line when git cannot, or when this tree or that one does not import its
    own package."""
    with tempfile.TemporaryDirectory(prefix="kstructs-baseline-") as tmp:
        try:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "kstructs"], capture_output=True, check=True
            ).stdout
        except subprocess.CalledProcessError as e:
            why = e.stderr.decode(errors="replace").strip().splitlines()
            raise SystemExit(f"git archive {rev}: {why[0] if why else e.returncode}") from None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        old = Path(tmp)
        code = "import kstructs, sys; sys.stdout.write(kstructs.__file__)"
        for tree in (ROOT, old):
            env = {**os.environ, "PYTHONPATH": str(tree)}
            found = subprocess.run(
                [sys.executable, "-s", "-c", code], env=env, cwd=tree, capture_output=True, check=True, text=True
            ).stdout
            if not found.startswith(str(tree)):
                raise SystemExit(f"{tree} does not import its own kstructs")
        yield old
