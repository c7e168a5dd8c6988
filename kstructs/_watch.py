"""``kstructs watch``: read, filter, format (``kstructs.cli``), write.

Events go to stdout, one per line, and nothing else; a summary line goes to
stderr at the end. SIGINT, SIGTERM, SIGHUP, ``--duration``, ``--count`` and
a closed pipe all end it the same way: unsubscribe
(``PROC_CN_MCAST_IGNORE``), account for what was not printed, exit 0. The
signal handlers stay installed until the process exits, so a burst of
signals ends it once, with status 0. Expected failures (no privilege, no
process events, a foreign network namespace) print one line to stderr and
exit 1.

Nothing is lost without a word: when watch stops, the events still queued
(behind a slow reader of stdout, or in the socket) are read and counted,
and the kernel's drops are taken from the listener's statistics at close;
both go into the summary and into one last ``lost`` record on stdout
(reason ``"exit"`` for events received or queued but not printed,
``"enobufs"`` for drops not reported yet).
"""

from __future__ import annotations

import argparse
import math
import os
import pwd
import select
import signal
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Final

from kstructs import cli
from kstructs._escape import ENCODE_ERRORS
from kstructs._proctable import ProcTable, Task
from kstructs._watchfilter import KIND_NAMES, EventFilter, kind_names
from kstructs._watchstats import EventStats
from kstructs.cn_proc import EventKind
from kstructs.events import PROCESS_EVENTS, ExecEvent, ExitEvent, ForkEvent, KstructsError, ProcessEvent
from kstructs.listener import Listener
from kstructs.stream import Item, ListenerStats, Loss

#: --events names, each with the kernel's PROC_EVENT_* bit that brings it.
KINDS: Final = {
    **{name: EventKind(cls.what) for name, cls in PROCESS_EVENTS.items()},
    "clone": EventKind.FORK,
    "nonzero-exit": EventKind.NONZERO_EXIT,
}
#: What the process table needs to see, whatever is printed.
TABLE_KINDS: Final = EventKind.FORK | EventKind.EXEC | EventKind.COMM | EventKind.EXIT

#: The signals that end watch.
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# poll() takes a C int of milliseconds.
_POLL_MAX_MS: Final = 2**31 - 1
# Writes to a pipe or terminal go in pieces of at most this many bytes, each
# after poll() says there is room: a pipe with a free page takes one whole
# (PIPE_BUF), so a stop is seen between two writes, never inside a line.
_PIPE_BUF: Final = 4096
# How long the last lost record waits for room on stdout (milliseconds).
_LAST_WRITE_MS: Final = 5000
# Events read at most when draining the queue at exit (the kernel may
# still be adding to it).
_DRAIN_MAX: Final = 1 << 20


def _kinds(text: str) -> frozenset[str]:
    try:
        return kind_names(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _uid(text: str) -> int:
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text!r}") from None


def _pid(text: str) -> int:
    value = _positive_int(text)
    if value > 0x7FFFFFFF:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``kstructs watch``."""
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument(
        "--events",
        type=_kinds,
        metavar="KINDS",
        help=(
            f"comma-separated kinds to print: {','.join(KIND_NAMES)}; forkstat's core, ptrce and all too. "
            "fork is a new process, clone a new thread, nonzero-exit an exit with a non-zero status "
            "(default: all)"
        ),
    )
    parser.add_argument(
        "--name",
        choices=cli.NAMES,
        default="comm",
        help="what names a process: its comm, its command line or its executable (default: comm)",
    )
    parser.add_argument(
        "-x", "--user", action="store_true", help="show the uid and user name of each process (JSON: uid, user)"
    )
    filters = parser.add_argument_group("filters (all must match; losses always print)")
    filters.add_argument("--pid", type=_pid, metavar="PID", help="only PID and its descendants, followed through forks")
    filters.add_argument(
        "--uid", type=_uid, metavar="UID", help="only processes with this effective uid (or user name)"
    )
    filters.add_argument(
        "--comm", metavar="GLOB", help="only processes whose comm matches GLOB (fnmatch, case-sensitive)"
    )
    filters.add_argument(
        "--cgroup", metavar="PATH", help="only processes in this cgroup v2 path or below (/system.slice/x.service)"
    )
    parser.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--count", type=_positive_int, metavar="N", help="stop after N events")
    parser.add_argument(
        "-S", "--stats", action="store_true", help="at the end, a table of event counts per process on stderr"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print no events, only the statistics at the end")


@dataclass
class Options:
    format: str = "text"
    events: frozenset[str] | None = None
    duration: float | None = None
    count: int | None = None
    name: str = "comm"
    user: bool = False
    pid: int | None = None
    uid: int | None = None
    comm: str | None = None
    cgroup: str | None = None
    stats: bool = False
    quiet: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__})

    def kernel_kinds(self) -> EventKind | None:
        """What the listener subscribes to: the kinds printed, and what the process table needs."""
        if self.events is None:
            return None
        mask = EventKind.NONE
        for name in self.events:
            mask |= KINDS[name]
        return mask | TABLE_KINDS

    def filtered(self) -> bool:
        return self.events is not None or any(
            value is not None for value in (self.pid, self.uid, self.comm, self.cgroup)
        )


@dataclass
class Counts:
    printed: int = 0  # events written to stdout
    unprinted: int = 0  # events received or queued at the stop, not written
    lost_printed: int = 0  # the sum of the counts of the lost records written


def _error_text(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror if isinstance(error, KstructsError) else f"{error.strerror} (errno {error.errno})"
    return str(error)


class _Stop:
    """The stop signals: handlers that only take note and wake the poll()s
    through a pipe. Installed for good: a second signal, during the exit or
    after it, finds a handler too and cannot kill the process."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._note)
        self._previous_fd = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def close(self) -> None:
        # The wakeup fd goes back before its pipe closes; the handlers stay.
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self.wake_r)
        os.close(self.wake_w)


