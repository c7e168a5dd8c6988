"""Progress of a long check on stderr: only on a terminal, only after the first second."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

DELAY = 1.0  # seconds before the first line: a quick check prints nothing


class Progress:
    """Call with what the check is doing now; ``done()`` clears the line."""

    def __init__(self, prog: str, stream: TextIO | None = None, delay: float = DELAY) -> None:
        self.prog = prog
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError, OSError):
            self.enabled = False
        self.start = time.monotonic()
        self.step = ""
        self.shown = False
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        if self.enabled:
            self.timer = threading.Timer(delay, self._show)
            self.timer.daemon = True
            self.timer.start()

    def __call__(self, step: str) -> None:
        with self.lock:
            self.step = step
        if self.enabled and time.monotonic() - self.start >= self.delay:
            self._show()

    def _show(self) -> None:
        with self.lock:
            if not self.step:
                return
            elapsed = time.monotonic() - self.start
            self.stream.write(f"\r\033[K{self.prog}: {self.step} ({elapsed:.1f} s)")
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        with self.lock:
            self.step = ""
            if self.shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
