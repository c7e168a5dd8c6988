"""kstructs._proctable: names from the events and /proc, as each event arrives.

Literal events against a fake /proc (the files as the kernel writes them),
then real processes (exec twice, threads, kernel threads) through the
listener."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kstructs._proctable import PF_KTHREAD, ProcTable, Task
from kstructs.events import CommEvent, ExecEvent, ExitEvent, ForkEvent, UidEvent
from kstructs.listener import Listener

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
S = 1_000_000_000  # a second in ns


@dataclass
class FakeProc:
    comm: bytes
    ppid: int = 1
    start_ticks: int = 0  # /proc/PID/stat starttime
    flags: int = 0x400000
    cmdline: bytes | None = None


def fake_proc(root: Path, procs: dict[int, FakeProc]) -> None:
    """``/proc/PID/{stat,comm,cmdline}`` in the kernel's formats."""
    for pid, p in procs.items():
        d = root / str(pid)
        d.mkdir(exist_ok=True)
        # pid (comm) state ppid pgrp session tty_nr tpgid flags ... starttime (field 22)
        rest = [b"S", str(p.ppid).encode(), b"0", b"0", b"0", b"-1", str(p.flags).encode(), *[b"0"] * 12]
        rest.append(str(p.start_ticks).encode())
        (d / "stat").write_bytes(str(pid).encode() + b" (" + p.comm + b") " + b" ".join(rest) + b" 0 0\n")
        (d / "comm").write_bytes(p.comm + b"\n")
        (d / "cmdline").write_bytes(p.cmdline if p.cmdline is not None else p.comm + b"\0")


def table(root: Path, **kw: bool) -> ProcTable:
    return ProcTable(str(root), boot_offset_ns=0, **kw)


def fork(pid: int, parent: int, at: int = S, tgid: int | None = None, parent_pid: int | None = None) -> ForkEvent:
    return ForkEvent(0, 0, at, parent if parent_pid is None else parent_pid, parent, pid, pid if tgid is None else tgid)


def exit_(pid: int, at: int = 2 * S, tgid: int | None = None, parent: int = 1) -> ExitEvent:
    return ExitEvent(0, 0, at, pid, pid if tgid is None else tgid, 0, 17, parent, parent)


# --- Literal events -----------------------------------------------------------


def test_seed_reads_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path, {1: FakeProc(b"init", ppid=0), 2: FakeProc(b"kthreadd", 0, flags=PF_KTHREAD)})
    t = table(tmp_path)
    t.seed()
    assert t.tasks[1].comm == "init" and not t.tasks[1].kthread
    assert t.tasks[2].comm == "kthreadd" and t.tasks[2].kthread
    assert t.tasks[1].start_ns == 0


def test_a_pid_that_execs_twice_is_named_by_each_program_in_turn(tmp_path: Path) -> None:
    fake_proc(tmp_path, {100: FakeProc(b"bash")})
    t = table(tmp_path, cmdline=True)
    child = t.apply(fork(101, 100))
    assert child is not None and child.comm == "bash"  # the fork copies the name
    fake_proc(tmp_path, {101: FakeProc(b"sh", ppid=100, start_ticks=1, cmdline=b"sh\0-c\0x\0")})
    first = t.apply(ExecEvent(0, 0, S + 1, 101, 101))
    assert first is not None and (first.comm, first.cmdline) == ("sh", b"sh\0-c\0x")
    names = [first.comm]
    fake_proc(tmp_path, {101: FakeProc(b"sleep", ppid=100, start_ticks=1, cmdline=b"sleep\x001\0")})
    second = t.apply(ExecEvent(0, 0, S + 2, 101, 101))
    assert second is not None
    names.append(second.comm)
    assert names == ["sh", "sleep"]


def test_exec_of_a_process_already_gone_has_no_name(tmp_path: Path) -> None:
    fake_proc(tmp_path, {100: FakeProc(b"bash")})
    t = table(tmp_path)
    t.apply(fork(101, 100))
    task = t.apply(ExecEvent(0, 0, S, 101, 101))  # /proc/101 is gone: not "bash", not anything
    assert task is not None and task.comm is None
    assert t.apply(exit_(101)) is task


