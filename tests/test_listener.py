"""kstructs.listener against the running kernel: a workload whose events are
known, decoded field by field; filters, replies, the sender check, losses.

The machine may be busy (other listeners, fork storms): every assertion is
about this test's own processes, found by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
from conftest import hang_guard

from kstructs import _receive
from kstructs import _subscription as subscription_module
from kstructs._subscription import Exchange, Subscription
from kstructs.cn_proc import EventKind
from kstructs.connector import cn_msg
from kstructs.events import (
    AckEvent,
    CommEvent,
    CoredumpEvent,
    ExecEvent,
    ExitEvent,
    ForkEvent,
    GidEvent,
    PtraceEvent,
    SidEvent,
    UidEvent,
    encode_event,
    encode_listen,
    encode_mcast,
    parse_request,
)
from kstructs.listener import Item, Listener, Loss, NamespaceError, NoAckError, NoConnectorError, PrivilegeError
from kstructs.netlink import NETLINK_CONNECTOR, NLMSG_HDRLEN, nlmsghdr

root = pytest.mark.root
libc = ctypes.CDLL(None, use_errno=True)

PR_SET_NAME = 15  # <linux/prctl.h>
PTRACE_ATTACH, PTRACE_DETACH = 16, 17  # <linux/ptrace.h>
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000  # <linux/sched.h>
GID, UID = 4242, 4343
NCPU = os.cpu_count() or 1


def kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()))


def pid_of(item: Item) -> int | None:
    """The process an event is about."""
    for name in ("child_pid", "process_pid"):
        value = getattr(item, name, None)
        if value is not None:
            return int(value)
    return None


def collect(listener: Listener, done: Callable[[list[Item]], bool], timeout: float = hang_guard(10.0)) -> list[Item]:
    """Read until ``done(items)``; fail after ``timeout`` seconds."""
    items: list[Item] = []
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        items += listener.read()
        if done(items):
            return items
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s with {len(items)} items")
        poller.poll(50)


def about(items: list[Item], *pids: int) -> list[Item]:
    return [item for item in items if pid_of(item) in pids]


def exited(pid: int) -> Callable[[list[Item]], bool]:
    return lambda items: any(isinstance(e, ExitEvent) and e.process_pid == pid for e in items)


def in_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child; its return value is the exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


TEST_TIMEOUT = hang_guard(60.0)  # seconds any one test may take


class Overtime(BaseException):
    """Raised by the per-test alarm (a BaseException: no test code swallows it)."""


@pytest.fixture(autouse=True)
def alarm() -> Iterator[None]:
    """Every test here reads a socket that could block: a SIGALRM ends it."""

    def expire(signum: int, frame: object) -> None:
        raise Overtime(f"the test took over {TEST_TIMEOUT:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True, params=["recvmmsg", "recvfrom"])
def receive_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs both ways a listener receives: recvmmsg() batches,
    and one recvfrom() per datagram (a libc without recvmmsg)."""
    path: str = request.param
    if path == "recvfrom":
        monkeypatch.setattr(_receive, "new_batch", lambda: None)
    return path


@pytest.fixture
def listener(receive_path: str) -> Iterator[Listener]:
    with Listener() as lst:
        assert isinstance(lst._receiver, _receive.Batched) == (receive_path == "recvmmsg")
        yield lst


# --- The workload ------------------------------------------------------------


def _workload() -> NoReturn:  # pragma: no cover - the child
    try:
        os.setsid()
        libc.prctl(PR_SET_NAME, b"kstructs-kid", 0, 0, 0)
        os.setgid(GID)
        os.setuid(UID)
    finally:
        os._exit(7)


