"""Which events ``kstructs watch`` prints: kinds, and the process filters
``--pid`` (with its descendants), ``--uid``, ``--comm`` and ``--cgroup``.

Applied to each event as it arrives, after the process table has taken it
and before anything is formatted. Losses always pass.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Final

from kstructs._proctable import ProcTable, Task
from kstructs.events import PROCESS_EVENTS, ExitEvent, ForkEvent, ProcessEvent

#: --events names: the kernel's kinds, ``clone`` (a new thread; ``fork`` is a
#: new process) and ``nonzero-exit`` (an exit with a non-zero status).
KIND_NAMES: Final = (*PROCESS_EVENTS, "clone", "nonzero-exit")
#: forkstat's names for the same kinds, and ``all``.
ALIASES: Final = {
    "core": ("coredump",),
    "ptrce": ("ptrace",),
    "all": tuple(k for k in KIND_NAMES if k != "nonzero-exit"),
}

#: Where cgroup v2 is mounted when /proc/self/mounts cannot tell.
CGROUP_MOUNT: Final = "/sys/fs/cgroup"


def cgroup2_mounts(mounts: str = "/proc/self/mounts") -> list[str]:
    """The mount points of cgroup v2 (``/sys/fs/cgroup``; ``.../unified`` on hybrid systems)."""
    try:
        with open(mounts, "rb") as f:
            points = [line.split()[1] for line in f.read(1 << 20).splitlines() if line.split()[2:3] == [b"cgroup2"]]
    except (OSError, IndexError):
        return [CGROUP_MOUNT]
    # /proc/mounts escapes a space in a path as \040: a mount point is octal-escaped.
    return [p.decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape") for p in points]


def kind_names(text: str) -> frozenset[str]:
    """``--events``: the canonical names; ValueError names an unknown one."""
    names: set[str] = set()
    for name in filter(None, (part.strip() for part in text.split(","))):
        if name in ALIASES:
            names.update(ALIASES[name])
        elif name in KIND_NAMES:
            names.add(name)
        else:
            raise ValueError(f"unknown event {name!r} (choose from {','.join((*KIND_NAMES, *ALIASES))})")
    if not names:
        raise ValueError("no events given")
    return frozenset(names)


def cgroup_path(text: str, mounts: list[str] | None = None) -> str:
    """A cgroup v2 path, from ``/system.slice/x.service`` or its directory
    where cgroup v2 is mounted (``/sys/fs/cgroup/system.slice/x.service``)."""
    path = "/" + text.strip("/")
    for point in cgroup2_mounts() if mounts is None else mounts:
        mount = "/" + point.strip("/")
        if path == mount or path.startswith(mount + "/"):
            return path[len(mount) :] or "/"
    return path


class EventFilter:
    """``accept(event, task)``: whether watch prints ``event``."""

    def __init__(
        self,
        table: ProcTable,
        *,
        kinds: Iterable[str] | None = None,
        pid: int | None = None,
        uid: int | None = None,
        comm: str | None = None,
        cgroup: str | None = None,
    ) -> None:
        self.table = table
        names = set(KIND_NAMES) - {"nonzero-exit"} if kinds is None else set(kinds)
        self._types = frozenset(cls for name, cls in PROCESS_EVENTS.items() if name in names)
        self._forks = "fork" in names
        self._clones = "clone" in names
        self._exits = "exit" in names
        self._nonzero_exits = "nonzero-exit" in names
        self.pid = pid
        self.uid = uid
        self.comm = comm
        self.cgroup = None if cgroup is None else cgroup_path(cgroup)
        self._processes = any(value is not None for value in (pid, uid, comm, cgroup))
        # --pid: the processes followed, by tgid: the one given and its descendants.
        self.followed: set[int] = set()
        if pid is not None:
            self.followed.add(pid)
            self._add_descendants()
        #: The kinds ``accept`` takes whatever the event (no process filter,
        #: nothing to follow): a caller may skip the call for them.
        self.passes: frozenset[type] = frozenset()
        if not self._processes:
            self.passes = frozenset(
                {cls for cls in self._types if cls not in (ForkEvent, ExitEvent)}
                | ({ForkEvent} if self._forks and self._clones else set())
                | ({ExitEvent} if self._exits else set())
            )
        #: ``accept(event, task)``: whether watch prints ``event``; by kind
        #: alone when no process filter is given.
        self.accept: Callable[[ProcessEvent, Task | None], bool] = (
            self._accept
            if self._processes
            else _by_kind(self._types, self._forks, self._clones, self._exits, self._nonzero_exits)
        )

    def _add_descendants(self) -> None:
        children: dict[int, list[int]] = {}
        for task in self.table.tasks.values():
            if task.pid == task.tgid:
                children.setdefault(task.ppid, []).append(task.pid)
        todo = list(self.followed)
        while todo:  # iterative: the depth of a process tree is not ours to bound
            for child in children.get(todo.pop(), ()):
                if child not in self.followed:
                    self.followed.add(child)
                    todo.append(child)

    def _accept(self, ev: ProcessEvent, task: Task | None) -> bool:
        kind = type(ev)
        if kind is ForkEvent:
            fork: ForkEvent = ev  # type: ignore[assignment]
            thread = fork.child_pid != fork.child_tgid
            if self.pid is not None and not thread and fork.parent_tgid in self.followed:
                self.followed.add(fork.child_tgid)  # followed through forks, shown or not
            shown = self._clones if thread else self._forks
            tgid = fork.child_tgid
        elif kind is ExitEvent:
            exit_: ExitEvent = ev  # type: ignore[assignment]
            shown = self._exits or (self._nonzero_exits and exit_.exit_code != 0)
            tgid = exit_.process_tgid
        else:
            shown = kind in self._types
            tgid = ev[4]  # process_tgid
        if shown and self._processes:
            shown = self._process_matches(tgid, task)
        if self.pid is not None and kind is ExitEvent and tgid == ev[3]:
            self.followed.discard(tgid)  # the process is gone; its pid may come back as another
        return shown

    def _process_matches(self, tgid: int, task: Task | None) -> bool:
        if self.pid is not None and tgid not in self.followed:
            return False
        if self.uid is not None and (task is None or task.uid != self.uid):
            return False
        if self.comm is not None and not _glob(task, self.comm):
            return False
        if self.cgroup is not None:
            if task is None or task.cgroup is None:
                return False
            inside = self.cgroup == "/" or task.cgroup.startswith(self.cgroup + "/")
            if task.cgroup != self.cgroup and not inside:
                return False
        return True


def _by_kind(
    types: frozenset[type], forks: bool, clones: bool, exits: bool, nonzero_exits: bool
) -> Callable[[ProcessEvent, Task | None], bool]:
    """``EventFilter._accept`` without process filters, in one closure: it runs for every event."""

    def accept(ev: ProcessEvent, task: Task | None) -> bool:
        kind = type(ev)
        if kind is ForkEvent:
            return clones if ev[5] != ev[6] else forks  # type: ignore[misc]  # child_pid != child_tgid: a thread
        if kind is ExitEvent:
            return exits or (nonzero_exits and ev[5] != 0)  # type: ignore[misc]  # exit_code
        return kind in types

    return accept


def _glob(task: Task | None, pattern: str) -> bool:
    return task is not None and task.comm is not None and fnmatch.fnmatchcase(task.comm, pattern)


__all__ = ["ALIASES", "CGROUP_MOUNT", "KIND_NAMES", "EventFilter", "cgroup2_mounts", "cgroup_path", "kind_names"]
