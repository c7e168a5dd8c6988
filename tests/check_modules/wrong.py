"""The shapes of cases.h mirrored as a library would, each class with one mistake."""

from __future__ import annotations

import ctypes
import enum

HEADER = "cases.h"


class opaque_thing(ctypes.Structure):
    pass


class Words(ctypes.c_uint32 * 4):  # type: ignore[misc]
    """An array subclass."""


class with_arrays(ctypes.Structure):
    _fields_ = (
        ("words", Words),
        ("name", ctypes.c_char * 16),
        ("grid", (ctypes.c_int16 * 3) * 2),
    )


CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)


class with_pointers(ctypes.Structure):
    _fields_ = (
        ("data", ctypes.c_void_p),
        ("label", ctypes.c_char_p),
        ("callback", CALLBACK),
        ("next", ctypes.POINTER(with_arrays)),
    )


class packed_thing(ctypes.Structure):
    # no _pack_: C packs it
    _fields_ = (("tag", ctypes.c_uint8), ("value", ctypes.c_uint32))


class net_order(ctypes.BigEndianStructure):
    _fields_ = (("addr", ctypes.c_uint32), ("port", ctypes.c_uint16))


class outer(ctypes.Structure):
    class _u(ctypes.Union):  # the C union has no tag: checked through outer.u
        _fields_ = (("number", ctypes.c_uint32), ("bytes", ctypes.c_uint8 * 4))

    class _halves(ctypes.Structure):  # a C11 unnamed member
        _fields_ = (("lo", ctypes.c_uint16), ("hi", ctypes.c_uint16))

    _anonymous_ = ("halves",)
    _fields_ = (
        ("kind", ctypes.c_uint32),
        ("u", _u),
        ("halves", _halves),
        ("inner", ctypes.c_uint8 * 44),
    )  # a struct mirrored as an array


class Colour(enum.IntEnum):  # COLOUR_* by the prefix rule
    RED = 1
    GREEN = 2
    BLUE = 8


class flags(ctypes.Structure):
    _fields_ = (
        ("ready", ctypes.c_uint, 1),
        ("mode", ctypes.c_uint, 4),
        ("level", ctypes.c_int, 4),
        ("big", ctypes.c_uint, 28),
        ("after", ctypes.c_uint8),
    )


class status(ctypes.Structure):
    _fields_ = (("on", ctypes.c_uint), ("code", ctypes.c_uint32))  # a bitfield mirrored as a full field


class flexible(ctypes.Structure):
    _fields_ = (("count", ctypes.c_uint32), ("items", ctypes.POINTER(ctypes.c_uint32)))  # a flexible array as a pointer


class versioned(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("size", ctypes.c_uint32))


CASES_MAX = 16
CASES_IOCTL = -1070827519  # _IOWR('x', 1, struct with_arrays), as a signed 32-bit int
