"""The readers of a listener's socket, so that another thread may close it.

``close()`` from another thread writes an eventfd, which wakes a reader in
``poll()``, and leaves closing the socket (whose number could otherwise be
reused under the reader) to the last reader out.
"""

from __future__ import annotations

import os
import socket
import threading


class ReaderGate:
    """The socket, the eventfd that wakes its readers, and who is reading.

    ``enter()``/``leave()`` bracket each read; ``close()`` (under ``lock``)
    takes the socket away from new readers and closes it, or wakes the readers
    in it and leaves that to the last one out.
    """

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.wake = -1  # the eventfd, once open
        self.lock = threading.RLock()  # close() may come from a signal handler
        self._readers = 0
        self._orphan: socket.socket | None = None

    def open(self, sock: socket.socket) -> None:
        """Readers may enter ``sock`` (and the eventfd is made). The eventfd
        first: a ``close()`` in between (a signal handler's) finds nothing open,
        never a socket without the eventfd it would then leak."""
        self.wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.sock = sock

    def current(self) -> socket.socket:
        """The socket, while open."""
        if self.sock is None:
            raise ValueError("listener is not open")
        return self.sock

    def enter(self) -> socket.socket:
        with self.lock:
            sock = self.current()
            self._readers += 1
        return sock

    def leave(self) -> None:
        with self.lock:
            self._readers -= 1
            orphan = self._orphan
            if orphan is not None and not self._readers:
                self._orphan = None
                self._release(orphan)

    def close(self, sock: socket.socket, *, owner: bool) -> None:
        """Close ``sock``, taken from ``self.sock`` under ``lock``: now, or,
        while readers of the process that ``owner`` says this is are in it,
        once the last one leaves (they are woken)."""
        if self._readers and owner:
            self._orphan = sock
            os.eventfd_write(self.wake, 1)
        else:
            self._release(sock)

    def _release(self, sock: socket.socket) -> None:
        try:
            sock.close()
        finally:
            if self.wake >= 0:
                os.close(self.wake)
                self.wake = -1