def test_an_unknown_pid_reused_by_a_newer_process_is_not_named(tmp_path: Path) -> None:
    # /proc/300 started 5 s after the event: another process took the pid.
    fake_proc(tmp_path, {300: FakeProc(b"newer", start_ticks=5 * S // TICK_NS + 3)})
    assert table(tmp_path).apply(exit_(300, at=S)) is None
    fake_proc(tmp_path, {300: FakeProc(b"older", start_ticks=0)})
    task = table(tmp_path).apply(exit_(300, at=S))
    assert task is not None and task.comm == "older"


def test_after_a_loss_an_entry_is_checked_against_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path, {100: FakeProc(b"bash")})
    t = table(tmp_path)
    t.apply(fork(101, 100, at=S))
    t.lost()  # its exit, and the fork of a new process 101, may be among the lost
    fake_proc(tmp_path, {101: FakeProc(b"other", start_ticks=4 * S // TICK_NS)})
    task = t.apply(UidEvent(0, 0, 5 * S, 101, 101, 0, 0))  # /proc's process started before it: its event
    assert task is not None and task.comm == "other"
    fake_proc(tmp_path, {101: FakeProc(b"other", start_ticks=4 * S // TICK_NS)})
    t.tasks[101].comm = "stale"
    t.lost()
    assert t.apply(UidEvent(0, 0, 3 * S, 101, 101, 0, 0)) is None  # /proc's is newer than the event
    t.apply(fork(102, 100, at=S))
    t.lost()
    fake_proc(tmp_path, {102: FakeProc(b"bash", start_ticks=S // TICK_NS)})  # the same process
    task = t.apply(UidEvent(0, 0, 5 * S, 102, 102, 0, 0))
    assert task is not None and task.comm == "bash"


def test_threads_are_named_by_their_own_process(tmp_path: Path) -> None:
    # A thread fork names the group's real parent (here 1, init) as its parent.
    fake_proc(tmp_path, {1: FakeProc(b"init", ppid=0), 10: FakeProc(b"java")})
    t = table(tmp_path)
    t.seed()
    task = t.apply(fork(12, 1, tgid=10))
    assert task is not None and task.comm == "java"
    # The thread renames itself: the thread, not its process.
    renamed = t.apply(CommEvent(0, 0, S, 12, 10, "GC worker"))
    assert renamed is not None and renamed.comm == "java"
    assert t.tasks[10].comm == "java" and t.tasks[12].comm == "GC worker"
    # A process forked by that thread starts with the thread's name.
    child = t.apply(fork(20, 10, parent_pid=12))
    assert child is not None and child.comm == "GC worker"
    gone = t.apply(exit_(12, at=3 * S, tgid=10))
    assert gone is not None and gone.comm == "java" and gone.start_ns == S


def test_a_process_renamed_by_a_comm_event(tmp_path: Path) -> None:
    fake_proc(tmp_path, {100: FakeProc(b"bash")})
    t = table(tmp_path)
    t.apply(fork(101, 100))
    t.apply(CommEvent(0, 0, S, 101, 101, "renamed"))
    task = t.apply(exit_(101))
    assert task is not None and task.comm == "renamed"
    assert 101 not in t.tasks


def test_kernel_threads(tmp_path: Path) -> None:
    fake_proc(tmp_path, {2: FakeProc(b"kthreadd", 0, flags=PF_KTHREAD)})
    t = table(tmp_path)
    t.seed()
    # Not renamed yet when the fork arrives: not "kthreadd", unknown.
    fake_proc(tmp_path, {50: FakeProc(b"kthreadd", 2, flags=PF_KTHREAD)})
    task = t.apply(fork(50, 2))
    assert task is not None and task.kthread and task.comm is None
    fake_proc(tmp_path, {50: FakeProc(b"kworker/u8:2", 2, flags=PF_KTHREAD)})
    task = t.apply(exit_(50))
    assert task is not None and task.kthread and task.comm == "kworker/u8:2"
    fake_proc(tmp_path, {51: FakeProc(b"kworker/0:1", 2, flags=PF_KTHREAD)})
    task = t.apply(fork(51, 2))
    assert task is not None and task.comm == "kworker/0:1"


def test_lifetime_from_the_fork_or_from_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path, {100: FakeProc(b"bash", start_ticks=S // TICK_NS)})
    t = table(tmp_path)
    t.apply(fork(101, 100, at=S))
    task = t.apply(exit_(101, at=3 * S + 500_000_000))
    assert task is not None and task.start_ns == S
    task = t.apply(exit_(100, at=4 * S))
    assert task is not None and task.start_ns == S  # /proc's start time


def test_uid_follows_fork_and_uid_events(tmp_path: Path) -> None:
    fake_proc(tmp_path, {100: FakeProc(b"bash")})
    t = table(tmp_path)
    parent = t.process(100, S)
    assert parent is not None and parent.uid == os.stat(tmp_path / "100").st_uid
    parent.uid = 1000
    child = t.apply(fork(101, 100))
    assert child is not None and child.uid == 1000
    t.apply(UidEvent(0, 0, S, 101, 101, 1000, 0))
    assert t.tasks[101].uid == 0


def test_the_table_is_bounded(tmp_path: Path) -> None:
    fake_proc(tmp_path, {100: FakeProc(b"bash")})
    t = ProcTable(str(tmp_path), boot_offset_ns=0, max_tasks=4)
    for pid in range(200, 220):
        t.apply(fork(pid, 100))
    assert len(t.tasks) == 4 and 219 in t.tasks


# --- Real processes -----------------------------------------------------------

root = pytest.mark.root


def follow(listener: Listener, t: ProcTable, until: int, timeout: float = 10.0) -> list[tuple[object, Task | None]]:
    """Apply events as they arrive, until the exit of ``until``."""
    seen: list[tuple[object, Task | None]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in listener.read():
            if isinstance(ev, (ForkEvent, ExecEvent, ExitEvent, CommEvent, UidEvent)):
                task = t.apply(ev)  # a copy: the entry changes with later events
                seen.append((ev, None if task is None else dataclasses.replace(task)))
                if isinstance(ev, ExitEvent) and ev.process_pid == until:
                    return seen
        time.sleep(0.005)
    raise AssertionError(f"no exit of {until}")


@root
def test_real_exec_twice() -> None:
    with Listener() as listener:
        t = ProcTable(cmdline=True)
        t.seed()
        child = subprocess.Popen(["sh", "-c", "sleep 0.3; exec sleep 0.3"])
        seen = follow(listener, t, child.pid)
        child.wait()
    execs = [
        (task.comm, task.cmdline) if task else None
        for ev, task in seen
        if isinstance(ev, ExecEvent) and ev.process_pid == child.pid
    ]
    assert execs == [("sh", b"sh\0-c\0sleep 0.3; exec sleep 0.3"), ("sleep", b"sleep\x000.3")]
    (exit_task,) = [task for ev, task in seen if isinstance(ev, ExitEvent) and ev.process_pid == child.pid]
    assert exit_task is not None and exit_task.comm == "sleep" and exit_task.start_ns is not None


_THREADS = """
import ctypes, threading, time
libc = ctypes.CDLL(None)
libc.prctl(15, b"kst-threads", 0, 0, 0)
time.sleep(0.2)
def work():
    libc.prctl(15, b"kst-worker", 0, 0, 0)
    time.sleep(0.1)
t = threading.Thread(target=work, name="kst-pyname")
t.start()
t.join()
time.sleep(0.1)
"""


@root
def test_real_threads_are_named_by_their_process() -> None:
    with Listener() as listener:
        t = ProcTable()
        t.seed()
        child = subprocess.Popen([sys.executable, "-c", _THREADS])
        seen = follow(listener, t, child.pid)
        child.wait()
    clones = [task for ev, task in seen if isinstance(ev, ForkEvent) and ev.child_tgid == child.pid != ev.child_pid]
    assert [task.comm if task else None for task in clones] == ["kst-threads"]
    thread_exits = [
        task for ev, task in seen if isinstance(ev, ExitEvent) and ev.process_tgid == child.pid != ev.process_pid
    ]
    assert [task.comm if task else None for task in thread_exits] == ["kst-threads"]
    renames = [ev.comm for ev, _ in seen if isinstance(ev, CommEvent) and ev.process_tgid == child.pid]
    # CPython 3.14 names its OS threads after the Thread: the kernel reports that comm change too.
    named = ["kst-pyname"] if sys.version_info >= (3, 14) else []
    assert renames == ["kst-threads", *named, "kst-worker"]


def test_real_kernel_threads_from_proc() -> None:
    t = ProcTable()
    t.seed()
    kthreads = [task for task in t.tasks.values() if task.kthread]
    if not kthreads:
        pytest.skip("no kernel thread is visible in /proc (a pid namespace)")
    assert all(task.comm for task in kthreads)
    kthreadd = t.tasks.get(2)
    assert kthreadd is not None and kthreadd.comm == "kthreadd" and kthreadd.kthread
    assert not t.tasks[os.getpid()].kthread


# --- The inline paths of apply against apply_general --------------------------

_PIDS = st.sampled_from([2, 100, 101, 102, 103])
_AT = st.integers(0, 4).map(lambda s: s * S)


def _fork_of(pid: int, parent: int, at: int, thread: bool, by_thread: bool) -> ForkEvent:
    return fork(pid, parent, at, tgid=parent if thread else None, parent_pid=pid + 10 if by_thread else None)


_EVENTS = st.one_of(
    st.builds(_fork_of, _PIDS, st.sampled_from([2, 100, 100, 101, 103]), _AT, st.booleans(), st.booleans()),
    st.builds(lambda pid, at, thread: exit_(pid, at, tgid=100 if thread else None), _PIDS, _AT, st.booleans()),
    st.builds(lambda pid, at: ExecEvent(0, 0, at, pid, pid), _PIDS, _AT),
    st.builds(lambda pid, at: CommEvent(0, 0, at, pid, pid, "renamed"), _PIDS, _AT),
    st.just("lost"),
    st.just("rename"),  # /proc/103/comm changes: a kernel thread renames itself without an event
)


@given(st.lists(_EVENTS, max_size=40), st.booleans(), st.booleans(), st.integers(3, 8))
# Each condition of the inline paths, literally: a loss, a child's own cgroup,
# a parent younger than the event, kthreadd without its flag, a kernel thread
# that renamed itself after its fork.
@example(["lost", fork(101, 100, S)], True, False, 8)
@example([fork(103, 100, S)], True, True, 8)
@example([fork(101, 100, 0)], True, False, 8)
@example([fork(104, 2, S)], False, False, 8)
@example([fork(103, 2, 3 * S), "rename", exit_(103, 4 * S)], True, False, 8)
@example([exit_(100, 0)], True, False, 8)
@example(["lost", exit_(100, S)], True, False, 8)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_apply_does_what_apply_general_does(
    tmp_path_factory: pytest.TempPathFactory,
    events: list[ForkEvent | ExitEvent | ExecEvent | CommEvent | str],
    flagged: bool,
    cgroup: bool,
    max_tasks: int,
) -> None:
    proc = tmp_path_factory.mktemp("proc")
    fake_proc(
        proc,
        {
            # kthreadd, with or without its PF_KTHREAD flag: either way its children are kernel threads.
            2: FakeProc(b"kthreadd", ppid=0, flags=PF_KTHREAD if flagged else 0),
            100: FakeProc(b"bash", start_ticks=S // TICK_NS),
            101: FakeProc(b"make", ppid=100, start_ticks=2 * S // TICK_NS, cmdline=b"make\0-j2\0"),
            103: FakeProc(b"kthreadd", ppid=2, start_ticks=3 * S // TICK_NS, flags=PF_KTHREAD),
        },
    )
    (proc / "103" / "cgroup").write_bytes(b"0::/system.slice/x.service\n")
    inline, general = (
        ProcTable(str(proc), cmdline=True, cgroup=cgroup, boot_offset_ns=0, max_tasks=max_tasks) for _ in "ab"
    )
    inline.seed()
    general.seed()
    for ev in events:
        if ev == "lost":
            inline.lost()
            general.lost()
        elif ev == "rename":
            (proc / "103" / "comm").write_bytes(b"kworker/0:1\n")
        else:
            assert not isinstance(ev, str)
            assert inline.apply(ev) == general.apply_general(ev), ev
            assert list(inline.tasks.items()) == list(general.tasks.items()), ev
