"""kstructs.cli (the formats) and ``kstructs watch`` (the command) as users
and scripts see it: stdout, stderr, exit status, signals, pipes."""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import json
import os
import queue
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyte
import pytest
from conftest import hang_guard
from hypothesis import given, settings
from hypothesis import strategies as st
from test_proctable import FakeProc, fake_proc

from kstructs._escape import ENCODE_ERRORS, terminal
from kstructs._proctable import ProcTable, Task
from kstructs._watch import KINDS, Options, _kinds
from kstructs._watchfilter import cgroup2_mounts
from kstructs.cli import PRINTED, JsonFormat, TextFormat
from kstructs.cn_proc import EventKind
from kstructs.events import (
    PROCESS_EVENTS,
    AckEvent,
    CommEvent,
    CoredumpEvent,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    GidEvent,
    ProcessEvent,
    PtraceEvent,
    SidEvent,
    UidEvent,
    UnknownEvent,
    parse_request,
)
from kstructs.listener import Listener, Loss

root = pytest.mark.root
# The command runs in a subprocess of this interpreter.
spawns = pytest.mark.skipif(not os.access(sys.executable, os.X_OK), reason=f"cannot execute {sys.executable}")
CLONE_NEWNET = 0x40000000

# One of each kind, as the formats get them.
SAMPLES: list[ProcessEvent | Loss] = [
    ForkEvent(5, 0, 10**12, 100, 100, 101, 101),
    ExecEvent(6, 1, 10**12, 101, 101),
    UidEvent(7, 0, 10**12, 101, 101, 0, 1000),
    GidEvent(8, 0, 10**12, 101, 101, 0, 1000),
    SidEvent(9, 0, 10**12, 101, 101),
    PtraceEvent(10, 0, 10**12, 101, 101, 100, 100),
    CommEvent(11, 0, 10**12, 101, 101, 'we"ird\\\udcff'),
    CoredumpEvent(12, 0, 10**12, 101, 101, 100, 100),
    ExitEvent(13, 0, 10**12, 101, 101, 3 << 8, 17, 100, 100),
    Loss(12, "enobufs"),
    Loss(3, "seq-gap", 1),
]


#: The keys watch adds after the kernel's, each absent when unknown.
OPTIONAL_KEYS = {
    "comm",
    "comm_hex",
    "cmdline",
    "cmdline_hex",
    "exe",
    "exe_hex",
    "duration_ns",
    "uid",
    "user",
    "user_hex",
}


def keys(event: str) -> list[str]:
    if event == "lost":
        return ["event", "count", "reason", "cpu"]
    return ["event", *PROCESS_EVENTS[event]._fields]


