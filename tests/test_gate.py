"""kstructs._gate on a socket pair: a socket closed under no reader goes at
once; under a reader it stays open, the eventfd wakes the reader, and the
last reader out closes it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from kstructs._gate import ReaderGate


@pytest.fixture
def gate() -> Iterator[tuple[ReaderGate, socket.socket]]:
    a, b = socket.socketpair()
    gate = ReaderGate()
    gate.open(a)
    yield gate, a
    a.close()
    b.close()
    if gate.wake >= 0:
        os.close(gate.wake)


def take(gate: ReaderGate) -> socket.socket:
    """What ``close()`` does first: the socket, away from new readers."""
    with gate.lock:
        sock = gate.current()
        gate.sock = None
    return sock


def test_not_open() -> None:
    with pytest.raises(ValueError, match="listener is not open"):
        ReaderGate().enter()


def test_closed_at_once_without_readers(gate: tuple[ReaderGate, socket.socket]) -> None:
    g, sock = gate
    g.enter()
    g.leave()
    g.close(take(g), owner=True)
    assert sock.fileno() == -1 and g.wake == -1
    with pytest.raises(ValueError, match="listener is not open"):
        g.enter()


def test_the_last_reader_out_closes(gate: tuple[ReaderGate, socket.socket]) -> None:
    g, sock = gate
    assert g.enter() is sock
    assert g.enter() is sock
    wake = g.wake
    g.close(take(g), owner=True)
    assert sock.fileno() != -1  # a reader is in it
    assert os.eventfd_read(wake) == 1  # what wakes the reader in poll()
    g.leave()
    assert sock.fileno() != -1
    g.leave()
    assert sock.fileno() == -1 and g.wake == -1


def test_a_forked_child_closes_its_copy_at_once(gate: tuple[ReaderGate, socket.socket]) -> None:
    # The readers counted are the parent's: the child's close does not wait for them.
    g, sock = gate
    g.enter()
    g.close(take(g), owner=False)
    assert sock.fileno() == -1 and g.wake == -1


def test_a_close_while_the_eventfd_is_made_leaves_nothing_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # A signal handler that closes the listener while open() makes the eventfd: what it
    # finds must be closed whole (nothing yet, or the socket and the eventfd), never half.
    a, b = socket.socketpair()
    g, made, real = ReaderGate(), [], os.eventfd

    def eventfd(*args: int) -> int:
        if g.sock is not None:
            g.close(take(g), owner=True)
        made.append(real(*args))
        return made[-1]

    monkeypatch.setattr(os, "eventfd", eventfd)
    try:
        g.open(a)
        assert g.sock is a and a.fileno() != -1 and g.wake == made[0]  # not closed: nothing was open
        g.close(take(g), owner=True)
        assert a.fileno() == -1 and g.wake == -1
        with pytest.raises(OSError):
            os.fstat(made[0])  # the eventfd is closed too
    finally:
        a.close()
        b.close()
