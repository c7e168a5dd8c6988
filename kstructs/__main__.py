"""``python -m kstructs`` and the ``kstructs`` console script.

``kstructs watch`` prints process events, one per line, on stdout and
nothing else; a statistics line goes to stderr at the end. SIGINT, SIGTERM, SIGHUP,
``--duration``, ``--count`` and a closed pipe all end it the same way:
unsubscribe (``PROC_CN_MCAST_IGNORE``), flush, exit 0. Expected failures
(no privilege, no process events, a foreign network namespace) print one
line to stderr and exit 1.
"""

from __future__ import annotations

import argparse
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from kstructs import cli
from kstructs._escape import ENCODE_ERRORS
from kstructs.cn_proc import EventKind
from kstructs.events import PROCESS_EVENTS, KstructsError
from kstructs.listener import Item, Listener, ListenerStats, Loss

#: --events names: the CLI's event names, each the kernel's PROC_EVENT_* bit.
KINDS = {name: EventKind(cls.what) for name, cls in PROCESS_EVENTS.items()}


def _kinds(text: str) -> EventKind:
    mask = EventKind.NONE
    for name in filter(None, (part.strip() for part in text.split(","))):
        if name not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown event {name!r} (choose from {','.join(KINDS)})")
        mask |= KINDS[name]
    if not mask:
        raise argparse.ArgumentTypeError("no events given")
    return mask


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kstructs", description="The Linux process-events connector ABI.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    watch = commands.add_parser(
        "watch",
        help="print process events as they happen",
        description="Print process events, one per line, until interrupted.",
    )
    watch.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    watch.add_argument(
        "--events",
        type=_kinds,
        metavar="KINDS",
        help=f"comma-separated kinds to print: {','.join(KINDS)} (default: all)",
    )
    watch.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    watch.add_argument("--count", type=_positive_int, metavar="N", help="stop after N events")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    return watch(args.format, args.events, args.duration, args.count)


def _error_text(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror if isinstance(error, KstructsError) else f"{error.strerror} (errno {error.errno})"
    return str(error)


def watch(fmt: str, events: EventKind | None, duration: float | None, count: int | None) -> int:
    """``kstructs watch``: the exit status."""
    format_item = cli.formatter(fmt)
    try:
        out_fd = sys.stdout.fileno()
        encoding = sys.stdout.encoding
    except (AttributeError, ValueError, OSError):
        print("kstructs: stdout is closed", file=sys.stderr)
        return 1
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    # The handlers only take note; the wakeup fd ends the poll() below.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    listener = Listener(events)
    printed: list[int] = [0]
    try:
        try:
            listener.open()
        except (KstructsError, OSError) as e:
            print(f"kstructs: {_error_text(e)}", file=sys.stderr)
            return 1
        try:
            sys.stdout.flush()
            _loop(
                listener,
                format_item,
                out_fd=out_fd,
                encoding=encoding,
                wake_fd=wake_r,
                stopping=stopping,
                duration=duration,
                count=count,
                printed=printed,
            )
        except BrokenPipeError:
            # The reader went away (| head): send nothing more, and keep the
            # interpreter's own final flush from failing too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except OSError as e:  # stdout itself failed: a full disk, a closed descriptor
            print(f"kstructs: cannot write to stdout: {_error_text(e)}", file=sys.stderr)
            return 1
    finally:
        listener.close()
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)
    print(f"kstructs: {_summary(printed[0], listener.stats, listener.events)}", file=sys.stderr)
    return 0


_POLL_MAX_MS = 2**31 - 1


def _summary(printed: int, stats: ListenerStats, events: int | None) -> str:
    if events is None:
        where = "every kind"
    else:
        where = "filtered in the kernel" if stats.kernel_filter else "filtered in user space"
    return (
        f"{printed} events, {stats.lost} lost ({stats.enobufs} ENOBUFS), {stats.rejected} rejected "
        f"({stats.foreign} foreign, {stats.malformed} malformed), {where}"
    )


def _loop(
    listener: Listener,
    format_item: Callable[[Item], str],
    *,
    out_fd: int,
    encoding: str,
    wake_fd: int,
    stopping: list[int],
    duration: float | None,
    count: int | None,
    printed: list[int],
) -> None:
    """Read, format and write until a stop, counting events in ``printed[0]``."""
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake_fd, select.POLLIN)
    wake_only = select.poll()
    wake_only.register(wake_fd, select.POLLIN)
    deadline = None if duration is None else time.monotonic() + duration
    printed_types = cli.PRINTED
    while not stopping:
        items = listener.read()
        now = time.monotonic()
        if items:
            lines = []
            total = printed[0]
            for item in items:
                if type(item) not in printed_types:
                    continue
                lines.append(format_item(item))
                if type(item) is not Loss:
                    total += 1
                    if total == count:
                        break
            if lines:
                # Names are escaped already; what the terminal's encoding cannot show is too.
                _write_all(out_fd, ("\n".join(lines) + "\n").encode(encoding, ENCODE_ERRORS))
            printed[0] = total  # only what was handed to stdout
            if printed[0] == count or (deadline is not None and now >= deadline):
                break
            # Events are flowing: let more queue up, so one wakeup takes many
            # (a signal still ends the wait at once).
            pause = listener.pause()
            if pause:
                wake_only.poll(pause * 1000)
            continue
        if deadline is not None and now >= deadline:
            break
        # poll() takes a C int of milliseconds.
        poller.poll(None if deadline is None else min(max(deadline - now, 0) * 1000, _POLL_MAX_MS))


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``, unbuffered. A signal can end a write to a full
    pipe part-way (write(2)); the rest follows, so no line is ever cut."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    sys.exit(main())
