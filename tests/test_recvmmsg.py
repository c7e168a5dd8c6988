"""kstructs._recvmmsg: libc's layouts against the compiler, and batches of
real datagrams."""

from __future__ import annotations

import ctypes
import errno
import socket
import subprocess
from collections.abc import Iterator

import pytest
from conftest import c_values

from kstructs import _receive, _recvmmsg
from kstructs._recvmmsg import Batch, iovec, mmsghdr, msghdr
from kstructs.events import ExitEvent
from kstructs.listener import Listener
from kstructs.netlink import NETLINK_CONNECTOR

root = pytest.mark.root
PRELUDE = "#include <sys/socket.h>\n#include <sys/uio.h>"


def test_libc_layouts_match_the_compiler() -> None:
    exprs = {
        "sizeof iovec": "sizeof(struct iovec)",
        "sizeof msghdr": "sizeof(struct msghdr)",
        "sizeof mmsghdr": "sizeof(struct mmsghdr)",
        "sizeof socklen_t": "sizeof(socklen_t)",
        "MSG_TRUNC": "MSG_TRUNC",
    }
    classes: dict[str, type[ctypes.Structure]] = {"iovec": iovec, "msghdr": msghdr, "mmsghdr": mmsghdr}
    for name, cls in classes.items():
        for field, *_ in cls._fields_:
            exprs[f"{name}.{field}"] = f"offsetof(struct {name}, {field})"
            exprs[f"sizeof {name}.{field}"] = f"sizeof(((struct {name} *)0)->{field})"
    c = c_values(exprs, PRELUDE)
    for name, cls in classes.items():
        assert ctypes.sizeof(cls) == c[f"sizeof {name}"], name
        for field, ctype, *_ in cls._fields_:
            assert getattr(cls, field).offset == c[f"{name}.{field}"], f"{name}.{field}"
            assert ctypes.sizeof(ctype) == c[f"sizeof {name}.{field}"], f"{name}.{field}"
    assert ctypes.sizeof(ctypes.c_uint32) == c["sizeof socklen_t"]
    assert c["MSG_TRUNC"] == socket.MSG_TRUNC


@pytest.mark.parametrize("cls", [iovec, msghdr, mmsghdr], ids=["iovec", "msghdr", "mmsghdr"])
def test_annotations_follow_fields(cls: type[ctypes.Structure]) -> None:
    assert list(cls.__annotations__) == [f[0] for f in cls._fields_]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connector sockets; the first sends to the second's port id
    (CAP_NET_ADMIN: the connector takes unicast only from privileged senders)."""
    with (
        socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as sender,
        socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as receiver,
    ):
        sender.bind((0, 0))
        receiver.bind((0, 0))
        yield sender, receiver


@root
def test_a_batch_takes_many_datagrams_and_flags_truncation(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    to = (receiver.getsockname()[0], 0)
    sent = [b"a" * 16, b"b" * 128, b"c" * 129, b"d" * 40]
    for data in sent:
        sender.sendto(data, to)
    batch = Batch(3, 128, 16)
    fd, port = receiver.fileno(), sender.getsockname()[0]

    assert batch.receive(fd, socket.MSG_DONTWAIT) == 3
    frames = list(batch.frames(3))
    assert [(length, who, offset) for (_, length), (who,), offset in frames] == [
        (16, port, 0),
        (128, port, 128),
        (128, port, 256),  # the kernel copies what fits
    ]
    assert [bool(flags & socket.MSG_TRUNC) for (flags, _), _, _ in frames] == [False, False, True]
    for ((_, length), _, offset), data in zip(frames, sent, strict=False):
        assert bytes(batch.view[offset : offset + length]) == data[:length]

    assert batch.receive(fd, socket.MSG_DONTWAIT) == 1
    ((_, length), (who,), offset), *_ = batch.frames(1)
    assert (bytes(batch.view[offset : offset + length]), who) == (sent[3], port)
    assert batch.receive(fd, socket.MSG_DONTWAIT) == -errno.EAGAIN


def by_ctypes(batch: Batch, n: int) -> list[tuple[tuple[int, int], tuple[int], int]]:
    """What frames() must say, read field by field through the ctypes layouts."""
    msgs, names = batch._msgs, batch._names
    return [((msgs[i].msg_hdr.msg_flags, msgs[i].msg_len), (names[i].nl_pid,), i * batch.size) for i in range(n)]


@root
@pytest.mark.parametrize(
    "lengths",
    [[16, 16, 16], [16, 16, 17], [17, 16, 16], [16, 200, 16], [16], [200, 200]],
    ids=["uniform", "last-differs", "first-differs", "truncated", "one", "all-truncated"],
)
def test_frames_agree_with_the_layouts(pair: tuple[socket.socket, socket.socket], lengths: list[int]) -> None:
    sender, receiver = pair
    for length in lengths:
        sender.sendto(bytes(length), (receiver.getsockname()[0], 0))
    batch = Batch(4, 128, 16)
    n = batch.receive(receiver.fileno(), socket.MSG_DONTWAIT)
    assert n == len(lengths)
    assert list(batch.frames(n)) == by_ctypes(batch, n)
    # uniform(): one sender, and every one the common 16 bytes, whole.
    assert batch.uniform(n) == (sender.getsockname()[0] if set(lengths) == {16} else None)
    assert batch.filled() == n
    batch.clear(n)
    assert batch.filled() == 0


@root
def test_frames_tell_senders_apart(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as third:
        third.bind((0, 0))
        to = (receiver.getsockname()[0], 0)
        sender.sendto(bytes(16), to)
        third.sendto(bytes(16), to)
        batch = Batch(4, 128, 16)
        assert batch.receive(receiver.fileno(), socket.MSG_DONTWAIT) == 2
        frames = list(batch.frames(2))
        assert frames == by_ctypes(batch, 2) and batch.uniform(2) is None
        assert batch.uniform(1) == sender.getsockname()[0]
        assert [who for _, (who,), _ in frames] == [sender.getsockname()[0], third.getsockname()[0]]


@root
def test_a_listener_falls_back_when_recvmmsg_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A seccomp filter may answer ENOSYS; the listener goes on with recvfrom().
    monkeypatch.setattr(_recvmmsg.Batch, "receive", lambda self, fd, flags: -errno.ENOSYS)
    with Listener() as lst:
        assert isinstance(lst._receiver, _receive.Single)  # the reply to the subscription already came the other way
        proc = subprocess.Popen(["true"])
        proc.wait()
        for item in lst:
            if isinstance(item, ExitEvent) and item.process_pid == proc.pid:
                break


def test_no_recvmmsg_in_libc_means_recvfrom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_recvmmsg, "_RECVMMSG", None)
    with pytest.raises(OSError, match="recvmmsg") as info:
        Batch(4, 64, 16)
    assert info.value.errno == errno.ENOSYS
    assert _receive.new_batch() is None