def watch(options: Options) -> int:
    """``kstructs watch``: the exit status. The stop signals keep a handler
    that only takes note; ``ignore_stop_signals()`` before the exit."""
    stop = _Stop()
    try:
        return _watch(options, stop)
    finally:
        stop.close()


def ignore_stop_signals() -> None:
    """For the exit: the interpreter's finalization puts the default action
    back for signals with a Python handler, and that kills; ignoring them
    survives it."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _watch(options: Options, stop: _Stop) -> int:
    format_item = cli.formatter(options.format, options.name, options.user)
    try:
        out_fd = sys.stdout.fileno()
        encoding = sys.stdout.encoding
        sys.stdout.flush()
    except (AttributeError, ValueError, OSError):
        print("kstructs: stdout is closed", file=sys.stderr)
        return 1
    out = _Output(out_fd, encoding, stop)
    listener = Listener(options.kernel_kinds())
    counts = Counts()
    try:
        listener.open()
    except (KstructsError, OSError) as e:
        listener.close()
        print(f"kstructs: {_error_text(e)}", file=sys.stderr)
        return 1
    # Seeded once subscribed: a process /proc misses has its fork queued.
    table = ProcTable(cmdline=True, exe=options.name == "exe", cgroup=options.cgroup is not None)
    # What a seeded process shows before its next exec: its command line only
    # when it names processes, its uid only when shown or filtered on.
    table.seed(cmdline=options.name == "cmdline", uid=options.user or options.uid is not None)
    accept = None
    passes: frozenset[type] = frozenset()
    if options.filtered():
        event_filter = EventFilter(
            table, kinds=options.events, pid=options.pid, uid=options.uid, comm=options.comm, cgroup=options.cgroup
        )
        accept, passes = event_filter.accept, event_filter.passes
    stats = EventStats() if options.stats else None
    pipe_open = True
    try:
        try:
            if options.format == "text" and not options.quiet and os.isatty(out_fd):
                out.write([format_item.header()])  # type: ignore[union-attr]
            reached = _loop(
                listener,
                None if options.quiet else format_item,
                table,
                accept=accept,
                passes=passes,
                stats=stats,
                out=out,
                stop=stop,
                options=options,
                counts=counts,
            )
        except BrokenPipeError:
            pipe_open, reached = False, False
        except OSError as e:  # stdout itself failed: a full disk, a closed descriptor
            print(f"kstructs: cannot write to stdout: {_error_text(e)}", file=sys.stderr)
            return 1
        if not reached:
            _drain(listener, counts, table, accept)
    finally:
        listener.close()
    if not pipe_open:
        _quiet_stdout()
    last = _missing(listener.stats, counts)
    if last and pipe_open and not options.quiet:
        try:
            out.last("".join(format_item(loss) + "\n" for loss in last))
        except BrokenPipeError:
            _quiet_stdout()
        except OSError as e:
            print(f"kstructs: cannot write to stdout: {_error_text(e)}", file=sys.stderr)
            return 1
    if stats is not None:
        print(stats.table(), file=sys.stderr)
    print(f"kstructs: {summary(counts, listener.stats, options.filtered())}", file=sys.stderr)
    return 0


def _quiet_stdout() -> None:
    # The reader went away (| head): send nothing more, and keep the
    # interpreter's own final flush from failing too.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _drain(
    listener: Listener,
    counts: Counts,
    table: ProcTable,
    accept: Callable[[ProcessEvent, Task | None], bool] | None,
) -> None:
    """Count what is still queued and would have been printed: it will not be.
    Events the filter would drop (kinds taken only for the process table) are
    not counted, so the table and the filter see them as the loop would."""
    printed_types = cli.PRINTED
    apply = table.apply
    taken = 0
    while taken < _DRAIN_MAX:
        items = listener.read()
        if not items:
            return
        taken += len(items)
        for item in items:
            kind = type(item)
            if kind is Loss or kind not in printed_types:
                continue
            task = apply(item)  # type: ignore[arg-type]
            if accept is None or accept(item, task):  # type: ignore[arg-type]
                counts.unprinted += 1


def _missing(stats: ListenerStats, counts: Counts) -> list[Loss]:
    """The last lost records: events the loop did not print, and losses the
    listener counted (up to its close) that no lost record written told."""
    last = []
    if counts.unprinted:
        last.append(Loss(counts.unprinted, "exit"))
    if stats.lost > counts.lost_printed:
        last.append(Loss(stats.lost - counts.lost_printed, "enobufs"))
    return last


def summary(counts: Counts, stats: ListenerStats, filtered: bool) -> str:
    if not filtered:
        where = "every kind"
    else:
        where = "filtered in the kernel" if stats.kernel_filter else "filtered in user space"
    return (
        f"{counts.printed} events, {stats.lost} lost ({stats.enobufs} ENOBUFS), "
        f"{counts.unprinted} unprinted at exit, {stats.rejected} rejected "
        f"({stats.foreign} foreign, {stats.malformed} malformed), {where}"
    )


class _Output:
    """stdout, written a whole line at a time."""

    def __init__(self, fd: int, encoding: str, stop: _Stop) -> None:
        self.fd = fd
        self.encoding = encoding
        self.stop = stop
        self.ascii_newline = "\n".encode(encoding) == b"\n"
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            regular = False
        # A regular file never makes a write wait for a reader: one write.
        self.poller: select.poll | None = None
        if not regular:
            self.poller = select.poll()
            self.poller.register(fd, select.POLLOUT)
            self.poller.register(stop.wake_r, select.POLLIN)

    def write(self, lines: list[str]) -> int:
        """Write ``lines``, each followed by a newline: how many were
        written. A stop signal ends the writing between two lines."""
        if self.poller is not None and not self.ascii_newline:  # wide code units: a line at a time
            return self._write_lines(lines)
        lines.append("")  # the last newline, in the same join
        try:
            data = "\n".join(lines).encode(self.encoding, ENCODE_ERRORS)
        finally:
            lines.pop()
        if self.poller is None:
            _write_all(self.fd, data)
            return len(lines)
        # No line holds a newline of its own (names are escaped, JSON too):
        # lines are cut at newlines. As many whole lines as fit in one atomic
        # pipe write go at a time (at least one), each after poll() says
        # there is room.
        done = start = 0
        while start < len(data):
            end = data.rfind(b"\n", start, start + _PIPE_BUF) + 1
            if end <= start:  # one line longer than a pipe write
                end = data.index(b"\n", start) + 1
            if not self._wait():
                return done
            _write_all(self.fd, memoryview(data)[start:end])
            done += data.count(b"\n", start, end)
            start = end
        return min(done, len(lines))

    def _write_lines(self, lines: list[str]) -> int:
        for done, line in enumerate(lines):
            if not self._wait():
                return done
            _write_all(self.fd, (line + "\n").encode(self.encoding, ENCODE_ERRORS))
        return len(lines)

    def _wait(self) -> bool:
        """Wait for room on stdout: False when a stop signal came first."""
        while not self.stop.signals:
            if any(fd == self.fd for fd, _ in self.poller.poll()):  # type: ignore[union-attr]
                return True
        return False

    def last(self, text: str) -> None:
        """Write the closing lines if stdout takes them within a few seconds."""
        data = text.encode(self.encoding, ENCODE_ERRORS)
        if self.poller is not None:
            only_out = select.poll()
            only_out.register(self.fd, select.POLLOUT)
            if not only_out.poll(_LAST_WRITE_MS):
                return
        _write_all(self.fd, data)


def _loop(
    listener: Listener,
    format_item: cli.JsonFormat | cli.TextFormat | None,
    table: ProcTable,
    *,
    accept: Callable[[ProcessEvent, Task | None], bool] | None,
    passes: frozenset[type] = frozenset(),
    stats: EventStats | None,
    out: _Output,
    stop: _Stop,
    options: Options,
    counts: Counts,
) -> bool:
    """Read, format and write until a stop: True when ``--count`` was reached."""
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(stop.wake_r, select.POLLIN)
    wake_only = select.poll()
    wake_only.register(stop.wake_r, select.POLLIN)
    count = options.count
    deadline = None if options.duration is None else time.monotonic() + options.duration
    printed_types = cli.PRINTED
    stopping = stop.signals
    apply = table.apply
    # Bound methods: a call through an instance's __call__ slot costs more.
    format_line = _quiet_line if format_item is None else format_item.__call__
    counting = count is not None
    while not stopping:
        items = listener.read()
        now = time.monotonic()
        if items:
            lines: list[str] = []
            append = lines.append
            # The lost records among the lines: (index, count).
            losses: list[tuple[int, int]] = []
            # Where --count is reached: that many lines, one more per lost record.
            stop_at = -1 if count is None else count - counts.printed
            superseded = _superseded_execs(items)
            for item in items:
                kind = type(item)
                if kind is ForkEvent or kind is ExitEvent:  # a storm's kinds, first
                    task = apply(item)  # type: ignore[arg-type]
                elif kind is Loss:
                    assert isinstance(item, Loss)
                    table.lost()
                    losses.append((len(lines), item.count))
                    append(format_line(item, None))
                    if counting:
                        stop_at += 1
                    continue
                elif kind in printed_types:
                    # Named now, as it arrives: the table follows the events in order.
                    task = apply(item, kind is ExecEvent and id(item) in superseded)  # type: ignore[arg-type]
                else:
                    continue
                if accept is not None and kind not in passes and not accept(item, task):  # type: ignore[arg-type]
                    continue
                if stats is not None:
                    stats.count(item, task)  # type: ignore[arg-type]
                append(format_line(item, task))
                if counting and len(lines) == stop_at:
                    break
            if not lines:
                pass
            elif format_item is None:
                counts.lost_printed += sum(n for _, n in losses)  # --quiet: the summary tells
            else:
                written = out.write(lines)
                counts.lost_printed += sum(n for i, n in losses if i < written)
                if written < len(lines):
                    # Stopped by a signal with lines in hand: counted, not printed.
                    lost_written = sum(1 for i, _ in losses if i < written)
                    counts.printed += written - lost_written
                    counts.unprinted += len(lines) - written - (len(losses) - lost_written)
                    return False
            counts.printed += len(lines) - len(losses)  # only what was handed to stdout
            if counts.printed == count:
                return True
            if deadline is not None and now >= deadline:
                return False
            # Events are flowing: let more queue up, so one wakeup takes many
            # (a signal still ends the wait at once).
            pause = listener.pause()
            if pause:
                wake_only.poll(pause * 1000)
            continue
        if deadline is not None and now >= deadline:
            return False
        poller.poll(None if deadline is None else min(max(deadline - now, 0) * 1000, _POLL_MAX_MS))
    return False


def _quiet_line(item: Item, task: Task | None) -> str:
    """--quiet: a line counted, not written."""
    return ""


def _superseded_execs(items: list[Item]) -> set[int]:
    """The ids of the exec events followed, in the same batch, by another
    exec of the same process: when they are taken, /proc already shows the
    later program."""
    superseded: set[int] = set()
    if list(map(type, items)).count(ExecEvent) < 2:  # the common case, at C speed
        return superseded
    last: dict[int, int] = {}
    for item in items:
        if type(item) is ExecEvent:
            pid = item.process_pid
            if pid in last:
                superseded.add(last[pid])
            last[pid] = id(item)
    return superseded


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data``. A signal can end a write to a full pipe
    part-way (write(2)); the rest follows, so no line is ever cut."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


__all__ = ["KINDS", "STOP_SIGNALS", "Options", "add_arguments", "ignore_stop_signals", "summary", "watch"]
