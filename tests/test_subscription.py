"""kstructs._subscription without a socket: requests, nonces, replies, the IGNORE owed."""

from __future__ import annotations

import errno
import struct

import pytest

from kstructs import _subscription as subscription_module
from kstructs._subscription import Subscription
from kstructs.errors import NoAckError, PrivilegeError
from kstructs.events import AckEvent, parse_request
from kstructs.stream import EventStream, Item

# <linux/cn_proc.h>: enum proc_cn_mcast_op, and the kinds
LISTEN, IGNORE = 1, 2
FORK, EXIT = 0x1, 0x80000000


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


def test_verdict() -> None:
    assert Subscription.verdict(ack(0), 0, 1.0, required=True) is True
    assert Subscription.verdict(ack(0), 1, 1.0, required=True) is True
    assert Subscription.verdict(None, 0, 0.25, required=False) is False
    assert Subscription.verdict(ack(errno.EINVAL), 0, 1.0, required=True) is None  # ask again
    assert Subscription.verdict(ack(errno.EPERM), 0, 1.0, required=False) is None
    with pytest.raises(NoAckError, match=r"^\[Errno 110\] no reply to PROC_CN_MCAST_LISTEN within 1.5 s: ") as no:
        Subscription.verdict(None, 0, 1.5, required=True)
    assert no.value.errno == errno.ETIMEDOUT
    with pytest.raises(PrivilegeError, match=r"needs CAP_NET_ADMIN on this kernel$") as perm:
        Subscription.verdict(ack(errno.EPERM), 1, 1.0, required=True)
    assert perm.value.errno == errno.EPERM
    with pytest.raises(OSError, match=r"^\[Errno 22\] the kernel refused PROC_CN_MCAST_LISTEN: Invalid argument$"):
        Subscription.verdict(ack(errno.EINVAL), 1, 1.0, required=True)
    # The proc_input probe: a kernel before 6.6 never answers it, so a second
    # error is forged too and the plain request decides.
    assert Subscription.verdict(ack(errno.EINVAL), 1, 1.0, required=False) is False
    assert Subscription.verdict(ack(errno.EPERM), 1, 1.0, required=False) is False


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
