"""kstructs._watchstats: the per-process table of ``watch -S``, from literal events."""

from __future__ import annotations

from kstructs._proctable import Task
from kstructs._watchstats import EventStats
from kstructs.events import CommEvent, ExecEvent, ExitEvent, ForkEvent


def test_counts_per_process() -> None:
    stats = EventStats()
    sh, child = Task(100, 100, 1, "sh"), Task(101, 101, 100, "sh")
    stats.count(ForkEvent(0, 0, 0, 100, 100, 101, 101), child)  # the forker's fork
    stats.count(ForkEvent(0, 0, 0, 100, 100, 102, 101), child)  # 101's new thread
    stats.count(ExecEvent(0, 0, 0, 101, 101), Task(101, 101, 100, "ls"))
    stats.count(CommEvent(0, 0, 0, 101, 101, "\x1b[J"), Task(101, 101, 100, "\x1b[J"))
    stats.count(ExitEvent(0, 0, 0, 101, 101, 0, 17, 100, 100), Task(101, 101, 100, "\x1b[J"))
    stats.count(ForkEvent(0, 0, 0, 2, 2, 50, 50), Task(50, 50, 2, "kworker/0:1", kthread=True))
    stats.count(ExitEvent(0, 0, 0, 50, 50, 0, 17, 2, 2), Task(50, 50, 2, "kworker/0:1", kthread=True))
    del sh
    lines = stats.table().splitlines()
    assert lines[0].split() == [
        "PID",
        "fork",
        "clone",
        "exec",
        "exit",
        "coredump",
        "comm",
        "ptrace",
        "uid",
        "gid",
        "sid",
        "total",
        "name",
    ]
    assert lines[1].split() == ["101", "0", "1", "1", "1", "0", "1", "0", "0", "0", "0", "4", "\\x1b[J"]
    assert lines[2].split() == ["2", "1", *["0"] * 9, "1", "?"]
    assert lines[3].split() == ["50", "0", "0", "0", "1", *["0"] * 6, "1", "[kworker/0:1]"]
    assert lines[4].split() == ["100", "1", *["0"] * 9, "1", "?"]
    assert lines[5].split() == ["all", "2", "1", "1", "2", "0", "1", "0", "0", "0", "0", "7"]
