"""kstructs._subscription without a socket: requests, nonces, replies, the
handshake against a stand-in kernel and clock, the IGNORE owed."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

import pytest

from kstructs import _subscription as subscription_module
from kstructs._subscription import Exchange, Subscription
from kstructs.errors import NoAckError, PrivilegeError
from kstructs.events import AckEvent, McastRequest, parse_request
from kstructs.stream import EventStream, Item

# <linux/cn_proc.h>: enum proc_cn_mcast_op, and the kinds
LISTEN, IGNORE = 1, 2
FORK, EXIT = 0x1, 0x80000000
PROC_EVENT_ALL = 0xE00003C7  # Linux 6.6: every kind, NONZERO_EXIT included


def reply(ack: int, err: int = 0, seq: int = 1) -> bytes:
    """The kernel's reply as it sends one: nlmsghdr, cn_msg (ack = nonce + 1), proc_event NONE."""
    payload = struct.pack("=IIQI", 0, 0, 1000, err).ljust(40, b"\0")
    cn = struct.pack("=IIIIHH", 1, 1, seq, ack, len(payload), 0) + payload
    return struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn


class Nonces:
    def __init__(self, *values: int) -> None:
        self.values = list(values)

    def randbits(self, k: int) -> int:
        assert k == 32
        return self.values.pop(0)


@pytest.fixture
def sub(monkeypatch: pytest.MonkeyPatch) -> Subscription:
    monkeypatch.setattr(subscription_module, "secrets", Nonces(0x1234, 0xFFFFFFFF, 0x77))
    return Subscription(EventStream(), owner=500, port_id=99)


def test_a_listen_under_a_fresh_nonce(sub: Subscription) -> None:
    assert not sub.listening and sub.nonce == 0 and sub.seq == 0
    first = parse_request(sub.listen(None))
    assert (first.op, first.events, first.seq, first.ack, first.port_id) == (LISTEN, None, 1, 0x1234, 99)
    assert sub.listening and sub.nonce == 0x1234
    out: list[Item] = []
    sub.stream.receive(0, False, reply(0x1235), out)
    assert out == [] and sub.stream.ack == AckEvent(1, 0x1235, 0, 1000, 0)
    second = parse_request(sub.listen(FORK))
    assert (second.events, second.seq, second.ack) == (FORK, 2, 0xFFFFFFFF)
    assert sub.stream.ack is None  # looked for afresh: the reply's ack wraps to 0
    sub.stream.receive(0, False, reply(0x1235, seq=2), out)
    sub.stream.receive(0, False, reply(0, seq=3), out)
    assert len(out) == 1 and sub.stream.ack == AckEvent(3, 0, 0, 1000, 0)


def test_a_request_is_due_again_after_an_overflow(sub: Subscription) -> None:
    sub.start()
    assert sub.due()
    sub.listen(None)
    assert not sub.due()
    sub.stream.enobufs([])
    assert sub.due()
    sub.listen(None)
    assert not sub.due()
    sub.start()
    assert sub.due()


def test_narrow_keeps_the_nonce_and_the_kernel_filters(sub: Subscription) -> None:
    sub.listen(FORK | EXIT | 0x2)
    narrow = parse_request(sub.narrow(FORK | EXIT))
    assert (narrow.op, narrow.events, narrow.seq, narrow.ack, narrow.port_id) == (LISTEN, FORK | EXIT, 2, 0x1234, 99)
    assert sub.stream.stats.kernel_filter


def test_answered(sub: Subscription) -> None:
    sub.listen(None)
    assert not sub.answered()
    out: list[Item] = []
    sub.stream.receive(0, False, reply(0x1235, err=errno.EINVAL), out)
    assert not sub.answered()  # an error, and the queue not yet read to the end
    sub.stream.drained(out)
    assert sub.answered()
    sub.stream.receive(0, False, reply(0x1235, seq=2), out)
    assert sub.answered() and sub.stream.backlog  # a success: at once


def ack(err: int) -> AckEvent:
    return AckEvent(1, 0x1235, 0, 1000, err)


