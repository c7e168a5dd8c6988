"""``<linux/connector.h>``: the kernel connector, which carries process events.

A connector message is a ``struct cn_msg`` header followed by ``len`` bytes of
payload, inside one netlink message of family ``NETLINK_CONNECTOR``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from kstructs import _abi

if TYPE_CHECKING:
    from kstructs._typing import U16, U32, Bytes, Nested

HEADER: Final = "linux/connector.h"

# include/uapi/linux/connector.h: connector ids (cb_id.idx, cb_id.val)
CN_IDX_PROC: Final = 0x1
CN_VAL_PROC: Final = 0x1
CN_IDX_CIFS: Final = 0x2
CN_VAL_CIFS: Final = 0x1
CN_W1_IDX: Final = 0x3
CN_W1_VAL: Final = 0x1
CN_IDX_V86D: Final = 0x4
CN_VAL_V86D_UVESAFB: Final = 0x1
CN_IDX_BB: Final = 0x5
CN_DST_IDX: Final = 0x6
CN_DST_VAL: Final = 0x1
CN_IDX_DM: Final = 0x7
CN_VAL_DM_USERSPACE_LOG: Final = 0x1
CN_IDX_DRBD: Final = 0x8
CN_VAL_DRBD: Final = 0x1
CN_KVP_IDX: Final = 0x9
CN_KVP_VAL: Final = 0x1
CN_VSS_IDX: Final = 0xA
CN_VSS_VAL: Final = 0x1

# Highest index + 1: the number of netlink multicast groups of NETLINK_CONNECTOR
# (11 since Linux 3.10; it grew with the ids above).
CN_NETLINK_USERS: Final = 11

# include/uapi/linux/connector.h: the largest cn_msg payload (1024 before 2.6.24)
CONNECTOR_MAX_MSG_SIZE: Final = 16384


class cb_id(ctypes.Structure):
    idx: U32
    val: U32
    _fields_ = [
        ("idx", ctypes.c_uint32),
        ("val", ctypes.c_uint32),
    ]


class cn_msg(ctypes.Structure):
    id: Nested[cb_id]
    seq: U32
    ack: U32
    len: U16
    flags: U16
    data: Bytes
    _fields_ = [
        ("id", cb_id),
        ("seq", ctypes.c_uint32),
        ("ack", ctypes.c_uint32),
        ("len", ctypes.c_uint16),  # length of the following data
        ("flags", ctypes.c_uint16),
        # __u8 data[] (data[0] before Linux 6.0): zero bytes in sizeof(cn_msg)
        ("data", ctypes.c_uint8 * 0),
    ]


# Layout facts stated independently of the classes; tests hold them to both
# the classes and the C compiler.
SIZE_CN_MSG: Final = 20
LAYOUT_CONSTANTS: Final = ("SIZE_CN_MSG",)

# What this module mirrors, for conformance checks (tools/header_diff.py).
TYPES: Final = (cb_id, cn_msg)
CONSTANTS: Final = _abi.constants(globals(), exclude=LAYOUT_CONSTANTS)
MACRO_FUNCTIONS: Final[Mapping[str, Callable[[int], int]]] = {}
NOT_MIRRORED: Final[Mapping[str, str]] = {}
# First mainline release whose UAPI header had the item, for items after 2.6.15.
ADDED_IN: Final[Mapping[str, str]] = {
    "CN_W1_IDX": "2.6.18",
    "CN_W1_VAL": "2.6.18",
    "CN_IDX_V86D": "2.6.24",
    "CN_VAL_V86D_UVESAFB": "2.6.24",
    "CN_IDX_BB": "2.6.27",
    "CN_DST_IDX": "2.6.30",
    "CN_DST_VAL": "2.6.30",
    "CN_IDX_DM": "2.6.31",
    "CN_VAL_DM_USERSPACE_LOG": "2.6.31",
    "CN_IDX_DRBD": "2.6.33",
    "CN_VAL_DRBD": "2.6.33",
    "CN_KVP_IDX": "2.6.39",
    "CN_KVP_VAL": "3.5",
    "CN_VSS_IDX": "3.10",
    "CN_VSS_VAL": "3.10",
}

__all__ = [
    "CN_IDX_PROC",
    "CN_VAL_PROC",
    "CN_IDX_CIFS",
    "CN_VAL_CIFS",
    "CN_W1_IDX",
    "CN_W1_VAL",
    "CN_IDX_V86D",
    "CN_VAL_V86D_UVESAFB",
    "CN_IDX_BB",
    "CN_DST_IDX",
    "CN_DST_VAL",
    "CN_IDX_DM",
    "CN_VAL_DM_USERSPACE_LOG",
    "CN_IDX_DRBD",
    "CN_VAL_DRBD",
    "CN_KVP_IDX",
    "CN_KVP_VAL",
    "CN_VSS_IDX",
    "CN_VSS_VAL",
    "CN_NETLINK_USERS",
    "CONNECTOR_MAX_MSG_SIZE",
    "SIZE_CN_MSG",
    "cb_id",
    "cn_msg",
]
