"""kstructs: the package's public face."""

from __future__ import annotations

import re

import kstructs
from kstructs import cn_proc

# The seed's invented layout facts: importable from kstructs.cn_proc, not
# exported from the package, where they would pass for kernel names.
LAYOUT_NAME = re.compile(r"SIZE_.*|PROC_EVENT_HEADER_SIZE|(ACK|FORK|EXEC|ID|SID|PTRACE|COMM|COREDUMP|EXIT)_[A-Z_]+")


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from kstructs import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(kstructs.__all__)
    assert len(kstructs.__all__) == len(set(kstructs.__all__))


def test_the_face_is_small_and_has_what_users_need() -> None:
    assert len(kstructs.__all__) < 100  # the star imports exported 272
    for name in ("Listener", "parse_events", "EventKind", "ForkEvent", "proc_event", "cn_msg", "nlmsghdr"):
        assert name in kstructs.__all__
    for name in ("KstructsError", "ParseError", "BtfError", "CheckError", "PrivilegeError", "NoAckError"):
        assert issubclass(getattr(kstructs, name), kstructs.KstructsError)


def test_no_layout_constant_is_exported() -> None:
    assert [n for n in kstructs.__all__ if LAYOUT_NAME.fullmatch(n)] == []


def test_layout_constants_stay_importable_from_cn_proc() -> None:
    # Values from the seed (and, in test_cn_proc, from the C compiler).
    assert (cn_proc.SIZE_PROC_EVENT, cn_proc.SIZE_FORK_EVENT, cn_proc.SIZE_EXIT_EVENT) == (40, 16, 24)
    assert (cn_proc.PROC_EVENT_HEADER_SIZE, cn_proc.EXIT_PARENT_TGID, cn_proc.COMM_DATA) == (16, 20, 8)