@root
def test_workload_every_field(listener: Listener) -> None:
    me = os.getpid()
    before = time.monotonic_ns()
    child = os.fork()
    if child == 0:  # pragma: no cover
        _workload()
    # Reap only after the exit event: a reaped task's exit event has no parent.
    items = about(collect(listener, exited(child)), child)
    os.waitpid(child, 0)
    after = time.monotonic_ns()
    kinds = {type(e): e for e in items}
    assert list(kinds) == [ForkEvent, SidEvent, CommEvent, GidEvent, UidEvent, ExitEvent], items

    fork = kinds[ForkEvent]
    assert isinstance(fork, ForkEvent)
    assert (fork.parent_pid, fork.parent_tgid, fork.child_pid, fork.child_tgid) == (me, me, child, child)
    assert kinds[SidEvent] == SidEvent(*_head(kinds[SidEvent]), process_pid=child, process_tgid=child)
    assert kinds[CommEvent] == CommEvent(*_head(kinds[CommEvent]), child, child, comm="kstructs-kid")
    assert kinds[GidEvent] == GidEvent(*_head(kinds[GidEvent]), child, child, rgid=GID, egid=GID)
    assert kinds[UidEvent] == UidEvent(*_head(kinds[UidEvent]), child, child, ruid=UID, euid=UID)
    exit_ = kinds[ExitEvent]
    assert exit_ == ExitEvent(
        *_head(exit_),
        process_pid=child,
        process_tgid=child,
        exit_code=7 << 8,  # a wait(2) status
        exit_signal=signal.SIGCHLD,
        parent_pid=me,
        parent_tgid=me,
    )
    stamps = [int(getattr(e, "timestamp_ns", 0)) for e in items]
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= after
    for seq, cpu, _ in map(_head, items):
        assert 0 <= cpu < NCPU
        assert 0 <= seq < 2**32


def _head(ev: Any) -> tuple[int, int, int]:
    return ev.seq, ev.cpu, ev.timestamp_ns


@root
def test_exec(listener: Listener) -> None:
    proc = subprocess.Popen(["/bin/true"])
    items = about(collect(listener, exited(proc.pid)), proc.pid)
    proc.wait()
    assert [type(e) for e in items] == [ForkEvent, ExecEvent, ExitEvent]
    exec_ = items[1]
    assert isinstance(exec_, ExecEvent)
    assert (exec_.process_pid, exec_.process_tgid) == (proc.pid, proc.pid)
    assert isinstance(items[2], ExitEvent) and items[2].exit_code == 0


@root
def test_kill_by_signal(listener: Listener) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    collect(listener, lambda items: any(isinstance(e, ExecEvent) and e.process_pid == proc.pid for e in items))
    proc.kill()
    (exit_,) = [e for e in about(collect(listener, exited(proc.pid)), proc.pid) if isinstance(e, ExitEvent)]
    proc.wait()
    assert (exit_.exit_code, exit_.exit_signal) == (signal.SIGKILL, signal.SIGCHLD)
    assert (exit_.parent_pid, exit_.parent_tgid) in {(os.getpid(), os.getpid()), (0, 0)}


@root
def test_ptrace_attach_and_detach(listener: Listener) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        collect(listener, lambda items: any(isinstance(e, ExecEvent) and e.process_pid == proc.pid for e in items))
        assert libc.ptrace(PTRACE_ATTACH, proc.pid, None, None) == 0, os.strerror(ctypes.get_errno())
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        assert libc.ptrace(PTRACE_DETACH, proc.pid, None, None) == 0, os.strerror(ctypes.get_errno())
        items = collect(listener, lambda items: len([e for e in items if isinstance(e, PtraceEvent)]) >= 2)
    finally:
        proc.kill()
        proc.wait()
    attach, detach = [e for e in about(items, proc.pid) if isinstance(e, PtraceEvent)]
    me = os.getpid()
    assert (attach.process_pid, attach.process_tgid) == (proc.pid, proc.pid)
    assert (attach.tracer_pid, attach.tracer_tgid) == (threading.get_native_id(), me)
    assert (detach.process_pid, detach.process_tgid, detach.tracer_pid, detach.tracer_tgid) == (
        proc.pid,
        proc.pid,
        0,
        0,
    )


@root
def test_core_dump(listener: Listener, tmp_path: Any) -> None:
    # The kernel reports the core dump before it looks at RLIMIT_CORE: with
    # a limit of 0 no file is written (unless core_pattern pipes to a
    # handler) and nothing global changes.
    proc = subprocess.Popen(["sh", "-c", "ulimit -c 0; kill -ABRT $$"], cwd=tmp_path)
    items = about(collect(listener, exited(proc.pid)), proc.pid)
    proc.wait()
    (dump,) = [e for e in items if isinstance(e, CoredumpEvent)]
    (exit_,) = [e for e in items if isinstance(e, ExitEvent)]
    me = os.getpid()
    assert (dump.process_pid, dump.process_tgid, dump.parent_pid, dump.parent_tgid) == (proc.pid, proc.pid, me, me)
    assert exit_.exit_code & 0x7F == signal.SIGABRT  # | 0x80 if a pipe handler took the core
    assert dump.timestamp_ns <= exit_.timestamp_ns