NO_REPLY = "[Errno 110] no reply to PROC_CN_MCAST_LISTEN within 1.5 s: "
WITHOUT_CAP = "this process lacks CAP_NET_ADMIN, and a kernel before Linux 6.6 ignores its subscription"
NAMESPACES = "the kernel needs CONFIG_PROC_EVENTS, and the caller the initial user and PID namespaces"


def test_verdict() -> None:
    assert Subscription.verdict(ack(0), 0, 1.0, required=True) is True
    assert Subscription.verdict(ack(0), 1, 1.0, required=True) is True
    assert Subscription.verdict(None, 0, 0.25, required=False) is False
    assert Subscription.verdict(ack(errno.EINVAL), 0, 1.0, required=True) is None  # ask again
    assert Subscription.verdict(ack(errno.EPERM), 0, 1.0, required=False) is None
    with pytest.raises(NoAckError) as no:
        Subscription.verdict(None, 0, 1.5, required=True)
    assert no.value.errno == errno.ETIMEDOUT
    assert (
        str(no.value)
        == NO_REPLY + "the kernel needs CONFIG_PROC_EVENTS, and the caller the initial user and PID namespaces"
    )
    with pytest.raises(PrivilegeError, match=r"needs CAP_NET_ADMIN on this kernel$") as perm:
        Subscription.verdict(ack(errno.EPERM), 1, 1.0, required=True)
    assert perm.value.errno == errno.EPERM
    with pytest.raises(OSError, match=r"^\[Errno 22\] the kernel refused PROC_CN_MCAST_LISTEN: Invalid argument$"):
        Subscription.verdict(ack(errno.EINVAL), 1, 1.0, required=True)
    # The proc_input probe: a kernel before 6.6 never answers it, so a second
    # error is forged too and the plain request decides.
    assert Subscription.verdict(ack(errno.EINVAL), 1, 1.0, required=False) is False
    assert Subscription.verdict(ack(errno.EPERM), 1, 1.0, required=False) is False


@pytest.mark.parametrize(
    ("cap_net_admin", "kernel", "why"),
    [
        (False, (6, 1), WITHOUT_CAP),
        (False, (6, 5), WITHOUT_CAP),
        (False, (5, 15), WITHOUT_CAP),
        (False, (6, 6), NAMESPACES),
        (False, (6, 18), NAMESPACES),
        (False, (10, 0), NAMESPACES),
        (False, None, NAMESPACES),
        (True, (6, 1), NAMESPACES),
        (None, (6, 1), NAMESPACES),
        (True, (6, 18), NAMESPACES),
    ],
)
def test_no_reply_says_what_is_known(cap_net_admin: bool | None, kernel: tuple[int, int] | None, why: str) -> None:
    # Before Linux 6.6, cn_proc_mcast_ctl() refuses a request from a process
    # without CAP_NET_ADMIN, and cn_proc_ack() answers only while the kernel
    # counts a listener: a process that dropped it after bind() hears nothing.
    # Since 6.6 it checks no capability: a user or PID namespace is left.
    with pytest.raises(NoAckError) as no:
        Subscription.verdict(None, 1, 1.5, required=True, cap_net_admin=cap_net_admin, kernel=kernel)
    assert str(no.value) == NO_REPLY + why and no.value.errno == errno.ETIMEDOUT
    assert Subscription.verdict(None, 0, 0.25, required=False, cap_net_admin=False, kernel=(6, 1)) is False


