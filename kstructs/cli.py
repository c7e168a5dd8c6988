"""How ``kstructs watch`` prints events: one JSON object or one text line each.

Formatting only; reading and signals live in ``kstructs.__main__``.

JSON: the keys of ``to_dict()``, that is ``event``, ``seq``, ``cpu``,
``timestamp_ns`` and the kind's fields under the kernel's names
(``{"event": "lost", "count": N, "reason": ..., "cpu": ...}`` for a loss),
serialized as ``json.dumps`` would, from templates built once per kind.
Every line is pure ASCII: valid UTF-8 for any strict parser. Text from a
process that is not valid UTF-8 (``comm``) is written with U+FFFD in place
of each invalid sequence, and its exact bytes follow in hex under
``comm_hex``; that key is present only when the bytes are not valid UTF-8.

Text: like forkstat, ``time event pid details name``; the name comes from
the events themselves (fork inherits, comm renames) or ``/proc/PID/comm``,
best effort: an exited process may be gone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Final

from kstructs._escape import json_pair, terminal
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
from kstructs.listener import Item, Loss

#: The event names the CLI prints; anything else a listener yields (subscribe
#: replies of other listeners, unknown kinds, netlink control messages) is
#: skipped.
PRINTED: Final[frozenset[type]] = frozenset((*PROCESS_EVENTS.values(), Loss))


# --- JSON ------------------------------------------------------------------


def _json_template(cls: type[ProcessEvent]) -> Callable[[Any], str]:
    """A formatter equal to ``json.dumps(ev.to_dict())`` for a kind whose
    fields are all integers, without building the dict: the event is the
    tuple of its fields, in the template's order."""
    head = json.dumps({"event": cls.event})[:-1]
    template = head + "".join(f", {json.dumps(name)}: %d" for name in cls._fields) + "}"

    def fmt(ev: Any) -> str:
        line: str = template % ev
        return line

    return fmt


def _json_dumps(item: Any) -> str:
    return json.dumps(item.to_dict())


def _json_comm(cls: type[CommEvent]) -> Callable[[Any], str]:
    """The comm kind: its integers, then ``comm`` as ``json_pair`` writes it
    (valid UTF-8, the exact bytes under ``comm_hex`` when they are not)."""
    fields = cls._fields[:-1]
    head = json.dumps({"event": cls.event})[:-1] + "".join(f", {json.dumps(name)}: %d" for name in fields)

    def fmt(ev: Any) -> str:
        return f"{head % ev[:-1]}, {json_pair('comm', ev[-1])}}}"

    return fmt


class JsonFormat:
    """``item -> one line of JSON`` (no newline)."""

    def __init__(self) -> None:
        self._by_type: dict[type, Callable[[Any], str]] = {
            cls: _json_template(cls) for cls in PROCESS_EVENTS.values() if cls is not CommEvent
        }
        self._by_type[CommEvent] = _json_comm(CommEvent)
        self._by_type[Loss] = _json_dumps

    def __call__(self, item: Item) -> str:
        return self._by_type[type(item)](item)


# --- Text ------------------------------------------------------------------


def _wait_status(code: int) -> str:
    """``exit_code`` is a wait(2) status: an exit code, or a signal (+ core)."""
    if os.WIFEXITED(code):
        return f"status {os.WEXITSTATUS(code)}"
    sig = os.WTERMSIG(code)
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return f"{name}{' core' if os.WCOREDUMP(code) else ''}"


class TextFormat:
    """``item -> one forkstat-like line`` (no newline)::

    19:07:12 fork        1234 parent 1200             bash
    """

    #: Names remembered at most; past it the cache starts over.
    MAX_NAMES: Final = 1 << 16

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.names: dict[int, str] = {}
        # ktime_get_ns() is CLOCK_MONOTONIC: its offset to the wall clock.
        self._epoch_ns = time.time_ns() - time.monotonic_ns()
        self._second = -1
        self._clock = ""

    def __call__(self, item: Item) -> str:
        if isinstance(item, Loss):
            where = f" on cpu {item.cpu}" if item.cpu is not None else ""
            return self._line(None, "lost", "-", f"{item.count} events ({item.reason}){where}", "")
        ev: ProcessEvent = item  # type: ignore[assignment]
        name: str | None
        if isinstance(ev, ForkEvent):
            pid = ev.child_pid
            info = f"parent {ev.parent_pid}"
            if ev.child_pid != ev.child_tgid:
                info += f" thread of {ev.child_tgid}"
            # The child starts with its parent's name.
            name = self._name(ev.parent_pid)
            if name is not None:
                self._remember(pid, name)
        elif isinstance(ev, ExitEvent):
            pid = ev.process_pid
            info = _wait_status(ev.exit_code)
            name = self.names.pop(pid, None) or self._read(pid)
        else:
            pid = ev.process_pid
            if isinstance(ev, ExecEvent):
                # The new image's name, if the process is still there to ask;
                # the name from before the exec is stale either way.
                info, name = "", self._read(pid)
                if name is not None:
                    self._remember(pid, name)
                else:
                    self.names.pop(pid, None)
            elif isinstance(ev, CommEvent):
                info, name = "comm", ev.comm
                self._remember(pid, name)
            else:
                info, name = self._details(ev), self._name(pid)
        return self._line(ev.timestamp_ns, ev.event, str(pid), info, name or "")

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

    def _line(self, timestamp_ns: int | None, event: str, pid: str, info: str, name: str) -> str:
        wall_ns = time.time_ns() if timestamp_ns is None else timestamp_ns + self._epoch_ns
        second = wall_ns // 1_000_000_000
        if second != self._second:
            self._second, self._clock = second, time.strftime("%H:%M:%S", time.localtime(second))
        # The name is the process's own text: escaped (kstructs._escape).
        return f"{self._clock} {event:<8} {pid:>7} {info:<24} {terminal(name)}".rstrip()

    def _name(self, pid: int) -> str | None:
        name = self.names.get(pid)
        if name is None:
            name = self._read(pid)
            if name is not None:
                self._remember(pid, name)
        return name

    def _remember(self, pid: int, name: str) -> None:
        if len(self.names) >= self.MAX_NAMES:
            self.names.clear()
        self.names[pid] = name

    def _read(self, pid: int) -> str | None:
        try:
            with open(f"{self.proc}/{pid}/comm", "rb") as f:
                return f.read().rstrip(b"\n").decode("utf-8", "surrogateescape")
        except OSError:
            return None


def formatter(name: str) -> Callable[[Item], str]:
    """The formatter for ``--format``: ``"json"`` or ``"text"``."""
    if name == "json":
        return JsonFormat()
    if name == "text":
        return TextFormat()
    raise ValueError(f"unknown format {name!r}")


__all__ = ["PRINTED", "JsonFormat", "TextFormat", "formatter"]