@root
def test_thread(listener: Listener) -> None:
    thread = threading.Thread(target=time.sleep, args=(0.01,))
    thread.start()
    tid = thread.native_id
    thread.join()
    assert tid is not None
    items = about(collect(listener, exited(tid)), tid)
    me, parent = os.getpid(), os.getppid()
    if sys.version_info >= (3, 14):
        # CPython 3.14 names its OS threads: the kernel reports that comm change.
        fork, comm, exit_ = items
        assert isinstance(comm, CommEvent) and (comm.process_pid, comm.process_tgid) == (tid, me)
    else:
        fork, exit_ = items
    assert isinstance(fork, ForkEvent)
    # A thread's real_parent is its process's parent: the thread of it that
    # forked this process (its leader unless the parent is multi-threaded).
    assert fork.parent_pid == parent or os.path.exists(f"/proc/{parent}/task/{fork.parent_pid}")
    assert fork == ForkEvent(*_head(fork), fork.parent_pid, parent, child_pid=tid, child_tgid=me)
    # Not the group leader: no exit signal (-1), reaped before the report.
    assert exit_ == ExitEvent(*_head(exit_), tid, me, exit_code=0, exit_signal=0xFFFFFFFF, parent_pid=0, parent_tgid=0)


# --- Filters ----------------------------------------------------------------


@root
def test_kernel_filter_by_proc_input() -> None:
    with Listener(EventKind.EXIT) as lst:
        proc = subprocess.Popen(["/bin/true"])
        items = collect(lst, exited(proc.pid))
        proc.wait()
        assert all(isinstance(e, ExitEvent) for e in items), {type(e) for e in items}
        # Only what slipped in between the proc_input probe and the filter
        # reached user space.
        assert lst.stats.kernel_filter is (kernel() >= (6, 6))


@root
def test_nonzero_exit_filter() -> None:
    with Listener(EventKind.NONZERO_EXIT) as lst:
        zero = subprocess.Popen(["sh", "-c", "exit 0"])
        zero.wait()
        three = subprocess.Popen(["sh", "-c", "exit 3"])
        items = collect(lst, exited(three.pid))
        three.wait()
        assert not about(items, zero.pid)
        assert [e.exit_code for e in about(items, three.pid)] == [3 << 8]  # type: ignore[union-attr]
        assert all(isinstance(e, ExitEvent) and e.exit_code for e in items)


def _unread_proc_input(events: int | None = None, **kwargs: int) -> bytes:
    """A subscribe request as a kernel before 6.6 treats one with a
    proc_input: 4 bytes longer than both lengths cn_proc_mcast_ctl() reads,
    so the kernel ignores it without a reply."""
    request = bytearray(encode_listen(events, **kwargs))
    if events is not None:
        request += bytes(4)
        struct.pack_into("=I", request, nlmsghdr.nlmsg_len.offset, len(request))
        cn_len = NLMSG_HDRLEN + cn_msg.len.offset
        struct.pack_into("=H", request, cn_len, struct.unpack_from("=H", request, cn_len)[0] + 4)
    return bytes(request)