class Kernel:
    """A stand-in for the kernel's side of the handshake: ``answer`` says
    what it replies to each request (an errno, 0, or None: nothing), ``cap``
    whether the process holds CAP_NET_ADMIN, ``version`` the kernel's; its
    clock moves only when the handshake waits."""

    def __init__(
        self,
        sub: Subscription,
        answer: Callable[[McastRequest], int | None],
        cap: bool = True,
        version: tuple[int, int] | None = (6, 1),
    ) -> None:
        self.sub, self.answer, self.cap, self.version = sub, answer, cap, version
        self.sent: list[McastRequest] = []
        self.waits: list[float] = []
        self.caps_read = self.versions_read = 0
        self.now = 1000.0
        self.queue: list[bytes] = []
        self.out: list[Item] = []
        self.overflow = False  # the next take() meets an ENOBUFS first
        self.take_time = 0.0  # seconds each take() takes

    def send(self, message: bytes) -> None:
        request = parse_request(message)
        self.sent.append(request)
        err = self.answer(request)
        if err is not None:  # cn_proc_ack(): seq as received, ack + 1
            self.queue.append(reply((request.ack + 1) & 0xFFFFFFFF, err, seq=request.seq))

    def take(self) -> None:
        self.now += self.take_time
        if self.overflow:
            self.overflow, self.queue = False, []  # the reply went with the overflow
            self.sub.stream.enobufs(self.out)
        for data in self.queue:
            self.sub.stream.receive(0, False, data, self.out)
        self.queue.clear()
        self.sub.stream.drained(self.out)

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def cap_net_admin(self) -> bool:
        self.caps_read += 1
        return self.cap

    def kernel(self) -> tuple[int, int] | None:
        self.versions_read += 1
        return self.version

    def io(self) -> Exchange:
        return Exchange(self.send, self.take, self.wait, lambda: self.now, self.cap_net_admin, self.kernel)


def since_6_6(request: McastRequest) -> int | None:
    """Linux 6.6: every request answered, except one narrowed by a filter (cn_filter() drops it)."""
    return None if request.events not in (None, PROC_EVENT_ALL) else 0


def before_6_6(request: McastRequest) -> int | None:
    """Before 6.6: a request with a proc_input is ignored (its length is not an op's)."""
    return 0 if request.events is None else None


def ops(kernel: Kernel) -> list[tuple[int, int | None]]:
    return [(r.op, r.events) for r in kernel.sent]


def test_subscribe_to_everything(sub: Subscription) -> None:
    kernel = Kernel(sub, since_6_6)
    sub.subscribe(None, 1.0, kernel.io())
    assert ops(kernel) == [(LISTEN, None)] and kernel.sent[0].ack == 0x1234
    assert kernel.waits == [] and kernel.caps_read == kernel.versions_read == 0
    assert sub.stream.ack is None  # no longer looked for
    assert not sub.stream.stats.kernel_filter


def test_subscribe_with_a_filter_the_kernel_reads(sub: Subscription) -> None:
    kernel = Kernel(sub, since_6_6)
    sub.subscribe(FORK, 1.0, kernel.io())
    assert ops(kernel) == [(LISTEN, PROC_EVENT_ALL), (LISTEN, FORK)]
    assert [r.ack for r in kernel.sent] == [0x1234, 0x1234] and [r.seq for r in kernel.sent] == [1, 2]
    assert kernel.waits == [] and sub.stream.stats.kernel_filter


def test_subscribe_with_a_filter_before_6_6(sub: Subscription) -> None:
    kernel = Kernel(sub, before_6_6)
    sub.subscribe(FORK, 1.0, kernel.io())
    assert ops(kernel) == [(LISTEN, PROC_EVENT_ALL), (LISTEN, None)]
    assert kernel.waits == [0.25]  # the probe waits no longer than that
    assert kernel.caps_read == kernel.versions_read == 0 and not sub.stream.stats.kernel_filter


def test_the_wait_is_what_is_left_of_the_timeout(sub: Subscription) -> None:
    kernel = Kernel(sub, lambda request: None)
    kernel.take_time = 0.5
    with pytest.raises(NoAckError):
        sub.subscribe(None, 1.5, kernel.io())
    assert kernel.waits == [1.0]  # after the first take(), 1 s of the 1.5 s is left
    assert kernel.now - 1000.0 <= 1.5 + kernel.take_time  # the last take() ends past the deadline at most


def test_no_reply_within_the_timeout(sub: Subscription) -> None:
    kernel = Kernel(sub, lambda request: None, cap=True)
    with pytest.raises(NoAckError) as no:
        sub.subscribe(None, 1.5, kernel.io())
    assert str(no.value) == NO_REPLY + NAMESPACES
    assert ops(kernel) == [(LISTEN, None)] and kernel.waits == [1.5]
    assert sub.stream.ack is None and sub.listening  # the IGNORE is still owed