# (comm bytes, as the kernel holds them; the text a terminal must show)
HOSTILE: list[tuple[bytes, str]] = [
    (b"\x1b[3A\x1b[J", r"\x1b[3A\x1b[J"),  # cursor up 3, erase below
    (b"a\nforged line", r"a\nforged line"),
    (b"x\rover", r"x\rover"),
    (b"\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),  # OSC: set the window title
    (b"\xc2\x9b2J", r"\u009b2J"),  # U+009B, the one-character CSI, in UTF-8
    (b"\x9b2J", r"\x9b2J"),  # the byte 0x9b alone: not UTF-8
    (b"\xff\xfename", r"\xff\xfename"),
    (b"\xe2\x80\xaegnp.exe", r"\u202egnp.exe"),  # RIGHT-TO-LEFT OVERRIDE
    (b"\xe2\x81\xa6iso\xe2\x81\xa9", r"\u2066iso\u2069"),  # LEFT-TO-RIGHT ISOLATE .. POP
    (b"back\\x1b", r"back\\x1b"),  # a backslash is escaped too: never mistaken for an escape
    (b"del\x7f\x08\t", r"del\x7f\x08\t"),
    (b"caf\xc3\xa9", "café"),  # printable UTF-8 stays as it is
]


def comm_event(raw: bytes, pid: int = 4242) -> CommEvent:
    return CommEvent(1, 0, 10**12, pid, pid, raw.decode("utf-8", "surrogateescape"))


# --- Formats ----------------------------------------------------------------


def strict_json(line: str) -> dict[str, Any]:
    """``json.loads`` as a strict parser reads it: UTF-8 bytes, no duplicate
    key, no lone surrogate in any string (jq and Node would replace it, Perl's
    JSON::PP refuses the line)."""
    data = line.encode("utf-8")  # a lone surrogate cannot even be encoded

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [k for k, _ in items]
        assert len(set(names)) == len(names), f"duplicate key: {line}"
        for value in (*names, *(v for _, v in items)):
            if isinstance(value, str):
                value.encode("utf-8")
        return dict(items)

    obj: dict[str, Any] = json.loads(data.decode("utf-8", "strict"), object_pairs_hook=pairs)
    return obj


@pytest.mark.parametrize("item", [s for s in SAMPLES if not isinstance(s, CommEvent)], ids=lambda i: type(i).__name__)
def test_json_is_json_dumps_of_to_dict(item: ProcessEvent | Loss) -> None:
    line = JsonFormat()(item)
    assert line == json.dumps(item.to_dict())
    obj = strict_json(line)
    assert list(obj) == keys(obj["event"])


def test_json_comm_that_is_utf8() -> None:
    line = JsonFormat()(CommEvent(11, 0, 10**12, 101, 101, 'we"ird\\ café'))
    assert line == json.dumps(CommEvent(11, 0, 10**12, 101, 101, 'we"ird\\ café').to_dict())
    assert strict_json(line)["comm"] == 'we"ird\\ café'


def test_json_comm_that_is_not_utf8_keeps_its_bytes_in_hex() -> None:
    line = JsonFormat()(comm_event(b"\xff\xfename"))
    assert line.isascii()
    obj = strict_json(line)
    assert list(obj) == [*keys("comm"), "comm_hex"]
    assert obj["comm"] == "\ufffd\ufffdname"
    assert obj["comm_hex"] == "fffe6e616d65"


@pytest.mark.parametrize(("raw", "shown"), HOSTILE, ids=[repr(r) for r, _ in HOSTILE])
def test_json_hostile_names(raw: bytes, shown: str) -> None:
    obj = strict_json(JsonFormat()(comm_event(raw)))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert obj["comm"] == raw.decode("utf-8", "replace")
        assert bytes.fromhex(obj["comm_hex"]) == raw
    else:
        assert obj["comm"] == text
        assert "comm_hex" not in obj


def test_json_keys_are_the_contract() -> None:
    assert keys("fork") == [
        "event",
        "seq",
        "cpu",
        "timestamp_ns",
        "parent_pid",
        "parent_tgid",
        "child_pid",
        "child_tgid",
    ]
    assert keys("exit")[4:] == ["process_pid", "process_tgid", "exit_code", "exit_signal", "parent_pid", "parent_tgid"]
    assert keys("uid")[4:] == ["process_pid", "process_tgid", "ruid", "euid"]
    assert keys("gid")[4:] == ["process_pid", "process_tgid", "rgid", "egid"]
    assert keys("ptrace")[4:] == ["process_pid", "process_tgid", "tracer_pid", "tracer_tgid"]
    assert keys("comm")[4:] == ["process_pid", "process_tgid", "comm"]
    assert keys("coredump")[4:] == ["process_pid", "process_tgid", "parent_pid", "parent_tgid"]
    assert keys("exec")[4:] == keys("sid")[4:] == ["process_pid", "process_tgid"]


def test_text_lines(tmp_path: Path) -> None:
    fake_proc(tmp_path, {100: FakeProc(b"bash", ppid=1), 101: FakeProc(b"make", ppid=100, cmdline=b"make\0-j2\0")})
    table = ProcTable(str(tmp_path), cmdline=True, boot_offset_ns=0)
    fmt = TextFormat()
    lines = [fmt(item, None if isinstance(item, Loss) else table.apply(item)) for item in SAMPLES]
    clock = r"\d\d:\d\d:\d\d"
    expected = [
        rf"{clock} fork         101 parent 100 +bash$",  # a child starts with its parent's name
        rf"{clock} exec         101 make -j2 +make$",  # /proc/101 after the exec: its command line and comm
        rf"{clock} uid          101 ruid 0 euid 1000 +make$",
        rf"{clock} gid          101 rgid 0 egid 1000 +make$",
        rf"{clock} sid          101 new session +make$",
        rf"{clock} ptrace       101 tracer 100 +make$",
        rf"{clock} comm         101 comm +we\"ird\\\\\\xff$",
        rf"{clock} coredump     101 parent 100 +we\"ird\\\\\\xff$",
        rf"{clock} exit         101 status 3 parent 100 after 0.000s +we\"ird\\\\\\xff$",
        rf"{clock} lost           - 12 events \(enobufs\)$",
        rf"{clock} lost           - 3 events \(seq-gap\) on cpu 1$",
    ]
    for line, pattern in zip(lines, expected, strict=True):
        assert re.match(pattern, line), (line, pattern)


def test_text_header_names_the_columns() -> None:
    assert TextFormat().header().split() == ["Time", "Event", "PID", "Info", "Name"]
    assert TextFormat(user=True).header().split() == ["Time", "Event", "PID", "UID", "User", "Info", "Name"]


@pytest.mark.parametrize(
    ("code", "text"),
    [(0, "status 0"), (3 << 8, "status 3"), (9, "SIGKILL"), (6 | 0x80, "SIGABRT core"), (0x7E, "signal 126")],
)
def test_text_exit_status(code: int, text: str) -> None:
    line = TextFormat()(ExitEvent(0, 0, 0, 5, 5, code, 17, 1, 1), None)
    assert line.split(None, 3)[3].split() == [*text.split(), "parent", "1", "?"]


def test_thread_fork_is_a_clone_line() -> None:
    line = TextFormat()(ForkEvent(0, 0, 0, 1, 1, 12, 10), None)
    assert re.search(r" clone +12 thread of 10 +\?$", line), line


def test_only_process_events_and_losses_are_printed() -> None:
    assert all(type(item) in PRINTED for item in SAMPLES)
    assert AckEvent not in PRINTED
    assert UnknownEvent not in PRINTED


def test_events_option() -> None:
    assert list(KINDS) == [
        *["fork", "exec", "uid", "gid", "sid", "ptrace", "comm", "coredump", "exit"],
        *["clone", "nonzero-exit"],
    ]
    assert _kinds("fork, exit") == {"fork", "exit"}
    assert _kinds("core,ptrce") == {"coredump", "ptrace"}
    # The process table sees what it needs, whatever is printed.
    table = EventKind.FORK | EventKind.EXEC | EventKind.COMM | EventKind.EXIT
    assert Options(events=frozenset({"uid"})).kernel_kinds() == EventKind.UID | table
    assert Options(events=frozenset({"nonzero-exit"})).kernel_kinds() == EventKind.NONZERO_EXIT | table
    assert Options().kernel_kinds() is None


# --- The command ----------------------------------------------------------------


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kstructs", *args]


class Watch:
    """``kstructs watch`` in a subprocess, its stdout read line by line."""

    def __init__(self, *args: str, **popen: Any) -> None:
        self.proc = subprocess.Popen(
            command("watch", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._queue.put(line)
        except ValueError:  # the test closed the pipe
            pass
        self._queue.put(None)

    def until(self, done: Callable[[list[str]], bool], timeout: float = hang_guard(15.0)) -> list[str]:
        """Start short-lived children (the kernel needs events to send)
        until ``done(lines)``; their pids are in ``self.children``."""
        self.children: list[int] = []
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"no match in {len(self.lines)} lines: {self.lines[-5:]}")
            child = subprocess.Popen(["sh", "-c", "sleep 0.05; exit 3"])
            self.children.append(child.pid)
            child.wait()
            self._take(0.1)
        return self.lines

    def _take(self, wait: float) -> None:
        end = time.monotonic() + wait
        while (left := end - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return
            if line is None:
                return
            self.lines.append(line.rstrip("\n"))

    def finish(self, timeout: float = hang_guard(15.0)) -> tuple[int, str]:
        """Wait for the exit: (status, stderr)."""
        assert self.proc.stderr is not None
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        self._take(0.01)
        return status, self.proc.stderr.read()


@pytest.fixture
def cleanup() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def one_summary_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    counts = r"\d+ events, \d+ lost \(\d+ ENOBUFS\), \d+ unprinted at exit, \d+ rejected"
    assert re.fullmatch(rf"kstructs: {counts} .*", line), line


def mine(lines: list[str], pids: list[int]) -> list[dict[str, Any]]:
    objs = [json.loads(line) for line in lines]
    return [o for o in objs if o.get("process_pid", o.get("child_pid")) in pids]


@root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_json_until_a_signal(sig: signal.Signals, cleanup: list[Watch], tmp_path: Path) -> None:
    # The command's requests carry a random nonce: a sitecustomize logs what it sends.
    (tmp_path / "sitecustomize.py").write_text(_SEND_LOG)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "KSTRUCTS_SENDLOG": str(tmp_path / "sends")}
    with Listener() as watcher:  # sees the command's LISTEN and IGNORE replies
        w = Watch("--format", "json", env=env)
        cleanup.append(w)
        lines = w.until(lambda lines: any('"event": "exit"' in line and '"exit_code": 768' in line for line in lines))
        nonce = parse_request(bytes.fromhex((tmp_path / "sends").read_text().split()[0])).ack
        w.proc.send_signal(sig)
        status, stderr = w.finish()
        assert status == 0
        one_summary_line(stderr)
        for line in lines:
            obj = strict_json(line)
            kernel = keys(obj["event"])
            assert list(obj)[: len(kernel)] == kernel, line
            assert set(list(obj)[len(kernel) :]) <= OPTIONAL_KEYS, line
        exits = [o for o in mine(lines, w.children) if o["event"] == "exit"]
        assert exits and all(o["exit_code"] == 3 << 8 and o["exit_signal"] == 17 for o in exits)
        replies = [e for e in _drain(watcher) if isinstance(e, AckEvent) and e.ack == nonce + 1]
        assert len(replies) == 2, "LISTEN and exactly one IGNORE"


_SEND_LOG = """
import os, socket
_send = socket.socket.send
def send(self, data, *args):
    with open(os.environ["KSTRUCTS_SENDLOG"], "a") as log:
        log.write(bytes(data).hex() + "\\n")
    return _send(self, data, *args)
socket.socket.send = send
"""


def _port_id(pid: int) -> int:
    """The netlink port id of a process's connector socket."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    with open("/proc/net/netlink") as f:
        header = f.readline().split()
        for line in f:
            cols = line.split()
            if int(cols[header.index("Inode")]) in inodes and cols[header.index("Eth")] == "11":
                return int(cols[header.index("Pid")])
    raise AssertionError("no NETLINK_CONNECTOR socket")


def _drain(listener: Listener) -> list[Any]:
    items: list[Any] = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        items += listener.read()
        time.sleep(0.02)
    return items


@root
def test_text(cleanup: list[Watch]) -> None:
    w = Watch()
    cleanup.append(w)

    def seen(lines: list[str]) -> bool:
        # A child whose exec was read while it ran (on a loaded machine one may
        # be gone by then: its exec line says "?"), and a child's exit.
        return any(
            re.search(rf"exit +{pid} status 3 parent {os.getpid()} after \d+\.\d\d\ds +sh$", line)
            for line in lines
            for pid in w.children
        ) and any(
            re.search(rf"exec +{pid} sh -c sleep 0.05; exit 3 +sh$", line) for line in lines for pid in w.children
        )

    lines = w.until(seen)
    w.proc.send_signal(signal.SIGINT)
    status, stderr = w.finish()
    assert status == 0
    one_summary_line(stderr)
    assert all(re.match(r"\d\d:\d\d:\d\d \w+ +(\d+|-)( |$)", line) for line in lines), lines[:3]


@root
def test_events_option_filters(cleanup: list[Watch]) -> None:
    w = Watch("--format", "json", "--events", "exit")
    cleanup.append(w)
    lines = w.until(lambda lines: bool(mine(lines, w.children)))
    w.proc.send_signal(signal.SIGINT)
    status, stderr = w.finish()
    assert status == 0 and "filtered in" in stderr
    assert {json.loads(line)["event"] for line in lines} <= {"exit", "lost"}


@root
def test_count(cleanup: list[Watch]) -> None:
    w = Watch("--format", "json", "--count", "3")
    cleanup.append(w)
    w.until(lambda lines: len(lines) >= 3)
    status, stderr = w.finish()
    assert status == 0
    assert len([line for line in w.lines if '"lost"' not in line]) == 3
    one_summary_line(stderr)
    assert stderr.startswith("kstructs: 3 events")


@root
def test_duration() -> None:
    start = time.monotonic()
    done = subprocess.run(
        command("watch", "--duration", "0.3"), capture_output=True, text=True, timeout=hang_guard(30), check=False
    )
    assert done.returncode == 0
    assert 0.3 <= time.monotonic() - start < hang_guard(15)
    one_summary_line(done.stderr)


@root
def test_piped_into_head() -> None:
    # `kstructs watch | head -n1`: the reader leaves after one line.
    proc = subprocess.Popen(command("watch", "--format", "json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stop = threading.Event()

    def events() -> None:
        while not stop.is_set():
            subprocess.run(["true"], check=True)
            time.sleep(0.02)

    maker = threading.Thread(target=events)
    maker.start()
    try:
        first = proc.stdout.readline()
        proc.stdout.close()
        status = proc.wait(hang_guard(15))  # the next write meets a closed pipe
    finally:
        stop.set()
        maker.join()
        if proc.poll() is None:
            proc.kill()
    assert json.loads(first)["event"]
    assert status == 0
    one_summary_line(proc.stderr.read().decode())


@root
def test_through_a_shell_pipe() -> None:
    shell = f"set -o pipefail; {' '.join(command('watch', '--format', 'json'))} | head -n1"
    proc = subprocess.Popen(["bash", "-c", shell], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + hang_guard(15)
    while proc.poll() is None and time.monotonic() < deadline:
        subprocess.run(["true"], check=True)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=hang_guard(5))
    assert proc.returncode == 0
    assert len(out.splitlines()) == 1 and json.loads(out)["event"]
    one_summary_line(err)


def _as_nobody() -> None:  # pragma: no cover - runs in the child
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@root
def test_unprivileged_user() -> None:
    # Linux 6.6 lets anyone listen (the connector has NL_CFG_F_NONROOT_RECV
    # and cn_proc dropped its CAP_NET_ADMIN check); before, it takes privilege.
    def as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str]:
        if setpriv := shutil.which("setpriv"):
            argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
            return subprocess.run(argv, capture_output=True, text=True, timeout=hang_guard(30), cwd="/", check=False)
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=hang_guard(30), preexec_fn=_as_nobody, cwd="/", check=False
        )

    # nobody must run this very interpreter and library: one it cannot read, or
    # whose libpython it cannot load and takes from the system instead, proves nothing.
    probe = as_nobody([sys.executable, "-c", "import sys, kstructs; print(sys.version)"])
    if probe.stdout.strip() != sys.version:
        why = (probe.stderr.strip().splitlines() or [f"it ran Python {probe.stdout.strip()}"])[-1]
        pytest.skip(f"nobody cannot run this Python and kstructs ({sys.executable}): {why}")
    done = as_nobody(command("watch", "--duration", "0.3"))
    major, minor = (int(re.match(r"\d+", p).group()) for p in os.uname().release.split(".")[:2])  # type: ignore[union-attr]
    if (major, minor) >= (6, 6):
        assert done.returncode == 0, done.stderr
        one_summary_line(done.stderr)
    else:
        assert done.returncode == 1
        (line,) = done.stderr.splitlines()
        assert "CAP_NET_ADMIN" in line


@root  # a real NETLINK_CONNECTOR socket (qemu-user has none)
@spawns
def test_no_privilege_is_one_line() -> None:
    # Any kernel: the message a refused bind() gives, end to end.
    script = (
        "import errno, socket, sys\n"
        "import kstructs.listener as l\n"
        "class Refusing(socket.socket):\n"
        "    def bind(self, address):\n"
        "        raise PermissionError(errno.EPERM, 'Operation not permitted')\n"
        "l.socket.socket = Refusing\n"
        "from kstructs.__main__ import main\n"
        "sys.exit(main(['watch']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=hang_guard(30), check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("kstructs: ") and "CAP_NET_ADMIN" in line and "Traceback" not in done.stderr


def _new_netns() -> None:  # pragma: no cover - runs in the child
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


@root
def test_foreign_network_namespace() -> None:
    done = subprocess.run(
        command("watch"), capture_output=True, text=True, timeout=hang_guard(30), preexec_fn=_new_netns, check=False
    )
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "initial network namespace" in line and "ECONNREFUSED" in line


@spawns
@pytest.mark.parametrize(
    "args",
    [
        ["--events", "bogus"],
        ["--count", "0"],
        ["--duration", "-1"],
        ["--format", "x"],
        ["--pid", "-5"],
        ["--name", "x"],
    ],
)
def test_bad_arguments(args: list[str]) -> None:
    done = subprocess.run(command("watch", *args), capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    # One line, as every other error: not argparse's usage block.
    assert done.stdout == "" and done.stderr.startswith("kstructs watch: error: ") and done.stderr.count("\n") == 1


@spawns
def test_no_command_prints_help() -> None:
    done = subprocess.run(command(), capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "watch" in done.stderr


@root
def test_console_script() -> None:
    script = shutil.which("kstructs", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the kstructs console script is not installed next to this Python")
    done = subprocess.run(
        [script, "watch", "--duration", "0.2"], capture_output=True, text=True, timeout=hang_guard(30), check=False
    )
    assert done.returncode == 0
    one_summary_line(done.stderr)


# --- Hostile names on a terminal ---------------------------------------------


def through_a_pty(before: bytes, data: bytes, columns: int = 200) -> pyte.Screen:
    """Write ``before`` and ``data`` to a real pty's slave end, read the master
    end as a terminal would, and feed it to a VT100 emulator."""
    master, slave = os.openpty()
    try:
        os.write(slave, before + data)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the slave is closed and everything is read
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    screen = pyte.Screen(columns, 24)
    pyte.ByteStream(screen).feed(out)
    return screen


def test_text_escapes_hostile_names() -> None:
    fmt = TextFormat()
    for raw, shown in HOSTILE:
        line = fmt(comm_event(raw))
        assert line.endswith(f"4242 comm                     {shown}"), (raw, line)
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line), line


@pytest.mark.parametrize(("raw", "shown"), HOSTILE, ids=[repr(r) for r, _ in HOSTILE])
def test_hostile_name_on_a_terminal(raw: bytes, shown: str) -> None:
    fmt = TextFormat()
    before = b"first line\nsecond line\n"
    line = fmt(comm_event(raw))
    screen = through_a_pty(before, (line + "\n").encode("utf-8", ENCODE_ERRORS))
    rows = [row.rstrip() for row in screen.display]
    assert rows[:3] == ["first line", "second line", line]
    assert rows[2].endswith(f"4242 comm                     {shown}")
    assert all(row == "" for row in rows[3:]), rows
    assert (screen.cursor.x, screen.cursor.y) == (0, 3)
    assert screen.title == ""
    assert not screen.mode - pyte.Screen(200, 24).mode  # no mode switched on


def test_non_utf8_name_is_shown_as_bytes_not_surrogates() -> None:
    line = TextFormat()(comm_event(b"\xff"))
    assert line.endswith(r"\xff")
    line.encode("utf-8")  # no lone surrogate left


def test_terminal_escape_reads_back_to_the_bytes() -> None:
    # \xHH is one byte, \uHHHH one character, \\ a backslash: the escaped form is
    # unambiguous. Decoded here by a reader written from the rule, not the code.
    def unescape(text: str) -> bytes:
        out = bytearray()
        i = 0
        named = {"t": b"\t", "n": b"\n", "r": b"\r", "\\": b"\\"}
        while i < len(text):
            if text[i] != "\\":
                out += text[i].encode()
                i += 1
            elif text[i + 1] in named:
                out += named[text[i + 1]]
                i += 2
            elif text[i + 1] == "x":
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
            else:
                assert text[i + 1] == "u"
                out += chr(int(text[i + 2 : i + 6], 16)).encode()
                i += 6
        return bytes(out)

    for raw, shown in HOSTILE:
        assert unescape(shown) == raw
        assert unescape(terminal(raw.decode("utf-8", "surrogateescape"))) == raw


def test_a_terminal_that_cannot_show_a_character_gets_an_escape() -> None:
    assert terminal("café").encode("ascii", ENCODE_ERRORS) == b"caf\\u00e9"


def _pr_set_name_loop(names: list[bytes] | None = None) -> str:
    # A child that renames itself with each hostile name in turn, until stdin closes.
    return (
        "import ctypes, os, select, sys, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"names = {names or [raw for raw, _ in HOSTILE]!r}\n"
        "while not select.select([sys.stdin], [], [], 0)[0]:\n"
        "    for name in names:\n"
        "        if libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:\n"
        "            sys.exit(f'prctl: {ctypes.get_errno()}')\n"
        "    time.sleep(0.1)\n"
    )


@root
def test_watch_on_a_pty_with_a_child_that_renames_itself() -> None:
    # kstructs watch writes to a real terminal while a process gives itself each
    # hostile name with prctl(PR_SET_NAME): the emulated screen holds exactly
    # the lines written, one per event, each name escaped.
    master, slave = os.openpty()
    watch = subprocess.Popen(command("watch", "--events", "comm"), stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    child = subprocess.Popen([sys.executable, "-c", _pr_set_name_loop()], stdin=subprocess.PIPE)
    out = b""
    try:
        expected = {rf" {child.pid} comm +{re.escape(shown)}$" for _, shown in HOSTILE}
        deadline = time.monotonic() + hang_guard(20)
        while True:
            text = out.decode("utf-8", "replace").replace("\r\n", "\n")
            lines = text.split("\n")
            if all(any(re.search(p, line) for line in lines) for p in expected):
                break
            assert time.monotonic() < deadline, f"not all names seen: {lines[-5:]}"
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                out += os.read(master, 65536)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(hang_guard(10))
        watch.send_signal(signal.SIGINT)
        watch.wait(hang_guard(15))
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert watch.returncode == 0 and child.returncode == 0
    lines = out.decode("utf-8").split("\r\n")
    assert lines.pop() == ""
    assert lines[0].split() == ["Time", "Event", "PID", "Info", "Name"]  # on a terminal: a header
    assert all(re.match(r"\d\d:\d\d:\d\d \w+ +(\d+|-)( |$)", line) and line.isprintable() for line in lines[1:])
    screen = pyte.Screen(300, len(lines) + 1)
    pyte.ByteStream(screen).feed(out)
    assert [row.rstrip() for row in screen.display] == [*lines, ""]
    assert screen.title == ""


JQ = shutil.which("jq")


@root
def test_watch_json_of_a_child_with_a_name_that_is_not_utf8(cleanup: list[Watch]) -> None:
    names = [b"\xff\xfe\x1b[J", b"plain"]
    w = Watch("--format", "json", "--events", "comm")
    cleanup.append(w)
    child = subprocess.Popen([sys.executable, "-c", _pr_set_name_loop(names)], stdin=subprocess.PIPE)
    try:
        w.until(lambda lines: {json.loads(line).get("comm") for line in lines} >= {"\ufffd\ufffd\x1b[J", "plain"})
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(hang_guard(10))
    w.proc.send_signal(signal.SIGINT)
    status, _ = w.finish()
    assert status == 0
    objs = [strict_json(line) for line in w.lines]
    from_child = [o for o in objs if o.get("process_pid") == child.pid]
    assert {(o["comm"], o.get("comm_hex")) for o in from_child} == {
        ("\ufffd\ufffd\x1b[J", "fffe1b5b4a"),
        ("plain", None),
    }


@root
@pytest.mark.jq
@pytest.mark.skipif(JQ is None, reason="jq is not installed")
def test_watch_json_read_by_jq(cleanup: list[Watch]) -> None:
    # jq replaces a lone surrogate escape with U+FFFD without a word: it must
    # read every line, and read each comm and comm_hex exactly as Python does.
    w = Watch("--format", "json", "--events", "comm")
    cleanup.append(w)
    child = subprocess.Popen([sys.executable, "-c", _pr_set_name_loop([b"\xff\x9b", b"ok"])], stdin=subprocess.PIPE)
    try:
        w.until(lambda lines: sum(str(child.pid) in line for line in lines) >= 2)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(hang_guard(10))
    w.proc.send_signal(signal.SIGINT)
    w.finish()
    assert JQ is not None
    done = subprocess.run(
        [JQ, "-c", "[.comm, .comm_hex]"],
        input="\n".join(w.lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    read_by_jq = [json.loads(line) for line in done.stdout.splitlines()]
    assert read_by_jq == [[o.get("comm"), o.get("comm_hex")] for o in map(strict_json, w.lines)]
    assert ["\ufffd\ufffd", "ff9b"] in read_by_jq


# --- forkstat's features ------------------------------------------------------


def test_help_lists_every_option() -> None:
    done = subprocess.run(command("watch", "--help"), capture_output=True, text=True, timeout=30, check=True)
    text = " ".join(done.stdout.split())
    for option in ("--format", "--events", "--name {comm,cmdline,exe}", "-x, --user", "--pid PID", "--uid UID"):
        assert option in text, option
    for option in ("--comm GLOB", "--cgroup PATH", "-S, --stats", "-q, --quiet", "--duration", "--count"):
        assert option in text, option
    for kind in ("clone", "nonzero-exit", "core, ptrce and all"):
        assert kind in text, kind


def _task(**kw: Any) -> Task:
    fields: dict[str, Any] = {"pid": 101, "tgid": 101, "ppid": 100, "comm": "sh", "start_ns": 10**9}
    fields.update(kw)
    return Task(**fields)


EXEC = ExecEvent(6, 1, 2 * 10**9, 101, 101)
EXIT = ExitEvent(13, 0, 3 * 10**9 + 5, 101, 101, 0, 17, 0, 0)


def test_json_optional_keys() -> None:
    fmt = JsonFormat()
    obj = strict_json(fmt(EXEC, _task(cmdline=b"sh\0-c\0echo hi")))
    assert list(obj)[len(keys("exec")) :] == ["comm", "cmdline"]
    assert obj["comm"] == "sh" and obj["cmdline"] == ["sh", "-c", "echo hi"]
    # Unknown: absent, not empty.
    obj = strict_json(fmt(EXEC, _task(comm=None, cmdline=None, start_ns=None)))
    assert list(obj) == keys("exec")
    assert list(strict_json(fmt(EXEC, None))) == keys("exec")
    # The lifetime, on exits; the kernel's parent_pid 0 stays.
    obj = strict_json(fmt(EXIT, _task()))
    assert obj["duration_ns"] == 2 * 10**9 + 5 and obj["parent_pid"] == 0
    assert "duration_ns" not in strict_json(fmt(EXIT, _task(start_ns=None)))
    # Bytes that are not UTF-8: U+FFFD in the strings, the exact bytes in hex.
    obj = strict_json(fmt(EXEC, _task(comm="\udcff", cmdline=b"a\xff\0b")))
    assert obj["cmdline"] == ["a\ufffd", "b"] and obj["cmdline_hex"] == "61ff0062"
    assert obj["comm"] == "\ufffd" and obj["comm_hex"] == "ff"


def test_json_name_and_user_options() -> None:
    obj = strict_json(JsonFormat(name="cmdline")(EXIT, _task(cmdline=b"sleep\x001")))
    assert obj["cmdline"] == ["sleep", "1"]  # on every kind with --name cmdline
    assert "cmdline" not in strict_json(JsonFormat()(EXIT, _task(cmdline=b"sleep\x001")))
    obj = strict_json(JsonFormat(name="exe")(EXIT, _task(exe="/usr/bin/sleep")))
    assert obj["exe"] == "/usr/bin/sleep"
    obj = strict_json(JsonFormat(user=True)(EXIT, _task(uid=0)))
    assert (obj["uid"], obj["user"]) == (0, "root")
    assert "uid" not in strict_json(JsonFormat(user=True)(EXIT, _task(uid=None)))


def test_text_options() -> None:
    task = _task(cmdline=b"sleep\x001\0\x1b[J", exe="/usr/bin/sleep", uid=0)
    assert TextFormat()(EXEC, task).endswith(r" exec         101 sleep 1 \x1b[J           sh")
    assert TextFormat(name="cmdline")(EXEC, task).endswith(r" exec         101                          sleep 1 \x1b[J")
    assert TextFormat(name="exe")(EXIT, task).endswith(" parent 100 after 2.000s /usr/bin/sleep")
    assert TextFormat(user=True)(EXIT, task).split()[3:5] == ["0", "root"]
    assert TextFormat(user=True)(EXIT, None).split()[3:5] == ["?", "?"]
    # parent_pid 0 from the kernel: the text shows the parent the table knows.
    assert " status 0 parent 100 after 2.000s sh" in TextFormat()(EXIT, task)
    assert TextFormat()(EXIT, _task(kthread=True, comm="kworker/0:1")).endswith(" [kworker/0:1]")


def _run(*args: str, child: list[str], timeout: float = hang_guard(30), **popen: Any) -> tuple[int, str, str, int]:
    """Run watch, then ``child`` once it has subscribed, stop watch once the
    child's exit is printed (or after its 20 s), return (status, out, err, child pid)."""
    proc = subprocess.Popen(
        command("watch", "--duration", f"{hang_guard(20):g}", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    try:
        _wait_subscribed(proc)
        kid = subprocess.Popen(child)
        kid.wait(timeout)
        _wait_idle(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        _stop(proc)
    return proc.returncode, out, err, kid.pid


def _stop(proc: subprocess.Popen[str] | None) -> None:
    """Kill ``proc`` if it still runs (a wait failed): no watch is left behind."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate()


def _wait_subscribed(proc: subprocess.Popen[str]) -> None:
    """Until watch waits for events: it has its netlink socket and sleeps in
    its loop's poll(). Where /proc/PID/syscall cannot tell (another
    architecture), a moment after the socket for the LISTEN and the seed."""
    deadline = time.monotonic() + hang_guard(10)
    while not _port_or_none(proc.pid):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    _wait_idle(proc, fallback=0.3)


def _wait_idle(proc: subprocess.Popen[str], *, fallback: float = 0.5) -> None:
    """Until watch sleeps in its loop's poll() with nothing queued: it has
    taken and written every event sent before (the kernel wakes it as it
    queues one, so a woken watch reads as running). Where /proc cannot tell,
    ``fallback`` seconds."""
    deadline = time.monotonic() + hang_guard(10)
    while not (idle := _in_loop_poll(proc.pid)):
        if idle is None:
            time.sleep(hang_guard(fallback))
            return
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)


def _in_loop_poll(pid: int) -> bool | None:
    """Whether ``pid`` sleeps in poll() (x86_64's syscall 7) with no timeout or
    one longer than any wait of the subscription (the Listener's default
    ack_timeout), and its connector socket's receive queue is empty (Rmem 0 in
    /proc/net/netlink): watch's loop, not the Listener waiting for the
    kernel's reply. None: /proc cannot tell (another architecture, or a
    /proc/PID/syscall that cannot be read or parsed)."""
    if os.uname().machine != "x86_64" or ctypes.sizeof(ctypes.c_void_p) != 8:  # not x86_64's syscall numbers
        return None
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
        if fields == ["running"]:
            return False
        number = int(fields[0])  # -1: blocked outside a system call
        timeout = int(fields[3], 16) & 0xFFFFFFFF if number == 7 else 0  # a C int
    except (OSError, IndexError, ValueError):
        return None
    ack_ms = inspect.signature(Listener).parameters["ack_timeout"].default * 1000
    if number != 7 or not (timeout >= 0x80000000 or timeout > ack_ms):
        return False
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            sockets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    with open("/proc/net/netlink") as f:
        header = f.readline().split()
        eth, rmem, inode = header.index("Eth"), header.index("Rmem"), header.index("Inode")
        rows = [line.split() for line in f]
    return any(r[eth] == "11" and f"socket:[{r[inode]}]" in sockets and r[rmem] == "0" for r in rows)


def test_in_loop_poll_says_when_proc_cannot_tell() -> None:
    assert _in_loop_poll(1 << 30) is None  # no such process: pid_max is at most 2**22
    if _in_loop_poll(os.getpid()) is not None:  # x86_64
        assert _in_loop_poll(os.getpid()) is False  # reading its own /proc, not in poll()


def _port_or_none(pid: int) -> int | None:
    try:
        return _port_id(pid)
    except (AssertionError, OSError):
        return None


@root
def test_pid_filter_follows_descendants() -> None:
    script = "sh -c 'true; sh -c true'; true"
    parent = subprocess.Popen(["sh", "-c", f"read x; {script}"], stdin=subprocess.PIPE, text=True)
    proc: subprocess.Popen[str] | None = None
    try:
        proc = subprocess.Popen(
            command("watch", "--format", "json", "--pid", str(parent.pid)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_subscribed(proc)
        subprocess.run(["true"], check=True)  # not a descendant
        assert parent.stdin is not None
        parent.stdin.write("go\n")
        parent.stdin.close()
        parent.wait(hang_guard(10))
        _wait_idle(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=hang_guard(30))
    finally:
        _stop(proc)
        if parent.poll() is None:
            parent.kill()
    assert proc.returncode == 0, err
    objs = [strict_json(line) for line in out.splitlines()]
    tree = {parent.pid}
    for o in objs:
        if o["event"] == "fork":
            assert o["parent_tgid"] in tree, o
            tree.add(o["child_tgid"])
        elif o["event"] != "lost":
            assert o["process_tgid"] in tree, o
    forks = [o for o in objs if o["event"] == "fork"]
    assert any(o["parent_tgid"] != parent.pid for o in forks), forks  # a grandchild, followed
    assert any(o["event"] == "exit" and o["process_pid"] == parent.pid for o in objs)


@root
def test_comm_uid_and_nonzero_exit_filters() -> None:
    status, out, err, kid = _run("--format", "json", "--comm", "kst-*", child=_renamed_child("kst-glob", 3))
    assert status == 0, err
    objs = [strict_json(line) for line in out.splitlines()]
    assert objs and all(o.get("comm", "").startswith("kst-") for o in objs if o["event"] != "lost")
    assert any(o["event"] == "exit" and o["process_pid"] == kid for o in objs)
    # A uid no account has, this test's own: other tests (and other suites on the same kernel)
    # run processes as nobody at the same time.
    uid = 0x4B530000 + os.getpid() % 0x10000
    status, out, err, kid = _run("--format", "json", "--uid", str(uid), child=["setpriv", f"--reuid={uid}", "true"])
    assert status == 0, err
    objs = [strict_json(line) for line in out.splitlines() if '"lost"' not in line]
    assert objs and {o["process_pid"] for o in objs if o["event"] == "exit"} == {kid}
    status, out, err, kid = _run(
        "--format", "json", "--events", "nonzero-exit", child=["sh", "-c", "(exit 0); (exit 4); exit 5"]
    )
    assert status == 0, err
    objs = [strict_json(line) for line in out.splitlines() if '"lost"' not in line]
    mine = [o for o in objs if o["process_pid"] == kid or o["parent_pid"] == kid]
    assert sorted(o["exit_code"] >> 8 for o in mine) == [4, 5]
    assert all(o["event"] == "exit" and o["exit_code"] for o in objs)


def _renamed_child(name: str, status: int) -> list[str]:
    code = (
        f"import ctypes, sys, time; ctypes.CDLL(None).prctl(15, {name.encode()!r}, 0, 0, 0); "
        f"time.sleep(0.2); sys.exit({status})"
    )
    return [sys.executable, "-c", code]


@root
def test_cgroup_filter(tmp_path: Path) -> None:
    mounts = cgroup2_mounts()
    if not mounts or not Path(mounts[0], "cgroup.procs").exists():
        pytest.skip("cgroup v2 is not mounted")
    base = Path(mounts[0])
    group = base / f"kstructs-test-{os.getpid()}"
    group.mkdir()
    try:
        inner = group / "inner"
        inner.mkdir()
        script = f"echo $$ > {inner}/cgroup.procs && exec sh -c 'true; sleep 0.3; exit 6'"
        status, out, err, kid = _run("--format", "json", "--cgroup", str(group), child=["sh", "-c", script])
        assert status == 0, err
        objs = [strict_json(line) for line in out.splitlines() if '"lost"' not in line]
        assert objs, err
        assert {o.get("process_tgid", o.get("child_tgid")) for o in objs} <= {kid} | {
            o["child_tgid"] for o in objs if o["event"] == "fork"
        }
        assert any(o["event"] == "exit" and o["process_pid"] == kid and o["exit_code"] == 6 << 8 for o in objs)
    finally:
        for d in (group / "inner", group):
            with contextlib.suppress(OSError):
                d.rmdir()


@root
def test_stats_and_quiet() -> None:
    status, out, err, kid = _run("-S", "--quiet", child=_renamed_child("kst-stats", 0))
    assert status == 0 and out == "", err
    lines = err.splitlines()
    assert lines[0].split()[:3] == ["PID", "fork", "clone"]
    (row,) = [line for line in lines if line.split()[0] == str(kid)]
    assert row.split()[-1] == "kst-stats" and row.split()[4] == "1"  # its exit
    assert lines[-2].split()[0] == "all"
    assert re.match(r"kstructs: \d+ events, ", lines[-1])


class _Queued:
    """A listener stand-in whose queue holds ``items`` once."""

    def __init__(self, items: list[Any]) -> None:
        self.batches = [items]

    def read(self) -> list[Any]:
        return self.batches.pop() if self.batches else []


def test_drain_at_exit_counts_only_what_would_have_been_printed(tmp_path: Path) -> None:
    # watch subscribes to fork, exec, comm and exit for the process table
    # whatever --events says: what is queued at a stop counts as unprinted
    # only if the filter would have let it through.
    from kstructs._watch import Counts, _drain
    from kstructs._watchfilter import EventFilter

    fake_proc(tmp_path, {})
    table = ProcTable(str(tmp_path), cmdline=True, boot_offset_ns=0)
    accept = EventFilter(table, kinds=["coredump"]).accept
    queued = [
        ForkEvent(1, 0, 10, 100, 100, 101, 101),
        ExitEvent(2, 0, 20, 101, 101, 0, 17, 100, 100),
        CoredumpEvent(3, 0, 30, 102, 102, 100, 100),
        Loss(4, "enobufs"),
    ]
    counts = Counts()
    _drain(_Queued(queued), counts, table, accept)  # type: ignore[arg-type]
    assert counts.unprinted == 1
    counts = Counts()
    _drain(_Queued(queued), counts, table, None)  # type: ignore[arg-type]
    assert counts.unprinted == 3


# --- The storm path of each formatter against its general one -------------

_NAMES = st.one_of(
    st.none(),
    st.sampled_from(["", "sh", "sh ", "a\u3000", "\x1b[J", "\udcff", 'we"ird\\', "\u202e", "x\n", "50%d%%s"]),
    st.text(max_size=6),
)
_CMDLINES = st.one_of(
    st.none(),
    st.sampled_from([b"", b"sleep\x001", b"a\xff\0b", b"\x1b[2J", b"x \0", b"%s\0%d%"]),
    st.binary(max_size=8),
)
_TASKS = st.builds(
    Task,
    pid=st.just(101),
    tgid=st.just(101),
    ppid=st.sampled_from([0, 100]),
    comm=_NAMES,
    start_ns=st.one_of(st.none(), st.integers(0, 4 * 10**9)),
    uid=st.one_of(st.none(), st.sampled_from([0, 65534, 4242424])),
    kthread=st.booleans(),
    cmdline=_CMDLINES,
    exe=_NAMES,
)
# Timestamps on both sides of a second, out of order too.
_TIMES = st.integers(0, 3).flatmap(lambda s: st.sampled_from([s * 10**9 - 1, s * 10**9, s * 10**9 + 1, s * 10**9 + 7]))
_STORM_EVENTS = st.one_of(
    st.builds(
        ForkEvent,
        st.integers(0, 2**32 - 1),
        st.integers(0, 3),
        _TIMES,
        st.sampled_from([100, 4242]),
        st.sampled_from([100, 4242]),
        st.sampled_from([101, 102]),
        st.sampled_from([101, 102]),
    ),
    st.builds(
        ExitEvent,
        st.integers(0, 2**32 - 1),
        st.integers(0, 3),
        _TIMES,
        st.sampled_from([101, 102]),
        st.sampled_from([101, 102]),
        st.sampled_from([0, 3 << 8, 9, 6 | 0x80, 0x7E]),
        st.sampled_from([17, 0xFFFFFFFF]),
        st.sampled_from([0, 100]),
        st.sampled_from([0, 100]),
    ),
)


@given(
    st.lists(st.tuples(_STORM_EVENTS, st.one_of(st.none(), _TASKS)), min_size=1, max_size=8),
    st.sampled_from(["comm", "cmdline", "exe"]),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_the_storm_path_writes_what_the_general_formatters_write(
    pairs: list[tuple[ProcessEvent, Task | None]], name: str, user: bool
) -> None:
    text, general_text = TextFormat(name, user), TextFormat(name, user)
    # One wall clock for both, whole seconds from the events' clock: the
    # timestamps fall on the edges of the seconds shown.
    text._epoch_ns = general_text._epoch_ns = 1_700_000_000 * 10**9
    json_format, general_json = JsonFormat(name, user), JsonFormat(name, user)
    for ev, task in pairs:  # in sequence: the storm path keeps the clock of a second between lines
        assert text(ev, task) == general_text.line(ev, task)
        assert json_format(ev, task) == general_json.line(ev, task)


def test_the_storm_path_lines() -> None:
    task = _task(cmdline=b"sleep\x001\0\x1b[J", uid=0)
    fork = ForkEvent(5, 0, 2 * 10**9, 100, 100, 101, 101)
    line = TextFormat(name="cmdline")(fork, task)
    assert line.endswith(" fork         101 parent 100" + " " * 15 + r"sleep 1 \x1b[J")
    assert TextFormat(user=True)(EXIT, task).endswith("     101     0 root     status 0 parent 100 after 2.000s sh")
    # A name with nothing visible: the line ends at the info column, as line() ends it.
    assert TextFormat()(fork, _task(comm=" ")).endswith(" fork         101 parent 100")
    assert strict_json(JsonFormat(name="cmdline")(EXIT, task))["duration_ns"] == 2 * 10**9 + 5


def test_the_storm_path_names_a_process_without_a_command_line_by_its_comm() -> None:
    # --name cmdline: no command line (None) is no key for the name; each comm shows.
    fmt = TextFormat(name="cmdline")
    fork = ForkEvent(5, 0, 2 * 10**9, 100, 100, 101, 101)
    assert fmt(fork, _task(comm="sh")).endswith(" sh")
    assert fmt(fork, _task(comm="make")).endswith(" make")
    assert fmt(EXIT, _task(comm="cc")).endswith(" cc")


def test_the_storm_path_keeps_a_percent_sign_in_a_name() -> None:
    task = _task(comm="50%d", cmdline=b"%s\0%", uid=0)
    fork = ForkEvent(5, 0, 2 * 10**9, 100, 100, 101, 101)
    assert TextFormat(name="cmdline", user=True)(fork, task).endswith(" parent 100" + " " * 15 + "%s %")
    assert TextFormat(user=True)(EXIT, task).endswith(" after 2.000s 50%d")
    line = strict_json(JsonFormat(name="cmdline", user=True)(EXIT, task))
    assert (line["comm"], line["cmdline"], line["duration_ns"]) == ("50%d", ["%s", "%"], 2 * 10**9 + 5)
    assert strict_json(JsonFormat()(fork, task))["comm"] == "50%d"


# --- stdout: whole lines, in pieces a pipe takes at once ---------------------


@pytest.fixture
def stop_handlers() -> Iterator[None]:
    """The stop signals' handlers as they were before a _Stop took them."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def _pipe_output() -> tuple[Any, int, int]:
    from kstructs._watch import _Output, _Stop

    stop = _Stop()
    r, w = os.pipe()
    return _Output(w, "utf-8", stop), r, w


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_batch_reaches_a_pipe_whole(stop_handlers: None) -> None:
    out, r, w = _pipe_output()
    try:
        # Short lines, one longer than a pipe write, "\x1b" kept escaped by the formatter's caller.
        lines = [f"line {i}" for i in range(500)] + ["x" * 5000, "é", "\\x1b[J"]
        reader = threading.Thread(target=lambda: result.append(_read_all(r)))
        result: list[bytes] = []
        reader.start()
        assert out.write(lines) == len(lines)
        os.close(w)
        reader.join(timeout=30)
        assert result == ["\n".join(lines).encode() + b"\n"]
        assert lines[-1] == "\\x1b[J"  # the caller's list as it was
    finally:
        out.stop.close()
        os.close(r)


def test_a_stop_signal_ends_a_write_between_lines(stop_handlers: None) -> None:
    out, r, w = _pipe_output()
    try:
        out.stop.signals.append(signal.SIGTERM)
        assert out.write(["a", "b"]) == 0
        os.close(w)
        assert _read_all(r) == b""
    finally:
        out.stop.close()
        os.close(r)
