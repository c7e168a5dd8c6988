"""A small table of the processes ``kstructs watch`` has seen, fed by the
events themselves and seeded from ``/proc``, so that each event is named at
the moment it arrives and never with a name that belongs to another process.

- fork: the child starts with the name of the thread that forked (the
  kernel copies ``comm``), the parent's uid, command line and cgroup, and its
  start time is the event's timestamp. A new thread (``child_pid !=
  child_tgid``) belongs to ``child_tgid``: events of threads are named by
  their own process. Children of ``kthreadd`` are kernel threads.
- exec: the new image's comm, command line, executable and uid are read from
  ``/proc`` right away; when the process is already gone they are unknown
  (``None``), never the old program's.
- comm: the event carries the new name (a thread's rename names only that
  thread).
- exit: the task leaves the table; ``apply`` hands it out a last time.

A process the table has not seen is read from ``/proc`` only when the
process found there is old enough to be the one the event is about: its
start time (``/proc/PID/stat``, boot-time clock ticks) is not after the
event's timestamp (``CLOCK_MONOTONIC``). After a ``Loss`` an entry may be
stale (a missed exit and a missed fork that reused the pid): it is checked
against ``/proc`` the same way before it names anything.

Times are ``CLOCK_MONOTONIC`` nanoseconds, the clock of the events'
``timestamp_ns``. Text is ``str`` decoded with ``surrogateescape``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Final

from kstructs.events import CommEvent, ExecEvent, ExitEvent, ForkEvent, ProcessEvent, UidEvent

#: The pid of kthreadd, the parent of every kernel thread.
KTHREADD_PID: Final = 2
#: ``PF_KTHREAD`` in ``/proc/PID/stat``'s flags (include/linux/sched.h).
PF_KTHREAD: Final = 0x00200000
#: Bytes of ``/proc/PID/cmdline`` read at most.
CMDLINE_MAX: Final = 16384
#: Tasks remembered at most; past it, the oldest entry goes.
MAX_TASKS: Final = 1 << 17

_TICK_NS: Final = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
_O_READ: Final = os.O_RDONLY | os.O_CLOEXEC
# Bytes of /proc/PID/cgroup read at most.
_CGROUP_MAX: Final = 65536


@dataclass(slots=True)
class Task:
    """A process (``pid == tgid``) or a thread the table knows."""

    pid: int
    tgid: int
    ppid: int  # the parent's tgid, as far as the table knows; 0: unknown
    comm: str | None  # None: unknown
    start_ns: int | None = None
    uid: int | None = None  # the effective uid
    kthread: bool = False
    cmdline: bytes | None = None  # /proc/PID/cmdline: arguments, NUL-separated
    exe: str | None = None
    cgroup: str | None = None  # the cgroup v2 path
    epoch: int = 0  # the table's loss count when this entry was last confirmed
    # A kernel thread still named after kthreadd (comm None meanwhile): it
    # renames itself just after the fork, without an event, so /proc is asked again.
    provisional: bool = False


class ProcTable:
    """See the module docstring. ``cmdline``, ``exe``, ``cgroup``: what to read
    from ``/proc`` besides comm and uid."""

    def __init__(
        self,
        proc: str = "/proc",
        *,
        cmdline: bool = False,
        exe: bool = False,
        cgroup: bool = False,
        max_tasks: int = MAX_TASKS,
        boot_offset_ns: int | None = None,
    ) -> None:
        self.proc = proc
        self.want_cmdline = cmdline
        self.want_exe = exe
        self.want_cgroup = cgroup
        # A fork is taken inline when the child needs nothing from /proc.
        self._fast_forks = not cgroup
        self.want_uid = True
        self.max_tasks = max_tasks
        self.tasks: dict[int, Task] = {}
        # /proc's files are read into this, then copied out at their length.
        self._buffer = memoryview(bytearray(max(CMDLINE_MAX, _CGROUP_MAX, 4096)))
        self.losses = 0
        # CLOCK_BOOTTIME - CLOCK_MONOTONIC: /proc's start times to the events' clock.
        if boot_offset_ns is None:
            boot_offset_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()
        self.boot_offset_ns = boot_offset_ns

    # --- Feeding -------------------------------------------------------

    def seed(self, *, cmdline: bool | None = None, uid: bool = True) -> None:
        """Every process in ``/proc`` now. ``cmdline`` (default: as the table
        reads them) and ``uid``: whether to read those too, one more read per
        process; unread, they are unknown until the process's next exec."""
        want = self.want_cmdline, self.want_uid
        self.want_cmdline = self.want_cmdline if cmdline is None else cmdline
        self.want_uid = uid
        try:
            self._seed()
        finally:
            self.want_cmdline, self.want_uid = want

    def _seed(self) -> None:
        try:
            names = os.listdir(self.proc)
        except OSError:
            return
        now = time.monotonic_ns()
        for name in names:
            if name.isdigit():
                task = self._read(int(name), now)
                if task is not None:
                    self._put(task)

    def apply(self, ev: ProcessEvent, superseded: bool = False) -> Task | None:
        """Take ``ev`` into the table, as it arrives: the task of the process
        it is about (for an exit, the entry that just left). ``superseded``:
        an exec followed by another exec of the same process that has
        arrived too; /proc shows the later program, so this one's is unknown."""
        kind = type(ev)
        if kind is ForkEvent:
            # The common case first, inline: a process forked by a main
            # thread the table knows, confirmed since the last loss.
            _, _, at, parent_pid, parent_tgid, pid, tgid = ev  # type: ignore[misc]  # type() is ForkEvent
            tasks = self.tasks
            parent = tasks.get(parent_tgid)
            if (
                parent is not None
                and pid == tgid  # a process, not a thread
                and parent_pid == parent_tgid == parent.tgid  # its main thread forked
                and parent.epoch == self.losses
                and self._fast_forks
                and parent_tgid != KTHREADD_PID  # not a kernel thread
                and (len(tasks) < self.max_tasks or pid in tasks)
                and (parent.start_ns is None or parent.start_ns <= at + _TICK_NS)
            ):
                child = tasks[pid] = Task(
                    pid, pid, parent_tgid, parent.comm, at, parent.uid, False, parent.cmdline, parent.exe,
                    parent.cgroup, parent.epoch,
                )  # fmt: skip
                return child
        elif kind is ExitEvent:
            pid = ev[3]  # process_pid
            task = self.tasks.pop(pid, None)
            if task is not None:
                if pid == ev[4] == task.tgid and task.epoch == self.losses and not task.provisional:  # process_tgid
                    start = task.start_ns
                    return task if start is None or start <= ev[2] + _TICK_NS else None  # timestamp_ns
                self.tasks[pid] = task  # not the common case: back in its place
        return self.apply_general(ev, superseded)

    def apply_general(self, ev: ProcessEvent, superseded: bool = False) -> Task | None:
        """``apply`` without its inline paths for forks and exits: the same
        result, the same table after it (tests hold the two together)."""
        if superseded and isinstance(ev, ExecEvent):
            task = self._exec(ev)
            if task is not None:
                task.comm = task.cmdline = task.exe = None
            return task
        task = self._apply(ev)
        if task is not None and task.provisional:
            fresh = self._read_comm(task.pid)
            if fresh is not None and fresh != "kthreadd":
                task.comm, task.provisional = fresh, False
        return task

    def _apply(self, ev: ProcessEvent) -> Task | None:
        if isinstance(ev, ForkEvent):
            return self._fork(ev)
        if isinstance(ev, ExitEvent):
            return self._exit(ev)
        if isinstance(ev, ExecEvent):
            return self._exec(ev)
        pid, tgid, at = ev.process_pid, ev.process_tgid, ev.timestamp_ns
        if isinstance(ev, CommEvent):
            task = self._task(pid, tgid, at)
            if task is not None:
                task.comm = ev.comm
                task.provisional = False
            return task if pid == tgid else self.process(tgid, at)
        task = self.process(tgid, at)
        if isinstance(ev, UidEvent) and task is not None:
            task.uid = ev.euid
        return task

    def lost(self) -> None:
        """Events were lost: every entry must be confirmed before it names anything."""
        self.losses += 1

    # --- Lookups -------------------------------------------------------

    def process(self, tgid: int, at_ns: int) -> Task | None:
        """The process ``tgid`` at ``at_ns``, or None when unknown."""
        return self._task(tgid, tgid, at_ns)

    # --- Events --------------------------------------------------------

    def _fork(self, ev: ForkEvent) -> Task | None:
        at = ev.timestamp_ns
        parent = self.process(ev.parent_tgid, at)
        pid, tgid = ev.child_pid, ev.child_tgid
        if pid != tgid:
            # A new thread: the thread's own process names it.
            process = self.process(tgid, at)
            self._put(Task(pid, tgid, process.ppid if process else 0, None, at, epoch=self.losses))
            return process
        child = Task(pid, tgid, ev.parent_tgid, None, at, epoch=self.losses)
        if ev.parent_tgid == KTHREADD_PID:
            # A kernel thread: kthreadd's name until it renames itself, without an event.
            child.kthread = True
            comm = self._read_comm(pid)
            child.provisional = comm is None or comm == "kthreadd"
            child.comm = None if child.provisional else comm
        else:
            if parent is not None:
                child.uid, child.cmdline = parent.uid, parent.cmdline
                child.exe, child.cgroup = parent.exe, parent.cgroup
            # The child's comm is the forking thread's: the process's when the
            # process's main thread forked, else that thread's own rename, else /proc's.
            if ev.parent_pid == ev.parent_tgid:
                child.comm = parent.comm if parent is not None else None
            else:
                forker = self.tasks.get(ev.parent_pid)
                if forker is not None and forker.tgid == ev.parent_tgid and forker.comm is not None:
                    child.comm = forker.comm
                else:
                    stat = self._read_stat(pid)
                    if stat is not None and stat[2] <= at + _TICK_NS:
                        child.comm = stat[0]
        if self.want_cgroup:
            child.cgroup = self._read_cgroup(pid) or child.cgroup
        self._put(child)
        return child

    def _exec(self, ev: ExecEvent) -> Task | None:
        pid, tgid, at = ev.process_pid, ev.process_tgid, ev.timestamp_ns
        task = self._task(pid, tgid, at)
        if task is None:
            task = self._read(pid, at)
            if task is None:  # gone already: a new image whose name nobody can tell
                task = Task(pid, tgid, 0, None, epoch=self.losses)
            self._put(task)
            return task
        task.kthread = task.provisional = False
        task.comm = self._read_comm(pid)
        task.cmdline = self._read_cmdline(pid) if self.want_cmdline else None
        task.exe = self._read_exe(pid) if self.want_exe else None
        uid = self._read_uid(pid)
        if uid is not None:  # gone: the uid it had (only a setuid image would change it)
            task.uid = uid
        if self.want_cgroup:
            task.cgroup = self._read_cgroup(pid) or task.cgroup
        return task

    def _exit(self, ev: ExitEvent) -> Task | None:
        pid, tgid, at = ev.process_pid, ev.process_tgid, ev.timestamp_ns
        task = self._task(pid, tgid, at)
        self.tasks.pop(pid, None)
        if pid == tgid:
            return task
        # A thread: its own start time, its process's name.
        process = self.process(tgid, at)
        if process is None:
            return None
        return Task(
            pid,
            tgid,
            process.ppid,
            process.comm,
            task.start_ns if task else None,
            process.uid,
            process.kthread,
            process.cmdline,
            process.exe,
            process.cgroup,
        )

    # --- The table -----------------------------------------------------

    def _task(self, pid: int, tgid: int, at_ns: int) -> Task | None:
        task = self.tasks.get(pid)
        # The pid is someone else's now, or may be since a loss.
        if task is not None and (task.tgid != tgid or (task.epoch != self.losses and not self._confirm(task))):
            del self.tasks[pid]
            task = None
        if task is None and pid == tgid:
            task = self._read(pid, at_ns)
            if task is not None:
                self._put(task)
        if task is not None and task.start_ns is not None and task.start_ns > at_ns + _TICK_NS:
            return None  # started after the event: not the process it is about
        return task

    def _confirm(self, task: Task) -> bool:
        """After a loss: is the process in /proc still this entry's?"""
        stat = self._read_stat(task.pid)
        if stat is None or task.start_ns is None:
            return False
        if abs(stat[2] - task.start_ns) > 2 * _TICK_NS:
            return False
        task.epoch = self.losses
        return True

    def _put(self, task: Task) -> None:
        tasks = self.tasks
        if len(tasks) >= self.max_tasks and task.pid not in tasks:
            del tasks[next(iter(tasks))]
        tasks[task.pid] = task

    # --- /proc ---------------------------------------------------------

    def _read(self, pid: int, at_ns: int) -> Task | None:
        """The process ``pid`` from /proc, if it started no later than ``at_ns``."""
        stat = self._read_stat(pid)
        if stat is None:
            return None
        comm, ppid, start_ns, flags = stat
        if start_ns > at_ns + _TICK_NS:  # a newer process with a reused pid
            return None
        kthread = bool(flags & PF_KTHREAD)
        uid = self._read_uid(pid) if self.want_uid else None
        task = Task(pid, pid, ppid, comm, start_ns, uid, kthread, epoch=self.losses)
        if not kthread:
            if self.want_cmdline:
                task.cmdline = self._read_cmdline(pid)
            if self.want_exe:
                task.exe = self._read_exe(pid)
        if self.want_cgroup:
            task.cgroup = self._read_cgroup(pid)
        return task

    def _read_file(self, pid: int, name: str, limit: int) -> bytes | None:
        """Up to ``limit`` bytes of ``/proc/PID/NAME``, or None. One read
        into one reused buffer: these files give all they hold, up to the
        size asked, to a single read (seq_file, and get_mm_cmdline's loop)."""
        try:
            fd = os.open(f"{self.proc}/{pid}/{name}", _O_READ)
        except OSError:
            return None
        try:
            n = os.readv(fd, [self._buffer[:limit]])
        except OSError:
            return None
        finally:
            os.close(fd)
        return self._buffer[:n].tobytes()

    def _read_stat(self, pid: int) -> tuple[str, int, int, int] | None:
        """(comm, ppid, start time in ns of CLOCK_MONOTONIC, flags)."""
        data = self._read_file(pid, "stat", 4096)
        if data is None:
            return None
        try:
            # comm is in parentheses and may hold any byte: it ends at the last ')'.
            close = data.rindex(b")")
            comm = data[data.index(b"(") + 1 : close].decode("utf-8", "surrogateescape")
            fields = data[close + 2 :].split()
            ppid, flags, ticks = int(fields[1]), int(fields[6]), int(fields[19])
        except (ValueError, IndexError):
            return None
        return comm, ppid, ticks * _TICK_NS - self.boot_offset_ns, flags

    def _read_comm(self, pid: int) -> str | None:
        data = self._read_file(pid, "comm", 64)
        return None if data is None else data.rstrip(b"\n").decode("utf-8", "surrogateescape")

    def _read_cmdline(self, pid: int) -> bytes | None:
        data = self._read_file(pid, "cmdline", CMDLINE_MAX)
        return (data or b"").rstrip(b"\0") or None  # empty: a zombie or a kernel thread

    def _read_exe(self, pid: int) -> str | None:
        try:
            return os.readlink(f"{self.proc}/{pid}/exe")
        except OSError:
            return None

    def _read_uid(self, pid: int) -> int | None:
        try:
            return os.stat(f"{self.proc}/{pid}").st_uid
        except OSError:
            return None

    def _read_cgroup(self, pid: int) -> str | None:
        for line in (self._read_file(pid, "cgroup", _CGROUP_MAX) or b"").split(b"\n"):
            if line.startswith(b"0::"):
                return line[3:].decode("utf-8", "surrogateescape")
        return None


__all__ = ["CMDLINE_MAX", "KTHREADD_PID", "MAX_TASKS", "PF_KTHREAD", "ProcTable", "Task"]