@pytest.mark.parametrize(
    ("version", "why"),
    [((6, 1), WITHOUT_CAP), ((6, 5), WITHOUT_CAP), ((6, 6), NAMESPACES), ((6, 18), NAMESPACES), (None, NAMESPACES)],
)
def test_no_reply_without_cap_net_admin(sub: Subscription, version: tuple[int, int] | None, why: str) -> None:
    kernel = Kernel(sub, lambda request: None, cap=False, version=version)
    with pytest.raises(NoAckError) as no:
        sub.subscribe(FORK, 1.5, kernel.io())
    assert str(no.value) == NO_REPLY + why
    assert ops(kernel) == [(LISTEN, PROC_EVENT_ALL), (LISTEN, None)] and kernel.waits == [0.25, 1.5]
    assert kernel.caps_read == kernel.versions_read == 1  # only for the request that had to be answered


def test_an_error_is_asked_again_under_a_fresh_nonce(sub: Subscription) -> None:
    errors = [errno.EINVAL]
    kernel = Kernel(sub, lambda request: errors.pop() if errors else 0)
    sub.subscribe(None, 1.0, kernel.io())
    assert ops(kernel) == [(LISTEN, None), (LISTEN, None)]
    assert [r.ack for r in kernel.sent] == [0x1234, 0xFFFFFFFF]


@pytest.mark.parametrize(
    ("err", "kind", "message"),
    [
        (errno.EINVAL, OSError, "[Errno 22] the kernel refused PROC_CN_MCAST_LISTEN: Invalid argument"),
        (errno.EPERM, PrivilegeError, "[Errno 1] listening to process events needs CAP_NET_ADMIN on this kernel"),
    ],
)
def test_a_second_error_is_believed(sub: Subscription, err: int, kind: type[OSError], message: str) -> None:
    kernel = Kernel(sub, lambda request: err)
    with pytest.raises(kind) as refused:
        sub.subscribe(None, 1.0, kernel.io())
    assert str(refused.value) == message and refused.value.errno == err
    assert [r.ack for r in kernel.sent] == [0x1234, 0xFFFFFFFF]


def test_a_request_goes_again_after_an_overflow(sub: Subscription) -> None:
    kernel = Kernel(sub, since_6_6)
    kernel.overflow = True
    sub.subscribe(None, 1.0, kernel.io())
    assert ops(kernel) == [(LISTEN, None), (LISTEN, None)]
    assert [r.ack for r in kernel.sent] == [0x1234, 0xFFFFFFFF] and kernel.waits == []


def test_release(sub: Subscription) -> None:
    sent: list[bytes] = []
    sub.release(500, sent.append)
    assert sent == [] and not sub.ignore_sent  # no LISTEN went out
    sub.listen(None)
    sub.release(501, sent.append)
    assert sent == []  # a forked child
    sub.release(500, sent.append)
    assert [parse_request(m).op for m in sent] == [IGNORE] and sub.ignore_sent
    sub.release(500, sent.append)
    assert len(sent) == 1


def test_release_that_cannot_send(sub: Subscription) -> None:
    def refused(message: bytes) -> None:
        raise OSError(errno.ECONNREFUSED, "refused")

    sub.listen(None)
    sub.release(500, refused)
    assert not sub.ignore_sent


def test_one_ignore_and_only_from_the_owner(sub: Subscription) -> None:
    assert sub.ignore(500) is None  # no LISTEN went out
    sub.listen(None)
    assert sub.ignore(501) is None and not sub.ignore_sent  # a forked child
    message = sub.ignore(500)
    assert message is not None and sub.ignore_sent
    ignore = parse_request(message)
    assert (ignore.op, ignore.seq, ignore.ack, ignore.port_id) == (IGNORE, 2, 0x1234, 99)
    assert sub.ignore(500) is None
    sub.ignore_failed()
    assert not sub.ignore_sent
    again = sub.ignore(500)
    assert again is not None and parse_request(again).seq == 3
