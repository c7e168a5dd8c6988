"""kstructs._watchfilter: kinds and process filters, from literal events."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_proctable import FakeProc, S, fake_proc, fork, table

from kstructs._proctable import Task
from kstructs._watchfilter import EventFilter, cgroup2_mounts, cgroup_path, kind_names
from kstructs.events import CommEvent, ExecEvent, ExitEvent, ForkEvent, ProcessEvent, UidEvent


def task(pid: int, comm: str = "x", uid: int = 0, cgroup: str | None = None) -> Task:
    return Task(pid, pid, 1, comm, 0, uid, cgroup=cgroup)


def test_kind_names_and_forkstat_aliases() -> None:
    assert kind_names("core, ptrce") == {"coredump", "ptrace"}
    assert kind_names("clone") == {"clone"}
    assert kind_names("all") == {"fork", "exec", "uid", "gid", "sid", "ptrace", "comm", "coredump", "exit", "clone"}
    assert kind_names("nonzero-exit") == {"nonzero-exit"}
    with pytest.raises(ValueError, match="unknown event 'forks'"):
        kind_names("forks")
    with pytest.raises(ValueError, match="no events"):
        kind_names(" , ")


def test_fork_and_clone_are_told_apart(tmp_path: Path) -> None:
    process, thread = ForkEvent(0, 0, 0, 1, 1, 10, 10), ForkEvent(0, 0, 0, 1, 1, 11, 10)
    forks = EventFilter(table(tmp_path), kinds={"fork"})
    assert forks.accept(process, None) and not forks.accept(thread, None)
    clones = EventFilter(table(tmp_path), kinds={"clone"})
    assert clones.accept(thread, None) and not clones.accept(process, None)


def test_nonzero_exit(tmp_path: Path) -> None:
    f = EventFilter(table(tmp_path), kinds={"nonzero-exit"})
    assert f.accept(ExitEvent(0, 0, 0, 5, 5, 3 << 8, 17, 1, 1), None)
    assert f.accept(ExitEvent(0, 0, 0, 5, 5, 9, 17, 1, 1), None)  # killed by SIGKILL
    assert not f.accept(ExitEvent(0, 0, 0, 5, 5, 0, 17, 1, 1), None)
    assert not f.accept(ExecEvent(0, 0, 0, 5, 5), None)


def test_pid_and_its_descendants_through_forks(tmp_path: Path) -> None:
    # 100 -> 101 (seeded) -> 102 (forked while watching); 200 is unrelated.
    fake_proc(tmp_path, {100: FakeProc(b"sh"), 101: FakeProc(b"make", ppid=100), 200: FakeProc(b"other")})
    t = table(tmp_path)
    t.seed()
    f = EventFilter(t, pid=100)
    assert f.followed == {100, 101}
    assert f.accept(fork(102, 101), None)
    assert f.accept(ExecEvent(0, 0, S, 102, 102), None)
    assert f.accept(ForkEvent(0, 0, S, 100, 100, 103, 102), None)  # a thread of 102
    assert not f.accept(fork(201, 200), None)
    assert not f.accept(ExecEvent(0, 0, S, 201, 201), None)
    assert f.accept(ExitEvent(0, 0, S, 102, 102, 0, 17, 101, 101), None)
    # 102's pid, reused by a process outside the tree, is not followed.
    assert not f.accept(ExecEvent(0, 0, S, 102, 102), None)


def test_uid_comm_and_cgroup(tmp_path: Path) -> None:
    t = table(tmp_path)
    ev = UidEvent(0, 0, 0, 5, 5, 0, 1000)
    assert EventFilter(t, uid=1000).accept(ev, task(5, uid=1000))
    assert not EventFilter(t, uid=1000).accept(ev, task(5, uid=0))
    assert not EventFilter(t, uid=1000).accept(ev, None)  # unknown: not shown
    assert EventFilter(t, comm="kworker/*").accept(ev, task(5, "kworker/0:1"))
    assert not EventFilter(t, comm="kworker/*").accept(ev, task(5, "Kworker/0:1"))
    assert not EventFilter(t, comm="sh").accept(CommEvent(0, 0, 0, 5, 5, "sh"), task(5, "bash"))
    unit = "/system.slice/foo.service"
    inside = EventFilter(t, cgroup="/system.slice/foo.service/")
    assert inside.accept(ev, task(5, cgroup=unit)) and inside.accept(ev, task(5, cgroup=unit + "/sub"))
    assert not inside.accept(ev, task(5, cgroup="/system.slice/foo.service2"))
    assert not inside.accept(ev, task(5, cgroup="/system.slice"))
    assert not inside.accept(ev, task(5, cgroup=None))
    assert EventFilter(t, cgroup="/").accept(ev, task(5, cgroup="/"))


def test_cgroup_path() -> None:
    assert cgroup_path("/sys/fs/cgroup", ["/sys/fs/cgroup"]) == "/"
    assert cgroup_path("/sys/fs/cgroup/user.slice/", ["/sys/fs/cgroup"]) == "/user.slice"
    assert cgroup_path("/sys/fs/cgroup/unified/a", ["/sys/fs/cgroup/unified"]) == "/a"
    assert cgroup_path("system.slice", ["/sys/fs/cgroup"]) == "/system.slice"


def test_cgroup2_mounts(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/uni\\040fied cgroup2 rw,relatime 0 0\n"
    )
    assert cgroup2_mounts(str(mounts)) == ["/sys/fs/cgroup/uni fied"]


# One event of each kind, threads and non-zero exits too.
_ONE_OF_EACH: list[ProcessEvent] = [
    ForkEvent(0, 0, 0, 1, 1, 10, 10),
    ForkEvent(0, 0, 0, 1, 1, 11, 10),
    ExecEvent(0, 0, 0, 10, 10),
    UidEvent(0, 0, 0, 10, 10, 0, 0),
    CommEvent(0, 0, 0, 10, 10, "x"),
    ExitEvent(0, 0, 0, 10, 10, 0, 17, 1, 1),
    ExitEvent(0, 0, 0, 10, 10, 3 << 8, 17, 1, 1),
]


@pytest.mark.parametrize(
    ("kinds", "passes"),
    [
        (None, {ForkEvent, ExecEvent, UidEvent, CommEvent, ExitEvent}),
        ({"fork", "exit"}, {ExitEvent}),
        ({"fork", "clone", "exec"}, {ForkEvent, ExecEvent}),
        ({"nonzero-exit", "comm"}, {CommEvent}),
    ],
)
def test_the_kinds_that_pass_whatever_the_event(tmp_path: Path, kinds: set[str] | None, passes: set[type]) -> None:
    f = EventFilter(table(tmp_path), kinds=kinds)
    assert {kind for kind in f.passes if kind in {type(ev) for ev in _ONE_OF_EACH}} == passes
    for ev in _ONE_OF_EACH:
        if type(ev) in f.passes:
            assert f.accept(ev, None), ev


def test_nothing_passes_a_process_filter_unasked(tmp_path: Path) -> None:
    for f in (
        EventFilter(table(tmp_path), pid=1),
        EventFilter(table(tmp_path), uid=0),
        EventFilter(table(tmp_path), comm="x"),
        EventFilter(table(tmp_path), cgroup="/"),
    ):
        assert f.passes == frozenset()