@root
def test_user_space_filter_on_a_kernel_without_proc_input(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel ignores the proc_input and sends everything: the listener
    # filters in user space, and the stream is the same.
    monkeypatch.setattr(subscription_module, "encode_listen", _unread_proc_input)
    with Listener(EventKind.EXEC, ack_timeout=2.0) as lst:
        assert not lst.stats.kernel_filter
        proc = subprocess.Popen(["/bin/true"])
        items = collect(lst, lambda items: any(pid_of(e) == proc.pid for e in items))
        proc.wait()
        assert items and all(isinstance(e, ExecEvent) for e in items), {type(e) for e in items}
        assert lst.stats.filtered >= 1  # the fork of this test's child, queued before its exec


@root
def test_a_forged_error_reply_to_an_unanswered_probe_does_not_stop_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before 6.6 the kernel does not answer the proc_input probe, so an error
    # forged under its nonce (and under the retry's) is the only reply: open()
    # must not believe it, but subscribe without a filter.
    forger = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    forger.bind((0, 0))

    def forged_first(events: int | None = None, **kwargs: int) -> bytes:
        forger.sendto(encode_mcast(0x7F, seq=1, ack=kwargs["ack"]), (0, 0))  # the kernel answers EINVAL
        return _unread_proc_input(events, **kwargs)

    monkeypatch.setattr(subscription_module, "encode_listen", forged_first)
    try:
        with Listener(EventKind.EXEC) as lst:
            assert not lst.stats.kernel_filter
            proc = subprocess.Popen(["/bin/true"])
            items = collect(lst, lambda items: any(pid_of(e) == proc.pid for e in items))
            proc.wait()
            assert all(isinstance(e, ExecEvent) for e in items), {type(e) for e in items}
    finally:
        forger.close()


# --- Subscription: replies and IGNORE ----------------------------------------


def _replies(items: list[Item], nonce: int) -> list[AckEvent]:
    """The kernel's replies to requests whose cn_msg.ack was ``nonce``."""
    return [e for e in items if isinstance(e, AckEvent) and e.ack == (nonce + 1) & 0xFFFFFFFF]


@root
@pytest.mark.parametrize(("events", "replies"), [(None, 2), (EventKind.FORK, 3)])
def test_ack_and_exactly_one_ignore(events: EventKind | None, replies: int) -> None:
    # Every subscriber's reply goes to every listener: a second listener sees
    # A's LISTEN (and, filtered, its proc_input probe) and A's IGNORE.
    if events is not None and kernel() < (6, 6):
        replies = 2  # before 6.6 the proc_input probe gets no reply
    with Listener() as watcher:
        a = Listener(events).open()
        assert a.port_id != 0
        a.close()
        a.close()
        assert a.ignore_sent and a.closed
        seen = collect(watcher, lambda items: len(_replies(items, a._subscription.nonce)) >= replies)
        time.sleep(0.1)
        seen += watcher.read()
        acks = _replies(seen, a._subscription.nonce)
        assert len(acks) == replies
        assert all(ack.err == 0 and 0 <= ack.cpu < NCPU for ack in acks)


@root
def test_every_request_goes_through_the_socket_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    from kstructs import _socket

    sent: list[int] = []
    real = _socket.send

    def send(sock: socket.socket, message: bytes) -> None:
        sent.append(parse_request(message).op)
        real(sock, message)

    monkeypatch.setattr(_socket, "send", send)
    Listener().open().close()
    assert sent == [1, 2]  # PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE (<linux/cn_proc.h>)


@root
def test_open_is_idempotent_and_close_final() -> None:
    lst = Listener()
    assert lst.open() is lst.open()
    lst.close()
    with pytest.raises(ValueError, match="closed"):
        lst.open()
    with pytest.raises(ValueError, match="not open"):
        lst.read()


def _eventfds() -> int:
    """How many eventfds this process has open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir() had open
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    return count


@root
def test_close_from_another_thread_while_open_binds(monkeypatch: pytest.MonkeyPatch) -> None:
    lst = Listener()
    made: list[socket.socket] = []

    class Closing(socket.socket):
        def bind(self, address: Any) -> None:
            made.append(self)
            super().bind(address)
            closer = threading.Thread(target=lst.close)
            closer.start()
            closer.join()

    monkeypatch.setattr(socket, "socket", Closing)  # the module kstructs._socket calls
    before = _eventfds()
    with pytest.raises(ValueError) as info:
        lst.open()
    assert str(info.value) == "listener is closed"
    assert len(made) == 1 and made[0].fileno() == -1
    assert lst.closed and not lst.ignore_sent and _eventfds() == before


@root
def test_an_interrupted_handshake_closes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    lst = Listener()
    real = Subscription.request
    socks: list[socket.socket] = []

    def interrupted(self: Subscription, events: int | None, timeout: float, io: Exchange) -> AckEvent | None:
        real(self, events, timeout, io)  # the LISTEN went out
        assert lst._gate.sock is not None
        socks.append(lst._gate.sock)
        raise KeyboardInterrupt  # a signal handler's exception

    monkeypatch.setattr(Subscription, "request", interrupted)
    before = _eventfds()
    with pytest.raises(KeyboardInterrupt):
        lst.open()
    assert len(socks) == 1 and socks[0].fileno() == -1
    assert lst.closed and lst.ignore_sent and _eventfds() == before


@root
@pytest.mark.parametrize("where", ["setsockopt", "bind"])
def test_a_failed_open_leaves_the_listener_unopened(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    # As a failed socket() always did: the listener may be opened again.
    failures = [OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))]

    class Failing(socket.socket):
        def setsockopt(self, *args: Any) -> None:
            if where == "setsockopt" and failures:
                raise failures.pop()
            super().setsockopt(*args)

        def bind(self, address: Any) -> None:
            if where == "bind" and failures:
                raise failures.pop()
            super().bind(address)

    monkeypatch.setattr(socket, "socket", Failing)  # the module kstructs._socket calls
    lst = Listener()
    with pytest.raises(OSError) as info:
        lst.open()
    assert info.value.errno == errno.ENOMEM and lst.closed and not failures
    with lst.open():
        assert not lst.closed and lst.port_id != 0
    assert lst.ignore_sent


# --- Sender check -------------------------------------------------------------


@root
def test_datagrams_from_another_socket_are_rejected(listener: Listener) -> None:
    fake = encode_event(ForkEvent(2, 0, 1, 3, 3, 424242, 424242))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as other:
        other.bind((0, 0))
        other.sendto(fake, (listener.port_id, 0))
    items = collect(listener, lambda _: listener.stats.foreign >= 1, timeout=5)
    assert not about(items, 424242)
    assert listener.stats.rejected >= 1


@root
def test_only_cap_net_admin_can_send_to_a_listener(listener: Listener) -> None:
    # netlink_sendmsg(): the connector lacks NL_CFG_F_NONROOT_SEND.
    def send() -> int:
        os.setgid(65534)
        os.setuid(65534)
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as s:
            try:
                s.sendto(b"x" * 16, (listener.port_id, 0))
            except PermissionError:
                return 0
        return 1

    assert in_child(send) == 0


# --- Losses -------------------------------------------------------------------


def _proc_drops(sock_inode: int) -> int:
    with open("/proc/net/netlink") as f:
        header = f.readline().split()
        for line in f:
            cols = line.split()
            if int(cols[header.index("Inode")]) == sock_inode:
                return int(cols[header.index("Drops")])
    raise AssertionError("socket not in /proc/net/netlink")


@root
def test_enobufs_becomes_loss_records() -> None:
    with Listener(rcvbuf=1) as lst:  # the kernel's minimum: a couple of datagrams
        inode = os.fstat(lst.fileno()).st_ino

        def storm() -> int:
            for _ in range(200):
                pid = os.fork()
                if pid == 0:  # pragma: no cover
                    os._exit(0)
                os.waitpid(pid, 0)
            return 0

        assert in_child(storm) == 0
        items: list[Item] = []
        while batch := lst.read():
            items += batch
        losses = [e for e in items if isinstance(e, Loss)]
        assert lst.stats.enobufs >= 1
        assert losses and {loss.reason for loss in losses} <= {"enobufs", "seq-gap"}
        assert lst.stats.lost == sum(loss.count for loss in losses) == _proc_drops(inode)
        # Every gap in each CPU's sequence is accounted for by a loss.
        seqs: dict[int, list[int]] = {}
        for e in items:
            if not isinstance(e, Loss | AckEvent):
                seqs.setdefault(e.cpu, []).append(e.seq)  # type: ignore[union-attr]
        gaps = sum(max(s) - min(s) + 1 - len(s) for s in seqs.values())
        assert gaps <= lst.stats.lost


# --- Other ways to read -------------------------------------------------------


@root
def test_blocking_iterator(listener: Listener) -> None:
    proc = subprocess.Popen(["/bin/true"])
    for item in listener:
        if isinstance(item, ExitEvent) and item.process_pid == proc.pid:
            break
    proc.wait()


@root
def test_breaking_out_of_the_iterator_loses_nothing(listener: Listener) -> None:
    first = subprocess.Popen(["true"])
    first.wait()
    second = subprocess.Popen(["true"])
    second.wait()
    time.sleep(0.1)  # both exits queued, in this order: one receive takes them together
    for item in listener:
        if isinstance(item, ExitEvent) and item.process_pid == first.pid:
            break
    collect(listener, exited(second.pid))


@root
def test_async_iterator(listener: Listener) -> None:
    async def main() -> ExitEvent:
        proc = await asyncio.create_subprocess_exec("/bin/true")
        async for item in listener:
            if isinstance(item, ExitEvent) and item.process_pid == proc.pid:
                await proc.wait()
                return item
        raise AssertionError("unreachable")

    ev = asyncio.run(asyncio.wait_for(main(), 10))
    assert ev.exit_code == 0


@root
def test_read_does_not_block(listener: Listener) -> None:
    # Drain whatever the machine makes, then read an empty queue: a blocking
    # read would not return (the per-test alarm would end the test).
    while listener.read():
        pass
    assert isinstance(listener.read(), list)


# --- Errors -------------------------------------------------------------------


@root
def test_foreign_network_namespace() -> None:
    def body() -> int:
        if libc.unshare(CLONE_NEWNET) != 0:
            return 2
        try:
            Listener().open()
        except NamespaceError as e:
            ok = e.errno == errno.ECONNREFUSED and "initial network namespace" in str(e)
            return 0 if ok else 1
        return 1

    assert in_child(body) == 0


@root
def test_no_reply_in_a_user_namespace() -> None:
    def body() -> int:
        if libc.unshare(CLONE_NEWUSER) != 0:
            return 2
        try:
            Listener(ack_timeout=0.2).open()
        except PrivilegeError as e:
            # Before 6.6 joining the group takes CAP_NET_ADMIN in the initial user namespace.
            return 0 if kernel() < (6, 6) and e.errno == errno.EPERM else 1
        except NoAckError as e:
            # 6.6 lets anyone join, and ignores a request from another user namespace.
            return 0 if kernel() >= (6, 6) and isinstance(e, TimeoutError) and "CONFIG_PROC_EVENTS" in str(e) else 1
        return 1

    code = in_child(body)
    if code == 2:
        pytest.skip("user namespaces are not available")
    assert code == 0


@root
def test_subscribing_without_privilege_after_binding_as_root() -> None:
    # Bound as root, then CAP_NET_ADMIN dropped before the LISTEN: before 6.6
    # cn_proc refuses the request itself (its reply says EPERM); 6.6 lets anyone subscribe.
    def body() -> int:
        subscribe = Subscription.subscribe

        def as_nobody(self: Subscription, events: int | None, timeout: float, io: Exchange) -> None:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            subscribe(self, events, timeout, io)

        Subscription.subscribe = as_nobody  # type: ignore[method-assign]
        try:
            with Listener() as lst:
                return 0 if kernel() >= (6, 6) and lst.port_id != 0 else 1
        except PrivilegeError as e:
            return 0 if kernel() < (6, 6) and e.errno == errno.EPERM and "CAP_NET_ADMIN" in str(e) else 1

    # Before 6.6 the kernel replies to nobody while it counts no listener (cn_proc_ack()).
    with Listener():
        assert in_child(body) == 0


@root
@pytest.mark.parametrize(
    ("version", "why"),
    [
        ((6, 1), "this process lacks CAP_NET_ADMIN, and a kernel before Linux 6.6 ignores its subscription"),
        ((6, 18), "the kernel needs CONFIG_PROC_EVENTS, and the caller the initial user and PID namespaces"),
    ],
)
def test_an_unanswered_listen_without_cap_net_admin_names_it(
    monkeypatch: pytest.MonkeyPatch, version: tuple[int, int], why: str
) -> None:
    # What a kernel before 6.6 does to a process that dropped CAP_NET_ADMIN
    # after bind() while nobody else listens: it drops the request unanswered.
    # Since 6.6 the capability is not asked for: a namespace is to blame.
    from kstructs import _socket

    real = Subscription.request

    def unanswered(self: Subscription, events: int | None, timeout: float, io: Exchange) -> AckEvent | None:
        real(self, events, timeout, io)
        return None

    monkeypatch.setattr(Subscription, "request", unanswered)
    monkeypatch.setattr(_socket, "cap_net_admin", lambda: False)
    monkeypatch.setattr(_socket, "kernel_version", lambda: version)
    with pytest.raises(NoAckError) as info:
        Listener(ack_timeout=0.05).open()
    assert str(info.value) == "[Errno 110] no reply to PROC_CN_MCAST_LISTEN within 0.05 s: " + why


@root  # a real NETLINK_CONNECTOR socket (qemu-user has none)
def test_no_privilege_names_cap_net_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing(socket.socket):
        def bind(self, address: Any) -> None:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(socket, "socket", Refusing)  # the module kstructs._socket calls
    with pytest.raises(PrivilegeError) as info:
        Listener().open()
    assert isinstance(info.value, PermissionError) and info.value.errno == errno.EPERM
    assert "CAP_NET_ADMIN" in str(info.value)


def test_no_connector_says_what_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unsupported(socket.socket):
        def __init__(self, family: int, kind: int, proto: int) -> None:
            raise OSError(errno.EPROTONOSUPPORT, os.strerror(errno.EPROTONOSUPPORT))

    monkeypatch.setattr(socket, "socket", Unsupported)
    with pytest.raises(NoConnectorError) as info:
        Listener().open()
    assert info.value.errno == errno.EPROTONOSUPPORT
    assert "CONFIG_CONNECTOR" in str(info.value) and "qemu-user" in str(info.value)


def test_loss_values() -> None:
    loss = Loss(12, "enobufs")
    assert loss.to_dict() == {"event": "lost", "count": 12, "reason": "enobufs", "cpu": None}
    assert Loss(3, "seq-gap", 1).to_dict()["cpu"] == 1


def test_linger_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="linger"):
        Listener(linger=-1)


def queued_exits(command: str, n: int = 5) -> list[int]:
    """Run ``command`` ``n`` times, one after the other, so that their exits
    queue in this order; their pids."""
    pids = []
    for _ in range(n):
        proc = subprocess.Popen([command])
        proc.wait()
        pids.append(proc.pid)
    time.sleep(0.1)  # all queued: one recvmmsg() takes them together
    return pids


def check_interrupted(pids: list[int], items: list[Item]) -> None:
    """In order, none twice, and at most the one in hand when interrupted lost."""
    got = [e.process_pid for e in items if isinstance(e, ExitEvent) and e.process_pid in pids]
    assert got == [pid for pid in pids if pid in got] and len(got) >= len(pids) - 1


@root
def test_an_interrupted_read_leaves_the_rest_of_its_batch() -> None:
    class Interrupting(list[Item]):
        """Raises KeyboardInterrupt on its second append, as a signal could."""

        def append(self, item: Item) -> None:
            if len(self) == 1:
                raise KeyboardInterrupt
            super().append(item)

    with Listener(EventKind.EXIT) as lst:
        pids = queued_exits("true")
        first = Interrupting()
        with pytest.raises(KeyboardInterrupt):
            lst._drain(first, wait=False)
        rest: list[Item] = []
        lst._drain(rest, wait=False)
        check_interrupted(pids, [*first, *rest])


@root
def test_an_interrupted_read_keeps_what_it_had_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    from kstructs import stream as stream_module
    from kstructs.events import event_matches as real

    calls = [0]
    pids: list[int] = []

    def interrupting(event: Any, kinds: Any) -> bool:
        # Before 6.6 the kernel does not filter: every event of the workload
        # is filtered here, so count only its exits.
        if isinstance(event, ExitEvent) and event.process_pid in pids:
            calls[0] += 1
        if calls[0] == 3:  # a signal arrives while the third exit is filtered
            calls[0] += 1
            raise KeyboardInterrupt
        return real(event, kinds)

    with Listener(EventKind.NONZERO_EXIT) as lst:
        pids += queued_exits("false")
        monkeypatch.setattr(stream_module, "event_matches", interrupting)
        with pytest.raises(KeyboardInterrupt):
            lst.read()
        items = lst.read()
        # The two taken before the signal come first.
        assert [e.process_pid for e in items if isinstance(e, ExitEvent) and e.process_pid in pids][:2] == pids[:2]
        check_interrupted(pids, items)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
