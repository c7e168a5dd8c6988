"""``kstructs watch -S``: how many events of each kind each process had,
printed as a table on stderr at the end (forkstat's ``-S``).

A fork counts for the process that forked, a clone (a new thread) and
every other kind for the process it is about. Names are the last the
process table gave, escaped for the terminal.
"""

from __future__ import annotations

from typing import Final

from kstructs._escape import terminal
from kstructs._proctable import Task
from kstructs.events import ExitEvent, ForkEvent, ProcessEvent

#: The columns, in order: the kinds counted.
COLUMNS: Final = ("fork", "clone", "exec", "exit", "coredump", "comm", "ptrace", "uid", "gid", "sid")
#: Processes counted one by one at most; past it, the rest go to one row.
MAX_ROWS: Final = 1 << 14
OTHERS: Final = -1


class EventStats:
    def __init__(self) -> None:
        self.rows: dict[int, list[int]] = {}
        self.names: dict[int, str] = {}
        self._column = {name: i for i, name in enumerate(COLUMNS)}

    def count(self, ev: ProcessEvent, task: Task | None) -> None:
        if type(ev) is ForkEvent:
            fork: ForkEvent = ev
            if fork.child_pid != fork.child_tgid:
                tgid, column = fork.child_tgid, "clone"
            else:
                tgid, column, task = fork.parent_tgid, "fork", None
        else:
            tgid, column = ev[4], ev.event  # process_tgid
        row = self.rows.get(tgid)
        if row is None:
            if len(self.rows) >= MAX_ROWS:
                tgid = OTHERS
                row = self.rows.setdefault(OTHERS, [0] * len(COLUMNS))
            else:
                row = self.rows[tgid] = [0] * len(COLUMNS)
        row[self._column[column]] += 1
        if task is not None and tgid != OTHERS:
            comm = task.comm
            if comm is not None:
                self.names[tgid] = f"[{terminal(comm)}]" if task.kthread else terminal(comm)
        elif type(ev) is ExitEvent and tgid not in self.names:
            self.names[tgid] = "?"

    def table(self) -> str:
        """The table, busiest process first."""
        header = ["PID", *COLUMNS, "total", "name"]
        rows = sorted(self.rows.items(), key=lambda item: (-sum(item[1]), item[0]))
        body = [
            ["others" if tgid == OTHERS else str(tgid), *map(str, counts), str(sum(counts)), self.names.get(tgid, "?")]
            for tgid, counts in rows
        ]
        totals = [sum(counts[i] for counts in self.rows.values()) for i in range(len(COLUMNS))]
        body.append(["all", *map(str, totals), str(sum(totals)), ""])
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header) - 1)]
        lines = []
        for r in [header, *body]:
            lines.append(" ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=False)) + " " + r[-1])
        return "\n".join(line.rstrip() for line in lines)


__all__ = ["COLUMNS", "MAX_ROWS", "EventStats"]
