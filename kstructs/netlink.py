"""``<linux/netlink.h>``: the netlink message layer the connector rides on.

Every macro, enumerator and struct of the UAPI header, as of Linux 6.18.
Names are the kernel's; ``NLMSG_ALIGN`` and friends are the lower-case
functions ``nlmsg_align`` and so on.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from kstructs import _abi

if TYPE_CHECKING:
    from kstructs._typing import U16, U32, Int, Nested, UInt, UShort

HEADER: Final = "linux/netlink.h"

# include/uapi/linux/netlink.h: protocol families (socket(AF_NETLINK, ..., proto))
NETLINK_ROUTE: Final = 0
NETLINK_UNUSED: Final = 1
NETLINK_USERSOCK: Final = 2
NETLINK_FIREWALL: Final = 3
NETLINK_SOCK_DIAG: Final = 4
NETLINK_NFLOG: Final = 5
NETLINK_XFRM: Final = 6
NETLINK_SELINUX: Final = 7
NETLINK_ISCSI: Final = 8
NETLINK_AUDIT: Final = 9
NETLINK_FIB_LOOKUP: Final = 10
NETLINK_CONNECTOR: Final = 11
NETLINK_NETFILTER: Final = 12
NETLINK_IP6_FW: Final = 13
NETLINK_DNRTMSG: Final = 14
NETLINK_KOBJECT_UEVENT: Final = 15
NETLINK_GENERIC: Final = 16
NETLINK_SCSITRANSPORT: Final = 18
NETLINK_ECRYPTFS: Final = 19
NETLINK_RDMA: Final = 20
NETLINK_CRYPTO: Final = 21
NETLINK_SMC: Final = 22
NETLINK_INET_DIAG: Final = NETLINK_SOCK_DIAG
MAX_LINKS: Final = 32

# include/uapi/linux/netlink.h: nlmsghdr.nlmsg_flags
NLM_F_REQUEST: Final = 0x01
NLM_F_MULTI: Final = 0x02
NLM_F_ACK: Final = 0x04
NLM_F_ECHO: Final = 0x08
NLM_F_DUMP_INTR: Final = 0x10
NLM_F_DUMP_FILTERED: Final = 0x20
# Modifiers to GET request
NLM_F_ROOT: Final = 0x100
NLM_F_MATCH: Final = 0x200
NLM_F_ATOMIC: Final = 0x400
NLM_F_DUMP: Final = NLM_F_ROOT | NLM_F_MATCH
# Modifiers to NEW request
NLM_F_REPLACE: Final = 0x100
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400
NLM_F_APPEND: Final = 0x800
# Modifiers to DELETE request
NLM_F_NONREC: Final = 0x100
NLM_F_BULK: Final = 0x200
# Flags for ACK message
NLM_F_CAPPED: Final = 0x100
NLM_F_ACK_TLVS: Final = 0x200

# include/uapi/linux/netlink.h: message alignment and reserved message types
NLMSG_ALIGNTO: Final = 4
NLMSG_NOOP: Final = 0x1
NLMSG_ERROR: Final = 0x2
NLMSG_DONE: Final = 0x3
NLMSG_OVERRUN: Final = 0x4
NLMSG_MIN_TYPE: Final = 0x10

# include/uapi/linux/netlink.h: enum nlmsgerr_attrs (extended ACK TLVs)
NLMSGERR_ATTR_UNUSED: Final = 0
NLMSGERR_ATTR_MSG: Final = 1
NLMSGERR_ATTR_OFFS: Final = 2
NLMSGERR_ATTR_COOKIE: Final = 3
NLMSGERR_ATTR_POLICY: Final = 4
NLMSGERR_ATTR_MISS_TYPE: Final = 5
NLMSGERR_ATTR_MISS_NEST: Final = 6
__NLMSGERR_ATTR_MAX: Final = 7
NLMSGERR_ATTR_MAX: Final = __NLMSGERR_ATTR_MAX - 1

# include/uapi/linux/netlink.h: SOL_NETLINK socket options
NETLINK_ADD_MEMBERSHIP: Final = 1
NETLINK_DROP_MEMBERSHIP: Final = 2
NETLINK_PKTINFO: Final = 3
NETLINK_BROADCAST_ERROR: Final = 4
NETLINK_NO_ENOBUFS: Final = 5
NETLINK_RX_RING: Final = 6
NETLINK_TX_RING: Final = 7
NETLINK_LISTEN_ALL_NSID: Final = 8
NETLINK_LIST_MEMBERSHIPS: Final = 9
NETLINK_CAP_ACK: Final = 10
NETLINK_EXT_ACK: Final = 11
NETLINK_GET_STRICT_CHK: Final = 12

# include/uapi/linux/netlink.h: enum nl_mmap_status (the ring was removed in
# Linux 4.6; the UAPI names stay)
NL_MMAP_STATUS_UNUSED: Final = 0
NL_MMAP_STATUS_RESERVED: Final = 1
NL_MMAP_STATUS_VALID: Final = 2
NL_MMAP_STATUS_COPY: Final = 3
NL_MMAP_STATUS_SKIP: Final = 4
NL_MMAP_MSG_ALIGNMENT: Final = NLMSG_ALIGNTO

NET_MAJOR: Final = 36

# include/uapi/linux/netlink.h: anonymous enum of socket states
NETLINK_UNCONNECTED: Final = 0
NETLINK_CONNECTED: Final = 1

# include/uapi/linux/netlink.h: attribute header (struct nlattr) flags
NLA_F_NESTED: Final = 1 << 15
NLA_F_NET_BYTEORDER: Final = 1 << 14
NLA_TYPE_MASK: Final = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
NLA_ALIGNTO: Final = 4

# include/uapi/linux/netlink.h: enum netlink_attribute_type
NL_ATTR_TYPE_INVALID: Final = 0
NL_ATTR_TYPE_FLAG: Final = 1
NL_ATTR_TYPE_U8: Final = 2
NL_ATTR_TYPE_U16: Final = 3
NL_ATTR_TYPE_U32: Final = 4
NL_ATTR_TYPE_U64: Final = 5
NL_ATTR_TYPE_S8: Final = 6
NL_ATTR_TYPE_S16: Final = 7
NL_ATTR_TYPE_S32: Final = 8
NL_ATTR_TYPE_S64: Final = 9
NL_ATTR_TYPE_BINARY: Final = 10
NL_ATTR_TYPE_STRING: Final = 11
NL_ATTR_TYPE_NUL_STRING: Final = 12
NL_ATTR_TYPE_NESTED: Final = 13
NL_ATTR_TYPE_NESTED_ARRAY: Final = 14
NL_ATTR_TYPE_BITFIELD32: Final = 15
NL_ATTR_TYPE_SINT: Final = 16
NL_ATTR_TYPE_UINT: Final = 17

# include/uapi/linux/netlink.h: enum netlink_policy_type_attr
NL_POLICY_TYPE_ATTR_UNSPEC: Final = 0
NL_POLICY_TYPE_ATTR_TYPE: Final = 1
NL_POLICY_TYPE_ATTR_MIN_VALUE_S: Final = 2
NL_POLICY_TYPE_ATTR_MAX_VALUE_S: Final = 3
NL_POLICY_TYPE_ATTR_MIN_VALUE_U: Final = 4
NL_POLICY_TYPE_ATTR_MAX_VALUE_U: Final = 5
NL_POLICY_TYPE_ATTR_MIN_LENGTH: Final = 6
NL_POLICY_TYPE_ATTR_MAX_LENGTH: Final = 7
NL_POLICY_TYPE_ATTR_POLICY_IDX: Final = 8
NL_POLICY_TYPE_ATTR_POLICY_MAXTYPE: Final = 9
NL_POLICY_TYPE_ATTR_BITFIELD32_MASK: Final = 10
NL_POLICY_TYPE_ATTR_PAD: Final = 11
NL_POLICY_TYPE_ATTR_MASK: Final = 12
__NL_POLICY_TYPE_ATTR_MAX: Final = 13
NL_POLICY_TYPE_ATTR_MAX: Final = __NL_POLICY_TYPE_ATTR_MAX - 1


class sockaddr_nl(ctypes.Structure):
    nl_family: UShort  # __kernel_sa_family_t
    nl_pad: UShort
    nl_pid: U32
    nl_groups: U32
    _fields_ = [
        ("nl_family", ctypes.c_ushort),
        ("nl_pad", ctypes.c_ushort),
        ("nl_pid", ctypes.c_uint32),
        ("nl_groups", ctypes.c_uint32),
    ]


class nlmsghdr(ctypes.Structure):
    nlmsg_len: U32
    nlmsg_type: U16
    nlmsg_flags: U16
    nlmsg_seq: U32
    nlmsg_pid: U32
    _fields_ = [
        ("nlmsg_len", ctypes.c_uint32),
        ("nlmsg_type", ctypes.c_uint16),
        ("nlmsg_flags", ctypes.c_uint16),
        ("nlmsg_seq", ctypes.c_uint32),
        ("nlmsg_pid", ctypes.c_uint32),
    ]


class nlmsgerr(ctypes.Structure):
    # Followed by the offending message's payload (unless NETLINK_CAP_ACK or
    # error == 0) and, with NETLINK_EXT_ACK, by nlmsgerr_attrs TLVs.
    error: Int
    msg: Nested[nlmsghdr]
    _fields_ = [
        ("error", ctypes.c_int),
        ("msg", nlmsghdr),
    ]


class nl_pktinfo(ctypes.Structure):
    group: U32
    _fields_ = [("group", ctypes.c_uint32)]


class nl_mmap_req(ctypes.Structure):
    nm_block_size: UInt
    nm_block_nr: UInt
    nm_frame_size: UInt
    nm_frame_nr: UInt
    _fields_ = [
        ("nm_block_size", ctypes.c_uint),
        ("nm_block_nr", ctypes.c_uint),
        ("nm_frame_size", ctypes.c_uint),
        ("nm_frame_nr", ctypes.c_uint),
    ]


class nl_mmap_hdr(ctypes.Structure):
    nm_status: UInt
    nm_len: UInt
    nm_group: U32
    nm_pid: U32
    nm_uid: U32
    nm_gid: U32
    _fields_ = [
        ("nm_status", ctypes.c_uint),
        ("nm_len", ctypes.c_uint),
        ("nm_group", ctypes.c_uint32),
        ("nm_pid", ctypes.c_uint32),
        ("nm_uid", ctypes.c_uint32),
        ("nm_gid", ctypes.c_uint32),
    ]


class nlattr(ctypes.Structure):
    nla_len: U16
    nla_type: U16
    _fields_ = [
        ("nla_len", ctypes.c_uint16),
        ("nla_type", ctypes.c_uint16),
    ]


class nla_bitfield32(ctypes.Structure):
    value: U32
    selector: U32
    _fields_ = [
        ("value", ctypes.c_uint32),
        ("selector", ctypes.c_uint32),
    ]


# The function-like macros that compute lengths.


def nlmsg_align(len: int) -> int:  # noqa: A002 - the macro's parameter name
    """``NLMSG_ALIGN(len)``: round up to a multiple of ``NLMSG_ALIGNTO``."""
    return (len + NLMSG_ALIGNTO - 1) & ~(NLMSG_ALIGNTO - 1)


def nlmsg_hdrlen() -> int:
    """``NLMSG_HDRLEN``: the aligned size of ``struct nlmsghdr``."""
    return nlmsg_align(ctypes.sizeof(nlmsghdr))


def nlmsg_length(len: int) -> int:  # noqa: A002
    """``NLMSG_LENGTH(len)``: header plus ``len`` bytes of payload."""
    return len + nlmsg_hdrlen()


def nlmsg_space(len: int) -> int:  # noqa: A002
    """``NLMSG_SPACE(len)``: ``NLMSG_LENGTH(len)`` rounded up."""
    return nlmsg_align(nlmsg_length(len))


def nla_align(len: int) -> int:  # noqa: A002
    """``NLA_ALIGN(len)``: round up to a multiple of ``NLA_ALIGNTO``."""
    return (len + NLA_ALIGNTO - 1) & ~(NLA_ALIGNTO - 1)


def nl_mmap_msg_align(sz: int) -> int:
    """``NL_MMAP_MSG_ALIGN(sz)``: ``__ALIGN_KERNEL(sz, NL_MMAP_MSG_ALIGNMENT)``."""
    return (sz + NL_MMAP_MSG_ALIGNMENT - 1) & ~(NL_MMAP_MSG_ALIGNMENT - 1)


NLMSG_HDRLEN: Final = nlmsg_hdrlen()
NLA_HDRLEN: Final = nla_align(ctypes.sizeof(nlattr))
NL_MMAP_HDRLEN: Final = nl_mmap_msg_align(ctypes.sizeof(nl_mmap_hdr))

# Layout facts stated independently of the classes; tests hold them to both
# the classes and the C compiler.
SIZE_NLMSGHDR: Final = 16
SIZE_NLMSGERR: Final = 20

LAYOUT_CONSTANTS: Final = ("SIZE_NLMSGHDR", "SIZE_NLMSGERR")

# What this module mirrors, for conformance checks (tools/header_diff.py).
TYPES: Final = (sockaddr_nl, nlmsghdr, nlmsgerr, nl_pktinfo, nl_mmap_req, nl_mmap_hdr, nlattr, nla_bitfield32)
CONSTANTS: Final = _abi.constants(globals(), exclude=LAYOUT_CONSTANTS)
MACRO_FUNCTIONS: Final[Mapping[str, Callable[[int], int]]] = {
    "NLMSG_ALIGN": nlmsg_align,
    "NLMSG_LENGTH": nlmsg_length,
    "NLMSG_SPACE": nlmsg_space,
    "NLA_ALIGN": nla_align,
    "NL_MMAP_MSG_ALIGN": nl_mmap_msg_align,
}
NOT_MIRRORED: Final[Mapping[str, str]] = {
    "NLMSG_DATA": "pointer arithmetic on a struct nlmsghdr *",
    "NLMSG_NEXT": "pointer arithmetic on a struct nlmsghdr *",
    "NLMSG_OK": "reads a struct nlmsghdr *",
    "NLMSG_PAYLOAD": "reads a struct nlmsghdr *",
}
# First mainline release whose UAPI header had the item, for items after 2.6.15.
ADDED_IN: Final[Mapping[str, str]] = {
    "NETLINK_UNUSED": "2.6.18",
    "NETLINK_SCSITRANSPORT": "2.6.19",
    "NETLINK_ECRYPTFS": "2.6.21",
    "NETLINK_RDMA": "3.0",
    "NETLINK_CRYPTO": "3.2",
    "NETLINK_SOCK_DIAG": "3.3",
    "NETLINK_SMC": "4.11",
    "NLM_F_DUMP_INTR": "3.1",
    "NLM_F_DUMP_FILTERED": "4.4",
    "NLM_F_CAPPED": "4.12",
    "NLM_F_ACK_TLVS": "4.12",
    "NLM_F_NONREC": "4.14",
    "NLM_F_BULK": "5.19",
    "NETLINK_BROADCAST_ERROR": "2.6.30",
    "NETLINK_NO_ENOBUFS": "2.6.30",
    "NETLINK_RX_RING": "3.10",
    "NETLINK_TX_RING": "3.10",
    "NETLINK_LISTEN_ALL_NSID": "4.2",
    "NETLINK_LIST_MEMBERSHIPS": "4.2",
    "NETLINK_CAP_ACK": "4.3",
    "NETLINK_EXT_ACK": "4.12",
    "NETLINK_GET_STRICT_CHK": "4.20",
    "struct nl_mmap_req": "3.10",
    "struct nl_mmap_hdr": "3.10",
    "NL_MMAP_STATUS_UNUSED": "3.10",
    "NL_MMAP_STATUS_RESERVED": "3.10",
    "NL_MMAP_STATUS_VALID": "3.10",
    "NL_MMAP_STATUS_COPY": "3.10",
    "NL_MMAP_STATUS_SKIP": "3.10",
    "NL_MMAP_MSG_ALIGNMENT": "3.10",
    "NL_MMAP_HDRLEN": "3.10",
    "NL_MMAP_MSG_ALIGN": "3.10",
    "NLA_F_NESTED": "2.6.24",
    "NLA_F_NET_BYTEORDER": "2.6.24",
    "NLA_TYPE_MASK": "2.6.24",
    "struct nla_bitfield32": "4.14",
    "NLMSGERR_ATTR_UNUSED": "4.12",
    "NLMSGERR_ATTR_MSG": "4.12",
    "NLMSGERR_ATTR_OFFS": "4.12",
    "NLMSGERR_ATTR_COOKIE": "4.12",
    "NLMSGERR_ATTR_POLICY": "5.10",
    "NLMSGERR_ATTR_MISS_TYPE": "6.1",
    "NLMSGERR_ATTR_MISS_NEST": "6.1",
    "__NLMSGERR_ATTR_MAX": "4.12",
    "NLMSGERR_ATTR_MAX": "4.12",
    **dict.fromkeys(_abi.prefixed(globals(), "NL_ATTR_TYPE_"), "5.8"),
    "NL_ATTR_TYPE_SINT": "6.7",
    "NL_ATTR_TYPE_UINT": "6.7",
    **dict.fromkeys(_abi.prefixed(globals(), "NL_POLICY_TYPE_ATTR_"), "5.8"),
    "__NL_POLICY_TYPE_ATTR_MAX": "5.8",
    "NL_POLICY_TYPE_ATTR_MASK": "5.10",
}

__all__ = [
    "NETLINK_ROUTE",
    "NETLINK_UNUSED",
    "NETLINK_USERSOCK",
    "NETLINK_FIREWALL",
    "NETLINK_SOCK_DIAG",
    "NETLINK_NFLOG",
    "NETLINK_XFRM",
    "NETLINK_SELINUX",
    "NETLINK_ISCSI",
    "NETLINK_AUDIT",
    "NETLINK_FIB_LOOKUP",
    "NETLINK_CONNECTOR",
    "NETLINK_NETFILTER",
    "NETLINK_IP6_FW",
    "NETLINK_DNRTMSG",
    "NETLINK_KOBJECT_UEVENT",
    "NETLINK_GENERIC",
    "NETLINK_SCSITRANSPORT",
    "NETLINK_ECRYPTFS",
    "NETLINK_RDMA",
    "NETLINK_CRYPTO",
    "NETLINK_SMC",
    "NETLINK_INET_DIAG",
    "MAX_LINKS",
    "NLM_F_REQUEST",
    "NLM_F_MULTI",
    "NLM_F_ACK",
    "NLM_F_ECHO",
    "NLM_F_DUMP_INTR",
    "NLM_F_DUMP_FILTERED",
    "NLM_F_ROOT",
    "NLM_F_MATCH",
    "NLM_F_ATOMIC",
    "NLM_F_DUMP",
    "NLM_F_REPLACE",
    "NLM_F_EXCL",
    "NLM_F_CREATE",
    "NLM_F_APPEND",
    "NLM_F_NONREC",
    "NLM_F_BULK",
    "NLM_F_CAPPED",
    "NLM_F_ACK_TLVS",
    "NLMSG_ALIGNTO",
    "NLMSG_NOOP",
    "NLMSG_ERROR",
    "NLMSG_DONE",
    "NLMSG_OVERRUN",
    "NLMSG_MIN_TYPE",
    "NLMSGERR_ATTR_UNUSED",
    "NLMSGERR_ATTR_MSG",
    "NLMSGERR_ATTR_OFFS",
    "NLMSGERR_ATTR_COOKIE",
    "NLMSGERR_ATTR_POLICY",
    "NLMSGERR_ATTR_MISS_TYPE",
    "NLMSGERR_ATTR_MISS_NEST",
    "__NLMSGERR_ATTR_MAX",
    "NLMSGERR_ATTR_MAX",
    "NETLINK_ADD_MEMBERSHIP",
    "NETLINK_DROP_MEMBERSHIP",
    "NETLINK_PKTINFO",
    "NETLINK_BROADCAST_ERROR",
    "NETLINK_NO_ENOBUFS",
    "NETLINK_RX_RING",
    "NETLINK_TX_RING",
    "NETLINK_LISTEN_ALL_NSID",
    "NETLINK_LIST_MEMBERSHIPS",
    "NETLINK_CAP_ACK",
    "NETLINK_EXT_ACK",
    "NETLINK_GET_STRICT_CHK",
    "NL_MMAP_STATUS_UNUSED",
    "NL_MMAP_STATUS_RESERVED",
    "NL_MMAP_STATUS_VALID",
    "NL_MMAP_STATUS_COPY",
    "NL_MMAP_STATUS_SKIP",
    "NL_MMAP_MSG_ALIGNMENT",
    "NET_MAJOR",
    "NETLINK_UNCONNECTED",
    "NETLINK_CONNECTED",
    "NLA_F_NESTED",
    "NLA_F_NET_BYTEORDER",
    "NLA_TYPE_MASK",
    "NLA_ALIGNTO",
    "NL_ATTR_TYPE_INVALID",
    "NL_ATTR_TYPE_FLAG",
    "NL_ATTR_TYPE_U8",
    "NL_ATTR_TYPE_U16",
    "NL_ATTR_TYPE_U32",
    "NL_ATTR_TYPE_U64",
    "NL_ATTR_TYPE_S8",
    "NL_ATTR_TYPE_S16",
    "NL_ATTR_TYPE_S32",
    "NL_ATTR_TYPE_S64",
    "NL_ATTR_TYPE_BINARY",
    "NL_ATTR_TYPE_STRING",
    "NL_ATTR_TYPE_NUL_STRING",
    "NL_ATTR_TYPE_NESTED",
    "NL_ATTR_TYPE_NESTED_ARRAY",
    "NL_ATTR_TYPE_BITFIELD32",
    "NL_ATTR_TYPE_SINT",
    "NL_ATTR_TYPE_UINT",
    "NL_POLICY_TYPE_ATTR_UNSPEC",
    "NL_POLICY_TYPE_ATTR_TYPE",
    "NL_POLICY_TYPE_ATTR_MIN_VALUE_S",
    "NL_POLICY_TYPE_ATTR_MAX_VALUE_S",
    "NL_POLICY_TYPE_ATTR_MIN_VALUE_U",
    "NL_POLICY_TYPE_ATTR_MAX_VALUE_U",
    "NL_POLICY_TYPE_ATTR_MIN_LENGTH",
    "NL_POLICY_TYPE_ATTR_MAX_LENGTH",
    "NL_POLICY_TYPE_ATTR_POLICY_IDX",
    "NL_POLICY_TYPE_ATTR_POLICY_MAXTYPE",
    "NL_POLICY_TYPE_ATTR_BITFIELD32_MASK",
    "NL_POLICY_TYPE_ATTR_PAD",
    "NL_POLICY_TYPE_ATTR_MASK",
    "__NL_POLICY_TYPE_ATTR_MAX",
    "NL_POLICY_TYPE_ATTR_MAX",
    "NLMSG_HDRLEN",
    "NLA_HDRLEN",
    "NL_MMAP_HDRLEN",
    "SIZE_NLMSGHDR",
    "SIZE_NLMSGERR",
    "sockaddr_nl",
    "nlmsghdr",
    "nlmsgerr",
    "nl_pktinfo",
    "nl_mmap_req",
    "nl_mmap_hdr",
    "nlattr",
    "nla_bitfield32",
    "nlmsg_align",
    "nlmsg_hdrlen",
    "nlmsg_length",
    "nlmsg_space",
    "nla_align",
    "nl_mmap_msg_align",
]
