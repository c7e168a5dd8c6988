"""How ``kstructs watch`` prints events: one JSON object or one text line each.

Formatting only: each formatter gets the event and the task the process
table (``kstructs._proctable``) gave for it when it arrived; reading,
filters and signals live in ``kstructs._watch``.

JSON: the keys of ``to_dict()`` first, that is ``event``, ``seq``, ``cpu``,
``timestamp_ns`` and the kind's fields under the kernel's names, exactly as
the kernel sent them (``{"event": "lost", "count": N, "reason": ..., "cpu":
...}`` for a loss). Then optional keys, each absent when unknown:

- ``comm``: the process's name (on a comm event, the kernel's field);
- ``cmdline``: the arguments, a list of strings (exec events, and every
  event with ``--name cmdline``);
- ``exe``: the executable's path (with ``--name exe``);
- ``duration_ns``: on exit events, the lifetime (from the fork's
  timestamp, else from /proc's start time);
- ``uid`` and ``user``: the effective uid and its name (with ``--user``).

Every line is pure ASCII: valid UTF-8 for any strict parser. Text from a
process that is not valid UTF-8 is written with U+FFFD in place of each
invalid sequence, and its exact bytes follow in hex under ``<key>_hex``
(``comm_hex``, ``exe_hex``, ``cmdline_hex``: the arguments as
``/proc/PID/cmdline`` holds them, NUL-separated); a ``_hex`` key is present
only when the bytes are not valid UTF-8.

Text: like forkstat, ``time event pid [uid user] details name``. Names are
escaped (``kstructs._escape``); ``?`` is a name the table does not know,
``[name]`` a kernel thread; a new thread is a ``clone`` line.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import time
from typing import Final

from kstructs._escape import json_pair, terminal, terminal_bytes
from kstructs._proctable import Task
from kstructs.events import (
    PROCESS_EVENTS,
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
)
from kstructs.stream import Item, Loss

#: The event names the CLI prints; anything else a listener yields (subscribe
#: replies of other listeners, unknown kinds, netlink control messages) is
#: skipped.
PRINTED: Final[frozenset[type]] = frozenset((*PROCESS_EVENTS.values(), Loss))

#: ``--name``: what names a process.
NAMES: Final = ("comm", "cmdline", "exe")

# Formatted fragments remembered at most, per formatter; past it, start over.
_CACHE_MAX: Final = 4096

_users: dict[int, str | None] = {}


def user_name(uid: int) -> str | None:
    """The user name of ``uid`` (cached), or None."""
    if uid not in _users:
        try:
            _users[uid] = pwd.getpwuid(uid).pw_name
        except (KeyError, OverflowError):
            _users[uid] = None
    return _users[uid]


def arguments(cmdline: bytes) -> list[bytes]:
    return cmdline.split(b"\0")


# --- JSON ------------------------------------------------------------------


def _json_head(cls: type[ProcessEvent]) -> str:
    """``{"event": ..., "seq": %d, ...`` for the kind's integer fields, open."""
    fields = cls._fields[:-1] if cls is CommEvent else cls._fields
    return json.dumps({"event": cls.event})[:-1] + "".join(f", {json.dumps(name)}: %d" for name in fields)


def _json_cmdline(cmdline: bytes) -> str:
    args = arguments(cmdline)
    text = [a.decode("utf-8", "replace") for a in args]
    pair = f'"cmdline": {json.dumps(text)}'
    try:
        cmdline.decode("utf-8")
    except UnicodeDecodeError:
        pair += f', "cmdline_hex": "{cmdline.hex()}"'
    return pair


class JsonFormat:
    """``(item, task) -> one line of JSON`` (no newline)."""

    def __init__(self, name: str = "comm", user: bool = False) -> None:
        self.name = name
        self.user = user
        self._cmdline = name == "cmdline"
        self._exe = name == "exe"
        self._heads: dict[type, str] = {cls: _json_head(cls) for cls in PROCESS_EVENTS.values()}
        # The optional keys by what they depend on: a handful of processes recur.
        self._extras: dict[tuple[object, ...], str] = {}

    def __call__(self, item: Item, task: Task | None = None) -> str:
        kind = type(item)
        if task is not None and (kind is ForkEvent or kind is ExitEvent):
            # The storm path: a fork or an exit of a process the table knows.
            # It writes what line() writes; tests hold the two together.
            key = (
                task.comm,
                task.cmdline if self._cmdline else None,
                task.exe if self._exe else None,
                task.uid if self.user else None,
            )
            extra = self._extras.get(key)
            if extra is None:
                extra = self._remember(key)
            if kind is ExitEvent:
                start = task.start_ns
                if start is not None:
                    at = item[2]  # type: ignore[index,misc]  # timestamp_ns
                    return f'{self._heads[kind] % item}{extra}, "duration_ns": {at - start if at > start else 0}}}'
            return f"{self._heads[kind] % item}{extra}}}"
        return self.line(item, task)

    def line(self, item: Item, task: Task | None = None) -> str:
        """The general formatter, for any item: what ``__call__`` writes."""
        kind = type(item)
        if kind is Loss:
            return json.dumps(item.to_dict())
        head = self._heads[kind]
        if kind is CommEvent:
            comm: CommEvent = item  # type: ignore[assignment]
            line = f"{head % comm[:-1]}, {json_pair('comm', comm.comm)}"
            if task is None:
                return line + "}"
            key: tuple[object, ...] = (None, *self._key(kind, task))
        else:
            line = head % item
            if task is None:
                return line + "}"
            key = (task.comm, *self._key(kind, task))
        extra = self._extras.get(key)
        if extra is None:
            extra = self._remember(key)
        if kind is ExitEvent and task.start_ns is not None:
            extra += f', "duration_ns": {max(item[2] - task.start_ns, 0)}'  # type: ignore[index,misc]  # timestamp_ns
        return line + extra + "}"

    def _remember(self, key: tuple[object, ...]) -> str:
        if len(self._extras) >= _CACHE_MAX:
            self._extras.clear()
        extra = self._extras[key] = self._extra(key)
        return extra

    def _key(self, kind: type, task: Task) -> tuple[object, ...]:
        """What the optional keys other than the lifetime depend on."""
        return (
            task.cmdline if self.name == "cmdline" or kind is ExecEvent else None,
            task.exe if self.name == "exe" else None,
            task.uid if self.user else None,
        )

    @staticmethod
    def _extra(key: tuple[object, ...]) -> str:
        comm, cmdline, exe, uid = key
        extra = ""
        if isinstance(comm, str):
            extra += ", " + json_pair("comm", comm)
        if isinstance(cmdline, bytes):
            extra += ", " + _json_cmdline(cmdline)
        if isinstance(exe, str):
            extra += ", " + json_pair("exe", exe)
        if isinstance(uid, int):
            extra += f', "uid": {uid}'
            name = user_name(uid)
            if name is not None:
                extra += ", " + json_pair("user", name)
        return extra


# --- Text ------------------------------------------------------------------


_statuses: dict[int, str] = {}


def _wait_status(code: int) -> str:
    """``exit_code`` is a wait(2) status: an exit code, or a signal (+ core)."""
    text = _statuses.get(code)
    if text is None:
        if len(_statuses) >= _CACHE_MAX:
            _statuses.clear()
        text = _statuses[code] = _status_text(code)
    return text


def _status_text(code: int) -> str:
    if os.WIFEXITED(code):
        return f"status {os.WEXITSTATUS(code)}"
    sig = os.WTERMSIG(code)
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return f"{name}{' core' if os.WCOREDUMP(code) else ''}"


def _seconds(ns: int) -> str:
    """A lifetime, in seconds to the nearest millisecond: ``1.250s``."""
    return _duration((ns + 500_000) // 1_000_000)


_durations: dict[int, str] = {}


def _duration(ms: int) -> str:
    text = _durations.get(ms)
    if text is None:
        if len(_durations) >= _CACHE_MAX:
            _durations.clear()
        text = _durations[ms] = f"{max(ms, 0) // 1000}.{max(ms, 0) % 1000:03}s"
    return text


def command_line(cmdline: bytes) -> str:
    """The arguments, escaped, separated by spaces."""
    return " ".join(terminal_bytes(arg) for arg in arguments(cmdline))


class TextFormat:
    """``(item, task) -> one forkstat-like line`` (no newline)::

    19:07:12 fork        1234 parent 1200             bash
    """

    def __init__(self, name: str = "comm", user: bool = False) -> None:
        self.name = name
        self.user = user
        # ktime_get_ns() is CLOCK_MONOTONIC: its offset to the wall clock.
        self._epoch_ns = time.time_ns() - time.monotonic_ns()
        self._second = -1
        self._clock = ""
        # The second shown, as a range of event timestamps [_low, _high),
        # and the start of the fork and exit lines in it.
        self._low = self._high = 0
        self._fork_head = self._exit_head = ""
        self._names: dict[tuple[object, ...], str] = {}
        # The storm path's user columns and names by the field that names a
        # process (with --user, and the uid), the user columns by uid, the
        # parent columns by parent.
        self._by = "cmdline" if name == "cmdline" else "exe" if name == "exe" else "comm"
        self._user_columns: dict[int | None, str] = {}
        self._who: dict[object, tuple[str, str]] = {}
        self._parents: dict[int, str] = {}

    def header(self) -> str:
        """The column titles."""
        user = f" {'UID':>5} {'User':<8}" if self.user else ""
        return f"{'Time':<8} {'Event':<8} {'PID':>7}{user} {'Info':<24} Name"

    def __call__(self, item: Item, task: Task | None = None) -> str:
        kind = type(item)
        if task is not None and (kind is ForkEvent or kind is ExitEvent) and not task.kthread:
            # The storm path: a fork or an exit of a process the table knows.
            # It writes what line() writes; tests hold the two together.
            by = self._by
            key: object = task.cmdline if by == "cmdline" else task.comm if by == "comm" else task.exe
            if not key:  # no command line: the comm names it; no name: "?"
                return self.line(item, task)
            if self.user:
                key = (key, task.uid)
            who = self._who.get(key)
            if who is None:
                who = self._remember_who(key, task)
            user, name = who
            if name:
                at = item[2]  # type: ignore[index,misc]  # timestamp_ns
                if not self._low <= at < self._high:
                    self._tick(at + self._epoch_ns)
                # The widths by rjust/ljust: a format spec costs twice as much here.
                if kind is ForkEvent:
                    _, _, _, parent, _, pid, tgid = item  # type: ignore[misc]  # type() is ForkEvent
                    if pid == tgid:  # a process, not a thread
                        column = self._parents.get(parent) or self._parent_column(parent)
                        return f"{self._fork_head}{str(pid).rjust(7)}{user} parent {column} {name}"
                elif task.start_ns is not None:
                    # With "after", the info column is longer than its 24.
                    _, _, _, pid, _, code, _, parent, _ = item  # type: ignore[misc]  # type() is ExitEvent
                    ms = (at - task.start_ns + 500_000) // 1_000_000
                    return (
                        f"{self._exit_head}{str(pid).rjust(7)}{user} {_statuses.get(code) or _wait_status(code)} "
                        f"parent {parent or task.ppid or '?'} after {_durations.get(ms) or _duration(ms)} {name}"
                    )
        return self.line(item, task)

    def _remember_who(self, key: object, task: Task) -> tuple[str, str]:
        """The storm path's user columns and name (rstripped: "" when line()
        must end the line at its info column) for ``key``."""
        user = ""
        if self.user:
            user = self._user_columns.get(task.uid) or self._user_column(task.uid)
        if len(self._who) >= _CACHE_MAX:
            self._who.clear()
        who = self._who[key] = (user, self._name_of(task).rstrip())
        return who

    def _parent_column(self, parent: int) -> str:
        if len(self._parents) >= _CACHE_MAX:
            self._parents.clear()
        column = self._parents[parent] = str(parent).ljust(17)
        return column

    def _user_column(self, uid: int | None) -> str:
        user_text = "" if uid is None else user_name(uid)
        column = f" {'?' if uid is None else uid:>5} {terminal(user_text) if user_text else '?':<8}"
        if len(self._user_columns) >= _CACHE_MAX:
            self._user_columns.clear()
        self._user_columns[uid] = column
        return column

    def _tick(self, wall_ns: int) -> None:
        second = wall_ns // 1_000_000_000
        if second != self._second:
            self._second, self._clock = second, time.strftime("%H:%M:%S", time.localtime(second))
            self._fork_head = f"{self._clock} {'fork':<8} "
            self._exit_head = f"{self._clock} {'exit':<8} "
        self._low = second * 1_000_000_000 - self._epoch_ns
        self._high = self._low + 1_000_000_000

    def line(self, item: Item, task: Task | None = None) -> str:
        """The general formatter, for any item: what ``__call__`` writes."""
        if isinstance(item, Loss):
            where = f" on cpu {item.cpu}" if item.cpu is not None else ""
            return self._line(None, "lost", "-", None, info=f"{item.count} events ({item.reason}){where}", name="")
        ev: ProcessEvent = item  # type: ignore[assignment]
        event = ev.event
        if isinstance(ev, ForkEvent):
            pid = ev.child_pid
            if ev.child_pid != ev.child_tgid:
                event, info = "clone", f"thread of {ev.child_tgid}"
            else:
                info = f"parent {ev.parent_pid}"
        elif isinstance(ev, ExitEvent):
            pid = ev.process_pid
            # parent_pid 0: the kernel had reaped the parent already; the table may know it.
            parent = ev.parent_pid or (task.ppid if task is not None and task.ppid else "?")
            info = f"{_wait_status(ev.exit_code)} parent {parent}"
            if task is not None and task.start_ns is not None:
                info += f" after {_seconds(max(ev.timestamp_ns - task.start_ns, 0))}"
        else:
            pid = ev.process_pid
            if isinstance(ev, ExecEvent):
                info = command_line(task.cmdline) if task and task.cmdline and self.name != "cmdline" else ""
            elif isinstance(ev, CommEvent):
                info = "comm"
            else:
                info = self._details(ev)
        return self._line(ev.timestamp_ns, event, str(pid), task, info=info, name=self._name(ev, task))

    def _name(self, ev: ProcessEvent, task: Task | None) -> str:
        if isinstance(ev, CommEvent):
            return terminal(ev.comm)  # the event's own: for a thread, its new name
        if task is None:
            return "?"
        key = (task.comm, task.kthread, task.cmdline, task.exe)
        name = self._names.get(key)
        if name is None:
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            name = self._names[key] = self._name_of(task)
        return name

    def _name_of(self, task: Task) -> str:
        if task.kthread:
            return f"[{terminal(task.comm) if task.comm is not None else '?'}]"
        if self.name == "cmdline" and task.cmdline:
            return command_line(task.cmdline)
        if self.name == "exe":
            return terminal(task.exe) if task.exe is not None else "?"
        return terminal(task.comm) if task.comm is not None else "?"

    @staticmethod
    def _details(ev: ProcessEvent) -> str:
        if isinstance(ev, UidEvent):
            return f"ruid {ev.ruid} euid {ev.euid}"
        if isinstance(ev, GidEvent):
            return f"rgid {ev.rgid} egid {ev.egid}"
        if isinstance(ev, SidEvent):
            return "new session"
        if isinstance(ev, PtraceEvent):
            return f"tracer {ev.tracer_pid}" if ev.tracer_pid else "detached"
        if isinstance(ev, CoredumpEvent):
            return f"parent {ev.parent_pid}"
        return ""

    def _line(self, timestamp_ns: int | None, event: str, pid: str, task: Task | None, *, info: str, name: str) -> str:
        self._tick(time.time_ns() if timestamp_ns is None else timestamp_ns + self._epoch_ns)
        user = ""
        if self.user:
            uid = task.uid if task is not None else None
            user_text = "" if uid is None else user_name(uid)
            user = f" {'?' if uid is None else uid:>5} {terminal(user_text) if user_text else '?':<8}"
            if timestamp_ns is None:
                user = f" {'-':>5} {'-':<8}"
        return f"{self._clock} {event:<8} {pid:>7}{user} {info:<24} {name}".rstrip()


def formatter(fmt: str, name: str = "comm", user: bool = False) -> JsonFormat | TextFormat:
    """The formatter for ``--format``: ``"json"`` or ``"text"``."""
    if fmt == "json":
        return JsonFormat(name, user)
    if fmt == "text":
        return TextFormat(name, user)
    raise ValueError(f"unknown format {fmt!r}")


__all__ = ["NAMES", "PRINTED", "JsonFormat", "TextFormat", "command_line", "formatter", "user_name"]
